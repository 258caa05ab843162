"""Which modules a method adapts: defaults per architecture and checks of user-given names."""

from __future__ import annotations

from peft.utils import (
    TRANSFORMERS_MODELS_TO_BOFT_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_FOURIERFT_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_OFT_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING,
)
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.errors import PeftlabError, one_of

# LoRA default targets per config.model_type. For encoders the attention
# projections only: on MiniLM, LoRA on every linear layer made a step slower
# than a full fine-tuning step, while query/key/value kept it at about half.
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "electra": ["query", "key", "value"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "albert": ["query", "key", "value"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "t5": ["q", "k", "v", "o"],
}

LINEAR_TYPES = (nn.Linear, Conv1D)


def _from_peft(table: dict, additions: dict[str, list[str]]) -> dict[str, list[str]]:
    """Copy one of peft's per-architecture tables and add the architectures it leaves out.

    Regex entries (a string instead of a list of names) are dropped, because
    check_targets matches names the way peft matches a list.
    """
    merged = {model_type: list(names) for model_type, names in table.items() if isinstance(names, list)}
    merged.update(additions)
    return merged


# The other methods' defaults are peft's own tables (peft 0.21, peft.utils.constants). For most
# architectures these adapt the query and value projections. peftlab adds DistilBERT, which the
# tables lack, and for LN tuning also the BERT-style encoders.
_DISTILBERT_QV = {"distilbert": ["q_lin", "v_lin"]}
LOHA_TARGETS = _from_peft(TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING, _DISTILBERT_QV)
LOKR_TARGETS = _from_peft(TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING, _DISTILBERT_QV)
VERA_TARGETS = _from_peft(TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING, _DISTILBERT_QV)
OFT_TARGETS = _from_peft(TRANSFORMERS_MODELS_TO_OFT_TARGET_MODULES_MAPPING, _DISTILBERT_QV)
BOFT_TARGETS = _from_peft(TRANSFORMERS_MODELS_TO_BOFT_TARGET_MODULES_MAPPING, _DISTILBERT_QV)
FOURIERFT_TARGETS = _from_peft(TRANSFORMERS_MODELS_TO_FOURIERFT_TARGET_MODULES_MAPPING, _DISTILBERT_QV)
IA3_TARGETS = _from_peft(TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING, {"distilbert": ["k_lin", "v_lin", "lin2"]})
# IA3 scales the input of these (the feed-forward output layers) and the output of its other targets.
IA3_FEEDFORWARD = _from_peft(TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING, {"distilbert": ["lin2"]})
LN_TUNING_TARGETS = _from_peft(
    TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING,
    {
        "bert": ["LayerNorm"],
        "roberta": ["LayerNorm"],
        "xlm-roberta": ["LayerNorm"],
        "electra": ["LayerNorm"],
        "distilbert": ["LayerNorm", "sa_layer_norm", "output_layer_norm"],
    },
)


def linear_module_names(model: nn.Module, exclude: list[str] = (), layer_types: tuple[type, ...] = LINEAR_TYPES) -> list[str]:
    """Return the distinct last name parts of the ``layer_types`` modules in ``model``, outside ``exclude``."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, layer_types) and not any(name == e or name.startswith(e + ".") for e in exclude):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def find_targets(model: nn.Module, targets: list[str]) -> dict[str, nn.Module]:
    """Return the modules a list of target names selects, matched as peft matches a list: the full name or its ending."""
    return {
        name: module
        for name, module in model.named_modules()
        if any(name == target or name.endswith("." + target) for target in targets)
    }


def is_norm_layer(module: nn.Module) -> bool:
    """Tell normalisation layers apart: torch's LayerNorm and RMSNorm and the models' own (LlamaRMSNorm, T5LayerNorm)."""
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith("Norm")


def norm_module_names(model: nn.Module) -> list[str]:
    """Return the distinct last name parts of the normalisation layers in ``model``."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if name and is_norm_layer(module)})


def default_targets(model_type: str, table: dict[str, list[str]], method: str) -> list[str]:
    if model_type in table:
        return list(table[model_type])
    raise PeftlabError(
        f"method {method!r} has no default target modules for model type {model_type!r}; pass --target-modules (known types: {one_of(table)})"
    )


def resolve_targets(config, model_type: str, table: dict[str, list[str]], method: str) -> list[str]:
    """Return --target-modules when given, else the method's default for the architecture."""
    return list(config.target_modules) if config.target_modules else default_targets(model_type, table, method)


def check_targets(
    model: nn.Module, targets: list[str], method: str, exclude: list[str] = (), layer_types: tuple[type, ...] = LINEAR_TYPES
) -> None:
    """Reject target names that match no module, or match a module that is not a linear layer of ``layer_types``."""
    modules = dict(model.named_modules())
    linear = linear_module_names(model, exclude)
    for target in targets:
        matches = [name for name in modules if name == target or name.endswith("." + target)]
        if not matches:
            raise PeftlabError(f"target module {target!r} for method {method!r} does not exist in this model; linear layers it has: {one_of(linear)}")
        not_linear = [name for name in matches if not isinstance(modules[name], LINEAR_TYPES)]
        if not_linear:
            kind = type(modules[not_linear[0]]).__name__
            raise PeftlabError(
                f"target module {target!r} for method {method!r} is a {kind}, not a linear layer ({not_linear[0]}); linear layers in this model: {one_of(linear)}"
            )
        unsupported = [name for name in matches if not isinstance(modules[name], layer_types)]
        if unsupported:
            raise PeftlabError(_unsupported_layer_message(model, target, unsupported[0], modules[unsupported[0]], method, exclude, layer_types))


def _unsupported_layer_message(model, target, name, module, method, exclude, layer_types) -> str:
    """Explain a target that peft's implementation of ``method`` cannot wrap, naming what it can and who else can."""
    from peftlab.methods.registry import METHODS  # the registry imports the method modules, which import this one

    kind = type(module).__name__
    accepted = " or ".join(t.__name__ for t in layer_types)
    usable = linear_module_names(model, exclude, layer_types)
    where = f"{accepted} layers in this model: {one_of(usable)}" if usable else f"this model has no {accepted} layer outside the head"
    others = [m.name for m in METHODS.values() if isinstance(module, m.layer_types)]
    return f"method {method!r} cannot adapt target module {target!r} ({name}): it is a {kind}, and {method} adapts only {accepted}; {where}; methods that adapt a {kind}: {', '.join(others)}"

