"""The LoRA family through peft: a trainable low-rank update B @ A, scaled by alpha / r, beside each frozen target weight.

The variants change the scaling (rsLoRA), split off the weight's norm (DoRA), start
from the weight's own principal directions (PiSSA, OLoRA) or move rank between
layers while training (AdaLoRA). All of them adapt the same default targets, so a
comparison differs only in the method.
"""

from __future__ import annotations

import torch
from peft import AdaLoraConfig, LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

from peftlab.errors import PeftlabError
from peftlab.methods.common import head_to_save, peft_task_type, target_check
from peftlab.methods.registry import ALL_TASKS, Method, MethodContext, MethodOption, register
from peftlab.methods.targets import LINEAR_TYPES, LORA_TARGETS, resolve_targets

LORA_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules")


def lora_targets(ctx: MethodContext) -> list[str]:
    return resolve_targets(ctx.config, ctx.model_type, LORA_TARGETS, "lora")


def _lora_config(ctx: MethodContext, **variant) -> LoraConfig:
    cfg = ctx.config
    return LoraConfig(
        task_type=peft_task_type(ctx),
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_targets(ctx),
        modules_to_save=head_to_save(ctx),  # the new head trains and is saved with the adapter
        bias="none",
        **variant,
    )


def _apply_lora(model: nn.Module, ctx: MethodContext) -> nn.Module:
    return get_peft_model(model, _lora_config(ctx))


LORA = register(
    Method(
        name="lora",
        summary="LoRA: low-rank updates of the attention projections (per-architecture defaults); the head trains too.",
        # On MiniLM with SST-2 (r=8 on query/key/value, one epoch): 3e-3 gave 0.871 test accuracy,
        # 2e-3 0.865 and 1e-3 0.860.
        default_lr=3e-3,
        # Language models: LoRA on every attention and MLP projection of the model; a smaller step than
        # for an encoder, whose LoRA covers only query, key and value.
        task_lr={"causal-lm": 1e-3},
        apply=_apply_lora,
        saves_adapter=True,
        check=target_check("lora", LORA_TARGETS),
        family="LoRA family",
        tasks=ALL_TASKS,
        targets=LORA_TARGETS,
        layer_types=LINEAR_TYPES,
        flags=LORA_FLAGS,
    )
)


# ---------------------------------------------------------------------------
# DoRA and rsLoRA: the same adapter, trained differently


def _apply_dora(model: nn.Module, ctx: MethodContext) -> nn.Module:
    return get_peft_model(model, _lora_config(ctx, use_dora=True))


def _apply_rslora(model: nn.Module, ctx: MethodContext) -> nn.Module:
    return get_peft_model(model, _lora_config(ctx, use_rslora=True))


DORA = register(
    Method(
        name="dora",
        summary="DoRA: LoRA on the direction of each target weight plus a trainable magnitude per output feature.",
        default_lr=1e-3,
        apply=_apply_dora,
        saves_adapter=True,
        check=target_check("dora", LORA_TARGETS),
        family="LoRA family",
        tasks=ALL_TASKS,
        targets=LORA_TARGETS,
        layer_types=LINEAR_TYPES,
        flags=LORA_FLAGS,
    )
)

RSLORA = register(
    Method(
        name="rslora",
        summary="rsLoRA: LoRA scaled by alpha / sqrt(r) instead of alpha / r, so higher ranks keep learning.",
        default_lr=1e-3,
        apply=_apply_rslora,
        saves_adapter=True,
        check=target_check("rslora", LORA_TARGETS),
        family="LoRA family",
        tasks=ALL_TASKS,
        targets=LORA_TARGETS,
        layer_types=LINEAR_TYPES,
        flags=LORA_FLAGS,
    )
)


# ---------------------------------------------------------------------------
# PiSSA and OLoRA: A and B start from a decomposition of the weight, which they take out of it


def _apply_pissa(model: nn.Module, ctx: MethodContext) -> nn.Module:
    niter = ctx.options["niter"]
    init = f"pissa_niter_{niter}" if niter > 0 else "pissa"
    if not ctx.weights_loaded:
        init = True  # no weights to decompose, and the counts do not depend on the initialisation
    return _with_initial_adapter(get_peft_model(model, _lora_config(ctx, init_lora_weights=init)), ctx)


def _apply_olora(model: nn.Module, ctx: MethodContext) -> nn.Module:
    init = "olora" if ctx.weights_loaded else True
    return _with_initial_adapter(get_peft_model(model, _lora_config(ctx, init_lora_weights=init)), ctx)


def _with_initial_adapter(model: nn.Module, ctx: MethodContext) -> nn.Module:
    """Keep the initial A0 and B0 for _save_as_plain_lora. A model without weights was not decomposed and has none."""
    if ctx.weights_loaded:
        initial = get_peft_model_state_dict(model)
        ctx.state["initial_lora"] = {key: value.detach().clone() for key, value in initial.items() if ".lora_A." in key or ".lora_B." in key}
    return model


def _save_as_plain_lora(model: nn.Module, ctx: MethodContext, folder) -> None:
    """Save a PiSSA or OLoRA adapter as a plain LoRA adapter of rank 2r that applies to the original base model.

    The initialisation took s * B0 @ A0 out of each target weight W (s = alpha / r), so
    after training the layer computes W - s B0 A0 + s B A = W + s [B, -B0] @ [A; A0]:
    a LoRA update of rank 2r with alpha 2 alpha, which keeps s. This is the conversion
    peft's save_pretrained(path_initial_model_for_weight_conversion=...) does, except that
    peft's drops the modules_to_save (the trained head) from the file.
    """
    model.save_pretrained(folder)
    initial = ctx.state.get("initial_lora")
    if not initial:
        return  # the adapter was never decomposed (applied without weights): it is a plain LoRA already
    weights_file = folder / "adapter_model.safetensors"
    tensors = load_file(weights_file)
    for key, value in tensors.items():
        if ".lora_A." in key:
            tensors[key] = torch.cat([value, initial[key]], dim=0)
        elif ".lora_B." in key:
            tensors[key] = torch.cat([value, -initial[key]], dim=1)
    save_file(tensors, weights_file, metadata={"format": "pt"})

    config = LoraConfig.from_pretrained(folder)
    config.r *= 2
    config.lora_alpha *= 2
    config.init_lora_weights = True  # loading must not decompose the original weights again
    config.save_pretrained(folder)


def _check_olora(model: nn.Module, ctx: MethodContext) -> None:
    # peft 0.21's OLoRA initialisation ignores fan_in_fan_out and fails on the transposed Conv1D weights of GPT-2.
    target_check("olora", LORA_TARGETS, layer_types=(nn.Linear,))(model, ctx)


PISSA = register(
    Method(
        name="pissa",
        summary="PiSSA: LoRA whose A and B start from the top-r singular vectors of each weight (the rest stays frozen).",
        default_lr=2e-4,
        apply=_apply_pissa,
        saves_adapter=True,
        check=target_check("pissa", LORA_TARGETS),
        family="LoRA family",
        tasks=ALL_TASKS,
        targets=LORA_TARGETS,
        layer_types=LINEAR_TYPES,
        flags=LORA_FLAGS,
        options=(
            MethodOption("niter", int, 0, "Subspace iterations of peft's fast randomized SVD (pissa_niter_N); 0 runs the exact SVD, slow on large layers."),
        ),
        save=_save_as_plain_lora,
    )
)

OLORA = register(
    Method(
        name="olora",
        summary="OLoRA: LoRA whose A and B start from a QR decomposition of each weight (orthonormal B).",
        default_lr=2e-4,
        apply=_apply_olora,
        saves_adapter=True,
        check=_check_olora,
        family="LoRA family",
        tasks=ALL_TASKS,
        targets=LORA_TARGETS,
        layer_types=(nn.Linear,),
        flags=LORA_FLAGS,
        save=_save_as_plain_lora,
    )
)


# ---------------------------------------------------------------------------
# AdaLoRA: SVD-shaped updates whose rank budget moves to the layers that matter

# Schedule length until AdaLoraSchedule sets the Trainer's step count; the parameter count does not depend on it.
_PLACEHOLDER_STEPS = 1000


def _apply_adalora(model: nn.Module, ctx: MethodContext) -> nn.Module:
    cfg, options = ctx.config, ctx.options
    peft_config = AdaLoraConfig(
        task_type=peft_task_type(ctx),
        init_r=options["init_r"],
        target_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        total_step=_PLACEHOLDER_STEPS,
        deltaT=options["deltaT"],
        # peft adds the orthogonality penalty to every loss it computes, evaluation included;
        # AdaLoraSchedule switches it on for training only, so the reported loss is the task loss.
        orth_reg_weight=0.0,
        target_modules=lora_targets(ctx),
        modules_to_save=head_to_save(ctx),
    )
    model = get_peft_model(model, peft_config)
    # peft 0.21 wraps ranknum (a constant: the initial rank) in a new, trainable Parameter when it moves
    # the adapter to the base layer's device (a GPU, or the meta device when counting). Keep it frozen.
    for name, param in model.named_parameters():
        if ".ranknum." in name:
            param.requires_grad_(False)
    return model


def _check_adalora(model: nn.Module, ctx: MethodContext) -> None:
    options = ctx.options
    if options["init_r"] < ctx.config.lora_r:
        raise PeftlabError(
            f"adalora starts every layer at init_r={options['init_r']} and prunes down to an average of --lora-r {ctx.config.lora_r}, so init_r must be at least that; pass --method-arg init_r={ctx.config.lora_r * 3 // 2}"
        )
    for key in ("tinit_fraction", "tfinal_fraction"):
        if not 0 <= options[key] < 1:
            raise PeftlabError(f"adalora option {key} must be in [0, 1), got {options[key]}")
    if options["tinit_fraction"] + options["tfinal_fraction"] >= 1:
        raise PeftlabError(
            f"adalora needs steps between warm-up and final phase to move rank: tinit_fraction + tfinal_fraction must be below 1, got {options['tinit_fraction']} + {options['tfinal_fraction']}"
        )
    if options["deltaT"] < 1:
        raise PeftlabError(f"adalora option deltaT must be a positive number of steps, got {options['deltaT']}")
    if options["orth_reg_weight"] < 0:
        raise PeftlabError(f"adalora option orth_reg_weight must be at least 0, got {options['orth_reg_weight']}")
    target_check("adalora", LORA_TARGETS)(model, ctx)


class AdaLoraSchedule(TrainerCallback):
    """Fit AdaLoRA's rank schedule to the Trainer's steps, and run its rank allocation and orthogonality penalty.

    peft's AdaLoRA needs update_and_allocate(step) after optimizer.step() and before
    the gradients are zeroed; transformers' Trainer calls on_optimizer_step exactly there.
    The schedule (total_step, tinit, tfinal) is set when training starts, from the step
    count the Trainer derived from --max-steps or --epochs, the data and the batch size.
    """

    def __init__(self, ctx: MethodContext):
        self.options = ctx.options

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        config = _adalora_config(model)
        config.total_step = state.max_steps
        config.tinit = int(state.max_steps * self.options["tinit_fraction"])
        config.tfinal = int(state.max_steps * self.options["tfinal_fraction"])
        config.orth_reg_weight = self.options["orth_reg_weight"]

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        _adalora_config(model).orth_reg_weight = 0.0


def _adalora_config(model) -> AdaLoraConfig:
    # The rank allocator keeps a reference to this config object, so changes here reach the schedule.
    return model.peft_config[model.active_adapter]


ADALORA = register(
    Method(
        name="adalora",
        summary="AdaLoRA: SVD-shaped low-rank updates that start at init_r and prune to an average rank of --lora-r.",
        default_lr=1e-3,
        apply=_apply_adalora,
        saves_adapter=True,
        check=_check_adalora,
        family="LoRA family",
        tasks=ALL_TASKS,
        targets=LORA_TARGETS,
        layer_types=LINEAR_TYPES,
        flags=LORA_FLAGS,
        callbacks=(AdaLoraSchedule,),
        options=(
            MethodOption("init_r", int, 12, "Rank every adapted layer starts with, before pruning to an average of --lora-r."),
            MethodOption("tinit_fraction", float, 0.1, "Share of the training steps before rank pruning starts."),
            MethodOption("tfinal_fraction", float, 0.2, "Share of the training steps at the end with the final ranks fixed."),
            MethodOption("deltaT", int, 1, "Steps between two rank allocations."),
            MethodOption("orth_reg_weight", float, 0.5, "Weight of the penalty that keeps A and B orthogonal, applied while training."),
        ),
    )
)
