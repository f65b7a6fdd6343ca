"""The exact shortcut: a layer's integer accumulator, exactly, by the fastest exact backend.

On CPU, conv layers whose weights fit int8 and whose inputs are unsigned and fit uint8 run
oneDNN's u8 x s8 -> s32 convolution (`intconv.ExactLinear`, built once per layer and device,
probed against float64 on first use): the int32 accumulator is exact, and its float32 copy is
exact as every |result| is below 2^24 (the static bound: column |weight| sum x input max).
Otherwise float32 linear operations on bit pieces of the input, exact while every partial
sum stays below 2^24; off CPU float64 (cuDNN may use TF32, Winograd or FFT algorithms).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..frontend import QuantLayer
from ..intconv import FLOAT32_EXACT, ExactLinear

_INT8_KEY = "exact_int8"  # the layer cache's key of the int8 convolution


def exact_int8_op(layer: QuantLayer, device: torch.device,
                  input_shape: tuple[int, ...] | None = None) -> ExactLinear | None:
    """The layer's exact int8 convolution on `device` (built, probed and cached in the
    layer on first use; `input_shape` per image for the probe), or None where it does not
    apply: not CPU, not a conv, signed inputs, inputs beyond 255, weights beyond int8, no
    VNNI, or a probe that differs from float64. Build it before sharing the layer between
    threads (`LayerKernel._prepare` does)."""
    if device.type != "cpu" or layer.kind != "conv" or layer.input_signed \
            or layer.input_max > 255:
        return None
    key = (_INT8_KEY, str(device))
    if key not in layer._cache:
        shape = input_shape or (tuple(layer.input_shape) if layer.input_shape else None)
        op = ExactLinear("conv", layer.weight_int, layer.input_max, device, layer.stride,
                         layer.padding, layer.dilation, probe_shape=shape, groups=layer.groups)
        layer._cache[key] = op if op.backend == "int8" else None
    cached = layer._cache[key]
    return cached if isinstance(cached, ExactLinear) else None


def exact_accumulate(layer: QuantLayer, x_int: Tensor) -> Tensor:
    """sum_r W[r, c] * x[r] exactly (float64 out, contiguous): the int8 convolution where it
    applies and the input lies in [0, 255], else float32 linear ops on bit pieces of |x|."""
    if x_int.device.type != "cpu":
        # cuDNN may pick TF32, Winograd or FFT algorithms, which are not exact: use float64.
        return layer.reference_accumulate(x_int).to(torch.float64)
    op = exact_int8_op(layer, x_int.device, tuple(int(v) for v in x_int.shape[1:]))
    if op is not None and x_int.numel():
        low, high = torch.aminmax(x_int)
        if int(low) >= 0 and int(high) <= op.max_input:  # values outside would wrap in uint8
            return op(x_int).to(torch.float64, memory_format=torch.contiguous_format)
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
