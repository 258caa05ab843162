"""The pipeline behind train, compare, params, eval, predict, generate and merge: load, apply a method, train, evaluate, save.

A run is for one task: ``seq-cls`` (a classifier with a new head, scored by accuracy) or
``causal-lm`` (a language model, scored by loss, perplexity and exact match of its answers).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers
from datasets import DatasetDict

from peftlab import __version__, distributed
from peftlab.artifacts import load_artifact, save_artifact
from peftlab.checkpoints import (
    RESULTS_FILE, check_same_data, checkpoint_dir, failure_reason, finished_runs, last_checkpoint, open_out_dir, remove_checkpoints, safe_child, train_resumable,
    write_json_atomic,
)
from peftlab.config import RunConfig
from peftlab.config_file import write_config_file
from peftlab.data import TextClassificationData, load_text_classification
from peftlab.environment import environment
from peftlab.errors import PeftlabError, RunInterrupted, one_of
from peftlab.estimate import MemorySetup, estimate_memory, profile_model
from peftlab.generation import generate_batched, normalise
from peftlab.lm_data import SHORT_ANSWER_TOKENS, LMData, TokenizedLM, load_lm_data, render_prompt, tokenize_lm
from peftlab.methods import Method, MethodContext, expand_all, get_method, method_options
from peftlab.meta import count_params_meta, weight_free_source
from peftlab.models import LoadedModel, ModelSource, load_causal_lm, load_classifier, load_config, load_tokenizer, model_task, prepare_tokenizer_for_lm, resolve_model
from peftlab.params import ParamReport, base_param_ids, count_unique, param_report
from peftlab.precision import check_quantize, prepare_quantized
from peftlab.report import write_report
from peftlab.training import (
    PeakMemory,
    Timer,
    evaluate,
    evaluate_lm,
    make_trainer,
    release_memory,
    set_tensorboard_dir,
    tokenize_splits,
    training_arguments,
)

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # event files of --report-to tensorboard, one folder per method


@dataclass
class Prepared:
    """Everything a run needs that is the same for every method: built once per compare."""

    config: RunConfig  # with task set
    source: ModelSource
    model_type: str
    tokenizer: object
    data: TextClassificationData | LMData
    tokenized: object  # seq-cls: a DatasetDict; causal-lm: a TokenizedLM
    truncated: dict[str, int]
    methods: list[tuple[Method, dict]]
    head_modules: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # method name -> why it cannot apply (only methods from --methods all)
    answer_match: str = "none"  # causal-lm: how generated answers are scored (exact, number or none)
    max_new_tokens: int = 0  # causal-lm: tokens generated per prompt when answers are scored

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def eval_split(self) -> str:
        return self.data.eval_split

    def load_model(self) -> LoadedModel:
        """A fresh copy of the base model for the task, with the classification head seeded alike for every method."""
        if self.task == "causal-lm":
            return load_causal_lm(self.source, self.config.seed, self.config.quantize)
        return load_classifier(self.source, self.data.label_names, self.config.seed, self.config.quantize)


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
    source = resolve_model(config.model, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code)
    model_config = load_config(source)
    config = dataclasses.replace(config, task=model_task(model_config, config.task))
    tokenizer = load_tokenizer(source)
    log.info("model %s: %s for %s (%s)", source.name, model_config.model_type, config.task, source.path)

    if config.task == "causal-lm":
        data, tokenized, answer_match, max_new_tokens = _prepare_lm_data(config, tokenizer)
        truncated = tokenized.truncated
    else:
        data = load_text_classification(
            config.data, config.text_column, config.label_column, config.label_names, config.validation_fraction, config.seed
        )
        sizes = ", ".join(f"{name} {size}" for name, size in data.sizes.items())
        log.info("data %s: %s; %d labels (%s)", data.source, sizes, len(data.label_names), one_of(data.label_names))
        for note in data.notes:
            log.info("data: %s", note)
        tokenized, truncated = tokenize_splits(data.splits, tokenizer, config.max_length)
        if config.max_eval_samples is not None:
            split = tokenized[data.eval_split]
            tokenized[data.eval_split] = split.select(range(min(config.max_eval_samples, len(split))))
        answer_match, max_new_tokens = "none", 0
        for split, count in truncated.items():
            if count:
                log.warning("%d of %d %s texts are longer than --max-length %d tokens and were truncated", count, data.sizes[split], split, config.max_length)

    # Apply each method's fit check to the real model once, so a wrong target
    # module fails here rather than after other methods have trained. A method
    # that only --methods all brought in is skipped with its reason instead.
    _, from_all = expand_all(config.methods)
    skipped = {}
    loaded = load_causal_lm(source, config.seed) if config.task == "causal-lm" else load_classifier(source, data.label_names, config.seed)
    for method, options in methods:
        try:
            method.check_applies(loaded.model, MethodContext(config, model_config.model_type, config.task, loaded.head_modules, options))
        except PeftlabError as error:
            if method.name not in from_all:
                raise
            skipped[method.name] = str(error)
            log.info("%s: skipped: %s", method.name, error)
    head_modules = loaded.head_modules
    del loaded
    return Prepared(config, source, model_config.model_type, tokenizer, data, tokenized, truncated, methods, head_modules, skipped, answer_match, max_new_tokens)


def _prepare_lm_data(config: RunConfig, tokenizer, eval_only: bool = False) -> tuple[LMData, TokenizedLM, str, int]:
    """Load and tokenize language-model data once; decide how answers are scored and how many tokens to generate.

    ``eval_only`` keeps only the evaluation split (plain text keeps all of it, because its held-out tail is cut from train).
    """
    prepare_tokenizer_for_lm(tokenizer)
    data = load_lm_data(config)
    if eval_only and data.kind != "text":
        data.splits = DatasetDict({data.eval_split: data.splits[data.eval_split]})
    tokenized = tokenize_lm(data, tokenizer, config.max_length, config.validation_fraction)
    for split, count in tokenized.truncated.items():
        if count:
            log.warning("%d of %d %s rows are longer than --max-length %d tokens and were cut to fit, from the start of the prompt (a response longer than that loses its end)", count, len(tokenized.splits[split]), split, config.max_length)
    limit = config.max_eval_samples
    if limit is not None:
        for split in {data.eval_split, "validation"} & set(tokenized.splits):
            tokenized.splits[split] = tokenized.splits[split].select(range(min(limit, len(tokenized.splits[split]))))
            if split in tokenized.prompts:
                tokenized.prompts[split] = tokenized.prompts[split][:limit]
                tokenized.references[split] = tokenized.references[split][:limit]
    sizes = ", ".join(f"{name} {len(split)}" for name, split in tokenized.splits.items())
    unit = f"blocks of {config.max_length} tokens" if data.kind == "text" else "rows"
    labels = f"; labels as answers: {one_of(data.label_names)}" if data.kind == "labels" else ""
    log.info("data %s: %s, %s %s%s", data.source, data.kind, sizes, unit, labels)
    for note in data.notes:
        log.info("data: %s", note)

    match = config.answer_match
    if match == "auto":
        if data.kind == "labels" or (data.kind == "prompt-response" and tokenized.response_tokens <= SHORT_ANSWER_TOKENS):
            match = "exact"
        else:
            match = "none"
            if data.kind == "prompt-response":
                log.info("answers are up to %d tokens long, so they are not scored by exact match; --answer-match exact or number scores them", tokenized.response_tokens)
    if match != "none" and data.kind == "text":
        raise PeftlabError(f"--answer-match {match} needs prompts and reference answers, but {data.source!r} is plain text; use --answer-match none")
    max_new_tokens = config.max_new_tokens or tokenized.response_tokens + 4
    return data, tokenized, match, max_new_tokens


# ---------------------------------------------------------------------------
# Output folder and results file


def new_results(prepared: Prepared, command: str) -> dict:
    data = prepared.data.describe()
    data["truncated"] = prepared.truncated
    if prepared.task == "causal-lm":
        data["splits"] = {name: len(split) for name, split in prepared.tokenized.splits.items()}
        data["answer_match"] = prepared.answer_match
        data["max_new_tokens"] = prepared.max_new_tokens
    return {
        "peftlab_version": __version__,
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": prepared.source.name, "path": prepared.source.path, "model_type": prepared.model_type, "task": prepared.task},
        "data": data,
        "metric": primary_metric(prepared.task, prepared.answer_match),
        "config": prepared.config.to_dict(),
        "environment": environment(),
        # Every random choice of a run (head initialisation, training order, dropout, validation split) uses this seed.
        "seeds": {"seed": prepared.config.seed, "data_seed": prepared.config.seed},
        "runs": [],
    }


def primary_metric(task: str, answer_match: str = "none") -> dict:
    """Return the metric that tables, charts and the Pareto front compare methods by."""
    if task == "causal-lm":
        if answer_match != "none":
            return {"name": "exact_match", "label": "exact match", "higher_is_better": True}
        return {"name": "perplexity", "label": "perplexity", "higher_is_better": False}
    return {"name": "accuracy", "label": "accuracy", "higher_is_better": True}


# ---------------------------------------------------------------------------
# One method


def run_method(prepared: Prepared, method: Method, options: dict, out: Path, quiet: bool = False) -> dict:
    """Apply one method to a fresh copy of the base model, train, evaluate before and after, and save."""
    config = prepared.config
    release_memory()
    loaded = prepared.load_model()
    model = prepare_quantized(loaded.model, config.quantize)
    base_params = count_unique(model)
    base_ids = base_param_ids(model)
    ctx = MethodContext(config, prepared.model_type, prepared.task, loaded.head_modules, options)
    transformers.set_seed(config.seed)
    model = method.apply(model, ctx)
    report = param_report(model, base_params, base_ids)
    log.info(
        "%s: %s of %s parameters train (%.3f%%), %s added",
        method.name, f"{report.trainable_params:,}", f"{report.base_params:,}", report.trainable_pct, f"{report.added_params:,}",
    )

    lr = config.lr if config.lr is not None else method.lr_for(prepared.task)
    scratch = checkpoint_dir(out, method.name)
    args = training_arguments(config, lr, scratch, quiet)
    causal = prepared.task == "causal-lm"
    train_split = prepared.tokenized.splits["train"] if causal else prepared.tokenized["train"]
    trainer = make_trainer(model, prepared.tokenizer, args, train_split, prepared.task)
    for make_callback in method.callbacks:
        trainer.add_callback(make_callback(ctx))
    set_tensorboard_dir(trainer, out / TENSORBOARD_DIR / method.name)

    examples = {}
    before, examples["before"] = _evaluate(prepared, trainer, quiet)
    resume_from = last_checkpoint(scratch) if config.resume else None
    with PeakMemory() as memory, Timer() as timer:
        output = train_resumable(trainer, method.name, resume_from)
    after, examples["after"] = _evaluate(prepared, trainer, quiet)
    validation = after if prepared.eval_split == "validation" else _evaluate_validation(prepared, trainer)
    metric = primary_metric(prepared.task, prepared.answer_match)["name"]
    log.info(
        "%s: %s %s %.4f -> %.4f in %.1f s, peak memory %.0f MB",
        method.name, prepared.eval_split, metric.replace("_", " "), before[metric], after[metric], timer.seconds, memory.peak_mb,
    )

    meta = {
        "task": prepared.task,
        "method": method.name,
        "adapter": method.saves_adapter,
        "model": prepared.source.name,
        "base_model_path": prepared.source.path,
        "label_names": prepared.data.label_names,
        "data": prepared.data.source,
        "max_length": config.max_length,
        "eval_batch_size": config.resolved_eval_batch_size,
        "validation_fraction": config.validation_fraction,
        "seed": config.seed,
        "params": report.to_dict() | {"modules": None},
        "metrics": {"before": before, "after": after},
        "eval_split": prepared.eval_split,
        "options": options,
        "lr": lr,
        "train_steps": output.global_step,
    }
    if causal:
        meta |= {
            "data_kind": prepared.data.kind,
            "columns": prepared.data.columns,
            "prompt_template": prepared.data.prompt_template,
            "answer_match": prepared.answer_match,
            "max_new_tokens": prepared.max_new_tokens,
            "max_eval_samples": config.max_eval_samples,
        }
    else:
        meta |= {"text_column": prepared.data.text_column, "label_column": prepared.data.label_column}
    artifact = safe_child(out, method.name, "method name")
    # Rank 0 saves the weights it holds: DDP and DeepSpeed ZeRO-1/2 keep the whole model on every
    # rank, and distributed.check_sharding rejects FSDP and ZeRO-3, which would leave it a shard.
    artifact_bytes = None
    if distributed.is_main_process():
        save_weights = (lambda folder: method.save(model, ctx, folder)) if method.save is not None else None
        artifact_bytes = save_artifact(model, prepared.tokenizer, artifact, meta, method.saves_adapter, save_weights)
    distributed.barrier()
    if distributed.is_main_process():
        remove_checkpoints(out, method.name)

    run = {
        "method": method.name,
        "status": "ok",
        "params": _params_dict(report),
        "modules": [vars(m) for m in report.modules],
        "options": options,
        "lr": lr,
        "metrics": {"before": before, "after": after, "validation_after": validation},
        "train_seconds": round(timer.seconds, 2),
        "train_steps": output.global_step,
        "resumed_from_step": int(resume_from.name.rsplit("-", 1)[1]) if resume_from is not None else None,
        "peak_memory_mb": round(memory.peak_mb, 1),
        "artifact_bytes": artifact_bytes,
        "path": artifact.name,
        "loss_curve": [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e],
    }
    if any(examples.values()):
        run["examples"] = examples
    return run


def _evaluate(prepared: Prepared, trainer, quiet: bool) -> tuple[dict, list]:
    """Metrics on the evaluation split, and for a language model a few of its answers beside the references."""
    if prepared.task == "causal-lm":
        return evaluate_lm(trainer, prepared.tokenized, prepared.eval_split, prepared.answer_match, prepared.max_new_tokens, quiet)
    return evaluate(trainer, prepared.tokenized[prepared.eval_split]), []


def _evaluate_validation(prepared: Prepared, trainer) -> dict | None:
    """Metrics on the validation split for a classifier; None for a language model.

    A language model's evaluation is a forward pass per row at the cost of a small training step, so a
    second split would add minutes per method on a CPU; evaluate one with `peftlab eval --data`.
    """
    if prepared.task == "causal-lm":
        return None
    return evaluate(trainer, prepared.tokenized["validation"])


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
    opened = None
    if main:
        try:
            out, previous = open_out_dir(prepared.config, command)
            opened = (str(out), previous)
        except PeftlabError as error:  # the other ranks wait for the folder, so they must learn of the error too
            opened = str(error)
    opened = distributed.broadcast_from_main(opened)
    if isinstance(opened, str):
        raise PeftlabError(opened)
    out, previous = Path(opened[0]), opened[1]
    log.info("writing to %s", out)
    results = new_results(prepared, command)
    results["out"] = str(out)
    kept = finished_runs(previous)
    if previous is not None:
        check_same_data(previous, results)
        results["created"] = previous.get("created", results["created"])
        results["resumed"] = [*previous.get("resumed", []), datetime.now(timezone.utc).isoformat(timespec="seconds")]
    if main:
        write_json_atomic(out / RESULTS_FILE, results)  # marks the folder as a run from its first moment
        write_config_file(prepared.config, out)
    env = results["environment"]
    processes = f", {env['processes']} processes" if env["processes"] > 1 else ""
    log.info("device %s, %d torch threads on %d CPUs%s", env["device"], env["torch_threads"], env["cpu_count"], processes)
    for method, options in prepared.methods:
        if method.name in kept:
            run = kept[method.name]
            log.info("%s: %s in the earlier attempt, kept as it is", method.name, "finished" if run["status"] == "ok" else "skipped")
        elif method.name in prepared.skipped:
            run = {"method": method.name, "status": "skipped", "reason": prepared.skipped[method.name]}
        else:
            run = _run_isolated(prepared, method, options, out, results, quiet)
        results["runs"].append(run)
        if main:
            write_json_atomic(out / RESULTS_FILE, results)
            write_report(results, out)
    return results


def _run_isolated(prepared: Prepared, method: Method, options: dict, out: Path, results: dict, quiet: bool) -> dict:
    """Run one method; a failure becomes a "failed" entry so the other methods still run.

    Ctrl-C is not a failure: the method is recorded as "interrupted", the
    results are written and RunInterrupted propagates to end the run.
    """
    try:
        return run_method(prepared, method, options, out, quiet=quiet)
    except (RunInterrupted, KeyboardInterrupt) as stop:
        reason = str(stop) if isinstance(stop, RunInterrupted) else "stopped by a second Ctrl-C before a checkpoint was saved"
        results["runs"].append({"method": method.name, "status": "interrupted", "reason": reason})
        write_json_atomic(out / RESULTS_FILE, results)
        write_report(results, out)
        interrupted = stop if isinstance(stop, RunInterrupted) else RunInterrupted(f"{method.name} {reason}")
        interrupted.out = str(out)
        raise interrupted from None
    except Exception as error:  # noqa: BLE001 - any error of one method (unsupported, out of memory, diverged) is recorded, not fatal
        reason = failure_reason(error)
        log.error("%s: failed: %s; the other methods still run", method.name, reason)
        log.debug("%s: traceback of the failure", method.name, exc_info=True)
        remove_checkpoints(out, method.name)
        release_memory()
        return {"method": method.name, "status": "failed", "reason": reason}


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
    if task not in (None, "seq-cls", "causal-lm"):
        raise PeftlabError(f"a loaded model is counted for --task seq-cls or causal-lm, got {task!r}; add --config-only to count it from its config")
    source = resolve_model(config.model, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code)
    model_config = load_config(source)
    task = model_task(model_config, task)
    model_type = model_config.model_type
    reports = []
    for method, options in resolved:
        loaded = load_causal_lm(source, config.seed) if task == "causal-lm" else load_classifier(source, label_names, config.seed)
        base_params = count_unique(loaded.model)
        base_ids = base_param_ids(loaded.model)
        ctx = MethodContext(config, model_type, task, loaded.head_modules, options)
        method.check_applies(loaded.model, ctx)
        adapted = method.apply(loaded.model, ctx)
        report = param_report(adapted, base_params, base_ids)
        entry = {"method": method.name, "task": task, **_params_dict(report), "modules": [vars(m) for m in report.modules]}
        if memory is not None:
            entry["memory"] = estimate_memory(profile_model(adapted, task, loaded.head_modules), memory)
        reports.append(entry)
    return reports


def evaluate_artifact(folder: str, data: str | None = None, quiet: bool = True, max_eval_samples: int | None = None) -> dict:
    """Reload a saved artifact and evaluate it on the evaluation split of ``data`` (default: the data it was trained on).

    ``max_eval_samples`` limits the rows scored; by default a language model is scored on as many rows as when it was trained.
    """
    if max_eval_samples is not None and max_eval_samples < 1:
        raise PeftlabError(f"--max-eval-samples must be a positive integer, got {max_eval_samples}")
    artifact = load_artifact(folder)
    meta = artifact.meta
    if meta.get("task") == "causal-lm":
        return _evaluate_lm_artifact(artifact, data, quiet, max_eval_samples or meta.get("max_eval_samples"))
    source = data if data is not None else (None if meta["data"] == "demo" else meta["data"])
    loaded_data = load_text_classification(
        source, None if data is not None else meta["text_column"], None if data is not None else meta["label_column"],
        meta["label_names"], meta["validation_fraction"], meta["seed"],
    )
    if loaded_data.label_names != meta["label_names"]:
        raise PeftlabError(f"data {loaded_data.source!r} has labels {one_of(loaded_data.label_names)} but the artifact was trained on {one_of(meta['label_names'])}")
    tokenized, _ = tokenize_splits(loaded_data.splits, artifact.tokenizer, meta["max_length"])
    if max_eval_samples is not None:
        split = tokenized[loaded_data.eval_split]
        tokenized[loaded_data.eval_split] = split.select(range(min(max_eval_samples, len(split))))
    config = RunConfig(batch_size=max(1, meta["eval_batch_size"] // 2), eval_batch_size=meta["eval_batch_size"], seed=meta["seed"])
    scratch = Path(artifact.folder) / ".eval-scratch"
    args = training_arguments(config, 1e-5, scratch, quiet)
    trainer = make_trainer(artifact.model, artifact.tokenizer, args)
    metrics = evaluate(trainer, tokenized[loaded_data.eval_split])
    shutil.rmtree(scratch, ignore_errors=True)
    return {"split": loaded_data.eval_split, "data": loaded_data.source, **metrics}


def _evaluate_lm_artifact(artifact, data: str | None, quiet: bool, max_eval_samples: int | None) -> dict:
    """Rebuild a language model's evaluation from peftlab.json: same data shape, template, limits and scoring."""
    meta = artifact.meta
    columns = meta.get("columns") or {}
    same_data = data is None
    if same_data:
        data = None if meta["data"] == "demo" else meta["data"]
    config = RunConfig(
        data=data,
        task="causal-lm",
        text_column=columns.get("text") if same_data else None,
        label_column=columns.get("label") if same_data else None,
        prompt_column=columns.get("prompt") if same_data else None,
        response_column=columns.get("response") if same_data else None,
        label_names=meta.get("label_names"),
        prompt_template=meta.get("prompt_template"),
        max_length=meta["max_length"],
        validation_fraction=meta["validation_fraction"],
        seed=meta["seed"],
        answer_match=meta["answer_match"] if same_data else "auto",
        max_new_tokens=meta["max_new_tokens"] or None,
        max_eval_samples=max_eval_samples,
        batch_size=max(1, meta["eval_batch_size"] // 2),
        eval_batch_size=meta["eval_batch_size"],
    )
    loaded_data, tokenized, match, max_new_tokens = _prepare_lm_data(config, artifact.tokenizer, eval_only=True)
    scratch = Path(artifact.folder) / ".eval-scratch"
    trainer = make_trainer(artifact.model, artifact.tokenizer, training_arguments(config, 1e-5, scratch, quiet), task="causal-lm")
    metrics, _ = evaluate_lm(trainer, tokenized, loaded_data.eval_split, match, max_new_tokens, quiet)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"split": loaded_data.eval_split, "data": loaded_data.source, **metrics}


def predict(folder: str, texts: list[str]) -> list[dict]:
    """Return the most likely label and its probability for each text.

    A language model trained on labelled data answers the prompt it was trained with; its
    label is the generated answer (``None`` when that is not one of the labels) and it has no probability.
    """
    if not texts:
        raise PeftlabError("no text given: pass one or more texts to classify")
    artifact = load_artifact(folder)
    names = artifact.meta["label_names"]
    if artifact.meta.get("task") == "causal-lm":
        template = artifact.meta.get("prompt_template")
        if not template:
            raise PeftlabError(f"{folder!r} is a language model trained on {artifact.meta.get('data_kind')} data, not on labels; use `peftlab generate {folder} PROMPT`")
        prompts = [template.format(text=text, labels=", ".join(names)) for text in texts]
        answers = generate(folder, prompts, artifact=artifact)
        by_norm = {normalise(name): name for name in names}
        return [{"text": t, "label": by_norm.get(normalise(a["response"])), "answer": a["response"]} for t, a in zip(texts, answers)]
    encoded = artifact.tokenizer(texts, truncation=True, max_length=artifact.meta["max_length"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = artifact.model(**encoded).logits
    probs = torch.softmax(logits, dim=-1)
    best = probs.argmax(dim=-1)
    return [
        {"text": text, "label": names[int(i)], "probability": round(float(p[i]), 4), "probabilities": {n: round(float(v), 4) for n, v in zip(names, p)}}
        for text, i, p in zip(texts, best, probs)
    ]


def generate(folder: str, prompts: list[str], max_new_tokens: int | None = None, artifact=None, quiet: bool = True) -> list[dict]:
    """Answer each prompt greedily with a language-model artifact.

    A model trained on prompts sees each prompt through the chat template it was trained with;
    a model trained on plain text continues the prompt as it is.
    """
    if not prompts:
        raise PeftlabError("no prompt given: pass one or more prompts")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise PeftlabError(f"--max-new-tokens must be a positive integer, got {max_new_tokens}")
    artifact = artifact or load_artifact(folder)
    if artifact.meta.get("task") != "causal-lm":
        raise PeftlabError(f"{folder!r} is a classifier ({artifact.meta.get('task', 'seq-cls')}), which does not generate text; use `peftlab predict {folder} TEXT`")
    tokenizer = artifact.tokenizer  # load_artifact has given a language model's tokenizer its pad token
    continues_text = artifact.meta.get("data_kind") == "text"
    ids = [tokenizer(p if continues_text else render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    limit = max_new_tokens or max(artifact.meta.get("max_new_tokens") or 0, 64)
    answers = generate_batched(artifact.model, tokenizer, ids, limit, artifact.meta["eval_batch_size"], quiet=quiet)
    return [{"prompt": p, "response": a} for p, a in zip(prompts, answers)]


def merge(folder: str, out: str) -> Path:
    """Merge an adapter into its base weights and save a plain transformers model folder (safetensors) at ``out``."""
    target = Path(out).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PeftlabError(f"--out {out!r} already exists and is not empty; choose a new folder")
    artifact = load_artifact(folder)
    meta = artifact.meta
    if not meta.get("adapter"):
        raise PeftlabError(f"{folder!r} contains a full model ({meta['method']}), not an adapter, so there is nothing to merge: load it with from_pretrained as it is")
    model = artifact.model
    if model.active_peft_config.is_prompt_learning:
        raise PeftlabError(f"method {meta['method']!r} adds a trained prompt, which cannot be merged into the weights; merge works for the methods that adapt weights (lora, dora, ia3, ...)")
    try:
        merged = model.merge_and_unload()
    except (ValueError, NotImplementedError, AttributeError) as error:
        raise PeftlabError(f"peft cannot merge the {meta['method']} adapter in {folder!r}: {str(error).splitlines()[0]}") from error
    merged_meta = meta | {"adapter": False, "merged_from": str(Path(folder).resolve()), "method": meta["method"]}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_artifact(merged, artifact.tokenizer, target, merged_meta, adapter=False)
    return target
