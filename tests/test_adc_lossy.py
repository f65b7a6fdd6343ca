"""Lossy ADC (DESIGN.md 2.3): with fewer ADC bits than lossless, or a step above 1, the
bit-accurate engine equals a plain-Python reference of the machine model, loop by loop:
output positions, cycles, arrays / OU row groups, columns; cell levels sliced from |w| in the
column layout documented in mapping.py; p per OU row group; clamp(round(p/step), 0, 2^bits-1)
* step; shift-add by cycle, slice and sign; the offset removed digitally (offset encoding).

Rounding: Python's round() and torch.round() both round halves to even; the reference uses
round(), so ties (odd p with step 2) are checked too.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import sparsexbar
from sparsexbar import EngineOptions
from sparsexbar.config import HardwareConfig, preset
from sparsexbar.engine import LayerKernel, accumulate
from sparsexbar.frontend import QuantLayer, quantize_model
from sparsexbar.mapping import map_dense
from tests import nets

BIT_ACCURATE = EngineOptions(exact_shortcut=False)


# ---- the reference ---------------------------------------------------------------------------
def _patches(layer: QuantLayer, x: list[Any]) -> list[list[list[int]]]:
    """Per image, per output position: the input vector in im2col row order (c, i, j)."""
    if layer.kind == "linear":
        return [[[int(v) for v in torch.as_tensor(img).reshape(-1).tolist()]] for img in x]
    cin = layer.weight_int.shape[1]
    kh, kw = layer.kernel_size
    sh, sw = layer.stride
    ph, pw = layer.padding
    dh, dw = layer.dilation
    _, ho, wo = layer.output_shape
    out = []
    for img in x:  # img: [c][y][x] python ints
        h, w = len(img[0]), len(img[0][0])
        positions = []
        for oy in range(ho):
            for ox in range(wo):
                vec = []
                for c in range(cin):
                    for i in range(kh):
                        for j in range(kw):
                            iy, ix = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                            inside = 0 <= iy < h and 0 <= ix < w
                            vec.append(int(img[c][iy][ix]) if inside else 0)
                positions.append(vec)
        out.append(positions)
    return out


def _columns(layer: QuantLayer, hw: HardwareConfig) -> tuple[list[list[int]], list[int],
                                                             list[int], int]:
    """Cell levels [row][col], the output channel and the signed shift weight of each column,
    and the stored offset: column = (c * polarities + pol) * slices + s (mapping.py)."""
    w = layer.weight_int.reshape(layer.out_channels, -1).tolist()  # [c][r]
    rows = len(w[0])
    cb = hw.cell.bits
    differential = hw.cell.sign.value == "differential"
    pols = 2 if differential else 1
    stored = hw.numbers.weight_bits - 1 if differential else hw.numbers.weight_bits
    slices = hw.cell.slices or -(-stored // cb)
    offset = 0 if differential else 2 ** (hw.numbers.weight_bits - 1)
    ncols = layer.out_channels * pols * slices
    levels = [[0] * ncols for _ in range(rows)]
    channel, shift = [0] * ncols, [0] * ncols
    for c in range(layer.out_channels):
        for pol in range(pols):
            for s in range(slices):
                col = (c * pols + pol) * slices + s
                channel[col] = c
                shift[col] = (-1 if pol == 1 else 1) * 2 ** (s * cb)
                for r in range(rows):
                    wr = w[c][r]
                    if differential:
                        mag = max(wr, 0) if pol == 0 else max(-wr, 0)
                    else:
                        mag = wr + offset
                    levels[r][col] = (mag >> (s * cb)) & (2**cb - 1)
    return levels, channel, shift, offset


def reference_accumulator(layer: QuantLayer, hw: HardwareConfig, x_int: Tensor) -> Tensor:
    """The machine model in plain Python loops; returns (N, Cout[, Ho, Wo]) float64."""
    levels, channel, shift, offset = _columns(layer, hw)
    rows, ncols = len(levels), len(channel)
    top, step = 2**hw.adc.bits - 1, hw.adc.step
    db = hw.dac.bits
    cycles = -(-hw.numbers.input_bits // db)
    row_tiles = [(a, min(a + hw.array.rows, rows)) for a in range(0, rows, hw.array.rows)]
    col_tiles = [(a, min(a + hw.array.cols, ncols)) for a in range(0, ncols, hw.array.cols)]
    per_image = _patches(layer, x_int.tolist())
    result = []
    for positions in per_image:
        outs = []
        for vec in positions:
            acc = [0.0] * layer.out_channels
            passes = ([([max(v, 0) for v in vec], 1), ([max(-v, 0) for v in vec], -1)]
                      if layer.input_signed else [(vec, 1)])
            for xs, sign in passes:
                col_sum = [0.0] * ncols
                for t in range(cycles):
                    chunk = [(v >> (t * db)) & (2**db - 1) for v in xs]
                    for r0, r1 in row_tiles:  # arrays (row direction)
                        for g0 in range(r0, r1, hw.ou.rows):  # OU row groups of the array
                            g1 = min(g0 + hw.ou.rows, r1)
                            for c0, c1 in col_tiles:  # arrays (column direction)
                                for col in range(c0, c1):
                                    p = sum(levels[r][col] * chunk[r] for r in range(g0, g1))
                                    q = min(max(round(p / step), 0), top) * step
                                    col_sum[col] += q * 2 ** (t * db)
                for col in range(ncols):
                    acc[channel[col]] += sign * shift[col] * col_sum[col]
                if offset:
                    for c in range(layer.out_channels):
                        acc[c] -= sign * offset * sum(xs)
            outs.append(acc)
        result.append(outs)
    out = torch.tensor(result, dtype=torch.float64)  # (N, P, Cout)
    if layer.kind == "linear":
        return out[:, 0, :]
    _, ho, wo = layer.output_shape
    return out.transpose(1, 2).reshape(out.shape[0], layer.out_channels, ho, wo)


def max_partial_sum(hw: HardwareConfig, layer: QuantLayer) -> int:
    """Largest partial sum of one column in one OU activation (independent of the engine)."""
    levels, _, _, _ = _columns(layer, hw)
    rows = len(levels)
    best = 0
    for r0 in range(0, rows, hw.array.rows):
        r1 = min(r0 + hw.array.rows, rows)
        for g0 in range(r0, r1, hw.ou.rows):
            for col in range(len(levels[0])):
                s = sum(levels[r][col] for r in range(g0, min(g0 + hw.ou.rows, r1)))
                best = max(best, s * (2**hw.dac.bits - 1))
    return best


# ---- the layer under test --------------------------------------------------------------------
def small_hw(**overrides: Any) -> HardwareConfig:
    base = {"array.rows": 8, "array.cols": 8, "ou.rows": 3, "ou.cols": 2, "cell.bits": 2,
            "numbers.weight_bits": 6, "numbers.input_bits": 4, "dac.bits": 1, "adc.bits": 8}
    base.update(overrides)
    return preset("isaac").with_overrides(base)


def conv_layer(hw: HardwareConfig, signed: bool = False, seed: int = 0
               ) -> tuple[nn.Module, QuantLayer, Tensor, Tensor]:
    net = nets.single_conv(in_ch=2, out_ch=3, k=3, stride=1, padding=1, seed=seed)
    x = nets.random_images(2, 2, 4, seed=seed, signed=signed)
    qmodel = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    layer = qmodel.layers[0]
    assert layer.input_signed is signed
    return net, layer, x, layer.quantize_input(x)


LOSSY_CASES = {
    # name: (overrides, the ADC can clip, signed input)
    "bits2-dac1": ({"adc.bits": 2}, True, False),
    "bits3-dac2-signed": ({"adc.bits": 3, "dac.bits": 2}, True, True),
    "bits1-dac1-signed": ({"adc.bits": 1}, True, True),
    "step2-bits2-dac2": ({"adc.bits": 2, "adc.step": 2, "dac.bits": 2}, True, False),
    "step2-bits2-dac2-signed": ({"adc.bits": 2, "adc.step": 2, "dac.bits": 2}, True, True),
    "step4-bits2-dac2": ({"adc.bits": 2, "adc.step": 4, "dac.bits": 2}, True, False),
    "step4-bits2-dac3-msb-signed": ({"adc.bits": 2, "adc.step": 4, "dac.bits": 3,
                                     "numbers.bit_order": "msb_first"}, True, True),
    "step2-no-clip": ({"adc.bits": 4, "adc.step": 2}, False, False),  # rounding only
    "step0.5-bits3": ({"adc.bits": 3, "adc.step": 0.5}, True, False),
}


@pytest.mark.parametrize("sign", ["differential", "offset"])
@pytest.mark.parametrize("case", list(LOSSY_CASES))
def test_lossy_adc_matches_the_loop_reference(case: str, sign: str) -> None:
    overrides, can_clip, signed = LOSSY_CASES[case]
    hw = small_hw(**{"cell.sign": sign, **overrides})
    _, layer, _, x_int = conv_layer(hw, signed=signed, seed=3)
    mapped = map_dense(layer, hw)
    assert len(mapped.row_tiles) == 3 and len(mapped.col_tiles) > 1
    expected_max = max_partial_sum(hw, layer)
    assert mapped.max_partial_sum() == expected_max
    assert mapped.adc_can_clip() is can_clip
    assert can_clip is (expected_max > (2**hw.adc.bits - 1) * hw.adc.step)
    assert not mapped.exact_linear()

    ref = reference_accumulator(layer, hw, x_int)
    kernel = LayerKernel(mapped, torch.device("cpu"))
    got = kernel.accumulate(x_int, BIT_ACCURATE)
    assert got.dtype == torch.float64 and got.shape == ref.shape
    assert torch.equal(got, ref)
    # The default path must not take the exact shortcut for a lossy ADC.
    assert torch.equal(accumulate(kernel, x_int, EngineOptions()), ref)
    # Not vacuous: the lossy result differs from the exact integer accumulator.
    exact = layer.reference_accumulate(x_int).to(torch.float64)
    assert not torch.equal(got, exact)


def test_reference_is_exact_when_lossless() -> None:
    """Sanity check of the reference itself: a lossless ADC gives the integer accumulator."""
    for sign in ("differential", "offset"):
        for signed in (False, True):
            hw = small_hw(**{"cell.sign": sign, "adc.bits": 4, "dac.bits": 1})
            _, layer, _, x_int = conv_layer(hw, signed=signed, seed=4)
            assert not map_dense(layer, hw).adc_can_clip()
            ref = reference_accumulator(layer, hw, x_int)
            assert torch.equal(ref, layer.reference_accumulate(x_int).to(torch.float64))


@pytest.mark.parametrize("sign", ["differential", "offset"])
def test_linear_layer_lossy_matches_the_reference(sign: str) -> None:
    hw = small_hw(**{"cell.sign": sign, "adc.bits": 2, "ou.rows": 4, "array.rows": 10,
                     "dac.bits": 2})
    fc = nn.Linear(23, 4)
    nets.seeded_init(fc, 5)
    net = nn.Sequential(nn.Flatten(), fc).eval()
    x = torch.rand((3, 23), generator=torch.Generator().manual_seed(5)) * 2 - 1
    qmodel = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    layer = qmodel.layers[0]
    assert layer.kind == "linear" and layer.input_signed
    x_int = layer.quantize_input(x)
    kernel = LayerKernel(map_dense(layer, hw), torch.device("cpu"))
    ref = reference_accumulator(layer, hw, x_int)
    assert torch.equal(kernel.accumulate(x_int, BIT_ACCURATE), ref)
    assert not torch.equal(ref, layer.reference_accumulate(x_int).to(torch.float64))


def test_small_memory_budget_gives_the_same_lossy_result() -> None:
    hw = small_hw(**{"adc.bits": 2, "adc.step": 2})
    _, layer, _, x_int = conv_layer(hw, signed=True, seed=6)
    kernel = LayerKernel(map_dense(layer, hw), torch.device("cpu"))
    ref = reference_accumulator(layer, hw, x_int)
    tiny = EngineOptions(memory_budget_mb=0.05, exact_shortcut=False)
    if hasattr(kernel, "chunk_rows"):  # several chunks per pass
        assert kernel.chunk_rows(0.05) < x_int.shape[0] * layer.positions
    assert torch.equal(kernel.accumulate(x_int, tiny), ref)


def test_simulate_with_lossy_adc_runs_the_reference_model() -> None:
    """Through the pipeline: the logits are the lossy accumulator dequantized, not the exact."""
    hw = small_hw(**{"adc.bits": 2, "adc.step": 2, "dac.bits": 2})
    net, layer, x, x_int = conv_layer(hw, seed=7)
    flat = nn.Sequential(net, nn.Flatten()).eval()  # logits (N, Cout*Ho*Wo)
    labels = torch.zeros(x.shape[0], dtype=torch.int64)
    res = sparsexbar.simulate(flat, (x, labels), hw=hw, calibration=x)
    assert res.outputs is not None
    expected = layer.dequantize(reference_accumulator(layer, hw, x_int)).reshape(x.shape[0], -1)
    assert torch.equal(res.outputs, expected)
    exact = layer.dequantize(layer.reference_accumulate(x_int)).reshape(x.shape[0], -1)
    assert not torch.equal(res.outputs, exact)
    (lay,) = res.to_json()["layers"]
    assert lay["adc_can_clip"] is True and lay["adc_bits"] == 2


def test_clip_heavy_layer_with_many_groups_matches_the_reference() -> None:
    # 8000 rows of weight 127 (levels 15 and 7 in 4-bit cells), inputs at the top code: every
    # one of the 500 OU groups clips in every cycle; the deviations sum to ~3e7 > 2^24.
    hw = preset("isaac").with_overrides({"array.rows": 4096, "array.cols": 16, "ou.rows": 16,
                                         "ou.cols": 16, "cell.bits": 4, "dac.bits": 1,
                                         "adc.bits": 1})
    fc = nn.Linear(8000, 1, bias=False)
    with torch.no_grad():
        fc.weight.fill_(1.0)
    net = nn.Sequential(nn.Flatten(), fc).eval()
    x = torch.ones((1, 8000))
    layer = quantize_model(net, x, 8, 8).layers[0]
    x_int = layer.quantize_input(x)
    kernel = LayerKernel(map_dense(layer, hw), torch.device("cpu"))
    # Each group's partial sum clips to 1: 500 groups x (2^8 - 1) per column, slices x1 and x16.
    expected = torch.tensor([[17 * 500 * 255]], dtype=torch.float64)
    assert torch.equal(kernel.accumulate(x_int, BIT_ACCURATE), expected)
