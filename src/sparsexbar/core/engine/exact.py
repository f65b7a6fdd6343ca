"""The exact shortcut: a layer's integer accumulator from float32 linear operations on bit
pieces of its input, exact while every partial sum stays below 2^24."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..frontend import QuantLayer

FLOAT32_EXACT = 2**24


def exact_accumulate(layer: QuantLayer, x_int: Tensor) -> Tensor:
    """sum_r W[r, c] * x[r] exactly, via float32 linear ops on bit pieces of |x|; float64 out."""
    if x_int.device.type != "cpu":
        # cuDNN may pick TF32, Winograd or FFT algorithms, which are not exact: use float64.
        return layer.reference_accumulate(x_int).to(torch.float64)
    w = layer.weight_int.to(x_int.device)
    col_abs_sum = float(w.reshape(w.shape[0], -1).abs().sum(dim=1).max()) if w.numel() else 0.0
    x_max = float(x_int.abs().max()) if x_int.numel() else 0.0
    wf = w.to(torch.float32)
    if col_abs_sum * x_max < FLOAT32_EXACT:
        return layer.linear_op(x_int.to(torch.float32), wf).to(torch.float64)
    piece_bits = max(1, int(math.floor(math.log2(FLOAT32_EXACT / max(col_abs_sum, 1.0) + 1))))
    while col_abs_sum * (2**piece_bits - 1) >= FLOAT32_EXACT and piece_bits > 1:
        piece_bits -= 1
    if col_abs_sum * (2**piece_bits - 1) >= FLOAT32_EXACT:  # a single weight column too large
        return layer.reference_accumulate(x_int).to(torch.float64)
    mag = x_int.abs().to(torch.int64)
    sign = torch.sign(x_int).to(torch.float32)
    total_bits = max(1, int(x_max).bit_length())
    acc: Tensor | None = None
    for j in range(math.ceil(total_bits / piece_bits)):  # 2 pieces for 8-bit inputs
        piece = ((mag >> (j * piece_bits)) & (2**piece_bits - 1)).to(torch.float32) * sign
        part = layer.linear_op(piece, wf).to(torch.float64) * float(2 ** (j * piece_bits))
        acc = part if acc is None else acc + part
    assert acc is not None
    return acc


def exact_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU (direct convolutions of small integers are exact); float64 elsewhere
    (cuDNN may pick TF32, Winograd or FFT algorithms)."""
    return torch.float32 if device.type == "cpu" else torch.float64
