"""Smaller weights: float16/bfloat16 copies and per-row scaled int8 matrices.

int8 keeps each weight matrix as whole numbers in [-127, 127] and one float32 scale per row (the
row's largest magnitude / 127), so a row's rounding error is at most half its scale. Loading
turns them back into float32: on a CPU no maintained int8 kernel steps a one-stream model faster
than float32 does at these sizes (benchmarks/RESULTS.md), so int8 is a storage format.
"""

from __future__ import annotations

import torch
from torch import Tensor

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INT8 = "int8"
SCALE_SUFFIX = ".int8_scale"  # the per-row scales of matrix NAME are stored as NAME.int8_scale
INT8_MAX = 127


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """int8 values and float32 per-row scales with values * scales[:, None] ~= weight."""
    weight = weight.detach().float()
    scales = weight.abs().amax(dim=1) / INT8_MAX
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero row stays 0
    values = torch.round(weight / scales[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return values, scales


def cast_state(state: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """Every floating-point tensor of a state dict in `dtype` (others unchanged)."""
    return {
        name: tensor.detach().to(dtype) if tensor.is_floating_point() else tensor.detach()
        for name, tensor in state.items()
    }


def quantize_state(state: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """Matrices as int8 plus `NAME.int8_scale`; vectors (biases) in `dtype`."""
    packed: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.dim() == 2:
            packed[name], packed[name + SCALE_SUFFIX] = quantize_rows(tensor)
        elif tensor.is_floating_point():
            packed[name] = tensor.detach().to(dtype)
        else:
            packed[name] = tensor.detach()
    return packed


def dequantize_state(packed: dict[str, Tensor]) -> dict[str, Tensor]:
    """The float32 state dict an int8 one stands for; raises KeyError or ValueError if damaged."""
    state: dict[str, Tensor] = {}
    for name, tensor in packed.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if tensor.dtype == torch.int8:
            scales = packed[name + SCALE_SUFFIX]
            if tensor.dim() != 2 or scales.shape != tensor.shape[:1]:
                raise ValueError(f"int8 weight {name} does not match its scales")
            state[name] = tensor.float() * scales.float()[:, None]
        else:
            state[name] = tensor.float() if tensor.is_floating_point() else tensor
    return state
