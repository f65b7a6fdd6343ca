"""`ExactLinear` (intconv.py): every backend gives exactly the float64 linear map of integer
inputs, the int8 convolution is used where it is available and exact, and a wrong int8 result
at construction sends the layer to the float path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from sparsexbar.core import intconv
from sparsexbar.core.intconv import (
    FLOAT32_EXACT,
    INT8_MM_MAX_K,
    ExactLinear,
    as_uint8,
    exact_int_mm,
    int8_matrix,
    int8_operand,
)

CPU = torch.device("cpu")


def reference(kind: str, w: Tensor, x: Tensor, stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
    if kind == "linear":
        return F.linear(x.to(torch.float64), w.to(torch.float64))
    return F.conv2d(x.to(torch.float64), w.to(torch.float64), None, stride, padding, dilation)


CASES = [  # kind, weight shape, input shape, stride, padding, dilation
    ("conv", (5, 3, 3, 3), (2, 3, 7, 7), (1, 1), (1, 1), (1, 1)),
    ("conv", (4, 2, 3, 2), (3, 2, 9, 8), (2, 1), (0, 2), (1, 2)),
    ("conv", (7, 1, 3, 3), (2, 1, 6, 6), (1, 1), (1, 1), (1, 1)),
    ("linear", (6, 20), (5, 20), (1, 1), (0, 0), (1, 1)),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("int8", [True, False])
@pytest.mark.parametrize(("max_input", "scale"), [(255, 1.0), (1, 1.0), (130, 8.0)])
def test_backends_equal_float64_reference(case: tuple, int8: bool, max_input: int, scale: float,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    kind, w_shape, x_shape, stride, padding, dilation = case
    gen = torch.Generator().manual_seed(len(w_shape) + max_input)
    w = torch.randint(-127, 128, w_shape, generator=gen)
    x = torch.randint(0, max_input + 1, x_shape, generator=gen).to(torch.uint8)
    available = intconv._int8_conv_available(CPU)
    if not int8:
        monkeypatch.setattr(intconv, "_int8_conv_available", lambda device: False)
    op = ExactLinear(kind, w, max_input, CPU, stride, padding, dilation,
                     probe_shape=tuple(x_shape[1:]))
    expected_backend = "int8" if int8 and available and kind == "conv" else "float32"
    assert op.backend == expected_backend
    ref = reference(kind, w, x, stride, padding, dilation) * scale
    got = op(x, scale)
    assert got.dtype == torch.float32
    assert torch.equal(got.to(torch.float64), ref)
    rows = op.rows(x, scale)
    flat = ref if kind == "linear" else ref.permute(0, 2, 3, 1).reshape(-1, w_shape[0])
    assert rows.is_contiguous() and torch.equal(rows.to(torch.float64), flat)


def test_large_bound_uses_float64() -> None:
    w = torch.full((2, 600), 127, dtype=torch.int64)
    w[1] = -127
    op = ExactLinear("linear", w, 255, CPU)
    assert op.bound >= FLOAT32_EXACT and op.backend == "float64"
    x = torch.full((3, 600), 255, dtype=torch.int32)
    assert torch.equal(op(x), reference("linear", w, x, (1, 1), (0, 0), (1, 1)))


def test_weights_beyond_int8_use_float32() -> None:
    w = torch.tensor([[[[200]], [[-3]]]])  # (1, 2, 1, 1): 200 does not fit int8
    op = ExactLinear("conv", w, 255, CPU)
    assert op.backend == "float32"
    x = torch.randint(0, 256, (2, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    assert torch.equal(op(x).to(torch.float64),
                       reference("conv", w, x, (1, 1), (0, 0), (1, 1)))


@pytest.mark.skipif(not intconv._int8_conv_available(CPU), reason="no int8 convolution here")
def test_probe_rejects_a_wrong_int8_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend whose results are off (saturation, say) fails the probe: float path."""
    real = ExactLinear._int8

    def off_by_one(self: ExactLinear, x: Tensor, scale: float) -> Tensor:
        return real(self, x, scale) + 1

    monkeypatch.setattr(ExactLinear, "_int8", off_by_one)
    w = torch.randint(-127, 128, (3, 2, 3, 3), generator=torch.Generator().manual_seed(2))
    assert ExactLinear("conv", w, 255, CPU, padding=(1, 1)).backend == "float32"


def test_int8_matrix_refuses_what_int8_products_cannot_hold() -> None:
    ok = torch.tensor([[-128.0, 0.0], [127.0, 3.0]])
    op = int8_matrix(ok)
    assert op is not None and op.dtype == torch.int8 and torch.equal(op.to(torch.float32), ok)
    assert int8_matrix(torch.tensor([[0.5, 1.0]])) is None  # not an integer
    assert int8_matrix(torch.tensor([[128.0]])) is None
    assert int8_matrix(torch.tensor([[-129.0]])) is None
    assert int8_matrix(torch.zeros((INT8_MM_MAX_K, 1))) is None  # int32 sums could overflow
    assert int8_matrix(torch.zeros((INT8_MM_MAX_K - 1, 1))) is not None
    # the engine takes the int8 product only where it is fast: CPUs with VNNI
    fast = int8_operand(ok)
    assert (fast is not None) == intconv._has_vnni()
    assert fast is None or torch.equal(fast, op)


@pytest.mark.parametrize(("m", "k", "n"), [(1, 1, 1), (5, 289, 34), (300, 17, 3), (64, 1153, 135)])
def test_exact_int_mm_equals_the_integer_product(m: int, k: int, n: int) -> None:
    gen = torch.Generator().manual_seed(m * 7 + k)
    rows = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=gen)
    weight = torch.randint(-128, 128, (k, n), generator=gen).to(torch.float32)
    op = int8_matrix(weight)  # correct on any CPU (fast only with VNNI)
    assert op is not None
    got = exact_int_mm(rows, op)
    assert got.dtype == torch.int32
    assert torch.equal(got.to(torch.int64), rows.to(torch.int64) @ weight.to(torch.int64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32, torch.int64,
                                   torch.uint8])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_as_uint8_equals_torch_conversion(dtype: torch.dtype, layout: str) -> None:
    """Every integer value 0..255 in any dtype and layout: the same uint8 values as torch's
    conversion, in the asked memory format (floats go through numpy on CPU)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (3, 5, 7, 6), generator=gen).to(dtype)
    x.view(-1)[:256] = torch.arange(256).to(dtype)  # every value once
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = x[:, :, ::2, 1:]
    for fmt in (torch.contiguous_format, torch.channels_last):
        got = as_uint8(x, fmt)
        assert got.dtype == torch.uint8 and got.is_contiguous(memory_format=fmt)
        assert torch.equal(got, x.to(torch.uint8))
    flat = as_uint8(x.reshape(3, -1))  # 2-D (linear layers' inputs)
    assert flat.is_contiguous() and torch.equal(flat, x.reshape(3, -1).to(torch.uint8))
