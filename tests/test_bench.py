"""The benchmark: padding accounting, and one short run on tiny models that checks the shape and arithmetic of its results."""

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from peftlab.bench import HANDWRITTEN, TARGETS, BenchSettings, bench_table, causal_model, causal_rows, minilm_model, padding_stats, run_bench


def test_padding_stats_equal_lengths():
    stats = padding_stats([7] * 40, batch_size=8)
    assert stats == {
        "texts": 40,
        "batch_size": 8,
        "real_tokens": 280,
        "padded_tokens_random_batches": 280,
        "padded_tokens_length_grouped": 280,
        "padding_saved_pct": 0.0,
        "median_batch_length": 7,
    }


def test_padding_stats_grouping_saves_padding():
    lengths = [2, 30] * 200
    stats = padding_stats(lengths, batch_size=8)
    assert stats["real_tokens"] == 6400
    assert stats["padded_tokens_random_batches"] == 12000  # with seed 42, each of the 50 random batches contains a 30
    assert stats["padded_tokens_length_grouped"] < 12000
    grouped = stats["padded_tokens_length_grouped"]
    assert stats["padding_saved_pct"] == round(100 * (12000 - grouped) / 12000, 1)


def test_causal_rows_cut_text_into_blocks():
    class Tokenizer:
        def __call__(self, text, add_special_tokens):
            return {"input_ids": list(range(10))}

    rows = causal_rows("ignored", Tokenizer(), seq_len=4, count=2)
    assert rows["input_ids"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert rows["labels"] == rows["input_ids"]
    assert rows["attention_mask"] == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert rows["length"] == [4, 4]


@pytest.fixture(scope="module")
def tiny_bench(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)

    def tiny_llama():
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
        )
        return LlamaForCausalLM(config), tokenizer

    models = [
        minilm_model(None, batch_size=4, seq_len=None, rows_needed=24, model=str(tiny_bert)),
        causal_model(None, batch_size=2, seq_len=16, rows_needed=12, name="tiny-llama", loader=tiny_llama),
    ]
    return run_bench(models, BenchSettings(rounds=2, steps=1, memory_steps=1))


def test_bench_variants_and_step_counts(tiny_bench):
    bert, llama = tiny_bench["models"].values()
    assert list(bert["training"]) == ["full", "head", "lora", "ia3", "prompt-tuning", HANDWRITTEN]
    assert list(llama["training"]) == ["full", "lora", "ia3", "prompt-tuning", HANDWRITTEN]
    for model in (bert, llama):
        assert {m["timed_steps"] for m in model["training"].values()} == {2}  # 2 rounds of 1 timed step
        assert list(model["inference"]) == ["base", "adapter", "merged"]
        assert {m["timed_batches"] for m in model["inference"].values()} == {2}
        assert model["training"][HANDWRITTEN]["peak_memory_mb"] is None
        assert model["merged_vs_adapter_max_abs_logit_difference"] < 1e-4


def test_bench_seq_len_from_grouped_batches(tiny_bench):
    bert = next(iter(tiny_bench["models"].values()))
    assert bert["seq_len"] == bert["padding"]["median_batch_length"]
    assert bert["training"]["full"]["tokens_per_second"] == pytest.approx(4 * bert["seq_len"] / bert["training"]["full"]["step_seconds"], rel=1e-2)


def test_bench_headline_ratios(tiny_bench):
    models = list(tiny_bench["models"].values())
    for key in ("lora_step_vs_handwritten", "lora_step_vs_full", "merged_inference_vs_base"):
        assert tiny_bench[key] == max(m["ratios"][key] for m in models)
    assert tiny_bench["lora_peak_memory_vs_full"] == models[1]["ratios"]["lora_peak_memory_vs_full"]  # the causal LM's
    for key, target in TARGETS.items():
        assert tiny_bench[f"{key}_met"] == (tiny_bench[key] <= target)
    llama = models[1]
    assert llama["ratios"]["lora_step_vs_full"] == pytest.approx(llama["training"]["lora"]["step_seconds"] / llama["training"]["full"]["step_seconds"], rel=1e-2)


def test_bench_table_lists_every_target(tiny_bench):
    table = bench_table(tiny_bench)
    for key in TARGETS:
        assert key in table
    assert "tiny-llama training (2 x 16 tokens per step):" in table
