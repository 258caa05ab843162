"""LoRA through peft: a trainable low-rank update B @ A, scaled by alpha / r, beside each frozen target weight."""

from __future__ import annotations

from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from peftlab.methods.registry import Method, MethodContext, register
from peftlab.methods.targets import LORA_TARGETS, check_targets, default_targets


def lora_targets(ctx: MethodContext) -> list[str]:
    return ctx.config.target_modules or default_targets(ctx.model_type, LORA_TARGETS, "lora")


def _check_lora(model: nn.Module, ctx: MethodContext) -> None:
    check_targets(model, lora_targets(ctx), "lora", exclude=ctx.head_modules)


def _apply_lora(model: nn.Module, ctx: MethodContext) -> nn.Module:
    cfg = ctx.config
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_targets(ctx),
        modules_to_save=list(ctx.head_modules),  # the new head trains and is saved with the adapter
        bias="none",
    )
    return get_peft_model(model, peft_config)


LORA = register(
    Method(
        name="lora",
        summary="LoRA: low-rank updates of the attention projections (per-architecture defaults); the head trains too.",
        default_lr=1e-3,
        apply=_apply_lora,
        saves_adapter=True,
        check=_check_lora,
    )
)
