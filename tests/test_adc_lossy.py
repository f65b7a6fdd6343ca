"""Lossy ADC (DESIGN.md 2.3): with fewer ADC bits than lossless, or a step above 1, the
bit-accurate engine equals a plain-Python reference of the machine model, loop by loop:
output positions, cycles, arrays / OU row groups, columns; cell levels sliced from |w| in the
column layout documented in mapping.py; p per OU row group; clamp(round(p/step), 0, 2^bits-1)
* step; shift-add by cycle, slice and sign; the offset removed digitally (offset encoding).

Rounding: Python's round() and torch.round() both round halves to even; the reference uses
round(), so ties (odd p with step 2) are checked too.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import sparsexbar
from sparsexbar import EngineOptions
from sparsexbar.core import engine
from sparsexbar.core.config import HardwareConfig, preset
from sparsexbar.core.engine import LayerKernel, accumulate
from sparsexbar.core.engine import kernel as engine_kernel
from sparsexbar.core.engine import paths as engine_paths
from sparsexbar.core.frontend import QuantLayer, quantize_model
from sparsexbar.core.mapping import MappedLayer, map_dense
from sparsexbar.schemes.sre import map_sre
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


def row_groups(levels: list[list[int]], hw: HardwareConfig, packed: bool
               ) -> list[list[list[int]]]:
    """Per physical column, the OU row groups that drive it. Dense: consecutive `ou.rows`
    blocks of each row tile. Packed (SRE weight compression): per row tile and OU column group
    (`ou.cols` columns of one column tile), the rows with a nonzero level in some column of the
    group, in order, cut into blocks of `ou.rows`."""
    rows, ncols = len(levels), len(levels[0])
    row_tiles = [(a, min(a + hw.array.rows, rows)) for a in range(0, rows, hw.array.rows)]
    groups: list[list[list[int]]] = [[] for _ in range(ncols)]
    for c0 in range(0, ncols, hw.array.cols):  # column tiles
        c1 = min(c0 + hw.array.cols, ncols)
        for g0 in range(c0, c1, hw.ou.cols):  # OU column groups of the tile
            members = range(g0, min(g0 + hw.ou.cols, c1))
            for r0, r1 in row_tiles:
                kept = [r for r in range(r0, r1)
                        if not packed or any(levels[r][c] for c in members)]
                blocks = [kept[i : i + hw.ou.rows] for i in range(0, len(kept), hw.ou.rows)]
                for col in members:
                    groups[col].extend(blocks)
    return groups


def reference_accumulator(layer: QuantLayer, hw: HardwareConfig, x_int: Tensor,
                          packed: bool = False,
                          conductance: list[list[float]] | None = None) -> Tensor:
    """The machine model in plain Python loops; returns (N, Cout[, Ho, Wo]) float64.
    `conductance` (programmed cells, non-ideal) replaces the levels in the partial sums."""
    levels, channel, shift, offset = _columns(layer, hw)
    cells = conductance if conductance is not None else levels
    ncols = len(channel)
    top, step = 2**hw.adc.bits - 1, hw.adc.step
    db = hw.dac.bits
    cycles = -(-hw.numbers.input_bits // db)
    groups = row_groups(levels, hw, packed)
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
                    for col in range(ncols):
                        for group in groups[col]:  # OU row groups driving this column
                            p = sum(cells[r][col] * chunk[r] for r in group)
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


def conv_layer(hw: HardwareConfig, signed: bool = False, seed: int = 0, prune: float = 0.0
               ) -> tuple[nn.Module, QuantLayer, Tensor, Tensor]:
    """One small conv layer (2 -> 3 channels, 3x3, 4x4 images); `prune`: the fraction of its
    smallest weights set to zero (so packed mappings drop rows)."""
    net = nets.single_conv(in_ch=2, out_ch=3, k=3, stride=1, padding=1, seed=seed)
    if prune > 0:
        with torch.no_grad():
            w = net.conv.weight
            cut = w.abs().flatten().kthvalue(max(1, int(prune * w.numel()))).values
            w[w.abs() <= cut] = 0.0
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
    for budget in (0.01, 0.001):  # one image per chunk; a few candidates per slice
        tiny = EngineOptions(memory_budget_mb=budget, exact_shortcut=False)
        assert kernel.images_per_chunk(tuple(x_int.shape[1:]), budget) < x_int.shape[0]
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


# ---- multi-segment (packed) mappings, non-ideal cells, larger layers -------------------------
PACKED_CASES = ["bits2-dac1", "bits3-dac2-signed", "step2-bits2-dac2-signed",
                "step4-bits2-dac3-msb-signed", "step0.5-bits3"]


@pytest.mark.parametrize("sign", ["differential", "offset"])
@pytest.mark.parametrize("case", PACKED_CASES)
def test_packed_segments_match_the_loop_reference(case: str, sign: str) -> None:
    """SRE's packed mapping (one segment per OU column group, zero rows dropped, S > 1) runs
    through the same kernel: every segment's own row groups convert, as the reference says."""
    overrides, _, signed = LOSSY_CASES[case]
    hw = small_hw(**{"cell.sign": sign, **overrides})
    _, layer, _, x_int = conv_layer(hw, signed=signed, seed=8, prune=0.5)
    mapped = map_sre(layer, hw, compress=True)
    assert mapped.group_rows.shape[0] > 1  # several segments
    if sign == "differential":  # pruned rows really are dropped from some segments
        assert int((mapped.group_rows >= 0).sum()) < layer.rows * mapped.group_rows.shape[0]
    ref = reference_accumulator(layer, hw, x_int, packed=True)
    kernel = LayerKernel(mapped, torch.device("cpu"))
    assert torch.equal(kernel.accumulate(x_int, BIT_ACCURATE), ref)
    assert not torch.equal(ref, layer.reference_accumulate(x_int).to(torch.float64))
    tiny = EngineOptions(memory_budget_mb=0.001, exact_shortcut=False)
    assert torch.equal(kernel.accumulate(x_int, tiny), ref)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("sign", ["differential", "offset"])
def test_stuck_cells_convert_every_active_group_as_the_reference_says(sign: str,
                                                                      packed: bool) -> None:
    """Non-ideal device (stuck-at faults only: programmed cells stay integers, so the result
    is exact): the full path converts every OU group with an active row, clips, shifts and
    removes the offset digitally, for dense and packed mappings and signed inputs."""
    hw = small_hw(**{"cell.sign": sign, "adc.bits": 3, "dac.bits": 2,
                     "device.stuck_at_off_rate": 0.1, "device.stuck_at_on_rate": 0.1,
                     "device.seed": 4})
    _, layer, _, x_int = conv_layer(hw, signed=True, seed=9, prune=0.3)
    mapped = map_sre(layer, hw, compress=True) if packed else map_dense(layer, hw)
    cells = mapped.conductance
    assert bool((cells != mapped.levels.float()).any())  # some cells are stuck
    assert bool((cells == cells.round()).all())
    ref = reference_accumulator(layer, hw, x_int, packed=packed, conductance=cells.tolist())
    kernel = LayerKernel(mapped, torch.device("cpu"))
    assert torch.equal(kernel.accumulate(x_int, BIT_ACCURATE), ref)
    tiny = EngineOptions(memory_budget_mb=0.001, exact_shortcut=False)
    assert torch.equal(kernel.accumulate(x_int, tiny), ref)


def group_reference(mapped: MappedLayer, x_int: Tensor) -> Tensor:
    """Every conversion of every OU group of the mapping, evaluated in full (ideal device):
    a loop over cycles, segments and groups, each a matmul over all positions. Validated
    against the loop reference below; used for layers too large for plain Python."""
    layer, hw = mapped.layer, mapped.hw
    top, step, db = 2**hw.adc.bits - 1, hw.adc.step, hw.dac.bits
    patches = layer.patches(x_int.to(torch.float64))
    parts = ([(patches.clamp(min=0), 1.0), ((-patches).clamp(min=0), -1.0)]
             if layer.input_signed else [(patches, 1.0)])
    levels = mapped.levels.to(torch.float64)
    acc = torch.zeros((patches.shape[0], layer.out_channels), dtype=torch.float64)
    for part, sign in parts:
        xi = part.to(torch.int64)
        for t in range(hw.cycles):
            chunk = ((xi >> (t * db)) & (2**db - 1)).to(torch.float64)
            for seg in range(mapped.group_rows.shape[0]):
                cols = mapped.segment_cols[seg]
                cols = cols[cols >= 0]
                for rows in mapped.group_rows[seg]:
                    rows = rows[rows >= 0]
                    if rows.numel() == 0:
                        continue
                    p = chunk[:, rows] @ levels[rows][:, cols]  # (M, columns)
                    q = torch.clamp(torch.round(p / step), 0, top) * step
                    weight = mapped.col_weight[cols] * sign * 2 ** (t * db)
                    acc.index_add_(1, mapped.col_channel[cols], q * weight)
        if mapped.offset:
            acc -= sign * mapped.offset * part.to(torch.float64).sum(dim=1, keepdim=True)
    return layer.fold_output(acc, x_int.shape[0])


def test_group_reference_agrees_with_the_loop_reference() -> None:
    for overrides, packed in (({"adc.bits": 2, "dac.bits": 2}, False),
                              ({"adc.bits": 2, "adc.step": 2, "cell.sign": "offset"}, True)):
        hw = small_hw(**overrides)
        _, layer, _, x_int = conv_layer(hw, signed=True, seed=10, prune=0.4)
        mapped = map_sre(layer, hw, compress=True) if packed else map_dense(layer, hw)
        assert torch.equal(group_reference(mapped, x_int),
                           reference_accumulator(layer, hw, x_int, packed=packed))


@pytest.mark.parametrize("case", ["dense-dac2", "packed-dac3-signed", "dense-step2-offset"])
def test_larger_layer_matches_the_group_reference(case: str) -> None:
    """A layer with many OU groups of different clippable widths, several image chunks and
    candidate slices (small memory budget), strided and padded."""
    overrides, packed, signed = {
        "dense-dac2": ({"dac.bits": 2, "numbers.input_bits": 8}, False, False),
        "packed-dac3-signed": ({"dac.bits": 3, "numbers.input_bits": 6}, True, True),
        "dense-step2-offset": ({"dac.bits": 2, "adc.step": 2, "cell.sign": "offset"}, False,
                               False),
    }[case]
    hw = preset("isaac").with_overrides({"array.rows": 40, "array.cols": 48, "ou.rows": 9,
                                         "ou.cols": 8, "adc.bits": 5, **overrides})
    net = nets.single_conv(in_ch=12, out_ch=10, k=3, stride=2, padding=1, seed=12)
    x = nets.random_images(5, 12, 9, seed=12, signed=signed)
    x = x * (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.6)  # zeros
    layer = quantize_model(net, x, 8, hw.numbers.input_bits).layers[0]
    x_int = layer.quantize_input(x)
    mapped = map_sre(layer, hw, compress=True) if packed else map_dense(layer, hw)
    ref = group_reference(mapped, x_int)
    assert not torch.equal(ref, layer.reference_accumulate(x_int).to(torch.float64))
    kernel = LayerKernel(mapped, torch.device("cpu"))
    if hw.adc.step == 1.0:
        assert len(kernel.clip_plan.bucket_width) > 1  # groups of several clippable widths
    for budget in (512.0, 0.01):
        got = kernel.accumulate(x_int, EngineOptions(memory_budget_mb=budget,
                                                     exact_shortcut=False))
        assert torch.equal(got, ref)


# ---- accumulated deviation: the draw is the model's, in distribution ------------------------
def _one_linear_layer(hw: HardwareConfig, seed: int, zero_inputs: int
                      ) -> tuple[QuantLayer, Tensor]:
    """A 20 -> 3 linear layer (no bias) quantized on one image whose first `zero_inputs`
    inputs are zero, and that image's integer input."""
    fc = nn.Linear(20, 3, bias=False)
    nets.seeded_init(fc, seed)
    net = nn.Sequential(nn.Flatten(), fc).eval()
    x = torch.rand((1, 20), generator=torch.Generator().manual_seed(seed))
    x[0, :zero_inputs] = 0.0
    layer = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits).layers[0]
    return layer, layer.quantize_input(x)


def deviation_moments(layer: QuantLayer, hw: HardwareConfig, x_vec: list[int]
                      ) -> tuple[list[float], list[float]]:
    """Mean and variance of each output of a linear layer (dense mapping, step 1) when every
    conversion reads clamp(round(p + e), 0, top), e ~ N(0, (sigma x active rows)^2),
    independently: `noise_moments` with the programmed levels and no read noise."""
    assert hw.device.read_noise_sigma == 0
    return noise_moments(layer, hw, x_vec, _columns(layer, hw)[0])


@pytest.mark.parametrize(("tail_dense", "sign"), [(None, "differential"), (-1.0, "differential"),
                                                  (2.0, "differential"), (None, "offset")])
def test_accumulated_deviation_matches_the_model_in_distribution(
        tail_dense: float | None, sign: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mean and variance of the simulated accumulator over 1000 independent draws equal the
    model's (every conversion noisy, clipped and rounded), whether groups are converted in
    full (tail_dense -1), only at their tail events (2), or split by the default threshold;
    with the offset encoding too (its cells clip more)."""
    if tail_dense is not None:
        monkeypatch.setattr(engine_paths, "TAIL_DENSE", tail_dense)
    hw = small_hw(**{"array.rows": 12, "ou.rows": 5, "adc.bits": 4, "dac.bits": 2,
                     "cell.sign": sign, "device.accumulated_deviation_sigma": 0.12,
                     "device.seed": 3})
    layer, x_int = _one_linear_layer(hw, seed=6, zero_inputs=4)
    mean, var = deviation_moments(layer, hw, [int(v) for v in x_int[0].tolist()])
    exact = layer.reference_accumulate(x_int)[0].tolist()
    assert any(abs(m - e) > 1 for m, e in zip(mean, exact, strict=True))  # noise has a bias
    draws = 1000
    kernel = LayerKernel(map_dense(layer, hw), torch.device("cpu"))
    assert kernel.deviation_only
    got = kernel.accumulate(x_int.expand(draws, -1).contiguous(), BIT_ACCURATE)
    assert bool((got == got.round()).all())  # conversions return integers
    for c in range(layer.out_channels):
        sample = got[:, c]
        assert abs(float(sample.mean()) - mean[c]) < 5 * (var[c] / draws) ** 0.5
        assert 0.85 < float(sample.var()) / var[c] < 1.15


# ---- the full path's noise: every branch of the draw is the model's, in distribution --------
def noise_moments(layer: QuantLayer, hw: HardwareConfig, x_vec: list[int],
                  cells: list[list[float]]) -> tuple[list[float], list[float]]:
    """Mean and variance of each output of a linear layer (dense mapping, step 1) when every
    conversion of an OU group with an active row reads clamp(round(p + e), 0, top), p from the
    programmed cells, e ~ N(0, (read x p)^2 + (accumulated x active rows)^2), independently."""
    levels, channel, shift, offset = _columns(layer, hw)
    dev = hw.device
    top, db = 2**hw.adc.bits - 1, hw.dac.bits
    cycles = -(-hw.numbers.input_bits // db)
    groups = row_groups(levels, hw, packed=False)
    mean = [0.0] * layer.out_channels
    var = [0.0] * layer.out_channels
    for t in range(cycles):
        chunk = [(v >> (t * db)) & (2**db - 1) for v in x_vec]
        for col in range(len(channel)):
            weight = shift[col] * 2 ** (t * db)
            for group in groups[col]:
                active = sum(1 for r in group if chunk[r])
                if active == 0:
                    continue  # no row driven: reads 0
                p = sum(cells[r][col] * chunk[r] for r in group)
                std = math.hypot(dev.read_noise_sigma * p, dev.accumulated_deviation_sigma * active)
                if std == 0:
                    outcomes = {min(max(round(p), 0), top): 1.0}
                else:
                    def cdf(v: float, p: float = p, std: float = std) -> float:
                        return 0.5 * (1 + math.erf((v - p) / (std * 2**0.5)))
                    reach = int(10 * std) + 2
                    outcomes = {}
                    for m in range(math.floor(p) - reach, math.ceil(p) + reach + 1):
                        q = min(max(m, 0), top)
                        outcomes[q] = outcomes.get(q, 0.0) + cdf(m + 0.5) - cdf(m - 0.5)
                e1 = sum(pq * q for q, pq in outcomes.items())
                e2 = sum(pq * q * q for q, pq in outcomes.items())
                mean[channel[col]] += weight * e1
                var[channel[col]] += weight**2 * (e2 - e1**2)
    return [m - offset * sum(x_vec) for m in mean], var  # offset removed digitally


NOISE_CASES = {
    # name: device overrides (each takes another branch of LayerKernel._noisy_conversions)
    "read+accumulated": {"device.read_noise_sigma": 0.04,
                         "device.accumulated_deviation_sigma": 0.1},
    "read-only": {"device.read_noise_sigma": 0.06},
    "variation+accumulated": {"device.variation": "lognormal", "device.variation_sigma": 0.1,
                              "device.accumulated_deviation_sigma": 0.1},
}


@pytest.mark.parametrize("case", list(NOISE_CASES))
def test_full_path_noise_matches_the_model_in_distribution(case: str) -> None:
    """Mean and variance over 1000 draws of the accumulator equal the model's (every active
    conversion noisy, rounded and clipped), for each way the full path draws its noise; the
    draws run as several tasks on two threads."""
    hw = small_hw(**{"array.rows": 12, "ou.rows": 5, "adc.bits": 4, "dac.bits": 2,
                     "device.seed": 5, **NOISE_CASES[case]})
    layer, x_int = _one_linear_layer(hw, seed=8, zero_inputs=5)
    mapped = map_dense(layer, hw)
    kernel = LayerKernel(mapped, torch.device("cpu"))
    assert not kernel.clip_path and not kernel.deviation_only
    mean, var = noise_moments(layer, hw, [int(v) for v in x_int[0].tolist()],
                              mapped.conductance.tolist())
    draws = 1000
    got = kernel.accumulate(x_int.expand(draws, -1).contiguous(),
                            EngineOptions(exact_shortcut=False, threads=2))
    for c in range(layer.out_channels):
        sample = got[:, c]
        assert abs(float(sample.mean()) - mean[c]) < 5 * (var[c] / draws) ** 0.5
        assert 0.85 < float(sample.var()) / var[c] < 1.15


# ---- threads: image tasks on a pool; the results do not depend on the thread count ----------
THREAD_CASES = {
    # name: (overrides, the result equals the group reference)
    "clip": ({"dac.bits": 2}, True),
    "step2": ({"dac.bits": 2, "adc.step": 2}, True),
    "noisy": ({"dac.bits": 2, "device.variation": "lognormal", "device.variation_sigma": 0.05,
               "device.read_noise_sigma": 0.02, "device.accumulated_deviation_sigma": 0.05},
              False),
    "deviation-only": ({"dac.bits": 2, "device.accumulated_deviation_sigma": 0.1}, False),
}


@pytest.mark.parametrize("case", list(THREAD_CASES))
def test_results_do_not_depend_on_the_thread_count(case: str) -> None:
    """1, 2 and 3 threads give the same accumulator bit for bit (noise included: every task
    draws from its own generator), torch's thread count is restored, and exact cases equal
    the group reference."""
    overrides, exact = THREAD_CASES[case]
    hw = preset("isaac").with_overrides({"array.rows": 40, "array.cols": 48, "ou.rows": 9,
                                         "ou.cols": 8, "adc.bits": 5, "device.seed": 2,
                                         **overrides})
    net = nets.single_conv(in_ch=6, out_ch=8, k=3, stride=1, padding=1, seed=13)
    x = nets.random_images(7, 6, 6, seed=13, signed=True)
    layer = quantize_model(net, x, 8, 8).layers[0]
    x_int = layer.quantize_input(x)
    mapped = map_dense(layer, hw)
    results = []
    for threads in (1, 2, 3):
        kernel = LayerKernel(mapped, torch.device("cpu"))  # the same call count: same streams
        assert len(kernel.task_spans(7, tuple(x_int.shape[1:]), 512.0)) == 4
        before = torch.get_num_threads()
        results.append(kernel.accumulate(x_int, EngineOptions(exact_shortcut=False,
                                                              threads=threads)))
        assert torch.get_num_threads() == before
    assert all(torch.equal(results[0], r) for r in results[1:])
    if exact:
        assert torch.equal(results[0], group_reference(mapped, x_int))
    else:
        assert not torch.equal(results[0], group_reference(mapped, x_int))


@pytest.mark.parametrize("min_sums", [0, 2**15])
def test_integer_run_on_two_threads_equals_one_thread(min_sums: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole integer run of a small CNN (periphery on one intra-op thread, per-conversion
    layers as tasks on the run's kept pool of workers, or on one thread when their work is small)
    gives the same logits bit for bit on 1 and 2 threads, run twice (pools reused), equals the
    reference where lossless, and restores torch's thread count."""
    from sparsexbar.schemes import get_scheme
    from sparsexbar.simulate import LayerRecorder

    monkeypatch.setattr(engine_kernel, "PARALLEL_MIN_SUMS", min_sums)  # 0: every layer in tasks
    net = nets.tiny_cnn(1, 10, 12, 4, seed=5).eval()
    x = nets.random_images(9, 1, 12, seed=5)
    scheme = get_scheme("dense")
    for overrides, lossless in (({"ou.rows": 9, "ou.cols": 8, "adc.bits": 5, "dac.bits": 2},
                                 False), ({"ou.rows": 9, "ou.cols": 8}, True)):
        hw = preset("isaac").with_overrides(overrides)
        qmodel = quantize_model(net, x, 8, 8)
        kernels = {q.name: scheme.kernel(scheme.map_layer(q, hw), torch.device("cpu"))
                   for q in qmodel.layers}
        assert any(k.clip_path and not k.exact_linear for k in kernels.values()) != lossless
        rec = LayerRecorder(scheme, kernels, EngineOptions(exact_shortcut=False),
                        torch.device("cpu"))
        before = torch.get_num_threads()
        runs = []
        try:
            for threads in (1, 2, 2):
                torch.set_num_threads(threads)
                runs.append(qmodel.run(x, rec))
                assert torch.get_num_threads() == threads
        finally:
            torch.set_num_threads(before)
        assert all(torch.equal(runs[0], r) for r in runs[1:])
        assert rec.single_thread_periphery  # per-conversion paths: periphery on one thread
        if lossless:
            assert torch.equal(runs[0], qmodel.run_reference(x))
            # With the exact shortcut every layer is one convolution on the caller's threads:
            # the periphery keeps them too.
            assert not LayerRecorder(scheme, kernels, EngineOptions(),
                                 torch.device("cpu")).single_thread_periphery
        if min_sums == 0:  # the layers ran on the run's kept two-worker pool
            assert rec.options.pool is not None and rec.options.pool._workers == 2


def test_thread_pool_keeps_inference_mode_and_reraises() -> None:
    hw = small_hw(**{"adc.bits": 2})
    _, layer, _, x_int = conv_layer(hw, seed=3)
    x_int = x_int.repeat(3, 1, 1, 1)  # 6 images: 4 tasks
    kernel = LayerKernel(map_dense(layer, hw), torch.device("cpu"))
    two = EngineOptions(exact_shortcut=False, threads=2)
    with torch.inference_mode():  # tensors made here may only be changed in inference mode
        got = kernel.accumulate(x_int, two)
    assert torch.equal(got, reference_accumulator(layer, hw, x_int))

    def task(i: int) -> None:
        if i == 2:
            raise ValueError("task 2 failed")

    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="task 2 failed"):
        engine.run_tasks(4, task, workers=2, threads=2)
    assert torch.get_num_threads() == before


def test_packing_puts_every_candidate_in_one_block_of_its_group() -> None:
    gen = torch.Generator().manual_seed(0)
    cases = ((1, 1, 1), (5, 40, 1), (40, 3000, 1), (300, 200, 1), (300, 200, 4), (5, 40, 8))
    for n_groups, n, min_size in cases:
        group = torch.sort(torch.randint(0, n_groups, (n,), generator=gen)).values
        pk = engine.Packed.of(group, n_groups, max_size=256, min_size=min_size)
        assert pk.size <= 256 and len(set(pk.slot.tolist())) == n  # one slot each
        assert pk.size >= min_size
        assert torch.equal(pk.block_group[pk.slot >> pk.size_bits], group)
        counts = torch.bincount(group, minlength=n_groups)
        assert pk.blocks == int(((counts + pk.size - 1) // pk.size).sum())  # no empty block
        spread = pk.spread(torch.arange(n), -1).view(-1)
        assert torch.equal(spread[pk.slot], torch.arange(n))
        assert int((spread == -1).sum()) == pk.blocks * pk.size - n
        slices = pk.block_slices(100)
        assert slices[0][0] == 0 and slices[-1][1] == pk.blocks
        assert all(b0 < b1 and (b1 - b0) * pk.size <= max(100, pk.size)
                   for b0, b1 in slices)


@pytest.mark.parametrize(("kind", "over"), [
    ("conv", {"dac.bits": 1, "adc.bits": 4}),
    ("conv", {"dac.bits": 2, "adc.bits": 5, "ou.rows": 9, "ou.cols": 8}),
    ("conv", {"dac.bits": 3, "adc.bits": 3, "cell.bits": 4}),
    ("linear", {"dac.bits": 1, "adc.bits": 3}),
])
def test_clip_bounds_of_packed_cycles_equal_each_cycles_group_sums(
        kind: str, over: dict[str, Any]) -> None:
    """`paths.clip_bounds` computes several cycles' bounds in one call of the group sums on
    their chunks packed as base-2^k digits: every live cycle's bound equals the group sums of
    that cycle's own chunk, cycles with an all-zero chunk are skipped as `cycles` skips them,
    and more than one cycle shares a call."""
    hw = preset("isaac").with_overrides({"array.rows": 40, "array.cols": 24, **over})
    if kind == "conv":
        net: nn.Module = nets.single_conv(in_ch=5, out_ch=4, k=3, padding=1, seed=3)
        x = nets.random_images(3, channels=5, size=6, seed=3)
    else:
        net = nets.mlp(features=36, hidden=5, seed=3)
        x = nets.random_images(3, channels=1, size=6, seed=3).reshape(3, 36)
    layer = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits).layers[0]
    kernel = LayerKernel(map_dense(layer, hw), torch.device("cpu"))
    assert kernel.clip_path and int(kernel.clip_plan.groups.numel()) > 0
    base, per_call = kernel.clip_packing
    assert per_call > 1
    x_int = layer.quantize_input(x).clamp(min=0)
    if kind == "linear":
        x_int = x_int.reshape(3, -1)
    # values whose high chunks are zero somewhere, and a batch whose top chunk is zero
    for part in (x_int, x_int // 4):
        expected = [(t, kernel.clip_sums(chunk.to(torch.float32)))
                    for t, chunk in engine_paths.cycles(kernel, part)]
        got = [(t, bound.clone()) for t, _, bound in engine_paths.clip_bounds(kernel, part)]
        assert [t for t, _ in got] == [t for t, _ in expected]
        for (_, a), (_, b) in zip(got, expected, strict=True):
            assert torch.equal(a, b)
            assert float(a.max()) < base
