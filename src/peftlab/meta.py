"""Weight-free counting: build the model a config describes on PyTorch's meta device and apply methods to it.

A meta tensor has a shape and a dtype but no storage, so a 70B-parameter
Llama builds in under a second and a few MB of memory. The counts equal those
of the loaded model: the same class, the same head and the same tied weights.

    peftlab params --model path/to/config.json --method lora --target-modules q_proj,v_proj
    peftlab params --model org/name --config-only --task seq-cls --num-labels 3
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto import modeling_auto

from peftlab.config import RunConfig
from peftlab.errors import PeftlabError, one_of
from peftlab.estimate import MemorySetup, estimate_memory, profile_model
from peftlab.methods import Method, MethodContext
from peftlab.models import MODEL_ALIASES, WEIGHT_FILES, ModelSource, load_config, new_head_modules, resolve_model
from peftlab.params import base_param_ids, count_unique, param_report

log = logging.getLogger(__name__)

# Task name -> the auto class that builds it and the architectures transformers lists for it.
TASK_CLASSES = {
    "seq-cls": (AutoModelForSequenceClassification, modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
    "causal-lm": (AutoModelForCausalLM, modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
    "seq2seq-lm": (AutoModelForSeq2SeqLM, modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES),
}


@dataclass(frozen=True)
class ConfigSource:
    """A model known only by its config, and the parameter names of its checkpoint where a local one exists."""

    name: str  # as the user gave it
    config: PretrainedConfig
    checkpoint_keys: frozenset[str] | None  # from the safetensors headers; None without a local checkpoint


@dataclass
class MetaModel:
    model: PreTrainedModel
    task: str
    head_modules: list[str]  # modules the checkpoint lacks (the new task head); empty for causal-lm and seq2seq-lm


# ---------------------------------------------------------------------------
# Which models are counted from their config


def weight_free_source(name: str, config_only: bool = False) -> ConfigSource | None:
    """Return the config to count ``--model`` from, or None when its weights should be loaded.

    A config.json file and a folder without weights are always counted from
    the config. An alias, a folder with weights or a hub id is counted from
    its config only with ``config_only``.
    """
    if name in MODEL_ALIASES:
        if not config_only:
            return None
        source = resolve_model(name)
        if source.gguf_file:  # the folder holds a GGUF file, whose config transformers reads from the file
            return ConfigSource(name, load_config(source), None)
        return _folder_source(name, Path(source.path))

    path = Path(name).expanduser()
    if path.is_file():
        return ConfigSource(name, _read_config_file(path), None)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PeftlabError(f"model folder {name!r} has no config.json; pass a folder saved with save_pretrained or a config.json file")
        if config_only or not _has_weights(path):
            return _folder_source(name, path)
        return None
    if name.endswith(".json"):
        raise PeftlabError(f"model config file not found: {name!r}; pass an existing config.json, a model folder, or a hub id with --config-only")
    if not config_only:
        return None
    source = resolve_model(name)  # raises for a mistyped path or an unknown alias
    return ConfigSource(name, load_config(source), None)


def _has_weights(folder: Path) -> bool:
    return any((folder / f).is_file() for f in WEIGHT_FILES) or any(folder.glob("model-*.safetensors"))


def _folder_source(name: str, folder: Path) -> ConfigSource:
    try:
        config = load_config(ModelSource(name=name, path=str(folder), kind="local"))
    except ValueError as error:  # a config.json without a model_type transformers knows
        raise PeftlabError(f"could not read the model config in {str(folder)!r}: {str(error).splitlines()[0]}") from error
    return ConfigSource(name, config, checkpoint_keys(folder))


def _read_config_file(path: Path) -> PretrainedConfig:
    if path.suffix != ".json":
        raise PeftlabError(f"--model {str(path)!r} is a file but not a config.json; pass a config.json file or a model folder")
    try:
        return AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as error:
        raise PeftlabError(f"could not read the model config {str(path)!r}: {str(error).splitlines()[0]}") from error


def checkpoint_keys(folder: Path) -> frozenset[str] | None:
    """Read the tensor names of a folder's safetensors checkpoint from the file headers, without loading any tensor."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return frozenset(json.loads(index.read_text())["weight_map"])
    files = [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else sorted(folder.glob("model-*.safetensors"))
    if not files:
        return None
    keys = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            keys.update(handle.keys())
    return frozenset(keys)


# ---------------------------------------------------------------------------
# Building on the meta device


def resolve_task(config: PretrainedConfig, task: str | None) -> str:
    """Take ``task`` if given, otherwise the task of the config's first ``architectures`` entry (seq-cls for a bare base model)."""
    if task is not None:
        if task not in TASK_CLASSES:
            raise PeftlabError(f"unknown task {task!r}; valid tasks are {one_of(TASK_CLASSES)}")
        return task
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        raise PeftlabError(
            f"the config (model type {config.model_type!r}) names no architectures, so the model class is unknown; pass --task ({one_of(TASK_CLASSES)})"
        )
    architecture = architectures[0]
    for name, (_, known) in TASK_CLASSES.items():
        if architecture in known.values():
            return name
    if architecture in modeling_auto.MODEL_MAPPING_NAMES.values():
        # A bare encoder (BertModel) has no head of its own: give it the classification
        # head, as a loaded model gets.
        log.info("architecture %s has no task head, so it is counted with a seq-cls head (--task chooses another)", architecture)
        return "seq-cls"
    raise PeftlabError(
        f"architecture {architecture!r} is not a sequence-classification, causal-LM or seq2seq-LM model; pass --task ({one_of(TASK_CLASSES)}) to count it as one"
    )


def build_meta_model(source: ConfigSource, task: str, label_names: list[str]) -> MetaModel:
    """Build the model for ``task`` from ``source.config`` with every parameter on the meta device, weights tied."""
    config = copy.deepcopy(source.config)
    if task == "seq-cls":
        config.num_labels = len(label_names)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {label: i for i, label in config.id2label.items()}
    auto_class = TASK_CLASSES[task][0]

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            model = auto_class.from_config(config)
    except ValueError as error:
        raise PeftlabError(f"model type {config.model_type!r} has no {task} class in transformers: {str(error).splitlines()[0]}") from error
    finally:
        transformers.logging.set_verbosity(level)
    # from_config ties the embeddings under torch.device("meta") but not under accelerate's
    # init_empty_weights (transformers 5.25). Tying again costs nothing when they are tied.
    model.tie_weights()

    head_modules = []
    if task == "seq-cls":
        head_modules = new_head_modules(model, missing_keys(model, source.checkpoint_keys))
    return MetaModel(model, task, head_modules)


def missing_keys(model: PreTrainedModel, keys: frozenset[str] | None) -> list[str]:
    """Name the parameters of ``model`` that a checkpoint with ``keys`` lacks, as from_pretrained would report them.

    A checkpoint of the bare base model stores names without the base-model
    prefix ("encoder..." rather than "bert.encoder..."), so the prefix is
    added back before comparing, as transformers does when it loads.
    """
    if keys is None:
        return []
    names = [name for name, _ in model.named_parameters()]
    prefix = model.base_model_prefix + "."
    if model.base_model_prefix and not any(key.startswith(prefix) for key in keys):
        keys = frozenset(prefix + key for key in keys)
    return [name for name in names if name not in keys]


# ---------------------------------------------------------------------------
# Counting


def count_params_meta(
    source: ConfigSource,
    methods: list[tuple[Method, dict]],
    config: RunConfig,
    task: str | None,
    label_names: list[str],
    memory: MemorySetup | None = None,
) -> list[dict]:
    """Report parameters before and after each method for a model built on the meta device.

    Returns one dict per method with the keys of ``runner.count_params``,
    plus ``task`` and, with ``memory``, the training-memory estimate.
    """
    task = resolve_task(source.config, task)
    reports = []
    for method, options in methods:
        built = build_meta_model(source, task, label_names)
        model = built.model
        base_params = count_unique(model)
        if not reports:
            log.info("model %s: %s built from its config on the meta device (no weights), %s parameters", source.name, type(model).__name__, f"{base_params:,}")
        base_ids = base_param_ids(model)
        ctx = MethodContext(config, model.config.model_type, task, built.head_modules, options, weights_loaded=False)
        method.check_applies(model, ctx)
        # Tensors the method creates (adapter weights) land on the meta device too.
        with torch.device("meta"):
            adapted = method.apply(model, ctx)
        report = {"method": method.name, "task": task, **param_report(adapted, base_params, base_ids).to_dict()}
        if memory is not None:
            report["memory"] = estimate_memory(profile_model(adapted, task, built.head_modules), memory)
        reports.append(report)
    return reports
