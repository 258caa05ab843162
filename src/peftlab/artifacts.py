"""Saving and loading trained artifacts in the formats plain peft and transformers read.

A peft method leaves an adapter folder (adapter_config.json,
adapter_model.safetensors, with the trained head inside); a baseline leaves a
full model folder (config.json with id2label, model.safetensors, tokenizer).
Both also get ``peftlab.json``: what peftlab needs to rebuild the evaluation.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel

from peftlab import __version__
from peftlab.errors import PeftlabError
from peftlab.models import ModelSource, load_classifier, load_tokenizer, resolve_model

META_FILE = "peftlab.json"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def save_artifact(model, tokenizer, folder: Path, meta: dict, adapter: bool) -> int:
    """Write the artifact to a temporary sibling, then rename it into place; return its size in bytes."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if not adapter:
        tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps({"peftlab_version": __version__, **meta}, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder_bytes(folder)


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


def load_artifact(folder: str | Path) -> LoadedArtifact:
    """Load a saved artifact for evaluation or prediction, in eval mode."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("adapter"):
        source = _base_source(meta)
        loaded = load_classifier(source, meta["label_names"], meta.get("seed", 0))
        model = PeftModel.from_pretrained(loaded.model, folder)
        tokenizer = load_tokenizer(source)
    else:
        local = ModelSource(name=str(folder), path=str(folder), kind="local")
        loaded = load_classifier(local, meta["label_names"], meta.get("seed", 0))
        model = loaded.model
        tokenizer = load_tokenizer(local)
    model.eval()
    return LoadedArtifact(model, tokenizer, meta, folder)


def _base_source(meta: dict) -> ModelSource:
    """Find the base model again: by alias when it was one (the install folder may have moved), else by path."""
    try:
        return resolve_model(meta["model"])
    except PeftlabError:
        return resolve_model(meta["base_model_path"])
