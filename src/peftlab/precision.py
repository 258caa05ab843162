"""Numeric precision of training: mixed precision on CUDA and a 4-bit base model (QLoRA) through bitsandbytes.

On the CPU peftlab trains in fp32. On CUDA, ``--precision auto`` trains in bf16
mixed precision where the GPU supports it (Ampere and newer) and in fp16 with
loss scaling elsewhere. ``--quantize 4bit`` loads the frozen base weights as
NF4 with double quantization and computes in bf16 or fp16, as in QLoRA
(Dettmers et al., 2023); only methods that leave the base weights frozen can
use it.
"""

from __future__ import annotations

import importlib.util

import torch

from peftlab.config import RunConfig
from peftlab.errors import PeftlabError

# Methods that update the base model's linear weights, which bitsandbytes stores frozen in 4 bits.
TRAINS_BASE_WEIGHTS = ("full", "top-layers")


def resolve_precision(precision: str, cuda: bool | None = None) -> str:
    """Turn --precision into fp32, bf16 or fp16 for this machine; reject fp16 without CUDA."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if precision == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not cuda:
        raise PeftlabError("--precision fp16 needs a CUDA GPU (PyTorch's fp16 loss scaling runs on CUDA); use fp32 or bf16 on the CPU")
    return precision


def precision_arguments(precision: str) -> dict[str, bool]:
    """Return the TrainingArguments flags of a resolved precision (fp32, bf16 or fp16)."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def check_quantize(config: RunConfig, cuda: bool | None = None) -> None:
    """Raise PeftlabError when ``--quantize 4bit`` cannot run here or with the requested methods."""
    if config.quantize == "none":
        return
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        raise PeftlabError("--quantize 4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels) and none was found; drop --quantize to train in fp32 on the CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PeftlabError("--quantize 4bit needs the bitsandbytes package, which is not installed: run `pip install bitsandbytes`")
    frozen_only = [name for name in config.methods if name.partition(":")[0] in TRAINS_BASE_WEIGHTS]
    if frozen_only:
        raise PeftlabError(
            f"--quantize 4bit keeps the base weights frozen in 4 bits, but {', '.join(frozen_only)} trains them; use an adapter method such as lora"
        )


def quantization_kwargs(quantize: str) -> dict:
    """Return the from_pretrained arguments that load the base weights as ``quantize`` (none: no arguments)."""
    if quantize == "none":
        return {}
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    return {"quantization_config": config, "device_map": {"": torch.cuda.current_device()}}


def prepare_quantized(model, quantize: str):
    """Make a 4-bit model ready for adapter training (fp32 norms and input gradients, as peft recommends); others pass through."""
    if quantize == "none":
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model)
