"""Helpers the peft-based methods share: the peft task type of a run and the check of their target modules."""

from __future__ import annotations

from typing import Callable

from peft import TaskType
from torch import nn

from peftlab.methods.registry import MethodContext
from peftlab.methods.targets import LINEAR_TYPES, check_targets, resolve_targets

# peft wraps the model in the PeftModel subclass of the task, which also decides how prompts are fed.
PEFT_TASK_TYPES = {
    "seq-cls": TaskType.SEQ_CLS,
    "causal-lm": TaskType.CAUSAL_LM,
    "seq2seq-lm": TaskType.SEQ_2_SEQ_LM,
}


def peft_task_type(ctx: MethodContext) -> TaskType:
    return PEFT_TASK_TYPES[ctx.task]


def head_to_save(ctx: MethodContext) -> list[str] | None:
    """Return the new task head as peft's modules_to_save, so it trains and is saved inside the adapter."""
    return list(ctx.head_modules) or None


def target_check(name: str, table: dict[str, list[str]], layer_types: tuple[type, ...] = LINEAR_TYPES) -> Callable[[nn.Module, MethodContext], None]:
    """Build the fit check of a method that adapts target modules: each must exist and be a layer peft can wrap."""

    def check(model: nn.Module, ctx: MethodContext) -> None:
        targets = resolve_targets(ctx.config, ctx.model_type, table, name)
        check_targets(model, targets, name, exclude=ctx.head_modules, layer_types=layer_types)

    return check
