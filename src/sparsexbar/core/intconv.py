"""Exact integer linear maps (conv2d / linear, no bias) for the schemes' per-cycle work.

The `sre` and `comprrae` schemes evaluate a layer's linear map many times per batch on small
non-negative integer inputs (input bit planes, shifted inputs) with small integer weights
(the layer's own, or 0/1 kept-row masks), and need the results exactly.

`ExactLinear` picks, once per layer, the fastest exact backend:
- `int8`: oneDNN's u8 x s8 -> s32 convolution (`torch.ops.onednn.qconv2d_pointwise`, the op
  torch's x86 quantization lowering uses), scales 1 and zero points 0, float32 output. Exact:
  the int32 accumulator is converted once, and every |result| is below 2^24. Used on CPU for
  conv layers when the CPU has VNNI (no int16 saturation of u8 x s8 pairs), weights fit int8,
  inputs fit uint8, and a probe (all inputs at their maximum, and random inputs, one image)
  equals the float64 reference; else the float path. 3-9x faster than a float32 conv on the
  shipped VGG-8's shapes (1 thread).
- `float32`: F.conv2d / F.linear in float32 on CPU: exact while every |partial sum| < 2^24
  (integer operands; any summation order), which the bound checks.
- `float64`: elsewhere (CUDA: cuDNN may use TF32, Winograd or FFT algorithms), rounded.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FLOAT32_EXACT = 2**24  # integers below this are exact in float32 (any summation order)


def as_uint8(x: Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """Integer values in [0, 255] (any dtype) as uint8 in `memory_format`. Floating inputs on
    CPU convert through numpy: torch 2.13's float -> uint8 conversion is not vectorized on
    CPU (1.6M float32 values: 919 us against 132 us for numpy's, one thread); the layout
    change then moves 1-byte values."""
    if x.device.type == "cpu" and x.is_floating_point():
        x = torch.from_numpy(x.detach().numpy().astype(np.uint8))  # keeps x's layout
    return x.to(torch.uint8).contiguous(memory_format=memory_format)


def _has_vnni() -> bool:
    """Whether this CPU has VNNI (AVX-512 or AVX-VNNI): int8 products summed without int16
    saturation, and torch's int8 kernels fast."""
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(vnni is not None and vnni())


def _int8_conv_available(device: torch.device) -> bool:
    """oneDNN int8 convolution usable without saturation on this CPU."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not _has_vnni():
        return False
    ops = torch.ops.onednn
    return hasattr(ops, "qconv_prepack") and hasattr(ops, "qconv2d_pointwise")


class ExactLinear:
    """x (N, C, H, W) or (N, C), integers in [0, max_input] -> weight . x exactly.

    `weight`: integer tensor (Cout, C / groups, kh, kw) or (Cout, C). `kind`: "conv" or
    "linear"; `groups`: torch's grouped convolution (conv only). Returns float32 on CPU
    (float64 elsewhere) holding the exact integer results; conv outputs may be channels-last.
    `bound`: the largest |result| (column |weight| sum x max_input).
    """

    def __init__(self, kind: str, weight: Tensor, max_input: int, device: torch.device,
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                 dilation: tuple[int, int] = (1, 1),
                 probe_shape: tuple[int, ...] | None = None, groups: int = 1) -> None:
        self.kind = kind
        self.groups = groups
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.device = device
        w = weight.to(torch.int64).cpu()
        cout = int(w.shape[0])
        col_abs = int(w.reshape(cout, -1).abs().sum(dim=1).max()) if w.numel() else 0
        self.bound = col_abs * max_input
        self.max_input = max_input
        fits_int8 = bool(w.numel() == 0 or (int(w.min()) >= -128 and int(w.max()) <= 127))
        self.backend = "float64"
        if device.type == "cpu" and self.bound < FLOAT32_EXACT:
            self.backend = "float32"
        self.weight_float = w.to(device=device,
                                 dtype=torch.float32 if self.backend == "float32"
                                 else torch.float64)
        if (self.backend == "float32" and kind == "conv" and fits_int8 and max_input <= 255
                and _int8_conv_available(device)):
            self._setup_int8(w.to(torch.int8), probe_shape)

    def _setup_int8(self, w8: Tensor, probe_shape: tuple[int, ...] | None) -> None:
        cout = int(w8.shape[0])
        self._scales = torch.ones(cout, dtype=torch.float32)
        self._zeros = torch.zeros(cout, dtype=torch.int64)
        try:
            self._packed = torch.ops.onednn.qconv_prepack(
                w8, self._scales, 1.0, 0, self.stride, self.padding, self.dilation, self.groups,
                None)
            kh, kw = int(w8.shape[2]), int(w8.shape[3])
            shape = probe_shape or (int(w8.shape[1]) * self.groups, kh * self.dilation[0] + 2,
                                    kw * self.dilation[1] + 2)
            gen = torch.Generator().manual_seed(0)
            probes = [torch.full((1, *shape), self.max_input, dtype=torch.uint8),
                      torch.randint(0, self.max_input + 1, (1, *shape), generator=gen,
                                    dtype=torch.uint8)]
            self.backend = "int8"
            for x in probes:
                ref = F.conv2d(x.to(torch.float64), w8.to(torch.float64), None, self.stride,
                               self.padding, self.dilation, self.groups)
                if not torch.equal(self(x).to(torch.float64), ref):
                    self.backend = "float32"
                    return
        except RuntimeError:  # op missing or refused for these shapes: the float path
            self.backend = "float32"

    def _int8(self, x: Tensor, scale: float) -> Tensor:
        """The oneDNN u8 x s8 convolution; the scale is applied in its epilogue."""
        xu = as_uint8(x, torch.channels_last)
        return torch.ops.onednn.qconv2d_pointwise(
            xu, scale, 0, self._packed, self._scales, self._zeros, None, self.stride,
            self.padding, self.dilation, self.groups, 1.0, 0, torch.float32, "none", [], "")

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the results: float32, or float64 for the float64 backend."""
        return torch.float64 if self.backend == "float64" else torch.float32

    def __call__(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """scale x weight . x for integer-valued x (any dtype) in [0, max_input]; `scale` a
        power of two (exact while scale x bound stays below 2^24 for float32)."""
        if self.backend == "int8":
            return self._int8(x, scale)
        xf = x.to(self.weight_float.dtype)
        if self.kind == "linear":
            out = F.linear(xf, self.weight_float)
        else:
            out = F.conv2d(xf, self.weight_float, None, self.stride, self.padding,
                           self.dilation, self.groups)
        if self.backend == "float64":
            out = torch.round(out)
        return out.mul_(scale) if scale != 1.0 else out

    def rows(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """scale x weight . x as a contiguous (positions, Cout) matrix: conv outputs
        (N, Cout, Ho, Wo) as (N*Ho*Wo, Cout) rows (free for the int8 backend's channels-last
        output)."""
        out = self(x, scale)
        if self.kind == "linear":
            return out
        cout = int(out.shape[1])
        return out.permute(0, 2, 3, 1).contiguous().view(-1, cout)


INT8_MM_MAX_K = 2**31 // (127 * 128)  # rows x largest |product| stays below 2^31 (int32)


def int8_operand(matrix: Tensor) -> Tensor | None:
    """`matrix` (K, N) as the int8 right operand of `exact_int_mm` where that path is fast
    and exact, else None: not on CPU, a CPU without VNNI (torch's int8 product is then a slow
    reference loop: encoding's clipping case ran at 4.4-5.0 images/s against 32.6-40.3 with
    float32 products, docs/benchmarks.md part 19), or what `int8_matrix` refuses."""
    if matrix.device.type != "cpu" or not _has_vnni():
        return None
    return int8_matrix(matrix)


def int8_matrix(matrix: Tensor) -> Tensor | None:
    """`matrix` (K, N) as an int8 matrix for `exact_int_mm`, on any CPU, or None: no
    `torch._int_mm`, values that are not integers in [-128, 127], or K too large for an int32
    sum (`INT8_MM_MAX_K`)."""
    if (not hasattr(torch, "_int_mm") or matrix.dim() != 2
            or int(matrix.shape[0]) >= INT8_MM_MAX_K):
        return None
    if matrix.numel() and (not bool((matrix == matrix.round()).all())
                           or float(matrix.min()) < -128 or float(matrix.max()) > 127):
        return None
    return matrix.to(torch.int8).contiguous()


def exact_int_mm(rows: Tensor, weight8: Tensor) -> Tensor:
    """rows (M, K) uint8 with every value <= 127, times `int8_operand`'s (K, N) int8 matrix:
    (M, N) int32, exact (int32 accumulation of int8 products; K < `INT8_MM_MAX_K`). The rows
    are reinterpreted as int8 (the same values below 128): no copy. On this project's CPU
    about 10x faster than converting the rows to float32 and multiplying (a (50176, 289) x
    (289, 34) product: 77 -> 7.5 ms, one thread)."""
    return torch._int_mm(rows.view(torch.int8), weight8)
