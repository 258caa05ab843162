"""Every method on tiny random models of five families (BERT, RoBERTa, GPT-2, Llama, T5, hidden size 32):
which apply and which are rejected, exact trainable counts, what a training step changes, save and reload."""

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2Model,
    LlamaConfig,
    LlamaModel,
    RobertaConfig,
    RobertaModel,
    T5Config,
    T5Model,
)

from peftlab import RunConfig
from peftlab.artifacts import load_artifact, save_artifact
from peftlab.errors import PeftlabError
from peftlab.methods import MethodContext, all_method_names, get_method, method_options
from peftlab.models import ModelSource, load_classifier
from peftlab.params import base_param_ids, count_unique, param_report

VOCAB = 30522  # MiniLM's tokenizer, saved into every tiny model folder
CLS, SEP = 101, 102  # its [CLS] and [SEP] ids; [SEP] is the end-of-sequence token of the tiny T5 and GPT-2
LABELS = ["negative", "positive"]

FAMILY_CONFIGS = {
    "bert": (BertModel, BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)),
    "roberta": (
        RobertaModel,
        RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=66, pad_token_id=0),
    ),
    "gpt2": (GPT2Model, GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, pad_token_id=0, bos_token_id=CLS, eos_token_id=SEP)),
    "llama": (
        LlamaModel,
        LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
            max_position_embeddings=64, pad_token_id=0, bos_token_id=CLS, eos_token_id=SEP,
        ),
    ),
    "t5": (T5Model, T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, pad_token_id=0, eos_token_id=SEP, decoder_start_token_id=0)),
}
FAMILIES = list(FAMILY_CONFIGS)
METHODS = all_method_names()

# Options that fit hidden size 32: FourierFT's default of 1000 frequencies exceeds
# the 32 x 16 key/value projections of the tiny Llama (one key/value head).
TINY_OPTIONS = {"fourierft": {"n_frequency": 200}}

# (family, method) -> a fragment of the one-line reason it is rejected with. Everything else must apply.
REJECTED = {
    ("gpt2", "olora"): "it is a Conv1D, and olora adapts only Linear",
    ("gpt2", "loha"): "it is a Conv1D, and loha adapts only Linear",
    ("gpt2", "lokr"): "it is a Conv1D, and lokr adapts only Linear",
    ("gpt2", "oft"): "it is a Conv1D, and oft adapts only Linear",
    ("gpt2", "boft"): "it is a Conv1D, and boft adapts only Linear",
    ("llama", "bitfit"): "LlamaForSequenceClassification has none outside the head",
    ("t5", "bitfit"): "T5ForSequenceClassification has none outside the head",
    ("t5", "prompt-tuning"): "does not accept inputs_embeds",
    ("t5", "p-tuning"): "does not accept inputs_embeds",
    **{(family, "prefix-tuning"): "renamed to cache" for family in FAMILIES},
}
APPLICABLE = [(family, method) for family in FAMILIES for method in METHODS if (family, method) not in REJECTED]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Hidden size 32 gains nothing from a second thread, and on a busy machine the threads' waiting dominates."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, minilm_path) -> dict[str, str]:
    """One randomly initialised base model folder per family, each with MiniLM's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    folders = {}
    for family, (model_class, config) in FAMILY_CONFIGS.items():
        folder = tmp_path_factory.mktemp(f"tiny-{family}")
        torch.manual_seed(0)
        model_class(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[family] = str(folder)
    return folders


def _batch() -> dict[str, torch.Tensor]:
    """Two texts, the second padded; each ends in [SEP] once, as T5's classifier requires."""
    input_ids = torch.tensor([[CLS, 2023, 3185, 2001, 2307, SEP], [CLS, 6881, 2143, SEP, 0, 0]])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": torch.tensor([1, 0])}


def _build(folder: str, method_name: str, weights_loaded: bool = True):
    """Load the family's classifier and return it with the method, its context, and the base counts."""
    method = get_method(method_name)
    loaded = load_classifier(ModelSource(folder, folder, "local"), LABELS, seed=0)
    options = method_options(method, TINY_OPTIONS.get(method_name, {}))
    ctx = MethodContext(RunConfig(model=folder, methods=[method_name]), loaded.model.config.model_type, "seq-cls", loaded.head_modules, options, weights_loaded)
    return loaded.model, method, ctx


def _adapted(folder: str, method_name: str):
    model, method, ctx = _build(folder, method_name)
    base_params, base_ids = count_unique(model), base_param_ids(model)
    method.check_applies(model, ctx)
    torch.manual_seed(0)
    adapted = method.apply(model, ctx)
    return adapted, method, ctx, param_report(adapted, base_params, base_ids)


def _train(model, steps: int = 3) -> None:
    """A few AdamW steps: enough for every trainable tensor to move, even those whose first gradient is zero (LoRA's A while B is 0)."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        model(**_batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


# ---------------------------------------------------------------------------
# Which methods apply


@pytest.mark.parametrize("family", FAMILIES)
def test_each_method_applies_or_is_rejected_with_reason(family, tiny_models):
    for method_name in METHODS:
        model, method, ctx = _build(tiny_models[family], method_name)
        expected = REJECTED.get((family, method_name))
        if expected is None:
            method.check_applies(model, ctx)
            continue
        with pytest.raises(PeftlabError) as rejected:
            method.check_applies(model, ctx)
        message = str(rejected.value)
        assert expected in message, f"{method_name}: {message}"
        assert "\n" not in message


def test_gpt2_rejection_names_methods_that_fit(tiny_models):
    model, method, ctx = _build(tiny_models["gpt2"], "loha")
    with pytest.raises(PeftlabError, match="methods that adapt a Conv1D: lora, dora, rslora, pissa, adalora, ia3, vera, fourierft"):
        method.check_applies(model, ctx)


# ---------------------------------------------------------------------------
# Counts, training step, save and reload


@pytest.mark.parametrize(("family", "method_name"), APPLICABLE)
def test_trainable_count_matches_independent_counts(family, method_name, tiny_models):
    adapted, _, _, report = _adapted(tiny_models[family], method_name)
    own_count = sum(p.numel() for p in {id(p): p for p in adapted.parameters() if p.requires_grad}.values())
    assert report.trainable_params == own_count
    assert report.trainable_params > 0
    if hasattr(adapted, "get_nb_trainable_parameters"):
        peft_trainable, _ = adapted.get_nb_trainable_parameters()
        assert report.trainable_params == peft_trainable


@pytest.mark.parametrize(("family", "method_name"), APPLICABLE)
def test_training_step_changes_exactly_trainable_tensors(family, method_name, tiny_models):
    adapted, _, _, _ = _adapted(tiny_models[family], method_name)
    tensors = adapted.state_dict(keep_vars=True)  # every parameter and buffer, tied ones under each of their names
    before = {name: tensor.detach().clone() for name, tensor in tensors.items()}
    trainable = {name for name, tensor in tensors.items() if isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad}
    _train(adapted)
    after = adapted.state_dict(keep_vars=True)
    changed = {name for name in before if not torch.equal(before[name], after[name].detach())}
    assert changed - trainable == set(), "frozen tensors changed"
    assert trainable - changed == set(), "trainable tensors did not change"


@pytest.mark.parametrize(("family", "method_name"), APPLICABLE)
def test_save_and_reload_give_identical_outputs(family, method_name, tiny_models, tmp_path):
    folder = tiny_models[family]
    adapted, method, ctx, _ = _adapted(folder, method_name)
    _train(adapted)
    adapted.eval()
    with torch.no_grad():
        expected = adapted(**_batch()).logits

    meta = {"method": method_name, "model": folder, "base_model_path": folder, "data": "tiny", "label_names": LABELS, "seed": 0, "adapter": method.saves_adapter}
    save_weights = (lambda path: method.save(adapted, ctx, path)) if method.save is not None else None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    save_artifact(adapted, tokenizer, tmp_path / "artifact", meta, method.saves_adapter, save_weights)
    reloaded = load_artifact(tmp_path / "artifact")
    with torch.no_grad():
        actual = reloaded.model(**_batch()).logits
    # PiSSA and OLoRA are saved as a plain LoRA of rank 2r on the original weights: equal up to rounding.
    tolerance = 1e-5 if method.save is not None else 0.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("method_name", ["pissa", "olora"])
def test_pissa_olora_saved_as_plain_lora_of_double_rank(method_name, tiny_models, tmp_path):
    import json

    adapted, method, ctx, _ = _adapted(tiny_models["bert"], method_name)
    method.save(adapted, ctx, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 2 * 8
    assert config["lora_alpha"] == 2 * 16.0
    assert config["init_lora_weights"] is True


@pytest.mark.parametrize("family", FAMILIES)
def test_counts_without_weights_match_loaded(family, tiny_models):
    """weights_loaded=False (the meta device, counting only) skips PiSSA's SVD and OLoRA's QR but counts the same."""
    for method_name in METHODS:
        if (family, method_name) in REJECTED:
            continue
        _, _, _, loaded_report = _adapted(tiny_models[family], method_name)
        model, method, ctx = _build(tiny_models[family], method_name, weights_loaded=False)
        with torch.device("meta"):
            meta_model = type(model)(model.config)
        base_params, base_ids = count_unique(meta_model), base_param_ids(meta_model)
        assert base_params == count_unique(model)
        # The adapters are created outside the meta context, so peft moves them onto the meta device
        # as it would onto a GPU, which is how AdaLoRA's ranknum once turned trainable.
        meta_report = param_report(method.apply(meta_model, ctx), base_params, base_ids)
        assert meta_report.trainable_params == loaded_report.trainable_params, method_name


# ---------------------------------------------------------------------------
# Exact counts on the tiny BERT: 2 layers, hidden 32, feed-forward 64, head 32 * 2 + 2

HIDDEN, FFN, LAYERS, HEAD = 32, 64, 2, 32 * 2 + 2


@pytest.mark.parametrize(
    ("method_name", "expected"),
    [
        ("head", HEAD),
        ("lora", LAYERS * 3 * 8 * (HIDDEN + HIDDEN) + HEAD),  # query, key, value: A is 8 x 32, B is 32 x 8
        ("dora", LAYERS * 3 * (8 * 2 * HIDDEN + HIDDEN) + HEAD),  # LoRA plus a magnitude per output feature
        ("adalora", LAYERS * 3 * 12 * (HIDDEN + HIDDEN + 1) + HEAD),  # init_r 12: A, B and the singular values E
        ("ia3", LAYERS * (HIDDEN + HIDDEN + HIDDEN + FFN) + HEAD),  # key, value outputs; attention.output.dense and output.dense inputs
        ("ln-tuning", (1 + 2 * LAYERS) * 2 * HIDDEN + HEAD),  # embedding LayerNorm and two per layer, weight and bias
        ("prompt-tuning", 20 * HIDDEN + HEAD),
        ("vera", LAYERS * 2 * (256 + HIDDEN) + HEAD),  # query, value: d (vera_r) and b (output size) per layer
        ("fourierft", LAYERS * 2 * 200 + HEAD),  # n_frequency coefficients per query and value
        ("oft", LAYERS * 2 * (32 * 31 // 2) + HEAD),  # one 32 x 32 block per layer: its skew-symmetric half
        ("bitfit", LAYERS * (4 * HIDDEN + FFN + HIDDEN + 2 * HIDDEN) + 2 * HIDDEN + HEAD),  # linear and LayerNorm biases; embedding LayerNorm and pooler
        ("top-layers:1", 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * (HIDDEN * FFN) + FFN + HIDDEN + 2 * 2 * HIDDEN + HEAD),
    ],
)
def test_tiny_bert_counts_exact(method_name, expected, tiny_models):
    _, _, _, report = _adapted(tiny_models["bert"], method_name)
    assert report.trainable_params == expected


def test_top_layers_trains_last_blocks_of_both_t5_stacks(tiny_models):
    adapted, _, _, _ = _adapted(tiny_models["t5"], "top-layers:1")
    trained_blocks = sorted({".".join(name.split(".")[:4]) for name, p in adapted.named_parameters() if p.requires_grad and ".block." in name})
    assert trained_blocks == ["transformer.decoder.block.1", "transformer.encoder.block.1"]


def test_top_layers_rejects_more_blocks_than_model_has(tiny_models):
    model, method, ctx = _build(tiny_models["bert"], "top-layers:3")
    with pytest.raises(PeftlabError, match=r"top-layers:3 asks for more blocks than bert.encoder.layer has \(2\); use top-layers:1 to top-layers:2, or full"):
        method.check_applies(model, ctx)


# ---------------------------------------------------------------------------
# Tasks beyond sequence classification


@pytest.mark.parametrize(
    ("task", "peft_class"),
    [("causal-lm", "PeftModelForCausalLM"), ("seq2seq-lm", "PeftModelForSeq2SeqLM")],
)
def test_peft_task_type_follows_task(task, peft_class):
    from transformers import LlamaForCausalLM, T5ForConditionalGeneration

    _, config = FAMILY_CONFIGS["llama" if task == "causal-lm" else "t5"]
    model_class = LlamaForCausalLM if task == "causal-lm" else T5ForConditionalGeneration
    for method_name in ("lora", "ia3", "prompt-tuning", "prefix-tuning"):
        torch.manual_seed(0)
        model = model_class(config)
        method = get_method(method_name)
        ctx = MethodContext(RunConfig(methods=[method_name]), config.model_type, task, [], method_options(method, {}))
        method.check_applies(model, ctx)
        assert type(method.apply(model, ctx)).__name__ == peft_class


def test_head_rejected_for_causal_lm():
    from transformers import LlamaForCausalLM

    method = get_method("head")
    ctx = MethodContext(RunConfig(methods=["head"]), "llama", "causal-lm", [], {})
    with pytest.raises(PeftlabError, match="method 'head' does not support the task 'causal-lm' \\(only seq-cls\\); methods for causal-lm: full, bitfit"):
        method.check_applies(LlamaForCausalLM(FAMILY_CONFIGS["llama"][1]), ctx)


def test_llama2_7b_lora_count_without_weights(shared_data):
    """LoRA r=8 on q_proj and v_proj of Llama-2-7B: 32 layers * 2 * 8 * (4096 + 4096)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(shared_data.parent / "model-configs" / "llama-2-7b")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    method = get_method("lora")
    run = RunConfig(methods=["lora"], lora_r=8, target_modules=["q_proj", "v_proj"])
    ctx = MethodContext(run, "llama", "causal-lm", [], {}, weights_loaded=False)
    method.check_applies(model, ctx)
    adapted = method.apply(model, ctx)
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == 4_194_304
