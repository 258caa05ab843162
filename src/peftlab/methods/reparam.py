"""Reparameterisations other than LoRA, through peft: scaling vectors, Hadamard and Kronecker products,
shared random projections, sparse spectra, orthogonal rotations, and trained normalisation layers.

Each adapts the target modules of peft's own per-architecture tables (``targets.py``)
and trains the new task head beside them, saved inside the adapter.
"""

from __future__ import annotations

import warnings

import torch
from peft import (
    BOFTConfig,
    FourierFTConfig,
    IA3Config,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    OFTConfig,
    VeraConfig,
    get_peft_model,
)
from torch import nn

from peftlab.errors import PeftlabError, one_of
from peftlab.methods.common import head_to_save, peft_task_type, target_check
from peftlab.methods.registry import ALL_TASKS, Method, MethodContext, MethodOption, register
from peftlab.methods.targets import (
    BOFT_TARGETS,
    FOURIERFT_TARGETS,
    IA3_FEEDFORWARD,
    IA3_TARGETS,
    LINEAR_TYPES,
    LN_TUNING_TARGETS,
    LOHA_TARGETS,
    LOKR_TARGETS,
    OFT_TARGETS,
    VERA_TARGETS,
    find_targets,
    is_norm_layer,
    norm_module_names,
    resolve_targets,
)

FAMILY = "other reparameterisations"


def _in_out_features(module: nn.Module) -> tuple[int, int]:
    """Return (in, out) of an nn.Linear or of a transformers Conv1D, which stores its weight transposed."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.weight.shape[0], module.weight.shape[1]


def _adapted_layers(model: nn.Module, ctx: MethodContext, table: dict[str, list[str]], name: str) -> dict[str, nn.Module]:
    targets = resolve_targets(ctx.config, ctx.model_type, table, name)
    head = tuple(ctx.head_modules)
    return {
        layer_name: module
        for layer_name, module in find_targets(model, targets).items()
        if not any(layer_name == h or layer_name.startswith(h + ".") for h in head)
    }


# ---------------------------------------------------------------------------
# IA3: learned vectors that rescale activations


def _ia3_modules(ctx: MethodContext) -> tuple[list[str], list[str]]:
    """Return IA3's target modules and, among them, the feed-forward ones whose input (not output) it scales."""
    targets = resolve_targets(ctx.config, ctx.model_type, IA3_TARGETS, "ia3")
    listed = ctx.options["feedforward_modules"]
    if listed:
        feedforward = [name.strip() for name in listed.split(",") if name.strip()]
    else:
        feedforward = [name for name in IA3_FEEDFORWARD.get(ctx.model_type, []) if name in targets]
    return targets, feedforward


def _check_ia3(model: nn.Module, ctx: MethodContext) -> None:
    target_check("ia3", IA3_TARGETS)(model, ctx)
    targets, feedforward = _ia3_modules(ctx)
    outside = [name for name in feedforward if name not in targets]
    if outside:
        raise PeftlabError(
            f"ia3 feedforward_modules must be among its target modules ({', '.join(targets)}), got {', '.join(outside)}; add them to --target-modules or drop them"
        )


def _apply_ia3(model: nn.Module, ctx: MethodContext) -> nn.Module:
    targets, feedforward = _ia3_modules(ctx)
    config = IA3Config(
        task_type=peft_task_type(ctx),
        target_modules=targets,
        feedforward_modules=feedforward,
        modules_to_save=head_to_save(ctx),
    )
    return get_peft_model(model, config)


IA3 = register(
    Method(
        name="ia3",
        summary="IA3: one learned vector per target that rescales keys, values and the feed-forward input.",
        default_lr=3e-3,
        apply=_apply_ia3,
        saves_adapter=True,
        check=_check_ia3,
        family=FAMILY,
        tasks=ALL_TASKS,
        targets=IA3_TARGETS,
        layer_types=LINEAR_TYPES,
        flags=("target_modules",),
        options=(
            MethodOption(
                "feedforward_modules", str, "",
                "Comma-separated targets whose input IA3 scales instead of their output. Default: the feed-forward output layers among the targets.",
            ),
        ),
    )
)


# ---------------------------------------------------------------------------
# LoHa and LoKr: low-rank updates built from Hadamard or Kronecker products


def _apply_loha(model: nn.Module, ctx: MethodContext) -> nn.Module:
    cfg = ctx.config
    config = LoHaConfig(
        task_type=peft_task_type(ctx),
        r=cfg.lora_r,
        alpha=cfg.lora_alpha,
        target_modules=resolve_targets(cfg, ctx.model_type, LOHA_TARGETS, "loha"),
        modules_to_save=head_to_save(ctx),
    )
    return get_peft_model(model, config)


def _apply_lokr(model: nn.Module, ctx: MethodContext) -> nn.Module:
    cfg = ctx.config
    config = LoKrConfig(
        task_type=peft_task_type(ctx),
        r=cfg.lora_r,
        alpha=cfg.lora_alpha,
        target_modules=resolve_targets(cfg, ctx.model_type, LOKR_TARGETS, "lokr"),
        modules_to_save=head_to_save(ctx),
    )
    return get_peft_model(model, config)


# peft 0.21's LoHa, LoKr, OFT and BOFT wrap nn.Linear but not transformers' Conv1D (GPT-2's layers).
LOHA = register(
    Method(
        name="loha",
        summary="LoHa: the update is the Hadamard product of two rank-r products, (B1 A1) * (B2 A2).",
        default_lr=1e-3,
        apply=_apply_loha,
        saves_adapter=True,
        check=target_check("loha", LOHA_TARGETS, layer_types=(nn.Linear,)),
        family=FAMILY,
        tasks=ALL_TASKS,
        targets=LOHA_TARGETS,
        layer_types=(nn.Linear,),
        flags=("lora_r", "lora_alpha", "target_modules"),
    )
)

LOKR = register(
    Method(
        name="lokr",
        summary="LoKr: the update is a Kronecker product of a small matrix and a rank-r product.",
        default_lr=1e-3,
        apply=_apply_lokr,
        saves_adapter=True,
        check=target_check("lokr", LOKR_TARGETS, layer_types=(nn.Linear,)),
        family=FAMILY,
        tasks=ALL_TASKS,
        targets=LOKR_TARGETS,
        layer_types=(nn.Linear,),
        flags=("lora_r", "lora_alpha", "target_modules"),
    )
)


# ---------------------------------------------------------------------------
# VeRA and FourierFT: a few trained numbers per layer on top of fixed random structure


def _apply_vera(model: nn.Module, ctx: MethodContext) -> nn.Module:
    cfg = ctx.config
    config = VeraConfig(
        task_type=peft_task_type(ctx),
        r=ctx.options["vera_r"],
        d_initial=ctx.options["d_initial"],
        vera_dropout=cfg.lora_dropout,
        target_modules=resolve_targets(cfg, ctx.model_type, VERA_TARGETS, "vera"),
        modules_to_save=head_to_save(ctx),
    )
    return get_peft_model(model, config)


def _check_vera(model: nn.Module, ctx: MethodContext) -> None:
    if ctx.options["vera_r"] < 1:
        raise PeftlabError(f"vera option vera_r must be a positive integer, got {ctx.options['vera_r']}")
    target_check("vera", VERA_TARGETS)(model, ctx)


VERA = register(
    Method(
        name="vera",
        summary="VeRA: frozen random low-rank matrices shared by all layers, with trained scaling vectors per layer.",
        default_lr=1e-2,
        apply=_apply_vera,
        saves_adapter=True,
        check=_check_vera,
        family=FAMILY,
        tasks=ALL_TASKS,
        targets=VERA_TARGETS,
        layer_types=LINEAR_TYPES,
        flags=("lora_dropout", "target_modules"),
        options=(
            MethodOption("vera_r", int, 256, "Rank of the shared random projections (VeRA uses far higher ranks than LoRA)."),
            MethodOption("d_initial", float, 0.1, "Initial value of the trained scaling vector d."),
        ),
    )
)


def _apply_fourierft(model: nn.Module, ctx: MethodContext) -> nn.Module:
    config = FourierFTConfig(
        task_type=peft_task_type(ctx),
        n_frequency=ctx.options["n_frequency"],
        scaling=ctx.options["scaling"],
        target_modules=resolve_targets(ctx.config, ctx.model_type, FOURIERFT_TARGETS, "fourierft"),
        modules_to_save=head_to_save(ctx),
    )
    return get_peft_model(model, config)


def _check_fourierft(model: nn.Module, ctx: MethodContext) -> None:
    target_check("fourierft", FOURIERFT_TARGETS)(model, ctx)
    n_frequency = ctx.options["n_frequency"]
    for name, module in _adapted_layers(model, ctx, FOURIERFT_TARGETS, "fourierft").items():
        fan_in, fan_out = _in_out_features(module)
        if not 1 <= n_frequency <= fan_in * fan_out:
            raise PeftlabError(
                f"fourierft option n_frequency must be between 1 and the weight's size {fan_in} x {fan_out} = {fan_in * fan_out} of {name}, got {n_frequency}; pass --method-arg n_frequency=N"
            )


FOURIERFT = register(
    Method(
        name="fourierft",
        summary="FourierFT: trains n_frequency spectral coefficients per layer at fixed random frequencies; the update is their inverse 2-D FFT.",
        default_lr=5e-2,
        apply=_apply_fourierft,
        saves_adapter=True,
        check=_check_fourierft,
        family=FAMILY,
        tasks=ALL_TASKS,
        targets=FOURIERFT_TARGETS,
        layer_types=LINEAR_TYPES,
        flags=("target_modules",),
        options=(
            MethodOption("n_frequency", int, 1000, "Spectral coefficients trained per adapted layer."),
            MethodOption("scaling", float, 150.0, "Scale of the update, like LoRA's alpha."),
        ),
    )
)


# ---------------------------------------------------------------------------
# OFT and BOFT: a trained orthogonal rotation of each frozen weight


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _apply_oft(model: nn.Module, ctx: MethodContext) -> nn.Module:
    config = OFTConfig(
        task_type=peft_task_type(ctx),
        r=0,  # peft derives the number of blocks from oft_block_size; only one of the two may be set
        oft_block_size=ctx.options["oft_block_size"],
        target_modules=resolve_targets(ctx.config, ctx.model_type, OFT_TARGETS, "oft"),
        modules_to_save=head_to_save(ctx),
    )
    return get_peft_model(model, config)


def _check_oft(model: nn.Module, ctx: MethodContext) -> None:
    target_check("oft", OFT_TARGETS, layer_types=(nn.Linear,))(model, ctx)
    block = ctx.options["oft_block_size"]
    for name, module in _adapted_layers(model, ctx, OFT_TARGETS, "oft").items():
        fan_in, _ = _in_out_features(module)
        # peft would silently change the block size to a nearby divisor, and with it the parameter count.
        if block < 1 or fan_in % block:
            raise PeftlabError(
                f"oft option oft_block_size must divide the input size {fan_in} of {name}, got {block}; valid sizes: {_divisors(fan_in)}"
            )


OFT = register(
    Method(
        name="oft",
        summary="OFT: rotates each target weight by a trained block-diagonal orthogonal matrix (blocks of oft_block_size).",
        default_lr=1e-3,
        apply=_apply_oft,
        saves_adapter=True,
        check=_check_oft,
        family=FAMILY,
        tasks=ALL_TASKS,
        targets=OFT_TARGETS,
        layer_types=(nn.Linear,),
        flags=("target_modules",),
        options=(MethodOption("oft_block_size", int, 32, "Size of each orthogonal block; must divide the input size of every target."),),
    )
)


def _apply_boft(model: nn.Module, ctx: MethodContext) -> nn.Module:
    config = BOFTConfig(
        task_type=peft_task_type(ctx),
        boft_block_size=ctx.options["boft_block_size"],
        boft_n_butterfly_factor=ctx.options["boft_n_butterfly_factor"],
        target_modules=resolve_targets(ctx.config, ctx.model_type, BOFT_TARGETS, "boft"),
        modules_to_save=head_to_save(ctx),
    )
    with warnings.catch_warnings():
        if ctx.options["boft_n_butterfly_factor"] == 1:
            # peft tries to build its CUDA kernel for every BOFT layer and warns when it cannot. With one
            # butterfly factor the kernel would only be a speed-up, so the fallback changes no result.
            warnings.filterwarnings("ignore", message="Failed to load the CUDA extension")
            warnings.filterwarnings("ignore", message="Setting boft_n_butterfly_factor to 1")
        return get_peft_model(model, config)


def _check_boft(model: nn.Module, ctx: MethodContext) -> None:
    target_check("boft", BOFT_TARGETS, layer_types=(nn.Linear,))(model, ctx)
    block, factor = ctx.options["boft_block_size"], ctx.options["boft_n_butterfly_factor"]
    if factor < 1:
        raise PeftlabError(f"boft option boft_n_butterfly_factor must be a positive integer, got {factor}")
    if factor > 1 and not torch.cuda.is_available():
        # peft 0.21 builds the butterfly kernel with CUDA only, and without it falls back to factor 1 silently.
        raise PeftlabError(
            f"boft option boft_n_butterfly_factor={factor} needs CUDA (peft's butterfly kernel), which this machine lacks; use the default 1 here"
        )
    span = block * 2 ** (factor - 1)
    for name, module in _adapted_layers(model, ctx, BOFT_TARGETS, "boft").items():
        fan_in, _ = _in_out_features(module)
        if block < 1 or fan_in % span:
            raise PeftlabError(
                f"boft option boft_block_size times 2^(boft_n_butterfly_factor - 1) must divide the input size {fan_in} of {name}, got {block} x {2 ** (factor - 1)}; valid products: {_divisors(fan_in)}"
            )
        if factor > 1 and (block % 2 or (fan_in // block) % 2):
            raise PeftlabError(f"boft with butterfly factors needs an even block size and block count for {name}, got block size {block} and {fan_in // block} blocks")


BOFT = register(
    Method(
        name="boft",
        summary="BOFT: OFT whose orthogonal matrix is a product of butterfly factors of small blocks (boft_block_size).",
        default_lr=1e-3,
        apply=_apply_boft,
        saves_adapter=True,
        check=_check_boft,
        family=FAMILY,
        tasks=ALL_TASKS,
        targets=BOFT_TARGETS,
        layer_types=(nn.Linear,),
        flags=("target_modules",),
        options=(
            MethodOption("boft_block_size", int, 4, "Size of each orthogonal block; must divide the input size of every target."),
            MethodOption("boft_n_butterfly_factor", int, 1, "Butterfly factors; above 1 needs CUDA for peft's kernel. 1 is a block-diagonal rotation."),
        ),
    )
)


# ---------------------------------------------------------------------------
# LN tuning: train copies of the normalisation layers


def _check_ln_tuning(model: nn.Module, ctx: MethodContext) -> None:
    targets = resolve_targets(ctx.config, ctx.model_type, LN_TUNING_TARGETS, "ln-tuning")
    modules = dict(model.named_modules())
    norms = norm_module_names(model)
    for target in targets:
        matches = [name for name in modules if name == target or name.endswith("." + target)]
        if not matches:
            raise PeftlabError(f"target module {target!r} for method 'ln-tuning' does not exist in this model; normalisation layers it has: {one_of(norms)}")
        other = [name for name in matches if not is_norm_layer(modules[name])]
        if other:
            kind = type(modules[other[0]]).__name__
            raise PeftlabError(
                f"target module {target!r} for method 'ln-tuning' is a {kind}, not a normalisation layer ({other[0]}); normalisation layers in this model: {one_of(norms)}"
            )


def _apply_ln_tuning(model: nn.Module, ctx: MethodContext) -> nn.Module:
    config = LNTuningConfig(
        task_type=peft_task_type(ctx),
        target_modules=resolve_targets(ctx.config, ctx.model_type, LN_TUNING_TARGETS, "ln-tuning"),
        modules_to_save=head_to_save(ctx),
    )
    with warnings.catch_warnings():
        # peft 0.21 warns "Unsupported layer type" for every normalisation layer, which LN tuning exists to adapt.
        warnings.filterwarnings("ignore", message="Unsupported layer type")
        return get_peft_model(model, config)


LN_TUNING = register(
    Method(
        name="ln-tuning",
        summary="LN tuning: trains the scales and biases of the normalisation layers (copies, saved in the adapter).",
        default_lr=1e-3,
        apply=_apply_ln_tuning,
        saves_adapter=True,
        check=_check_ln_tuning,
        family=FAMILY,
        tasks=ALL_TASKS,
        targets=LN_TUNING_TARGETS,
        flags=("target_modules",),
    )
)
