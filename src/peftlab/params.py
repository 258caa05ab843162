"""Parameter accounting: how many parameters a model has, how many train, and where they live.

Every tensor is counted once: ``named_parameters`` already drops a Parameter
that two modules share (tied embeddings), and a frozen original that a method
wraps next to its trainable copy (peft's ``modules_to_save``) is counted among
the base parameters, its copy among the trainable ones.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

from torch import nn

# Name parts that peft inserts between a module and its parameters.
_PEFT_PREFIX = re.compile(r"^(base_model\.model\.)")


@dataclass
class ModuleCount:
    """Trainable parameters in one kind of module; layer numbers are folded into ``*``."""

    name: str
    count: int  # how many modules match the name
    trainable_params: int


@dataclass
class ParamReport:
    """The numbers the parameter story is told with."""

    base_params: int  # the pre-trained model with its task head
    trainable_params: int
    added_params: int  # parameters the method added on top of base_params
    trainable_pct: float  # trainable_params / base_params * 100
    modules: list[ModuleCount] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def count_unique(model: nn.Module) -> int:
    """Count the parameters of a model, each shared tensor once."""
    return sum(p.numel() for p in model.parameters())


def base_param_ids(model: nn.Module) -> set[int]:
    """Record the identity of every parameter of the untouched model, to tell added ones apart later."""
    return {id(p) for p in model.parameters()}


def param_report(model: nn.Module, base_params: int, base_ids: set[int]) -> ParamReport:
    """Report the parameters of ``model`` after a method was applied to a base of ``base_params``.

    ``base_ids`` comes from :func:`base_param_ids` on the model before the
    method; a parameter not among them is new, unless it is a trainable copy
    of a base module (peft's ``modules_to_save``), which replaces rather than adds.
    """
    trainable = 0
    added = 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            trainable += param.numel()
        if id(param) not in base_ids and ".modules_to_save." not in name:
            added += param.numel()
    pct = 100.0 * trainable / base_params if base_params else 0.0
    return ParamReport(base_params, trainable, added, round(pct, 4), module_breakdown(model))


def module_breakdown(model: nn.Module) -> list[ModuleCount]:
    """Group trainable parameters by module name with layer indices folded into ``*``."""
    groups: OrderedDict[str, dict] = OrderedDict()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        module_name = _readable_module_name(name.rsplit(".", 1)[0])
        folded = re.sub(r"\.\d+(?=\.|$)", ".*", module_name)
        group = groups.setdefault(folded, {"modules": set(), "params": 0})
        group["modules"].add(module_name)
        group["params"] += param.numel()
    return [ModuleCount(name, len(g["modules"]), g["params"]) for name, g in groups.items()]


def _readable_module_name(name: str) -> str:
    """Drop the wrapper names peft adds, so names read as in the base model."""
    name = _PEFT_PREFIX.sub("", name)
    name = name.replace(".modules_to_save.default", "").replace(".default", "")
    return name
