"""Benchmark: what a training step and an inference batch cost with each method, on real models.

    peftlab bench --quick --json --data path/to/sst2 --text path/to/input.txt

It uses two models: MiniLM on classification batches and SmolLM2-135M on text.
For each, it times peftlab's own training path (the Trainer as
runner.run_method builds it) for full, head, lora, ia3 and prompt-tuning. It
times the same LoRA adapter in a minimal hand-written torch + peft loop, and
inference with the base model, the LoRA adapter and the merged adapter.

Fairness on a shared, noisy machine:
- Every batch of a model has the same shape (texts padded or cut to one
  length), so a step's cost depends on the method alone, not on which texts
  it drew. Tokens per second count every position of the batch.
- Variants run interleaved: round 1 runs a few steps of every variant, then
  round 2 does the same, and so on, so a slow minute hurts all variants alike.
  Ratios are ratios of medians over all timed steps.
- A step's time runs from the end of the previous step to the end of this one,
  so it includes fetching and collating the batch and the optimizer step. The
  first step of each round (optimizer state allocation) is not timed.
- Peak memory is measured one variant at a time, from before the model copy is
  made to the end of its last step: weights, gradients, optimizer states and
  activations (on the CPU the process's resident memory, peftlab.training.PeakMemory).
"""

from __future__ import annotations

import copy
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import DataCollatorWithPadding, TrainerCallback

from peftlab.config import RunConfig
from peftlab.data import load_text_classification
from peftlab.environment import environment
from peftlab.errors import PeftlabError
from peftlab.methods import MethodContext, get_method
from peftlab.methods.common import PEFT_TASK_TYPES
from peftlab.methods.lora import lora_targets
from peftlab.models import load_classifier, load_tokenizer, resolve_model
from peftlab.training import PeakMemory, make_trainer, release_memory, training_arguments

log = logging.getLogger(__name__)

HANDWRITTEN = "lora-handwritten"
# Ratio targets: peftlab's LoRA step against the hand-written loop and a full step,
# LoRA's peak memory against full fine-tuning, and merged-adapter inference against the base model.
TARGETS = {
    "lora_step_vs_handwritten": 1.05,
    "lora_step_vs_full": 0.65,
    "lora_peak_memory_vs_full": 0.6,
    "merged_inference_vs_base": 1.05,
}


@dataclass(frozen=True)
class BenchSettings:
    """How much a benchmark run measures."""

    rounds: int  # interleaved repetitions of every variant
    steps: int  # timed training steps (or inference batches) per variant and round
    memory_steps: int = 2  # training steps per variant in the peak-memory phase


QUICK = BenchSettings(rounds=3, steps=2)
STANDARD = BenchSettings(rounds=8, steps=3)


@dataclass
class BenchModel:
    """A model to benchmark: its loaded base, its tokenizer, and fixed-shape batches of real text."""

    name: str
    task: str  # "seq-cls" or "causal-lm"
    model_type: str
    base: nn.Module  # copied for every variant, never trained itself
    tokenizer: object
    head_modules: list[str]
    train_rows: Dataset  # input_ids, attention_mask, labels, length; every row has the same length
    eval_batches: list[dict]
    batch_size: int
    seq_len: int
    methods: list[str]
    notes: list[str] = field(default_factory=list)
    padding: dict | None = None  # padding_stats of the train split, where the data has texts of varying length


# ---------------------------------------------------------------------------
# Models and data


def classification_rows(texts: list[str], labels: list[int], tokenizer, seq_len: int) -> dict:
    """Tokenize ``texts`` to exactly ``seq_len`` tokens each (cut or padded)."""
    encoded = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length")
    return {**encoded, "labels": labels, "length": [seq_len] * len(texts)}


def causal_rows(text: str, tokenizer, seq_len: int, count: int) -> dict:
    """Cut the tokens of ``text`` into ``count`` blocks of ``seq_len`` tokens; each block is its own label."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < seq_len * count:
        raise PeftlabError(f"--text has {len(ids)} tokens, fewer than the {seq_len * count} the benchmark needs ({count} blocks of {seq_len})")
    blocks = [ids[i * seq_len : (i + 1) * seq_len] for i in range(count)]
    return {"input_ids": blocks, "attention_mask": [[1] * seq_len for _ in blocks], "labels": [list(b) for b in blocks], "length": [seq_len] * count}


def batches_of(rows: dict, batch_size: int, count: int) -> list[dict]:
    """Return ``count`` batches of ``batch_size`` rows as tensors (for inference)."""
    keys = ("input_ids", "attention_mask", "labels")
    return [{key: torch.tensor(rows[key][i * batch_size : (i + 1) * batch_size]) for key in keys if key in rows} for i in range(count)]


def padding_stats(lengths: list[int], batch_size: int, seed: int = 42) -> dict:
    """Compare the padded tokens of random batches with those of the Trainer's length-grouped batches.

    Both pad each batch to its longest text, as DataCollatorWithPadding does.
    ``median_batch_length`` is the median padded length of the grouped batches.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    random_order = torch.randperm(len(lengths), generator=generator).tolist()
    grouped_order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))

    def batch_lengths(order: list[int]) -> list[int]:
        return [max(lengths[i] for i in order[start : start + batch_size]) for start in range(0, len(order), batch_size)]

    def padded(order: list[int]) -> int:
        return sum(max(lengths[i] for i in order[start : start + batch_size]) * len(order[start : start + batch_size]) for start in range(0, len(order), batch_size))

    real = sum(lengths)
    random_padded, grouped_padded = padded(random_order), padded(grouped_order)
    return {
        "texts": len(lengths),
        "batch_size": batch_size,
        "real_tokens": real,
        "padded_tokens_random_batches": random_padded,
        "padded_tokens_length_grouped": grouped_padded,
        "padding_saved_pct": round(100 * (random_padded - grouped_padded) / random_padded, 1),
        "median_batch_length": int(statistics.median(batch_lengths(grouped_order))),
    }


def minilm_model(data: str | None, batch_size: int, seq_len: int | None, rows_needed: int, model: str = "minilm", max_length: int = 128) -> BenchModel:
    """MiniLM (or ``model``) with a two-class head, on batches of ``data`` (default: the built-in demo data).

    ``seq_len`` None takes the median padded length of the Trainer's
    length-grouped batches of the whole train split, so a step costs what a
    typical step of ``peftlab train`` on this data costs.
    """
    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    loaded_data = load_text_classification(data)
    lengths = [len(ids) for ids in tokenizer(list(loaded_data.splits["train"]["text"]), truncation=True, max_length=max_length)["input_ids"]]
    padding = padding_stats(lengths, batch_size)
    seq_len = seq_len or padding["median_batch_length"]
    train = loaded_data.splits["train"].shuffle(seed=0)
    repeats = rows_needed // len(train) + 1  # a small data set is repeated to fill the batches
    texts = (list(train["text"]) * repeats)[:rows_needed]
    labels = (list(train["label"]) * repeats)[:rows_needed]
    rows = classification_rows(texts, labels, tokenizer, seq_len)
    loaded = load_classifier(source, loaded_data.label_names, seed=42)
    cut = sum(1 for mask in rows["attention_mask"] if mask[-1] == 1)
    notes = [f"{loaded_data.source}: {rows_needed} train texts padded or cut to {seq_len} tokens ({cut} cut)"]
    bench = BenchModel(
        name=model, task="seq-cls", model_type=loaded.model.config.model_type, base=loaded.model, tokenizer=tokenizer,
        head_modules=loaded.head_modules, train_rows=Dataset.from_dict(rows), eval_batches=batches_of(rows, 2 * batch_size, rows_needed // (2 * batch_size)),
        batch_size=batch_size, seq_len=seq_len, methods=["full", "head", "lora", "ia3", "prompt-tuning"], notes=notes,
    )
    bench.padding = padding
    return bench


def load_smollm2() -> tuple[nn.Module, object]:
    """Load SmolLM2-135M-Instruct (the smollm2 alias) and its tokenizer, as peftlab's own runs load it."""
    from peftlab.models import load_causal_lm, load_tokenizer, prepare_tokenizer_for_lm, resolve_model

    source = resolve_model("smollm2")
    tokenizer = load_tokenizer(source)
    prepare_tokenizer_for_lm(tokenizer)
    return load_causal_lm(source, seed=0).model, tokenizer


def causal_model(
    text_file: str | None, batch_size: int, seq_len: int, rows_needed: int, name: str = "smollm2", loader: Callable[[], tuple[nn.Module, object]] = load_smollm2
) -> BenchModel:
    """Load a causal LM with ``loader`` and cut ``text_file`` into its batches (default: the demo data's texts, repeated as needed)."""
    model, tokenizer = loader()
    if text_file is not None:
        path = Path(text_file).expanduser()
        if not path.is_file():
            raise PeftlabError(f"--text file not found: {text_file!r}; pass a plain text file")
        # Enough characters for the blocks at about 3 characters per token, read without loading a huge file.
        with path.open(encoding="utf-8") as handle:
            text = handle.read(seq_len * rows_needed * 8)
        source = str(path)
    else:
        demo = list(load_text_classification(None).splits["train"]["text"])
        text = " ".join(demo * (1 + seq_len * rows_needed // 2000))
        source = "demo"
    rows = causal_rows(text, tokenizer, seq_len, rows_needed)
    notes = [f"{source}: {rows_needed} blocks of {seq_len} tokens"]
    return BenchModel(
        name=name, task="causal-lm", model_type=model.config.model_type, base=model, tokenizer=tokenizer, head_modules=[],
        train_rows=Dataset.from_dict(rows), eval_batches=batches_of(rows, 2 * batch_size, rows_needed // (2 * batch_size)),
        batch_size=batch_size, seq_len=seq_len, methods=["full", "lora", "ia3", "prompt-tuning"], notes=notes,
    )


# ---------------------------------------------------------------------------
# Training variants: peftlab's path and the hand-written loop


class _StepClock(TrainerCallback):
    """Record the time at the end of every optimizer step."""

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def _run_config(bench: BenchModel, method: str, steps: int) -> RunConfig:
    return RunConfig(model=bench.name, methods=[method], max_steps=steps, batch_size=bench.batch_size, seed=42, report_to="none")


class PeftlabVariant:
    """One method trained the way runner.run_method trains it: method.apply, training_arguments, make_trainer."""

    def __init__(self, bench: BenchModel, method_name: str, scratch: Path):
        self.bench = bench
        self.name = method_name
        self.method = get_method(method_name)
        self.scratch = scratch / method_name
        config = _run_config(bench, method_name, 1)
        self.ctx = MethodContext(config, bench.model_type, bench.task, bench.head_modules, {o.name: o.default for o in self.method.options})
        self.model = self.method.apply(copy.deepcopy(bench.base), self.ctx)
        self.lr = self.method.default_lr

    def train_steps(self, steps: int) -> list[float]:
        """Train ``steps`` steps in a new Trainer; return the time of every step after the first."""
        config = _run_config(self.bench, self.name, steps)
        args = training_arguments(config, self.lr, self.scratch, quiet=True)
        trainer = make_trainer(self.model, self.bench.tokenizer, args, self.bench.train_rows)
        clock = _StepClock()
        trainer.add_callback(clock)
        trainer.train()
        return [b - a for a, b in zip(clock.ends, clock.ends[1:])]


class HandwrittenLora:
    """The LoRA step as a notebook user writes it: peft's get_peft_model, AdamW, and a plain loop over a DataLoader."""

    name = HANDWRITTEN

    def __init__(self, bench: BenchModel, lr: float = 3e-3):
        config = _run_config(bench, "lora", 1)
        ctx = MethodContext(config, bench.model_type, bench.task, bench.head_modules)
        lora = LoraConfig(
            task_type=PEFT_TASK_TYPES[bench.task], r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=lora_targets(ctx), modules_to_save=bench.head_modules or None,
        )
        self.model = get_peft_model(copy.deepcopy(bench.base), lora)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr)
        rows = bench.train_rows.remove_columns("length")
        self.loader = torch.utils.data.DataLoader(rows, batch_size=bench.batch_size, shuffle=True, collate_fn=DataCollatorWithPadding(bench.tokenizer))

    def train_steps(self, steps: int) -> list[float]:
        self.model.train()
        ends = []
        batches = iter(self.loader)
        for _ in range(steps):
            batch = next(batches, None)
            if batch is None:
                batches = iter(self.loader)
                batch = next(batches)
            loss = self.model(**batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            ends.append(time.perf_counter())
        return [b - a for a, b in zip(ends, ends[1:])]


# ---------------------------------------------------------------------------
# Phases


def measure_training(bench: BenchModel, settings: BenchSettings, scratch: Path) -> dict[str, list[float]]:
    """Time training steps of every method and of the hand-written loop, interleaved over rounds."""
    variants = [PeftlabVariant(bench, name, scratch) for name in bench.methods] + [HandwrittenLora(bench)]
    times: dict[str, list[float]] = {variant.name: [] for variant in variants}
    for round_index in range(settings.rounds):
        for variant in variants:
            times[variant.name] += variant.train_steps(settings.steps + 1)
        log.info("%s: training round %d of %d done", bench.name, round_index + 1, settings.rounds)
    return times


def measure_memory(bench: BenchModel, settings: BenchSettings, scratch: Path) -> dict[str, float]:
    """Return each method's peak memory in MB over a model copy, the method, and a few training steps, one at a time."""
    peaks = {}
    for name in bench.methods:
        with PeakMemory() as memory:
            variant = PeftlabVariant(bench, name, scratch)
            variant.train_steps(settings.memory_steps)
        peaks[name] = round(memory.peak_mb, 1)
        del variant
        release_memory()
    return peaks


def measure_inference(bench: BenchModel, settings: BenchSettings, scratch: Path) -> tuple[dict[str, list[float]], float]:
    """Time forward passes of the base model, a trained LoRA adapter and the same adapter merged, interleaved.

    Also return the largest absolute difference between the adapter's and the
    merged model's logits on the first batch, which shows they compute the same function.
    """
    lora = PeftlabVariant(bench, "lora", scratch)
    lora.train_steps(2)  # a trained adapter, so the merged weights differ from the base
    models = {"base": bench.base, "adapter": lora.model, "merged": copy.deepcopy(lora.model).merge_and_unload()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        logits = {}
        for name, model in models.items():
            model.eval()
            logits[name] = model(**bench.eval_batches[0]).logits  # the first call also runs lazy initialisation
        merge_difference = float((logits["adapter"] - logits["merged"]).abs().max())
        for _ in range(settings.rounds):
            for name, model in models.items():
                for batch in bench.eval_batches[: settings.steps]:
                    start = time.perf_counter()
                    model(**batch)
                    times[name].append(time.perf_counter() - start)
    return times, merge_difference


# ---------------------------------------------------------------------------
# Summary


def _median(values: list[float]) -> float:
    return statistics.median(values)


def summarize_model(bench: BenchModel, step_times: dict, peaks: dict, inference_times: dict, merge_difference: float) -> dict:
    """Return the medians per variant and the ratios the targets are about, for one model."""
    tokens_per_step = bench.batch_size * bench.seq_len
    training = {
        name: {
            "step_seconds": round(_median(values), 4),
            "tokens_per_second": round(tokens_per_step / _median(values), 1),
            "timed_steps": len(values),
            "peak_memory_mb": peaks.get(name),
        }
        for name, values in step_times.items()
    }
    inference = {
        name: {"batch_seconds": round(_median(values), 4), "tokens_per_second": round(2 * tokens_per_step / _median(values), 1), "timed_batches": len(values)}
        for name, values in inference_times.items()
    }
    ratios = {
        "lora_step_vs_handwritten": _median(step_times["lora"]) / _median(step_times[HANDWRITTEN]),
        "lora_step_vs_full": _median(step_times["lora"]) / _median(step_times["full"]),
        "lora_peak_memory_vs_full": peaks["lora"] / peaks["full"],
        "merged_inference_vs_base": _median(inference_times["merged"]) / _median(inference_times["base"]),
        "adapter_inference_vs_base": _median(inference_times["adapter"]) / _median(inference_times["base"]),
    }
    return {
        "task": bench.task,
        "batch_size": bench.batch_size,
        "seq_len": bench.seq_len,
        "data": bench.notes,
        "padding": bench.padding,
        "training": training,
        "inference": inference,
        "merged_vs_adapter_max_abs_logit_difference": merge_difference,
        "ratios": {key: round(value, 3) for key, value in ratios.items()},
    }


def headline(models: dict[str, dict]) -> dict:
    """Return the target ratios: the worst model's value, except peak memory, which is taken on the causal LM where one was measured.

    The memory target is about a model whose weights dominate its memory; on
    MiniLM with short batches the activations weigh as much as the weights.
    """
    result = {}
    for key, target in TARGETS.items():
        if key == "lora_peak_memory_vs_full":
            causal = [m for m in models.values() if m["task"] == "causal-lm"]
            value = (causal or list(models.values()))[0]["ratios"][key]
        else:
            value = max(m["ratios"][key] for m in models.values())
        result[key] = value
        result[f"{key}_met"] = value <= target
    return result


def run_bench(models: list[BenchModel], settings: BenchSettings) -> dict:
    """Measure every model in ``models`` and return the results that --json prints."""
    summaries = {}
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-") as scratch:
        for bench in models:
            log.info("%s: measuring peak memory of %s", bench.name, ", ".join(bench.methods))
            peaks = measure_memory(bench, settings, Path(scratch))
            log.info("%s: timing training steps, %d rounds of %d steps", bench.name, settings.rounds, settings.steps)
            step_times = measure_training(bench, settings, Path(scratch))
            release_memory()
            log.info("%s: timing inference", bench.name)
            inference_times, merge_difference = measure_inference(bench, settings, Path(scratch))
            summaries[bench.name] = summarize_model(bench, step_times, peaks, inference_times, merge_difference)
            release_memory()
    return {
        **headline(summaries),
        "targets": TARGETS,
        "settings": {"rounds": settings.rounds, "steps": settings.steps, "memory_steps": settings.memory_steps},
        "models": summaries,
        "environment": environment(),
    }


def bench(quick: bool, data: str | None = None, text: str | None = None) -> dict:
    """Run the benchmark on MiniLM and SmolLM2 as ``peftlab bench`` does."""
    from peftlab.distributed import set_thread_count

    set_thread_count()
    settings = QUICK if quick else STANDARD
    started = time.perf_counter()
    # SmolLM2's batches are small because a step of 2 x 32 tokens already takes seconds on 2 CPU cores.
    models = [
        minilm_model(data, batch_size=32, seq_len=None, rows_needed=4 * 32 * (settings.steps + 1)),
        causal_model(text, batch_size=2, seq_len=32, rows_needed=4 * 2 * (settings.steps + 1)),
    ]
    results = run_bench(models, settings)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def bench_table(results: dict) -> str:
    """Format the medians and ratios as plain-text tables."""
    from peftlab.reporting import format_table

    lines = []
    for name, model in results["models"].items():
        rows = [
            [variant, f"{m['step_seconds']:.3f}", f"{m['tokens_per_second']:.0f}", "-" if m["peak_memory_mb"] is None else f"{m['peak_memory_mb']:.0f}"]
            for variant, m in model["training"].items()
        ]
        lines.append(f"{name} training ({model['batch_size']} x {model['seq_len']} tokens per step):")
        lines.append(format_table(["variant", "s/step", "tokens/s", "peak MB"], rows))
        rows = [[variant, f"{m['batch_seconds']:.3f}", f"{m['tokens_per_second']:.0f}"] for variant, m in model["inference"].items()]
        lines.append(f"\n{name} inference ({2 * model['batch_size']} x {model['seq_len']} tokens per batch):")
        lines.append(format_table(["model", "s/batch", "tokens/s"], rows))
        lines.append("")
    rows = [[key, f"{results[key]:.3f}", f"{target:g}", "yes" if results[f"{key}_met"] else "no"] for key, target in results["targets"].items()]
    lines.append(format_table(["ratio", "measured", "target", "met"], rows))
    return "\n".join(lines)
