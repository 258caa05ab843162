"""Counting from a config alone: meta-device models give the counts of loaded ones, in seconds and little memory."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    T5Config,
)

from peftlab import RunConfig
from peftlab.cli import main
from peftlab.meta import build_meta_model, weight_free_source
from peftlab.methods import MethodContext, get_method, method_options
from peftlab.models import new_head_modules
from peftlab.params import base_param_ids, count_unique, param_report
from peftlab.runner import count_params

CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "model-configs"
LLAMA_2_7B = CONFIGS / "llama-2-7b" / "config.json"
MISTRAL_7B = CONFIGS / "mistral-7b" / "config.json"
ROBERTA_BASE = CONFIGS / "roberta-base" / "config.json"


def _config_file(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"model config not found at {path}: the tests expect ../shared/model-configs beside the repository")
    return path


def llama_style_params(c: dict) -> int:
    """Count a Llama/Mistral decoder from its config: embeddings, blocks, final norm, untied LM head."""
    h, f, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    attention = h * h + 2 * h * kv + h * h  # q, k, v, o without biases
    mlp = 3 * h * f  # gate, up, down
    norms = 2 * h
    lm_head = 0 if c.get("tie_word_embeddings", False) else vocab * h
    return vocab * h + layers * (attention + mlp + norms) + h + lm_head


def lora_qv_params(c: dict, r: int) -> int:
    """LoRA on q_proj and v_proj: A is r x in, B is out x r."""
    h = c["hidden_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    return c["num_hidden_layers"] * r * ((h + h) + (h + kv))


def _counts(report: dict) -> tuple:
    return report["base_params"], report["trainable_params"], report["added_params"], report["trainable_pct"]


# ---------------------------------------------------------------------------
# Published model configs: exact values


def test_llama_2_7b_lora_qv_exact():
    reports = count_params(config=RunConfig(model=str(_config_file(LLAMA_2_7B)), methods=["lora"], lora_r=8, target_modules=["q_proj", "v_proj"]))
    lora = reports[0]
    assert lora["task"] == "causal-lm"
    assert lora["base_params"] == 6_738_415_616
    assert lora["trainable_params"] == 4_194_304
    assert lora["added_params"] == 4_194_304
    assert lora["trainable_pct"] == round(100 * 4_194_304 / 6_738_415_616, 4)


def test_llama_2_7b_matches_architecture_formula():
    config = json.loads(_config_file(LLAMA_2_7B).read_text())
    full, lora = count_params(config=RunConfig(model=str(LLAMA_2_7B), methods=["full", "lora"], target_modules=["q_proj", "v_proj"]))
    assert full["base_params"] == llama_style_params(config) == 6_738_415_616
    assert full["trainable_params"] == full["base_params"]
    assert lora["trainable_params"] == lora_qv_params(config, 8)


def test_mistral_7b_matches_architecture_formula():
    config = json.loads(_config_file(MISTRAL_7B).read_text())
    full, lora = count_params(config=RunConfig(model=str(MISTRAL_7B), methods=["full", "lora"], lora_r=8, target_modules=["q_proj", "v_proj"]))
    assert full["base_params"] == llama_style_params(config) == 7_241_732_096
    assert lora["trainable_params"] == lora_qv_params(config, 8) == 3_407_872
    assert lora["added_params"] == 3_407_872


def _real_reports(model: torch.nn.Module, task: str, head: list[str], config: RunConfig) -> dict:
    """Apply each method of ``config`` to a copy of a real model (random weights on the CPU) and count."""
    import copy

    reports = {}
    for name in config.methods:
        method = get_method(name)
        real = copy.deepcopy(model)
        base, ids = count_unique(real), base_param_ids(real)
        ctx = MethodContext(config, real.config.model_type, task, head, method_options(method, {}))
        report = param_report(method.apply(real, ctx), base, ids).to_dict()
        reports[name] = report
    return reports


def test_roberta_base_seq_cls_equals_real_model():
    path = _config_file(ROBERTA_BASE)
    config = RunConfig(model=str(path), methods=["full", "head", "lora"])
    meta = {r["method"]: r for r in count_params(config=config, task="seq-cls", num_labels=2)}

    torch.manual_seed(0)
    real_model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(str(path), num_labels=2))
    real = _real_reports(real_model, "seq-cls", new_head_modules(real_model, []), config)

    assert count_unique(real_model) == 124_647_170
    assert meta["full"]["base_params"] == 124_647_170
    assert meta["head"]["trainable_params"] == (768 * 768 + 768) + (768 * 2 + 2)  # classifier.dense and out_proj
    assert meta["lora"]["added_params"] == 12 * 3 * 8 * (768 + 768)  # query, key, value at r=8
    for name in ("full", "head", "lora"):
        assert _counts(meta[name]) == _counts(real[name]), name
        assert meta[name]["modules"] == real[name]["modules"], name


def test_roberta_masked_lm_without_task_rejected(capsys):
    code = main(["params", "--model", str(_config_file(ROBERTA_BASE))])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        "error: architecture 'RobertaForMaskedLM' is not a sequence-classification, causal-LM or seq2seq-LM model; "
        "pass --task (causal-lm, seq-cls, seq2seq-lm) to count it as one"
    )


# ---------------------------------------------------------------------------
# Tiny random models of several families: meta count == loaded count

TINY = {
    "bert": (
        lambda: BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, max_position_embeddings=64, architectures=["BertForSequenceClassification"]),
        AutoModelForSequenceClassification, "seq-cls",
    ),
    "gpt2": (
        lambda: GPT2Config(vocab_size=1000, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"]),
        AutoModelForCausalLM, "causal-lm",
    ),
    "llama": (
        lambda: LlamaConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48, architectures=["LlamaForCausalLM"]),
        AutoModelForCausalLM, "causal-lm",
    ),
    "t5": (
        lambda: T5Config(vocab_size=1000, d_model=32, d_ff=48, d_kv=8, num_layers=2, num_heads=4, decoder_start_token_id=0, architectures=["T5ForConditionalGeneration"]),
        AutoModelForSeq2SeqLM, "seq2seq-lm",
    ),
}


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    """Save each tiny model with its weights, the way a downloaded checkpoint looks."""
    folders = {}
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    for name, (make_config, auto_class, _) in TINY.items():
        folder = tmp_path_factory.mktemp(f"tiny-{name}")
        torch.manual_seed(0)
        auto_class.from_config(make_config()).save_pretrained(folder)
        folders[name] = folder
    transformers.logging.set_verbosity(level)
    return folders


@pytest.mark.parametrize("family", list(TINY))
def test_meta_equals_loaded_tiny_models(family, tiny_folders):
    _, auto_class, task = TINY[family]
    folder = tiny_folders[family]
    config = RunConfig(model=str(folder), methods=["full", "lora"], label_names=["a", "b"])
    meta = {r["method"]: r for r in count_params(config=config, config_only=True)}

    loaded_model = auto_class.from_pretrained(folder, num_labels=2) if task == "seq-cls" else auto_class.from_pretrained(folder)
    head = new_head_modules(loaded_model, []) if task == "seq-cls" else []
    loaded = _real_reports(loaded_model, task, head, config)

    for name in ("full", "lora"):
        assert meta[name]["task"] == task
        assert _counts(meta[name]) == _counts(loaded[name]), name
        assert meta[name]["modules"] == loaded[name]["modules"], name


def test_tied_embeddings_counted_once_on_meta(tiny_folders):
    source = weight_free_source(str(tiny_folders["gpt2"]), config_only=True)
    model = build_meta_model(source, "causal-lm", []).model
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.device.type == "meta"
    untied = sum(p.numel() for name, p in model.named_parameters(remove_duplicate=False))
    assert count_unique(model) == untied - 1000 * 32


def test_t5_shared_embedding_tied_on_meta(tiny_folders):
    source = weight_free_source(str(tiny_folders["t5"]), config_only=True)
    model = build_meta_model(source, "seq2seq-lm", []).model
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert model.decoder.embed_tokens.weight is model.shared.weight
    assert model.lm_head.weight is model.shared.weight


def test_minilm_config_only_equals_loaded():
    config = RunConfig(model="minilm", methods=["full", "head", "lora"])
    meta = {r["method"]: r for r in count_params(config=config, config_only=True)}
    loaded = {r["method"]: r for r in count_params(config=config)}
    for name in ("full", "head", "lora"):
        assert _counts(meta[name]) == _counts(loaded[name]), name
        assert meta[name]["modules"] == loaded[name]["modules"], name


def test_checkpoint_without_pooler_gets_pooler_in_head(tmp_path):
    """A bare encoder saved without its pooler: the loaded model trains a fresh pooler, and so does the meta count."""
    from safetensors.torch import save_file
    from transformers import BertModel

    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48))
    encoder.config.architectures = ["BertModel"]
    encoder.config.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})

    config = RunConfig(model=str(tmp_path), methods=["head"])
    meta = count_params(config=config, config_only=True)[0]
    loaded = count_params(config=config)[0]
    assert [m["name"] for m in meta["modules"]] == ["bert.pooler.dense", "classifier"]
    assert _counts(meta) == _counts(loaded)


def test_folder_with_only_config_counts_without_flag(tmp_path):
    BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, architectures=["BertForSequenceClassification"]).save_pretrained(tmp_path)
    report = count_params(config=RunConfig(model=str(tmp_path), methods=["head"]), num_labels=3)[0]
    assert report["trainable_params"] == 32 * 3 + 3
    assert report["task"] == "seq-cls"


def test_task_overrides_architectures(tiny_folders):
    reports = count_params(config=RunConfig(model=str(tiny_folders["llama"]), methods=["head"]), task="seq-cls", num_labels=4, config_only=True)
    assert reports[0]["task"] == "seq-cls"
    assert reports[0]["trainable_params"] == 32 * 4  # Llama's score layer has no bias
    assert [m["name"] for m in reports[0]["modules"]] == ["score"]


def test_causal_lm_has_no_head_to_train(tiny_folders):
    lora = count_params(config=RunConfig(model=str(tiny_folders["llama"]), methods=["lora"], target_modules=["q_proj"]), config_only=True)[0]
    assert lora["trainable_params"] == lora["added_params"] == 2 * 8 * (32 + 32)
    assert all("lora_" in m["name"] for m in lora["modules"])


# ---------------------------------------------------------------------------
# A 70B-parameter configuration: seconds and well under 1 GB

LLAMA_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "num_hidden_layers": 80,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "torch_dtype": "bfloat16",
}

# Peak RSS from VmHWM, the high-water mark of this process image: getrusage's ru_maxrss would
# carry over the RSS of the forking pytest process, which Linux records at exec.
_CHILD = textwrap.dedent(
    """
    import json, re, sys, time
    from peftlab import RunConfig
    from peftlab.estimate import MemorySetup
    from peftlab.runner import count_params

    def peak_kib():
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))

    before = peak_kib()
    start = time.perf_counter()
    reports = count_params(config=RunConfig(model=sys.argv[1], methods=["full", "lora"]), memory=MemorySetup(dtype="bf16", batch_size=1, seq_len=4096))
    seconds = time.perf_counter() - start
    after = peak_kib()
    print(json.dumps({"seconds": seconds, "peak_rss_kib": after, "growth_kib": after - before,
                      "reports": [{k: r[k] for k in ("method", "base_params", "trainable_params")} for r in reports]}))
    """
)


def test_70b_config_counts_in_seconds_with_little_memory(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_70B))
    result = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    full, lora = measured["reports"]

    assert full["base_params"] == llama_style_params(LLAMA_70B) == 68_976_648_192
    # default LoRA targets for Llama: q, k, v, o, gate, up, down at r=8
    h, f, kv = 8192, 28672, 1024
    per_layer = 8 * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + f) + (f + h))
    assert lora["trainable_params"] == 80 * per_layer == 103_546_880
    assert measured["seconds"] < 30, measured  # about 2 s on 2 CPU cores; imports are not counted
    assert measured["peak_rss_kib"] < 2**20, measured  # the whole process, imports included, stays under 1 GiB
    assert measured["growth_kib"] < 200 * 2**10, measured  # building and counting add under 200 MiB


# ---------------------------------------------------------------------------
# Bad input: one line, exit status 2


def _bad_input_cases(tmp_path):
    no_architectures = tmp_path / "no-arch" / "config.json"
    no_architectures.parent.mkdir()
    no_architectures.write_text(json.dumps({"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 48}))
    not_json = tmp_path / "weights.bin"
    not_json.write_text("x")
    unknown_type = tmp_path / "unknown-type"
    unknown_type.mkdir()
    (unknown_type / "config.json").write_text(json.dumps({"hidden_size": 32}))
    llama = tmp_path / "llama.json"
    llama.write_text(json.dumps({**LLAMA_70B, "num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 4}))
    return {
        "missing config file": (["params", "--model", str(tmp_path / "nowhere" / "config.json")], "model config file not found"),
        "config without architectures": (["params", "--model", str(no_architectures)], "names no architectures, so the model class is unknown; pass --task"),
        "file that is not a config": (["params", "--model", str(not_json)], "is a file but not a config.json"),
        "folder config without model type": (["params", "--model", str(unknown_type)], "Should have a `model_type` key"),
        "unknown dtype": (["params", "--model", str(llama), "--memory", "--dtype", "fp8"], "unknown --dtype 'fp8'; valid values are"),
        "unparsable device memory": (["params", "--model", str(llama), "--memory", "--device-memory", "lots"], "invalid --device-memory 'lots'; pass a size such as 24GB"),
        "memory option without --memory": (["params", "--model", str(llama), "--dtype", "bf16"], "--dtype sets the memory estimate: add --memory"),
        "zero batch size": (["params", "--model", str(llama), "--memory", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        "task on a loaded model": (["params", "--model", "minilm", "--task", "seq2seq-lm"], "add --config-only to count it from its config"),
        "head on a causal LM": (["params", "--model", str(llama), "--method", "head"], "method 'head' does not support the task 'causal-lm'"),
        "hub id offline": (["params", "--model", "org/some-model", "--config-only"], "could not load model 'org/some-model' from the Hugging Face hub"),
    }


@pytest.mark.parametrize(
    "name",
    ["missing config file", "config without architectures", "file that is not a config", "folder config without model type", "unknown dtype", "unparsable device memory",
     "memory option without --memory", "zero batch size", "task on a loaded model", "head on a causal LM", "hub id offline"],
)
def test_params_bad_input_one_line_exit_2(name, tmp_path, capsys):
    argv, expected = _bad_input_cases(tmp_path)[name]
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2
    assert len(errors) == 1, captured.err
    assert lines[-1] == errors[0]  # a progress line may come first, the error closes the output
    assert expected in errors[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
