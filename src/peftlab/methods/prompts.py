"""Soft prompts through peft: trained vectors put before the input (prompt tuning, P-tuning)
or before the keys and values of every attention layer (prefix tuning). The model's weights
stay frozen; the new task head trains beside the prompt and is saved inside the adapter.
"""

from __future__ import annotations

import inspect
import logging

import peft
import transformers
from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model
from torch import nn

from peftlab.errors import PeftlabError
from peftlab.methods.common import head_to_save, peft_task_type
from peftlab.methods.registry import ALL_TASKS, Method, MethodContext, MethodOption, register
from peftlab.models import resolve_model

log = logging.getLogger(__name__)

FAMILY = "soft prompts"
NUM_VIRTUAL_TOKENS = MethodOption("num_virtual_tokens", int, 20, "Length of the trained prompt, in token positions.")
P_TUNING_ENCODERS = ("MLP", "LSTM")


def _check_virtual_tokens(ctx: MethodContext, method: str) -> None:
    if ctx.options["num_virtual_tokens"] < 1:
        raise PeftlabError(f"{method} option num_virtual_tokens must be a positive integer, got {ctx.options['num_virtual_tokens']}")


def _check_input_prompt(model: nn.Module, ctx: MethodContext, method: str) -> None:
    """Reject models that cannot take the prompt as input embeddings, which prompt tuning and P-tuning feed them."""
    _check_virtual_tokens(ctx, method)
    if ctx.task == "seq-cls" and model.config.is_encoder_decoder:
        # transformers 5's encoder-decoder classifiers (T5, BART, ...) find the sequence end in input_ids.
        raise PeftlabError(
            f"{method} cannot train {type(model).__name__}: it does not accept inputs_embeds (transformers {transformers.__version__}), which carry the prompt; use lora, ia3 or another method that adapts weights"
        )
    if ctx.task == "seq-cls" and "score" in ctx.head_modules:
        # transformers' decoder classifiers (their head is named score) pool the last position, and
        # without input_ids they cannot tell padding apart, so right-padded texts are read at a pad token.
        log.warning("%s on %s: the classifier reads the last position, which is padding for all but the longest text of a batch", method, type(model).__name__)


def _prompt_shape(model: nn.Module) -> dict[str, int]:
    """Return the sizes peft needs for an input prompt, which it would read from config.to_dict().

    The prompt lives in the input embedding space. DistilBERT's config stores these
    sizes as dim, n_heads and n_layers, which only attribute access translates.
    """
    config = model.config
    shape = {"token_dim": model.get_input_embeddings().embedding_dim}
    for key in ("num_attention_heads", "num_hidden_layers"):
        if getattr(config, key, None) is not None:
            shape["num_layers" if key == "num_hidden_layers" else key] = getattr(config, key)
    return shape


# ---------------------------------------------------------------------------
# Prompt tuning: trained input embeddings


def _apply_prompt_tuning(model: nn.Module, ctx: MethodContext) -> nn.Module:
    text = ctx.options["init_text"]
    init = {}
    if text and ctx.weights_loaded:  # without weights there are no embeddings to copy, and counts do not depend on them
        init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": text, "tokenizer_name_or_path": resolve_model(ctx.config.model).path}
    config = PromptTuningConfig(
        task_type=peft_task_type(ctx),
        num_virtual_tokens=ctx.options["num_virtual_tokens"],
        modules_to_save=head_to_save(ctx),
        **_prompt_shape(model),
        **init,
    )
    return get_peft_model(model, config)


PROMPT_TUNING = register(
    Method(
        name="prompt-tuning",
        summary="Prompt tuning: num_virtual_tokens trained embeddings before the input.",
        default_lr=3e-2,
        apply=_apply_prompt_tuning,
        saves_adapter=True,
        check=lambda model, ctx: _check_input_prompt(model, ctx, "prompt-tuning"),
        family=FAMILY,
        tasks=ALL_TASKS,
        options=(
            NUM_VIRTUAL_TOKENS,
            MethodOption("init_text", str, "", "Start the prompt from the embeddings of this text (repeated to length). Default: random."),
        ),
    )
)


# ---------------------------------------------------------------------------
# P-tuning: the input prompt comes out of a small trained encoder


def _check_p_tuning(model: nn.Module, ctx: MethodContext) -> None:
    encoder = ctx.options["encoder_reparameterization_type"]
    if encoder not in P_TUNING_ENCODERS:
        raise PeftlabError(f"p-tuning option encoder_reparameterization_type must be one of {', '.join(P_TUNING_ENCODERS)}, got {encoder!r}")
    _check_input_prompt(model, ctx, "p-tuning")


def _apply_p_tuning(model: nn.Module, ctx: MethodContext) -> nn.Module:
    config = PromptEncoderConfig(
        task_type=peft_task_type(ctx),
        num_virtual_tokens=ctx.options["num_virtual_tokens"],
        encoder_reparameterization_type=ctx.options["encoder_reparameterization_type"],
        modules_to_save=head_to_save(ctx),
        **_prompt_shape(model),
    )
    return get_peft_model(model, config)


P_TUNING = register(
    Method(
        name="p-tuning",
        summary="P-tuning: an input prompt of num_virtual_tokens produced by a small trained MLP or LSTM encoder.",
        default_lr=1e-2,
        apply=_apply_p_tuning,
        saves_adapter=True,
        check=_check_p_tuning,
        family=FAMILY,
        tasks=ALL_TASKS,
        options=(
            NUM_VIRTUAL_TOKENS,
            MethodOption("encoder_reparameterization_type", str, "MLP", "Prompt encoder: MLP or LSTM."),
        ),
    )
)


# ---------------------------------------------------------------------------
# Prefix tuning: trained keys and values in every attention layer


def _check_prefix_tuning(model: nn.Module, ctx: MethodContext) -> None:
    _check_virtual_tokens(ctx, "prefix-tuning")
    backbone = model.base_model  # transformers: the bare model under the task head
    backbone_args = set(inspect.signature(backbone.forward).parameters)
    if not backbone_args & {"cache", "past_key_values"}:
        raise PeftlabError(
            f"prefix-tuning needs a key/value cache to hold the prefix, and {type(backbone).__name__} has none; use prompt-tuning or p-tuning"
        )
    if ctx.task == "seq-cls":
        # peft hands the prefix to a sequence classifier only when forward() has a past_key_values argument,
        # which transformers 5 renamed to cache. Causal and seq2seq LMs still take the old name through **kwargs.
        model_args = set(inspect.signature(model.forward).parameters)
        if "past_key_values" not in model_args | backbone_args:
            others = "lora, ia3 or another method that adapts weights" if model.config.is_encoder_decoder else "prompt-tuning or p-tuning"
            raise PeftlabError(
                f"prefix-tuning cannot train {type(model).__name__}: peft {peft.__version__} passes the prefix to sequence classifiers as past_key_values, "
                f"an argument transformers {transformers.__version__} renamed to cache; use {others} (prefix-tuning works for causal-lm and seq2seq-lm)"
            )


def _apply_prefix_tuning(model: nn.Module, ctx: MethodContext) -> nn.Module:
    config = PrefixTuningConfig(
        task_type=peft_task_type(ctx),
        num_virtual_tokens=ctx.options["num_virtual_tokens"],
        prefix_projection=ctx.options["prefix_projection"],
        modules_to_save=head_to_save(ctx),
    )
    return get_peft_model(model, config)


PREFIX_TUNING = register(
    Method(
        name="prefix-tuning",
        summary="Prefix tuning: num_virtual_tokens trained keys and values before those of every attention layer.",
        default_lr=1e-2,
        apply=_apply_prefix_tuning,
        saves_adapter=True,
        check=_check_prefix_tuning,
        family=FAMILY,
        tasks=ALL_TASKS,
        options=(
            NUM_VIRTUAL_TOKENS,
            MethodOption("prefix_projection", bool, False, "Produce the prefix with a trained MLP instead of training it directly."),
        ),
    )
)
