"""Measurement of the tensors autograd keeps for the backward pass, the counterpart of the activation estimate."""

from __future__ import annotations

import torch
from torch import nn


def saved_tensor_bytes(model: nn.Module, inputs: dict) -> int:
    """Run ``model(**inputs)`` and return the bytes of the tensors autograd keeps for the backward pass.

    Each storage counts once (a tensor that several operations keep, or views
    of one tensor), and parameters are left out: they are weights, not
    activations. The model should be in training mode, as dropout keeps masks.
    """
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, torch.Tensor] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in param_storages and key not in kept:
            kept[key] = tensor  # holding a reference keeps the address from being reused meanwhile
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(**inputs)
    total = sum(t.untyped_storage().nbytes() for t in kept.values())
    del output, kept
    return total
