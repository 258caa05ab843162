"""The pipeline behind train, compare, params, eval and predict: load, apply a method, train, evaluate, save."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers

from peftlab import __version__, distributed
from peftlab.artifacts import folder_bytes, load_artifact, save_artifact
from peftlab.config import RunConfig
from peftlab.config_file import write_config_file
from peftlab.data import TextClassificationData, load_text_classification
from peftlab.environment import environment
from peftlab.errors import PeftlabError, one_of
from peftlab.estimate import MemorySetup, estimate_memory, profile_model
from peftlab.methods import Method, MethodContext, expand_all, get_method, method_options
from peftlab.meta import count_params_meta, weight_free_source
from peftlab.models import ModelSource, load_classifier, load_config, load_tokenizer, resolve_model
from peftlab.params import ParamReport, base_param_ids, count_unique, param_report
from peftlab.precision import check_quantize, prepare_quantized
from peftlab.report import write_report
from peftlab.training import PeakMemory, Timer, evaluate, make_trainer, release_memory, set_tensorboard_dir, tokenize_splits, training_arguments

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
TENSORBOARD_DIR = "tensorboard"  # event files of --report-to tensorboard, one folder per method
TASK = "seq-cls"


@dataclass
class Prepared:
    """Everything a run needs that is the same for every method: built once per compare."""

    config: RunConfig
    source: ModelSource
    model_type: str
    tokenizer: object
    data: TextClassificationData
    tokenized: object
    truncated: dict[str, int]
    methods: list[tuple[Method, dict]]
    head_modules: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # method name -> why it cannot apply (only methods from --methods all)


def resolve_methods(config: RunConfig) -> list[tuple[Method, dict]]:
    """Look up each method and split --method-arg between the methods that accept each key."""
    if len(set(config.methods)) != len(config.methods):
        raise PeftlabError(f"--methods lists a method twice: {','.join(config.methods)}")
    names, _ = expand_all(config.methods)
    methods = [get_method(name) for name in names]
    known = {option.name for method in methods for option in method.options}
    unknown = sorted(set(config.method_args) - known)
    if unknown:
        raise PeftlabError(f"--method-arg {unknown[0]!r} is not an option of {', '.join(config.methods)}; valid keys are {one_of(known) or 'none'}")
    resolved = []
    for method in methods:
        own = {key: value for key, value in config.method_args.items() if key in {o.name for o in method.options}}
        resolved.append((method, method_options(method, own)))
    return resolved


def prepare(config: RunConfig) -> Prepared:
    """Check the whole request and load model, tokenizer and data, before anything is written."""
    methods = resolve_methods(config)
    check_quantize(config)
    source = resolve_model(config.model)
    model_config = load_config(source)
    tokenizer = load_tokenizer(source)
    log.info("model %s: %s (%s)", source.name, model_config.model_type, source.path)

    data = load_text_classification(
        config.data, config.text_column, config.label_column, config.label_names, config.validation_fraction, config.seed
    )
    sizes = ", ".join(f"{name} {size}" for name, size in data.sizes.items())
    log.info("data %s: %s; %d labels (%s)", data.source, sizes, len(data.label_names), one_of(data.label_names))
    for note in data.notes:
        log.info("data: %s", note)

    tokenized, truncated = tokenize_splits(data.splits, tokenizer, config.max_length)
    for split, count in truncated.items():
        if count:
            log.warning("%d of %d %s texts are longer than --max-length %d tokens and were truncated", count, data.sizes[split], split, config.max_length)

    # Apply each method's fit check to the real model once, so a wrong target
    # module fails here rather than after other methods have trained. A method
    # that only --methods all brought in is skipped with its reason instead.
    _, from_all = expand_all(config.methods)
    skipped = {}
    loaded = load_classifier(source, data.label_names, config.seed)
    for method, options in methods:
        try:
            method.check_applies(loaded.model, MethodContext(config, model_config.model_type, TASK, loaded.head_modules, options))
        except PeftlabError as error:
            if method.name not in from_all:
                raise
            skipped[method.name] = str(error)
            log.info("%s: skipped: %s", method.name, error)
    head_modules = loaded.head_modules
    del loaded
    return Prepared(config, source, model_config.model_type, tokenizer, data, tokenized, truncated, methods, head_modules, skipped)


# ---------------------------------------------------------------------------
# Output folder and results file


def create_out_dir(out: str | None, command: str) -> Path:
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path("runs") / f"{stamp}-{command}"
        suffix = 1
        while folder.exists():
            suffix += 1
            folder = Path("runs") / f"{stamp}-{command}-{suffix}"
    else:
        folder = Path(out).expanduser()
        if (folder / RESULTS_FILE).exists():
            raise PeftlabError(f"--out {out!r} already holds a run ({RESULTS_FILE}); choose a new folder")
        if folder.exists() and not folder.is_dir():
            raise PeftlabError(f"--out {out!r} is a file; pass a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write to a temporary name and rename, so a crash never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def new_results(prepared: Prepared, command: str) -> dict:
    data = prepared.data.describe()
    data["truncated"] = prepared.truncated
    return {
        "peftlab_version": __version__,
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": prepared.source.name, "path": prepared.source.path, "model_type": prepared.model_type, "task": TASK},
        "data": data,
        "config": prepared.config.to_dict(),
        "environment": environment(),
        "runs": [],
    }


# ---------------------------------------------------------------------------
# One method


def run_method(prepared: Prepared, method: Method, options: dict, out: Path, quiet: bool = False) -> dict:
    """Apply one method to a fresh copy of the base model, train, evaluate before and after, and save."""
    config = prepared.config
    release_memory()
    loaded = load_classifier(prepared.source, prepared.data.label_names, config.seed, config.quantize)
    model = prepare_quantized(loaded.model, config.quantize)
    base_params = count_unique(model)
    base_ids = base_param_ids(model)
    ctx = MethodContext(config, prepared.model_type, TASK, loaded.head_modules, options)
    transformers.set_seed(config.seed)
    model = method.apply(model, ctx)
    report = param_report(model, base_params, base_ids)
    log.info(
        "%s: %s of %s parameters train (%.3f%%), %s added",
        method.name, f"{report.trainable_params:,}", f"{report.base_params:,}", report.trainable_pct, f"{report.added_params:,}",
    )

    lr = config.lr if config.lr is not None else method.default_lr
    scratch = out / f".trainer-{method.name}"
    args = training_arguments(config, lr, scratch, quiet)
    trainer = make_trainer(model, prepared.tokenizer, args, prepared.tokenized["train"])
    for make_callback in method.callbacks:
        trainer.add_callback(make_callback(ctx))
    set_tensorboard_dir(trainer, out / TENSORBOARD_DIR / method.name)
    eval_split = prepared.data.eval_split
    before = evaluate(trainer, prepared.tokenized[eval_split])

    with PeakMemory() as memory, Timer() as timer:
        output = trainer.train()
    after = evaluate(trainer, prepared.tokenized[eval_split])
    validation = after if eval_split == "validation" else evaluate(trainer, prepared.tokenized["validation"])
    log.info(
        "%s: %s accuracy %.4f -> %.4f in %.1f s, peak memory %.0f MB",
        method.name, eval_split, before["accuracy"], after["accuracy"], timer.seconds, memory.peak_mb,
    )

    meta = {
        "task": TASK,
        "method": method.name,
        "adapter": method.saves_adapter,
        "model": prepared.source.name,
        "base_model_path": prepared.source.path,
        "label_names": prepared.data.label_names,
        "data": prepared.data.source,
        "text_column": prepared.data.text_column,
        "label_column": prepared.data.label_column,
        "max_length": config.max_length,
        "eval_batch_size": config.resolved_eval_batch_size,
        "validation_fraction": config.validation_fraction,
        "seed": config.seed,
        "params": report.to_dict() | {"modules": None},
        "metrics": {"before": before, "after": after},
        "eval_split": eval_split,
        "options": options,
        "lr": lr,
        "train_steps": output.global_step,
    }
    artifact = out / method.name
    # Rank 0 saves the weights it holds: DDP and DeepSpeed ZeRO-1/2 keep the whole model on every
    # rank, and distributed.check_sharding rejects FSDP and ZeRO-3, which would leave it a shard.
    artifact_bytes = None
    if distributed.is_main_process():
        save_weights = (lambda folder: method.save(model, ctx, folder)) if method.save is not None else None
        artifact_bytes = save_artifact(model, prepared.tokenizer, artifact, meta, method.saves_adapter, save_weights)
    distributed.barrier()
    if distributed.is_main_process():
        shutil.rmtree(scratch, ignore_errors=True)

    return {
        "method": method.name,
        "status": "ok",
        "params": _params_dict(report),
        "modules": [vars(m) for m in report.modules],
        "options": options,
        "lr": lr,
        "metrics": {"before": before, "after": after, "validation_after": validation},
        "train_seconds": round(timer.seconds, 2),
        "train_steps": output.global_step,
        "peak_memory_mb": round(memory.peak_mb, 1),
        "artifact_bytes": artifact_bytes,
        "path": artifact.name,
        "loss_curve": [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e],
    }


def _params_dict(report: ParamReport) -> dict:
    return {
        "base_params": report.base_params,
        "trainable_params": report.trainable_params,
        "added_params": report.added_params,
        "trainable_pct": report.trainable_pct,
    }


# ---------------------------------------------------------------------------
# Public API


def compare(config: RunConfig, command: str = "compare", quiet: bool = False) -> dict:
    """Run every method of ``config`` on the same data, seed and budget; return and save the results.

    Under torchrun or accelerate launch every rank trains and returns the same
    results, and rank 0 alone writes the run folder.
    """
    distributed.check_sharding()
    distributed.init_process_group()
    distributed.set_thread_count()
    prepared = prepare(config)
    main = distributed.is_main_process()
    out = distributed.broadcast_from_main(create_out_dir(config.out, command) if main else None)
    log.info("writing to %s", out)
    if main:
        write_config_file(config, out)
    results = new_results(prepared, command)
    results["out"] = str(out)
    env = results["environment"]
    processes = f", {env['processes']} processes" if env["processes"] > 1 else ""
    log.info("device %s, %d torch threads on %d CPUs%s", env["device"], env["torch_threads"], env["cpu_count"], processes)
    for method, options in prepared.methods:
        if method.name in prepared.skipped:
            run = {"method": method.name, "status": "skipped", "reason": prepared.skipped[method.name]}
        else:
            run = run_method(prepared, method, options, out, quiet=quiet)
        results["runs"].append(run)
        if main:
            write_json_atomic(out / RESULTS_FILE, results)
            write_report(results, out)
    return results


def train(config: RunConfig, quiet: bool = False) -> dict:
    """Run one method; the results have a single entry in ``runs``."""
    if len(config.methods) != 1:
        raise PeftlabError(f"train runs one method, got {len(config.methods)}: {','.join(config.methods)}; use compare for several")
    return compare(config, command="train", quiet=quiet)


def count_params(
    model: str = "minilm",
    methods: list[str] = ("lora",),
    num_labels: int = 2,
    config: RunConfig | None = None,
    task: str | None = None,
    config_only: bool = False,
    memory: MemorySetup | None = None,
) -> list[dict]:
    """Report parameters of ``model`` before and after each method, without training.

    A config.json, a folder without weights, or any model with ``config_only``
    is built from its config on the meta device (peftlab.meta), for ``task`` or
    the task its config names. ``memory`` adds a training-memory estimate.
    """
    config = config or RunConfig(model=model, methods=list(methods))
    resolved = resolve_methods(config)
    label_names = config.label_names or [str(i) for i in range(num_labels)]
    weight_free = weight_free_source(config.model, config_only)
    if weight_free is not None:
        return count_params_meta(weight_free, resolved, config, task, label_names, memory)
    if task not in (None, TASK):
        raise PeftlabError(f"a loaded model is counted for --task {TASK} only, got {task!r}; add --config-only to count it from its config")
    source = resolve_model(config.model)
    model_type = load_config(source).model_type
    reports = []
    for method, options in resolved:
        loaded = load_classifier(source, label_names, config.seed)
        base_params = count_unique(loaded.model)
        base_ids = base_param_ids(loaded.model)
        ctx = MethodContext(config, model_type, TASK, loaded.head_modules, options)
        method.check_applies(loaded.model, ctx)
        adapted = method.apply(loaded.model, ctx)
        report = param_report(adapted, base_params, base_ids)
        entry = {"method": method.name, **_params_dict(report), "modules": [vars(m) for m in report.modules]}
        if memory is not None:
            entry["memory"] = estimate_memory(profile_model(adapted, TASK, loaded.head_modules), memory)
        reports.append(entry)
    return reports


def evaluate_artifact(folder: str, data: str | None = None, quiet: bool = True) -> dict:
    """Reload a saved artifact and evaluate it on the test split of ``data`` (default: the data it was trained on)."""
    artifact = load_artifact(folder)
    meta = artifact.meta
    source = data if data is not None else (None if meta["data"] == "demo" else meta["data"])
    loaded_data = load_text_classification(
        source, None if data is not None else meta["text_column"], None if data is not None else meta["label_column"],
        meta["label_names"], meta["validation_fraction"], meta["seed"],
    )
    if loaded_data.label_names != meta["label_names"]:
        raise PeftlabError(f"data {loaded_data.source!r} has labels {one_of(loaded_data.label_names)} but the artifact was trained on {one_of(meta['label_names'])}")
    tokenized, _ = tokenize_splits(loaded_data.splits, artifact.tokenizer, meta["max_length"])
    config = RunConfig(batch_size=max(1, meta["eval_batch_size"] // 2), eval_batch_size=meta["eval_batch_size"], seed=meta["seed"])
    scratch = Path(artifact.folder) / ".eval-scratch"
    args = training_arguments(config, 1e-5, scratch, quiet)
    trainer = make_trainer(artifact.model, artifact.tokenizer, args)
    metrics = evaluate(trainer, tokenized[loaded_data.eval_split])
    shutil.rmtree(scratch, ignore_errors=True)
    return {"split": loaded_data.eval_split, "data": loaded_data.source, **metrics}


def predict(folder: str, texts: list[str]) -> list[dict]:
    """Return the most likely label and its probability for each text."""
    if not texts:
        raise PeftlabError("no text given: pass one or more texts to classify")
    artifact = load_artifact(folder)
    names = artifact.meta["label_names"]
    encoded = artifact.tokenizer(texts, truncation=True, max_length=artifact.meta["max_length"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = artifact.model(**encoded).logits
    probs = torch.softmax(logits, dim=-1)
    best = probs.argmax(dim=-1)
    return [
        {"text": text, "label": names[int(i)], "probability": round(float(p[i]), 4), "probabilities": {n: round(float(v), 4) for n, v in zip(names, p)}}
        for text, i, p in zip(texts, best, probs)
    ]
