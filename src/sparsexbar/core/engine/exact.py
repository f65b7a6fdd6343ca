"""The exact shortcut: a layer's integer accumulator, exactly, by the fastest exact backend.

On CPU, conv layers whose weights fit int8 and whose inputs are unsigned and fit uint8 run
oneDNN's u8 x s8 -> s32 convolution (`layer_linear_op`, built once per layer and device,
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

_LINEAR_KEY = "exact_linear"  # the layer cache's key (with the device) of `layer_linear_op`
_WEIGHTS_KEY = "exact_float32_weights"  # and of `_float32_weights`


def layer_linear_op(layer: QuantLayer, device: torch.device) -> ExactLinear:
    """The layer's exact linear map of inputs in [0, input_max] on `device`
    (`intconv.ExactLinear`: oneDNN's int8 convolution on CPU where exact, float32 below 2^24,
    float64 off CPU), probed on the layer's recorded input shape; built on first use and
    cached in the layer, one per device, shared by the exact shortcut and the schemes that
    apply the layer's own weights (sre's values, comprrae's running sums). Build it before
    sharing the layer between threads (`LayerKernel._prepare` does)."""
    key = (_LINEAR_KEY, str(device))
    op = layer._cache.get(key)
    if not isinstance(op, ExactLinear):
        op = layer._cache[key] = ExactLinear(
            layer.kind, layer.weight_int, layer.input_max, device, layer.stride,
            layer.padding, layer.dilation, probe_shape=layer.input_shape or None,
            groups=layer.groups)
    return op


def exact_int8_op(layer: QuantLayer, device: torch.device) -> ExactLinear | None:
    """`layer_linear_op` where it is the int8 convolution and the exact shortcut may use it
    (CPU, a conv layer with unsigned inputs), else None: not a conv, signed inputs, inputs
    beyond 255 or weights beyond int8, no VNNI, or a probe that differs from float64."""
    if device.type != "cpu" or layer.kind != "conv" or layer.input_signed:
        return None
    op = layer_linear_op(layer, device)
    return op if op.backend == "int8" else None


def exact_from_magnitudes(layer: QuantLayer, parts: list[Tensor], x_int: Tensor) -> Tensor:
    """`exact_accumulator` from the narrow input magnitudes a scheme already holds (`parts`:
    (x,) or, signed, (positive, negative), as `counting.narrow_magnitudes` gives them): the
    layer's linear map (`layer_linear_op`) on each part, positive minus negative (exact:
    |difference| <= the bound), with no conversion of the float input; where that map would
    not be exact in float32 on CPU, `exact_accumulate` on x_int. For reading only (a layer's
    result): float32 on CPU, conv outputs possibly channels-last."""
    op = layer_linear_op(layer, x_int.device)
    if x_int.device.type == "cpu" and op.bound >= FLOAT32_EXACT:
        return exact_accumulate(layer, x_int)
    value = op(parts[0])
    if len(parts) == 2:
        value = value - op(parts[1])
    return value


def exact_accumulator(layer: QuantLayer, x_int: Tensor) -> Tensor:
    """The exact integer accumulator of a layer, for reading only (the result a scheme
    returns, which the frontend dequantizes): on CPU, where the int8 convolution or a float32
    linear map holds every value exactly (below 2^24), its float32 result as it comes (conv
    outputs possibly channels-last: no float64 copy, which cost as much as the int8
    convolution itself on the shipped VGG-8); else `exact_accumulate`. To add corrections
    into, use `exact_accumulate` (float64, contiguous)."""
    native = _float32_accumulator(layer, x_int)
    return native if native is not None else exact_accumulate(layer, x_int)


def _float32_accumulator(layer: QuantLayer, x_int: Tensor) -> Tensor | None:
    """sum_r W[r, c] * x[r] in float32 where that is exact on CPU: the int8 convolution
    where it applies and the input lies in [0, 255], else a float32 linear map where the
    largest |result| (column |weight| sum x max |input|) stays below 2^24; else None."""
    if x_int.device.type != "cpu":
        return None
    native = _int8_accumulator(layer, x_int)
    return native if native is not None else _float32_linear(layer, x_int, _abs_max(x_int))


def _int8_accumulator(layer: QuantLayer, x_int: Tensor) -> Tensor | None:
    """The int8 convolution of x_int (CPU), where it applies and every input lies in
    [0, input_max] (the layer's own quantized input is; anything else is checked: a value
    outside would wrap in uint8); else None."""
    op = exact_int8_op(layer, x_int.device)
    if op is None or not x_int.numel():
        return None
    if layer.holds_quantized(x_int):  # clamped to [0, input_max] by quantize_input
        return op(x_int)
    low, high = torch.aminmax(x_int)
    return op(x_int) if int(low) >= 0 and int(high) <= op.max_input else None


def _abs_max(x_int: Tensor) -> float:
    """The largest |input| (0 for an empty input)."""
    return float(x_int.abs().max()) if x_int.numel() else 0.0


def _float32_linear(layer: QuantLayer, x_int: Tensor, x_max: float) -> Tensor | None:
    """The layer's linear map of x_int in float32 where every result is exact (column
    |weight| sum x `x_max` below 2^24), else None."""
    col_abs_sum, wf = _float32_weights(layer, x_int.device)
    if col_abs_sum * x_max < FLOAT32_EXACT:
        return layer.linear_op(x_int.to(torch.float32), wf)
    return None


def _float32_weights(layer: QuantLayer, device: torch.device) -> tuple[float, Tensor]:
    """(largest column |weight| sum, the integer weights as float32) on `device`, cached in
    the layer (static: recomputing them took 3 ms per call on a 148k-weight linear layer)."""
    key = (_WEIGHTS_KEY, str(device))
    cached = layer._cache.get(key)
    if isinstance(cached, tuple):
        return cached
    w = layer.weight_int.to(device)
    col_abs_sum = float(w.reshape(w.shape[0], -1).abs().sum(dim=1).max()) if w.numel() else 0.0
    result = (col_abs_sum, w.to(torch.float32))
    layer._cache[key] = result
    return result


def exact_accumulate(layer: QuantLayer, x_int: Tensor) -> Tensor:
    """sum_r W[r, c] * x[r] exactly (float64 out, contiguous): the int8 convolution where it
    applies and the input lies in [0, 255], else float32 linear ops on bit pieces of |x|."""
    if x_int.device.type != "cpu":
        # cuDNN may pick TF32, Winograd or FFT algorithms, which are not exact: use float64.
        return layer.reference_accumulate(x_int).to(torch.float64)
    native = _int8_accumulator(layer, x_int)
    x_max = 0.0
    if native is None:  # the input's largest magnitude: once, for both float paths
        x_max = _abs_max(x_int)
        native = _float32_linear(layer, x_int, x_max)
    if native is not None:
        return native.to(torch.float64, memory_format=torch.contiguous_format)
    col_abs_sum, wf = _float32_weights(layer, x_int.device)
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
