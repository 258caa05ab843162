"""Saving and loading trained artifacts in the formats plain peft and transformers read.

A peft method leaves an adapter folder (adapter_config.json,
adapter_model.safetensors, with the trained head inside); a baseline leaves a
full model folder (config.json with id2label, model.safetensors, tokenizer).
Both also get ``peftlab.json``: what peftlab needs to rebuild the evaluation.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from peft import PeftModel

from peftlab import __version__
from peftlab.errors import PeftlabError
from peftlab.model_card import model_card
from peftlab.models import (
    ModelSource, check_model_folder, load_causal_lm, load_classifier, load_config, load_tokenizer, prepare_tokenizer_for_lm, resolve_model,
)

META_FILE = "peftlab.json"
CARD_FILE = "README.md"
# Config values that must match between the base model an adapter was trained on and the one it is loaded onto.
BASE_CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def save_artifact(model, tokenizer, folder: Path, meta: dict, adapter: bool, save_weights: Callable[[Path], None] | None = None) -> int:
    """Write the artifact to a temporary sibling, then rename it into place; return its size in bytes.

    ``save_weights`` replaces ``model.save_pretrained`` for methods whose adapter needs converting
    to reload onto the original base model (PiSSA, OLoRA).
    """
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if adapter:
        meta = {**meta, "base_config": base_config_summary(model.config)}
    with warnings.catch_warnings():
        # peft reads the base model's config.json to tell whether the vocabulary was resized; a GGUF
        # folder has none, and peftlab never resizes embeddings.
        warnings.filterwarnings("ignore", message="Could not find a config file")
        (save_weights or model.save_pretrained)(tmp)
    if not adapter:
        tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps({"peftlab_version": __version__, **meta}, indent=2) + "\n")
    # Replaces the empty template README.md that peft's save_pretrained writes into an adapter folder.
    (tmp / CARD_FILE).write_text(model_card({"peftlab_version": __version__, **meta}, folder, _adapter_config(tmp)))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder_bytes(folder)


def base_config_summary(config) -> dict:
    """Return the values of BASE_CONFIG_KEYS that ``config`` has: enough to tell two base models apart before loading."""
    return {key: getattr(config, key) for key in BASE_CONFIG_KEYS if getattr(config, key, None) is not None}


def check_adapter_base(folder: Path, meta: dict, source: ModelSource) -> None:
    """Reject an adapter whose recorded base model config differs from the base model found now, before loading weights.

    Artifacts written before peftlab recorded ``base_config`` are not checked.
    """
    recorded = meta.get("base_config")
    if not recorded:
        return
    current = base_config_summary(load_config(source))
    for key, value in recorded.items():
        if current.get(key) != value:
            raise PeftlabError(
                f"adapter {str(folder)!r} was trained on a base model with {key} {value!r}, but its base model {source.name!r} ({source.path}) has {key} "
                f"{current.get(key)!r}; restore the base model it was trained on, or train the adapter again"
            )


def _check_adapter_weights(folder: Path, allow_pickle: bool) -> None:
    if (folder / "adapter_model.safetensors").is_file():
        return
    if (folder / "adapter_model.bin").is_file():
        if allow_pickle:
            return
        raise PeftlabError(
            f"adapter {str(folder)!r} contains only pickled weights (adapter_model.bin); peftlab loads safetensors only: save the adapter again with save_pretrained, which writes safetensors"
        )
    raise PeftlabError(f"adapter {str(folder)!r} has no weights (adapter_model.safetensors); pass a method folder that train or compare wrote")


def _adapter_config(folder: Path) -> dict | None:
    path = folder / "adapter_config.json"
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class LoadedArtifact:
    model: torch.nn.Module
    tokenizer: object
    meta: dict
    folder: Path


def read_meta(folder: Path) -> dict:
    if not folder.is_dir():
        raise PeftlabError(f"artifact folder not found: {str(folder)!r}; pass a folder that train or compare wrote (runs/.../<method>)")
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise PeftlabError(f"{str(folder)!r} is not a peftlab artifact: it has no {META_FILE}; pass a method folder inside a run folder")
    return json.loads(meta_path.read_text())


def load_artifact(folder: str | Path, allow_pickle: bool = False) -> LoadedArtifact:
    """Load a saved artifact for evaluation or prediction, in eval mode; pickled weights only with ``allow_pickle``."""
    folder = Path(folder)
    meta = read_meta(folder)
    causal = meta.get("task") == "causal-lm"

    def load_base(source: ModelSource):
        return load_causal_lm(source, meta.get("seed", 0)) if causal else load_classifier(source, meta["label_names"], meta.get("seed", 0))

    if meta.get("adapter"):
        _check_adapter_weights(folder, allow_pickle)
        source = _base_source(meta)
        check_adapter_base(folder, meta, source)
        loaded = load_base(source)
        # peft 0.21's AdaLoRA loaded for inference fails on any forward with labels (it looks up
        # trainable_adapter_name, set only for training), and evaluation passes labels.
        adalora = (_adapter_config(folder) or {}).get("peft_type") == "ADALORA"
        with warnings.catch_warnings():
            # AdaLoRA's rank_pattern names lora_E tensors, which peft's check of LoRA rank patterns
            # reports as unmatched; AdaLoRA's own loading applies the pattern all the same.
            warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match")
            model = PeftModel.from_pretrained(loaded.model, folder, is_trainable=adalora)
        tokenizer = load_tokenizer(source)
    else:
        check_model_folder(folder, allow_pickle)
        local = ModelSource(name=str(folder), path=str(folder), kind="local", allow_pickle=allow_pickle)
        model = load_base(local).model
        tokenizer = load_tokenizer(local)
    if causal:
        prepare_tokenizer_for_lm(tokenizer)
    model.eval()
    return LoadedArtifact(model, tokenizer, meta, folder)


def _base_source(meta: dict) -> ModelSource:
    """Find the base model again: by alias when it was one (the install folder may have moved), else by path."""
    try:
        return resolve_model(meta["model"])
    except PeftlabError:
        return resolve_model(meta["base_model_path"])
