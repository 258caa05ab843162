"""Training-memory estimate: components against hand-computed values, activations against what autograd keeps."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
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
from peftlab.errors import PeftlabError
from peftlab.estimate import NF4_BYTES, MemorySetup, activation_bytes, estimate_memory, parse_dtype, parse_memory_size, profile_model
from peftlab.memory_probe import saved_tensor_bytes
from peftlab.runner import count_params

# A tiny Llama: hidden 64, MLP 160, 4 heads of 16, 2 key/value heads, 2 blocks, vocabulary 1000.
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 160,
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000,
    "max_position_embeddings": 64, "tie_word_embeddings": False,
}
TINY_PARAMS = 1000 * 64 + 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 160 + 2 * 64) + 64 + 1000 * 64  # 214,336
TINY_BLOCK_LINEAR_WEIGHTS = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 160)  # 86,016
B, S = 3, 24
TOKENS = B * S


@pytest.fixture
def tiny_llama(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_LLAMA))
    return path


def _estimate(path, method, **setup):
    config = RunConfig(model=str(path), methods=[method], lora_r=4, target_modules=["q_proj", "v_proj"])
    return count_params(config=config, memory=MemorySetup(batch_size=B, seq_len=S, **setup))[0]["memory"]


# ---------------------------------------------------------------------------
# Components, computed by hand for the tiny Llama


def test_full_fp32_components(tiny_llama):
    memory = _estimate(tiny_llama, "full")
    (row,) = memory["estimates"]  # every block weight trains: no 4-bit case
    assert TINY_PARAMS == 214_336
    assert row["base"] == "fp32"
    assert row["weights"] == TINY_PARAMS * 4
    assert row["gradients"] == TINY_PARAMS * 4
    assert row["optimizer"] == TINY_PARAMS * 8  # two fp32 AdamW states, no master copy
    # Per block and token, in bytes: two RMS norms (fp32 input 256, 1/rms 4, normalised input 256).
    # Attention: query 256, key and value 256, output 256, log-sum-exp 16. MLP: SiLU input 640,
    # gate and up outputs 1280. Linear inputs: q/k/v 256, gate/up 256, down 640, and o_proj
    # reads the attention output, which is kept already.
    per_block = 2 * (256 + 4 + 256) + 256 + 256 + 256 + 16 + 640 + 1280 + 256 + 256 + 640
    assert per_block == 4888
    # Outside the blocks: final norm 516, LM-head input 256, logits 4000, log-softmax 4000 and its gradient 4000.
    outside = 516 + 256 + 3 * 4000
    assert memory["activations"]["per_block_bytes"] == per_block * TOKENS
    assert memory["activations"]["outside_blocks_bytes"] == outside * TOKENS
    assert row["activations"] == (2 * per_block + outside) * TOKENS == 1_623_456
    assert row["total"] == 4 * TINY_PARAMS + 4 * TINY_PARAMS + 8 * TINY_PARAMS + 1_623_456


def test_full_bf16_components(tiny_llama):
    memory = _estimate(tiny_llama, "full", dtype="bf16")
    (row,) = memory["estimates"]
    assert row["weights"] == TINY_PARAMS * 2
    assert row["gradients"] == TINY_PARAMS * 2
    assert row["optimizer"] == TINY_PARAMS * 12  # two fp32 states and an fp32 master copy
    # As in fp32, but 2 bytes per value, except the norms' fp32 input copy and 1/rms and the log-sum-exp.
    per_block = 2 * (256 + 4 + 128) + 128 + 128 + 128 + 16 + 320 + 640 + 128 + 128 + 320
    # Final norm 388, head input 128, logits 2000 and their fp32 cast 4000, log-softmax 4000, gradient 4000.
    outside = 388 + 128 + 2000 + 3 * 4000
    assert row["activations"] == (2 * per_block + outside) * TOKENS == 1_435_680


def test_lora_components_and_4bit_base(tiny_llama):
    memory = _estimate(tiny_llama, "lora")
    fp32, four_bit = memory["estimates"]
    adapters = 2 * (4 * (64 + 64) + 4 * (64 + 32))  # q_proj and v_proj at r=4
    assert adapters == 1792
    assert fp32["weights"] == (TINY_PARAMS + adapters) * 4
    assert fp32["gradients"] == adapters * 4
    assert fp32["optimizer"] == adapters * 8
    # Frozen norms keep only their input and 1/rms. q_proj's adapter keeps the shared q/k/v
    # input (256), each adapter its rank-4 intermediate (16), and no other linear input is kept.
    per_block = 2 * (256 + 4) + 256 + 256 + 256 + 16 + 640 + 1280 + 256 + 2 * 16
    outside = 260 + 3 * 4000  # frozen final norm, no head input, the loss as before
    assert fp32["activations"] == (2 * per_block + outside) * TOKENS == 1_388_448

    assert four_bit["base"] == "4-bit"
    assert TINY_BLOCK_LINEAR_WEIGHTS == 86_016
    assert four_bit["weights"] == int(TINY_BLOCK_LINEAR_WEIGHTS * NF4_BYTES + (TINY_PARAMS + adapters - TINY_BLOCK_LINEAR_WEIGHTS) * 4)
    assert four_bit["weights"] == 44_373 + 520_448
    assert four_bit["gradients"] == fp32["gradients"]
    assert four_bit["optimizer"] == fp32["optimizer"]
    assert four_bit["activations"] == fp32["activations"]


def test_nf4_bytes_per_weight():
    assert NF4_BYTES == pytest.approx(0.5 + 8 / 8 / 64 + 32 / 8 / (64 * 256))
    assert round(NF4_BYTES, 4) == 0.5159


def test_head_only_keeps_no_block_activations(tiny_llama, tmp_path):
    path = tmp_path / "cls.json"
    path.write_text(json.dumps({**TINY_LLAMA, "architectures": ["LlamaForSequenceClassification"]}))
    memory = count_params(config=RunConfig(model=str(path), methods=["head"]), memory=MemorySetup(batch_size=B, seq_len=S))[0]["memory"]
    assert memory["activations"]["blocks_with_activations"] == 0
    assert memory["activations"]["blocks_bytes"] == 0


def test_top_layer_only_keeps_one_block(tiny_llama):
    memory = _estimate(tiny_llama, "top-layers:1")
    assert memory["activations"]["blocks_with_activations"] == 1
    assert memory["activations"]["blocks"] == 2


def test_materialized_attention_adds_scores(tiny_llama):
    fused = _estimate(tiny_llama, "full", attention="fused")["activations"]["per_block_bytes"]
    materialized = _estimate(tiny_llama, "full", attention="materialized")["activations"]["per_block_bytes"]
    # materialized: fp32 probabilities of 4 heads x 24 keys per token, no attention output or
    # log-sum-exp, but the input of o_proj is a copy of its own (256)
    assert materialized - fused == (4 * 24 * 4 - 256 - 16 + 256) * TOKENS


def test_llama_2_7b_bf16_estimate():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "model-configs" / "llama-2-7b" / "config.json"
    config = RunConfig(model=str(path), methods=["full", "lora"], target_modules=["q_proj", "v_proj"])
    setup = MemorySetup(dtype="bf16", batch_size=8, seq_len=2048, device_memory=parse_memory_size("24GB"))
    full, lora = count_params(config=config, memory=setup)
    params = 6_738_415_616
    (full_row,) = full["memory"]["estimates"]
    assert full_row["weights"] == params * 2
    assert full_row["optimizer"] == params * 12
    assert full_row["fits"] is False
    lora_fp, lora_4bit = lora["memory"]["estimates"]
    block_linears = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert lora_fp["weights"] == (params + 4_194_304) * 2
    assert lora_4bit["weights"] == int(block_linears * NF4_BYTES + (params + 4_194_304 - block_linears) * 2)
    assert lora_4bit["optimizer"] == 4_194_304 * 12


# ---------------------------------------------------------------------------
# Device memory: fits or not


def test_device_memory_fit_boundary(tiny_llama):
    total = _estimate(tiny_llama, "full")["estimates"][0]["total"]
    assert _estimate(tiny_llama, "full", device_memory=total)["estimates"][0]["fits"] is True
    assert _estimate(tiny_llama, "full", device_memory=total - 1)["estimates"][0]["fits"] is False
    assert _estimate(tiny_llama, "full")["estimates"][0]["fits"] is None


def test_cli_table_fits_4bit_only(tiny_llama, capsys):
    argv = ["params", "--model", str(tiny_llama), "--method", "lora", "--lora-r", "4", "--target-modules", "q_proj,v_proj",
            "--memory", "--batch-size", "3", "--seq-len", "24", "--device-memory", "2MB"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    table = out[out.index("training memory estimate"):].splitlines()
    assert table[0] == "training memory estimate: fp32, batch 3 x 24 tokens, AdamW, fused attention"
    assert table[1].split() == ["method", "base", "weights", "gradients", "optimizer", "activations", "total", "fits", "2.0", "MB"]
    assert table[3].split()[:2] == ["lora", "fp32"]
    assert table[3].split()[-1] == "no"  # 2,274,464 bytes
    assert table[4].split()[:2] == ["lora", "4-bit"]
    assert table[4].split()[-1] == "yes"  # 1,974,773 bytes


def test_cli_json_has_memory(tiny_llama, capsys):
    argv = ["params", "--model", str(tiny_llama), "--method", "full", "--memory", "--dtype", "bfloat16", "--batch-size", "3", "--seq-len", "24", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    memory = report["memory"]
    assert (memory["dtype"], memory["batch_size"], memory["seq_len"], memory["device_memory_bytes"]) == ("bf16", 3, 24, None)
    assert memory["estimates"][0]["activations"] == 1_435_680
    assert set(memory["estimates"][0]) == {"base", "weights", "gradients", "optimizer", "activations", "total", "fits"}


# ---------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    "text, expected",
    [("24GB", 24 * 2**30), ("80GiB", 80 * 2**30), ("16384MB", 16 * 2**30), ("1.5g", int(1.5 * 2**30)), ("24", 24 * 2**30), ("512 MiB", 512 * 2**20), ("1TB", 2**40)],
)
def test_parse_memory_size(text, expected):
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1GB", "0GB", "24 GBs", ""])
def test_parse_memory_size_rejects(text):
    with pytest.raises(PeftlabError, match="--device-memory"):
        parse_memory_size(text)


@pytest.mark.parametrize("text, expected", [("fp32", "fp32"), ("float32", "fp32"), ("BF16", "bf16"), ("bfloat16", "bf16"), ("half", "fp16"), ("float16", "fp16")])
def test_parse_dtype_aliases(text, expected):
    assert parse_dtype(text) == expected


def test_setup_rejects_unknown_attention():
    with pytest.raises(PeftlabError, match="unknown attention kind 'flash'; valid kinds are fused, materialized"):
        MemorySetup(attention="flash")


# ---------------------------------------------------------------------------
# Activations against what autograd keeps, on real tiny models (CPU)


def _llama():
    return AutoModelForCausalLM.from_config(LlamaConfig(**{k: v for k, v in TINY_LLAMA.items() if k not in ("architectures", "model_type")}))


def _bert():
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=160, max_position_embeddings=64)
    return AutoModelForSequenceClassification.from_config(config)


def _gpt2(activation="gelu_new"):
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64, activation_function=activation, bos_token_id=0, eos_token_id=0)
    return AutoModelForCausalLM.from_config(config)


def _t5():
    config = T5Config(d_model=64, d_ff=160, num_layers=2, num_heads=4, vocab_size=1000, d_kv=16, feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0)
    return AutoModelForSeq2SeqLM.from_config(config)


# name: (build, task, LoRA targets, head, attention kind on the CPU, allowed relative error full / lora).
# BERT, GPT-2 and T5 have attention dropout, which PyTorch's SDPA runs as math attention on the CPU.
AUTOGRAD_CASES = {
    "llama": (_llama, "causal-lm", ["q_proj", "v_proj"], [], "fused", 0.01, 0.05),
    "bert": (_bert, "seq-cls", ["query", "value"], ["classifier"], "materialized", 0.01, 0.08),
    "gpt2 gelu_new": (_gpt2, "causal-lm", ["c_attn"], [], "materialized", 0.01, 0.05),
    "gpt2 gelu_fast": (lambda: _gpt2("gelu_fast"), "causal-lm", ["c_attn"], [], "materialized", 0.01, 0.05),
    "gpt2 quick_gelu": (lambda: _gpt2("quick_gelu"), "causal-lm", ["c_attn"], [], "materialized", 0.01, 0.05),
    # T5's MLP dropout sits on the MLP width, counted as hidden width: a few percent low.
    "t5": (_t5, "seq2seq-lm", ["q", "v"], [], "materialized", 0.06, 0.05),
}


def _saved_estimate(model, task, head, setup) -> int:
    """The estimate's activations without the temporaries (logits, gradients) that autograd does not keep."""
    from peftlab.estimate import active_blocks, layer_terms, output_terms, resolve_attention

    profile = profile_model(model, task, head)
    attention = resolve_attention(profile, setup)
    per_token = sum(
        term.total for block, active in zip(profile.blocks, active_blocks(profile)) if active for term in layer_terms(profile, block, setup, attention) if term.saved
    )
    per_token += sum(term.total for term in output_terms(profile, setup) if term.saved)
    return int(per_token * setup.tokens)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("name", list(AUTOGRAD_CASES))
def test_activations_match_autograd(name, method, dtype):
    build, task, targets, head, attention, full_tolerance, lora_tolerance = AUTOGRAD_CASES[name]
    torch.manual_seed(0)
    model = build().to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, modules_to_save=head or None), autocast_adapter_dtype=False)
    model.train()
    ids = torch.randint(5, 1000, (B, S), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs["labels"] = torch.zeros(B, dtype=torch.long) if task == "seq-cls" else ids

    measured = saved_tensor_bytes(model, inputs)
    estimated = _saved_estimate(model, task, head, MemorySetup(dtype=dtype, batch_size=B, seq_len=S, attention=attention))
    tolerance = full_tolerance if method == "full" else lora_tolerance
    assert estimated == pytest.approx(measured, rel=tolerance), f"estimate {estimated}, autograd keeps {measured}"


def test_activation_estimate_matches_tiny_llama_exactly():
    """Every tensor autograd keeps in a Llama step is in the formula (fp32, full fine-tuning)."""
    torch.manual_seed(0)
    model = _llama().train()
    ids = torch.randint(5, 1000, (B, S), generator=torch.Generator().manual_seed(0))
    measured = saved_tensor_bytes(model, {"input_ids": ids, "labels": ids})
    saved = _saved_estimate(model, "causal-lm", [], MemorySetup(batch_size=B, seq_len=S))
    # The only tensors not in the formula: token ids and labels (int64), the rotary cos and sin
    # tables, and one fp32 scalar of the loss.
    assert measured - saved == TOKENS * 8 * 2 + 2 * S * 16 * 4 + 4


def test_activation_bytes_scale_with_batch_and_sequence(tiny_llama):
    from peftlab.estimate import profile_model as profile
    from peftlab.meta import build_meta_model, weight_free_source

    model = build_meta_model(weight_free_source(str(tiny_llama)), "causal-lm", []).model
    one = activation_bytes(profile(model, "causal-lm"), MemorySetup(batch_size=1, seq_len=16))["total_bytes"]
    eight = activation_bytes(profile(model, "causal-lm"), MemorySetup(batch_size=8, seq_len=16))["total_bytes"]
    assert eight == 8 * one
    assert estimate_memory(profile(model, "causal-lm"), MemorySetup(batch_size=1, seq_len=16))["activations"]["total_bytes"] == one
