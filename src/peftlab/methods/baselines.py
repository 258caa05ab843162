"""Baselines outside peft: every parameter trains, or only the task head does."""

from __future__ import annotations

from torch import nn

from peftlab.methods.registry import Method, MethodContext, register


def _train_everything(model: nn.Module, ctx: MethodContext) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def _train_head_only(model: nn.Module, ctx: MethodContext) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(False)
    for name in ctx.head_modules:
        for param in model.get_submodule(name).parameters():
            param.requires_grad_(True)
    return model


FULL = register(
    Method(
        name="full",
        summary="Full fine-tuning: every parameter trains (the reference point).",
        default_lr=5e-5,
        apply=_train_everything,
        saves_adapter=False,
    )
)

HEAD = register(
    Method(
        name="head",
        summary="Linear probe: only the new classification head trains; the encoder stays frozen.",
        default_lr=2e-3,
        apply=_train_head_only,
        saves_adapter=False,
    )
)
