"""Which modules a method adapts: defaults per architecture and checks of user-given names."""

from __future__ import annotations

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


def linear_module_names(model: nn.Module, exclude: list[str] = ()) -> list[str]:
    """Return the distinct last name parts of the linear layers in ``model``, outside ``exclude``."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, LINEAR_TYPES) and not any(name == e or name.startswith(e + ".") for e in exclude):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def default_targets(model_type: str, table: dict[str, list[str]], method: str) -> list[str]:
    if model_type in table:
        return list(table[model_type])
    raise PeftlabError(
        f"method {method!r} has no default target modules for model type {model_type!r}; pass --target-modules (known types: {one_of(table)})"
    )


def check_targets(model: nn.Module, targets: list[str], method: str, exclude: list[str] = ()) -> None:
    """Reject target names that match no module, or match a module that is not a linear layer."""
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
