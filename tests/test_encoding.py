"""`encoding` (issue 7): the lossless parts equal `dense` bit for bit; the encoded, clipping
conversions equal a loop reference of the hardware written here (encode, convert, recover with
the LUT); dynamic quantization and the event counts equal loop references; ADC energy and area
follow the chosen bits as the config says; calibration, reproduction and the CLI."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from sparsexbar.core.config import HardwareConfig, preset
from sparsexbar.core.engine import EngineOptions
from sparsexbar.core.errors import SparsexbarError
from sparsexbar.core.frontend import QuantLayer, quantize_model
from sparsexbar.core.intconv import int8_matrix
from sparsexbar.core.mapping import dense_events
from sparsexbar.schemes import get_scheme
from sparsexbar.schemes.counting import BlockedRows
from sparsexbar.schemes.encoding import (
    EncodingKernel,
    EncodingMappedLayer,
    EncodingScheme,
    dynamic_precision,
    encoded_bound,
    leading_chunk,
    lossless_adc_bits,
    tile_view,
)
from sparsexbar.schemes.encoding.calibration import (
    calibrate_adc_bits,
    calibrate_precision,
    with_bits,
)
from sparsexbar.schemes.encoding.kernel import (
    GroupChunkCounts,
    bitwise_or_rows,
    executed_chunks,
    inverted_groups,
    or_tile_masks,
)
from sparsexbar.schemes.encoding.study import reproduce_encoding
from sparsexbar.simulate import simulate
from sparsexbar.training.checkpoint import shipped_model_path
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli
from tests.timing_ref import Timing

CPU = torch.device("cpu")
LOSSLESS_VARIANTS = [
    {"input_encoding": i, "weight_encoding": w, "adc": a, "skip_zero_planes": s}
    for i, w, a, s in itertools.product(("none", "bus-invert"), ("none", "complement"),
                                        ("fixed", "lossless"), (False, True))
]


def small_hw(**over: Any) -> HardwareConfig:
    base: dict[str, Any] = {"array.rows": 10, "array.cols": 12, "ou.rows": 4, "ou.cols": 5}
    base.update(over)
    return preset("isaac").with_overrides(base)


def net_and_data(kind: str, seed: int, n: int = 5) -> tuple[torch.nn.Module, Tensor, Tensor]:
    if kind == "tiny":
        return (nets.tiny_cnn(size=8, width=3, seed=seed), nets.random_images(n, size=8, seed=seed),
                nets.random_labels(n, seed=seed))
    net = nets.residual_net(relu_after_add=kind == "residual", seed=seed)
    return (net, nets.random_images(n, channels=2, size=8, seed=seed),
            nets.random_labels(n, classes=5, seed=seed))


def sparse_images(x: Tensor, seed: int) -> Tensor:
    """Zero out most pixels and scale the rest down, so whole bit planes of windows are zero."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(x.shape, generator=gen) < 0.3
    return x * keep * torch.where(torch.rand(x.shape, generator=gen) < 0.5, 0.2, 1.0)


# ---- lossless parts equal dense -----------------------------------------------------------------
@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["tiny", "residual", "signed"]),
       dac_bits=st.sampled_from([1, 2, 3]), sign=st.sampled_from(["differential", "offset"]),
       cell_bits=st.sampled_from([1, 2, 3]), variant=st.sampled_from(LOSSLESS_VARIANTS))
def test_lossless_variants_equal_dense(seed: int, kind: str, dac_bits: int, sign: str,
                                       cell_bits: int, variant: dict[str, Any]) -> None:
    net, x, y = net_and_data(kind, seed)
    x = sparse_images(x, seed)
    over = {"dac.bits": dac_bits, "cell.sign": sign, "cell.bits": cell_bits,
            "array.rows": 16, "ou.rows": 5, "ou.cols": 6, "adc.bits": 10}
    dense = simulate(net, (x, y), "isaac", "dense", overrides=over, batch_size=3)
    enc = simulate(net, (x, y), "isaac", EncodingScheme(**variant), overrides=over,
                   batch_size=3)
    assert dense.outputs is not None and enc.outputs is not None
    assert torch.equal(enc.outputs, dense.outputs)
    for lay in enc.to_json()["layers"]:
        ev, de = lay["events"], lay["dense_events"]
        assert not lay["adc_can_clip"]
        for key in ("ou_activations", "adc_conversions", "dac_activations", "cell_reads"):
            assert ev[key] <= de[key]
        if not variant["skip_zero_planes"]:
            assert ev["adc_conversions"] == de["adc_conversions"]
            assert lay["cycles"] == lay["dense_cycles"]
        if variant["adc"] == "lossless":
            assert lay["adc_bits"] <= 10
    if kind == "signed":
        assert any(lay["input_signed"] for lay in enc.to_json()["layers"])


def test_default_scheme_is_the_lossless_combination() -> None:
    sch = get_scheme("encoding")
    assert isinstance(sch, EncodingScheme) and sch.lossless
    assert sch.parameters()["input_encoding"] == "bus-invert"
    assert sch.parameters()["weight_encoding"] == "complement"
    assert sch.parameters()["adc"] == "auto" and sch.parameters()["skip_zero_planes"]
    spec = get_scheme("encoding:input=none:weight=complement:adc=fixed:skip=off:precision=3")
    assert isinstance(spec, EncodingScheme)
    assert (spec.input_encoding, spec.weight_encoding, spec.adc) == ("none", "complement",
                                                                      "fixed")
    assert not spec.skip_zero_planes and spec.precision == 3 and not spec.lossless


@pytest.mark.skipif(not shipped_model_path().is_file(), reason="shipped checkpoint not built")
def test_lossless_combination_equals_dense_on_shipped_model() -> None:
    from sparsexbar.training.data import fashion_mnist

    ds = fashion_mnist("test").subset(0, 48)
    data = (ds.to_float(), ds.labels.long())
    dense = simulate("default", data, "isaac", "dense", batch_size=48)
    enc = simulate("default", data, "isaac", "encoding", batch_size=48)
    assert dense.outputs is not None and enc.outputs is not None
    assert torch.equal(enc.outputs, dense.outputs)
    bits = [lay["adc_bits"] for lay in enc.to_json()["layers"]]
    dense_bits = [lay["adc_bits"] for lay in dense.to_json()["layers"]]
    # adc.bits auto: dense sizes 16-row OUs to 6 bits (5 on the first layer, 9 rows); the
    # encodings hold at most half the chunk mass: a bit fewer, fewer still from the weights
    assert dense_bits == [5] + [6] * (len(dense_bits) - 1)
    assert all(b < d for b, d in zip(bits, dense_bits, strict=True))
    vs = enc.to_json()["vs_dense"]
    assert vs["energy_efficiency"] > 1.2 and vs["speedup"] > 1


# ---- encodings: bounds --------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_max", [1, 3])
@pytest.mark.parametrize("invert", [False, True])
def test_encoded_bound_is_the_brute_force_maximum(chunk_max: int, invert: bool) -> None:
    gen = torch.Generator().manual_seed(chunk_max)
    n_rows = torch.tensor([5, 3])  # second group: 2 padding rows
    stored = torch.randint(0, 4, (2, 5, 6), generator=gen)
    stored[1, 3:] = 0
    bound = encoded_bound(stored, n_rows, chunk_max, invert)
    for g in range(2):
        n = int(n_rows[g])
        best = torch.zeros(6, dtype=torch.int64)
        for xs in itertools.product(range(chunk_max + 1), repeat=n):  # every input
            x = torch.tensor(xs)
            if invert and 2 * int(x.sum()) > n * chunk_max:
                x = chunk_max - x
            best = torch.maximum(best, (x.unsqueeze(1) * stored[g, :n]).sum(dim=0))
        assert torch.equal(bound[g], best)


def test_lossless_bits_are_the_smallest_that_hold_the_bound() -> None:
    assert [lossless_adc_bits(v) for v in (0, 1, 2, 3, 24, 31, 32, 48)] == [1, 1, 2, 2, 5, 5, 6, 6]
    assert lossless_adc_bits(48, step=2.0) == 5  # 31 x 2 >= 48


def test_weight_complement_halves_every_column_sum() -> None:
    net, x, _ = net_and_data("tiny", 3)
    hw = small_hw()
    q = quantize_model(net, x, 8, 8)
    for layer in q.layers:
        for weight in ("none", "complement"):
            m = EncodingScheme("none", weight).map_layer(layer, hw)
            assert isinstance(m, EncodingMappedLayer) and m.encoding is not None
            enc = m.encoding
            sums = enc.stored_sum
            limit = enc.real_rows.unsqueeze(1) * enc.level_max
            if weight == "complement":
                assert bool((2 * sums <= limit).all())
                # flagged groups store l_max - L on their real rows
                orig = EncodingScheme("none", "none").map_layer(layer, hw)
                assert isinstance(orig, EncodingMappedLayer) and orig.encoding is not None
                flip = enc.complemented.unsqueeze(1) & (enc.group_rows >= 0).unsqueeze(2)
                expect = torch.where(flip, enc.level_max - orig.encoding.stored,
                                     orig.encoding.stored)
                assert torch.equal(enc.stored, expect)
            else:
                assert not bool(enc.complemented.any())


# ---- conversions against a loop reference of the hardware ---------------------------------------
def reference_layer(layer: QuantLayer, mapped: EncodingMappedLayer, x_int: Tensor,
                    precision: int | None = None, rounding: str = "round") -> Tensor:
    """The layer's accumulator as the hardware computes it, by loops: per pass, position,
    cycle and OU row group, the encoded chunks x' are fed, each column converts
    p' = x' . L' (clamp/round at the layer's ADC), and the digital side recovers
    - per column: v = -a if the column is stored complemented else a (a = ADC(p'));
    - per channel: sum_k w_k v_k, negated and plus the LUT constant K[g, ch] if the group's
      inputs were inverted, plus l_max x X x (sum of w_k over complemented columns);
    shifted by 2^(t dac) and summed; the offset encoding's offset removed digitally."""
    hw = mapped.layer_hw
    enc = mapped.encoding
    assert enc is not None
    c, lmax, top, step = enc.chunk_max, enc.level_max, hw.adc_max_code, hw.adc.step
    dac = hw.dac.bits
    lut = enc.recovery_constants(mapped.col_channel, mapped.col_weight, layer.out_channels)
    w = mapped.col_weight
    comp_w = torch.zeros((enc.group_rows.shape[0], layer.out_channels), dtype=torch.float64)
    comp_w.index_add_(1, mapped.col_channel, enc.complemented.to(torch.float64) * w)
    patches = layer.patches(x_int.to(torch.float32)).to(torch.int64)
    parts = ([(patches.clamp(min=0), 1), ((-patches).clamp(min=0), -1)] if layer.input_signed
             else [(patches, 1)])
    out = torch.zeros((patches.shape[0], layer.out_channels), dtype=torch.float64)
    for part, sign in parts:
        for m in range(part.shape[0]):
            xr = part[m].clone()
            if precision is not None:  # per array row tile: keep `precision` chunks
                for a, b in mapped.row_tiles:
                    top_value = int(xr[a:b].max())
                    if top_value == 0:
                        continue
                    lead = (top_value.bit_length() - 1) // dac
                    low = max(0, lead - precision + 1)
                    u = 2 ** (low * dac)
                    for r in range(a, b):
                        v = int(xr[r])
                        if rounding == "truncate":
                            xr[r] = v // u * u
                        else:
                            cap = min(2 ** (dac * (lead + 1)) - u, layer.input_max // u * u)
                            xr[r] = min((v + u // 2) // u * u, cap)
            acc = torch.zeros(layer.out_channels, dtype=torch.float64)
            for t in range(hw.cycles):
                chunk = (xr >> (t * dac)) & c
                for g in range(enc.group_rows.shape[0]):
                    rows = [int(r) for r in enc.group_rows[g] if r >= 0]
                    xg = chunk[rows]
                    inverted = enc.bus_invert and 2 * int(xg.sum()) > len(rows) * c
                    xe = c - xg if inverted else xg
                    p = (xe.unsqueeze(1) * enc.stored[g, : len(rows)]).sum(dim=0).double()
                    a_val = torch.round(p / step).clamp(0, top) * step
                    v = torch.where(enc.complemented[g], -a_val, a_val)
                    ch = torch.zeros(layer.out_channels, dtype=torch.float64)
                    ch.index_add_(0, mapped.col_channel, w * v)
                    if inverted:
                        ch = lut[g].double() - ch
                    ch += lmax * float(xg.sum()) * comp_w[g]
                    acc += ch * 2 ** (t * dac)
            if mapped.offset:
                acc -= mapped.offset * float(xr.sum())
            out[m] += sign * acc
    return layer.fold_output(out, x_int.shape[0])


def first_layer_case(seed: int, signed: bool, over: dict[str, Any]) -> tuple[QuantLayer, Tensor,
                                                                             HardwareConfig]:
    net = nets.single_conv(in_ch=2, out_ch=3, k=3, padding=1, seed=seed)
    x = sparse_images(nets.random_images(2, channels=2, size=5, seed=seed, signed=signed), seed)
    hw = small_hw(**over)
    q = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    layer = q.layers[0]
    assert layer.input_signed == signed
    return layer, layer.quantize_input(x), hw


@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), signed=st.booleans(), bits=st.sampled_from([2, 3, 4]),
       invert=st.booleans(), complement=st.booleans(), dac_bits=st.sampled_from([1, 2]),
       sign=st.sampled_from(["differential", "offset"]), step=st.sampled_from([1.0, 1.5]),
       precision=st.sampled_from([None, 2]))
def test_clipping_conversions_equal_loop_reference(seed: int, signed: bool, bits: int,
                                                   invert: bool, complement: bool,
                                                   dac_bits: int, sign: str, step: float,
                                                   precision: int | None) -> None:
    over = {"dac.bits": dac_bits, "cell.sign": sign, "adc.step": step,
            "numbers.input_bits": 4}
    layer, x_int, hw = first_layer_case(seed, signed, over)
    scheme = EncodingScheme("bus-invert" if invert else "none",
                            "complement" if complement else "none", "calibrated",
                            {layer.name: bits}, skip_zero_planes=True, precision=precision)
    mapped = scheme.map_layer(layer, hw)
    assert isinstance(mapped, EncodingMappedLayer)
    kernel = scheme.kernel(mapped, CPU)
    assert isinstance(kernel, EncodingKernel)
    acc, tally = scheme.execute(kernel, x_int, EngineOptions(), count=True)
    expect = reference_layer(layer, mapped, x_int, precision)
    assert torch.equal(acc, expect)
    assert tally is not None


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("signed", [False, True])
def test_int8_and_float_group_sums_give_the_same_corrections(invert: bool,
                                                             signed: bool) -> None:
    """The chunks' group bounds and bus-invert sums by int8 products (CPU) and by float
    products give the same accumulator and tallies, bit for bit."""
    layer, x_int, hw = first_layer_case(3, signed, {"dac.bits": 2, "numbers.input_bits": 4})
    scheme = EncodingScheme("bus-invert" if invert else "none", "complement", "calibrated",
                            {layer.name: 2}, skip_zero_planes=True)
    mapped = scheme.map_layer(layer, hw)
    kernel = scheme.kernel(mapped, CPU)
    assert isinstance(kernel, EncodingKernel)
    if kernel.tables.row_bound8 is None:  # a CPU without VNNI: the int8 tables made here
        tables = kernel.tables
        kernel.tables = replace(tables, member8=int8_matrix(tables.member),
                                row_bound8=int8_matrix(tables.row_bound))
    assert kernel.tables.row_bound8 is not None and kernel.tables.member8 is not None
    acc8, tally8 = scheme.execute(kernel, x_int, EngineOptions(), count=True)
    kernel.tables = replace(kernel.tables, row_bound8=None, member8=None)  # float products
    acc, tally = scheme.execute(kernel, x_int, EngineOptions(), count=True)
    assert torch.equal(acc8, acc) and tally8 is not None and tally is not None
    for name, value in vars(tally).items():  # every count, tensors included
        other = vars(tally8)[name]
        assert (torch.equal(value, other) if isinstance(value, Tensor)
                else value == other), name
    assert torch.equal(acc, reference_layer(layer, mapped, x_int, None))


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("dac_bits", [1, 2])
def test_conversion_path_equals_engine_without_encodings(bits: int, dac_bits: int) -> None:
    """No encoding, a clipping ADC: the scheme's own conversion path equals the engine's."""
    net, x, y = net_and_data("residual", 7, n=4)
    over = {"dac.bits": dac_bits, "array.rows": 16, "ou.rows": 8, "adc.bits": bits}
    dense = simulate(net, (x, y), "isaac", "dense", overrides=over, batch_size=4)
    names = [lay["name"] for lay in dense.to_json()["layers"]]
    sch = EncodingScheme("none", "none", "calibrated", dict.fromkeys(names, bits),
                         skip_zero_planes=False)
    enc = simulate(net, (x, y), "isaac", sch, overrides={**over, "adc.bits": 8}, batch_size=4)
    assert dense.outputs is not None and enc.outputs is not None
    assert any(lay["adc_can_clip"] for lay in dense.to_json()["layers"])
    assert torch.equal(enc.outputs, dense.outputs)


def test_small_memory_budget_gives_the_same_result() -> None:
    layer, x_int, hw = first_layer_case(5, False, {"numbers.input_bits": 4})
    scheme = EncodingScheme(adc="calibrated", adc_bits={layer.name: 2}, precision=2)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    assert isinstance(kernel, EncodingKernel)
    big, t_big = scheme.execute(kernel, x_int, EngineOptions(), count=True, count_clipped=True)
    small, t_small = scheme.execute(kernel, x_int, EngineOptions(memory_budget_mb=0.001),
                                    count=True, count_clipped=True)
    assert torch.equal(big, small)
    assert t_big is not None and t_small is not None
    assert torch.equal(t_big.per_image, t_small.per_image)
    assert (t_big.inverted, t_big.clipped) == (t_small.inverted, t_small.clipped)
    assert t_big.clipped > 0


# ---- dynamic quantization -----------------------------------------------------------------------
@pytest.mark.parametrize("dac_bits", [1, 2])
@pytest.mark.parametrize("rounding", ["round", "truncate"])
def test_dynamic_precision_keeps_p_chunks_from_the_leading_one(dac_bits: int,
                                                               rounding: str) -> None:
    gen = torch.Generator().manual_seed(dac_bits)
    x = (torch.randint(0, 256, (40, 7), generator=gen)
         >> torch.randint(0, 8, (40, 1), generator=gen))
    tiles = tile_view(x, [(0, 4), (4, 7)], 4)
    lead = leading_chunk(tiles, dac_bits)
    for p in (1, 2, 3):
        out = dynamic_precision(tiles, lead, p, dac_bits, rounding, 255)
        for m, i, r in itertools.product(range(40), range(2), range(4)):
            v = int(tiles[m, i, r])
            top = int(tiles[m, i].max())
            lead_ref = (top.bit_length() - 1) // dac_bits if top else -1
            assert int(lead[m, i]) == lead_ref
            u = 2 ** (max(0, lead_ref - p + 1) * dac_bits)
            if rounding == "truncate":
                want = v // u * u
            else:
                want = min((v + u // 2) // u * u,
                           min(2 ** (dac_bits * (lead_ref + 1)) - u, 255 // u * u))
            got = int(out[m, i, r])
            assert got == want
            assert got % u == 0 and got < 2 ** (dac_bits * (lead_ref + 1)) or got == 0


def reference_counts(layer: QuantLayer, mapped: EncodingMappedLayer, x_int: Tensor,
                     scheme: EncodingScheme) -> tuple[dict[str, int], int, float]:
    """Events, busiest-array cycles and time by loops over images, passes, positions, row
    tiles, cycles and OU groups: a (position, tile, cycle) runs unless skipped (zero chunk on
    the whole tile) or outside the precision window; every run executes all the tile's OU
    groups on every column tile, each OU converting its columns at the layer's ADC bits."""
    hw = mapped.hw
    enc = mapped.encoding
    assert enc is not None
    ou_r, ou_c, dac, c = hw.ou.rows, hw.ou.cols, hw.dac.bits, enc.chunk_max
    cgs = [math.ceil((c1 - c0) / ou_c) for c0, c1 in mapped.col_tiles]
    cols = mapped.physical_cols
    precision = scheme.layer_precision(layer.name)
    n = int(x_int.shape[0])
    patches = layer.patches(x_int.to(torch.float32)).to(torch.int64)
    positions = patches.shape[0] // n
    parts = ([patches.clamp(min=0), (-patches).clamp(min=0)] if layer.input_signed
             else [patches])
    ev = dict.fromkeys(("ou", "adc", "dac", "cells", "cmp", "lut", "dig", "dec", "rounds",
                        "zero"), 0)
    busiest = 0
    busiest_ns = 0.0
    timing = Timing(hw, mapped.layer_bits)
    col_widths = [[min(ou_c, c1 - g) for g in range(c0, c1, ou_c)] for c0, c1 in mapped.col_tiles]
    tile_ns = max(sum(timing.ns(w) for w in tile) for tile in col_widths)
    rounds_per_group = sum(timing.rounds(w) for tile in col_widths for w in tile)
    pairs = enc.complemented.sum(dim=1)
    for img in range(n):
        per_tile = [0] * len(mapped.row_tiles)
        for part in parts:
            for pos in range(positions):
                x = part[img * positions + pos]
                for i, (a, b) in enumerate(mapped.row_tiles):
                    xt = x[a:b].clone()
                    lead = ((int(xt.max()).bit_length() - 1) // dac) if int(xt.max()) else -1
                    if precision is not None:
                        ev["cmp"] += 1
                        if scheme.rounding == "round":
                            ev["dig"] += b - a
                        low = max(0, lead - precision + 1)
                        u = 2 ** (low * dac)
                        cap = min(2 ** (dac * (lead + 1)) - u, layer.input_max // u * u)
                        xt = torch.tensor([int(v) // u * u if scheme.rounding == "truncate"
                                           else min((int(v) + u // 2) // u * u, cap)
                                           for v in xt])
                    for t in range(hw.cycles):
                        chunk = (xt >> (t * dac)) & c
                        if scheme.skip_zero_planes:
                            ev["cmp"] += 1
                            ev["zero"] += b - a
                            if not bool(chunk.any()):
                                continue
                        if precision is not None and not (lead - precision < t <= lead):
                            continue
                        per_tile[i] += 1
                        groups = [g for g in range(enc.group_rows.shape[0])
                                  if int(enc.group_tile[g]) == i]
                        for g in groups:
                            rows = [int(r) - a for r in enc.group_rows[g] if r >= 0]
                            ev["ou"] += sum(cgs)
                            ev["adc"] += cols
                            ev["rounds"] += rounds_per_group
                            ev["dac"] += len(rows) * sum(cgs)
                            ev["cells"] += len(rows) * cols
                            if scheme.bus_invert:
                                ev["cmp"] += 1
                                if 2 * int(chunk[rows].sum()) > len(rows) * c:
                                    ev["lut"] += layer.out_channels
                                    ev["dec"] += layer.out_channels
                            if scheme.weight_complement:
                                ev["dec"] += int(pairs[g]) + int(pairs[g] > 0)
        groups_per_tile = [math.ceil((b - a) / ou_r) for a, b in mapped.row_tiles]
        most = max(per_tile[i] * groups_per_tile[i] for i in range(len(per_tile)))
        busiest += most * max(cgs)
        busiest_ns += most * tile_ns
    return ev, busiest, busiest_ns


@pytest.mark.parametrize("variant", [
    {"skip_zero_planes": True},
    {"input_encoding": "bus-invert", "skip_zero_planes": True},
    {"input_encoding": "bus-invert", "weight_encoding": "complement"},
    {"skip_zero_planes": False, "precision": 2},
    {"skip_zero_planes": True, "precision": 3, "rounding": "truncate"},
    {"input_encoding": "bus-invert", "weight_encoding": "complement", "skip_zero_planes": True,
     "precision": 2},
])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("dac_bits", [1, 2])
def test_counts_equal_loop_reference(variant: dict[str, Any], signed: bool,
                                     dac_bits: int) -> None:
    kw = {"input_encoding": "none", "weight_encoding": "none", **variant}
    layer, x_int, hw = first_layer_case(11, signed, {"numbers.input_bits": 2 + 2 * dac_bits,
                                                     "dac.bits": dac_bits, "array.rows": 7,
                                                     "ou.rows": 3})
    scheme = EncodingScheme(**kw)
    mapped = scheme.map_layer(layer, hw)
    assert isinstance(mapped, EncodingMappedLayer)
    kernel = scheme.kernel(mapped, CPU)
    run = scheme.run_layer(kernel, x_int, EngineOptions())
    ref, busiest, busiest_ns = reference_counts(layer, mapped, x_int, scheme)
    ev = run.events
    dense, _ = dense_events(mapped, int(x_int.shape[0]))
    assert ev.ou_activations == ref["ou"]
    assert ev.adc_conversions == ev.shift_adds == ref["adc"]
    assert ev.adc_rounds == ref["rounds"]
    assert ev.dac_activations == ref["dac"]
    assert ev.cell_reads == ref["cells"]
    assert ev.comparisons == ref["cmp"]
    assert ev.lut_reads == ref["lut"]
    assert ev.digital_ops == dense.digital_ops + ref["dig"]
    assert ev.decodes == ref["dec"]
    assert ev.zero_checks == ref["zero"]
    assert ev.encodes == (ev.dac_activations if scheme.bus_invert else 0)
    assert run.cycles == busiest
    assert run.time_ns == pytest.approx(busiest_ns, rel=1e-12)
    assert ev.adc_conversions < dense.adc_conversions


def window_counts(counter: GroupChunkCounts, layer: QuantLayer, mapped: EncodingMappedLayer,
                  part: Tensor) -> tuple[int, Tensor]:
    """The im2col reference of `GroupChunkCounts.count`: `inverted_groups` and
    `executed_chunks` (zero-plane skipping) on the pass's windows."""
    hw = mapped.hw
    enc = mapped.encoding
    assert enc is not None
    n = int(part.shape[0])
    kernel = EncodingKernel(mapped, CPU, EncodingScheme())
    windows = layer.patches(part)
    tiles = tile_view(windows, mapped.row_tiles, hw.array.rows)
    run = executed_chunks(tiles, None, hw.cycles, hw.dac.bits, True, None)
    per_image = run.sum(dim=0).reshape(n, -1, len(mapped.row_tiles)).sum(dim=1)
    inverted = inverted_groups(windows, kernel.threshold_view, mapped.row_tiles,
                               hw.array.rows, hw.ou.rows, hw.cycles, hw.dac.bits)
    return inverted, per_image


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), dac_bits=st.sampled_from([1, 2, 3]),
       input_bits=st.sampled_from([4, 8, 10]), ou_rows=st.sampled_from([1, 3, 4, 9]),
       shape=st.sampled_from(["blocked", "plain", "strided", "linear"]))
def test_group_chunk_counts_equal_the_window_counts(seed: int, dac_bits: int, input_bits: int,
                                                    ou_rows: int, shape: str) -> None:
    """The im2col-free counter (layer's own convolution on packed chunks, grouped by row
    tile where that saves work) counts exactly what the window functions count: bus-invert
    decisions and executed chunks per image and row tile, on uint8 and (10-bit) int32
    inputs, every pass of signed inputs."""
    if shape == "linear":
        net: torch.nn.Module = nets.mlp(features=40, hidden=6, seed=seed)
        x = nets.random_images(3, channels=1, size=8, seed=seed,
                               signed=seed % 2 == 1)[:, :, :5, :].reshape(3, 40)
    else:
        in_ch = {"blocked": 24, "plain": 6}.get(shape, 3)
        stride, dilation = (2, 2) if shape == "strided" else (1, 1)
        net = nets.single_conv(in_ch=in_ch, out_ch=4, k=3, stride=stride, dilation=dilation,
                               seed=seed)
        x = sparse_images(nets.random_images(3, channels=in_ch, size=7, seed=seed,
                                             signed=seed % 2 == 1), seed)
    hw = small_hw(**{"array.rows": 32, "ou.rows": ou_rows, "dac.bits": dac_bits,
                     "numbers.input_bits": input_bits})
    q = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    layer = q.layers[0]
    mapped = EncodingScheme().map_layer(layer, hw)
    assert isinstance(mapped, EncodingMappedLayer) and mapped.encoding is not None
    counter = GroupChunkCounts(layer, mapped.encoding, list(mapped.row_tiles), hw.cycles,
                               dac_bits, CPU)
    assert counter.usable
    if shape == "blocked" and ou_rows > 1:
        assert isinstance(counter.op, BlockedRows)  # one grouped convolution by row tile
    if shape == "plain":
        assert not isinstance(counter.op, BlockedRows)
    x_int = layer.quantize_input(x)
    if shape == "linear":
        x_int = x_int.reshape(3, -1)
    narrow = torch.uint8 if layer.input_max <= 255 else torch.int32
    parts = ([x_int.clamp(min=0), (-x_int).clamp(min=0)] if layer.input_signed else [x_int])
    for part in parts:
        inverted, per_image = counter.count(part.to(narrow), 3, True, True)
        ref_inverted, ref_per_image = window_counts(counter, layer, mapped, part.to(narrow))
        assert inverted == ref_inverted
        assert per_image is not None and torch.equal(per_image, ref_per_image)


# ---- ADC resolution: energy and area ------------------------------------------------------------
def test_adc_energy_and_area_follow_the_chosen_bits() -> None:
    """A SAR ADC of b bits: energy and area (1 - share) x b / ref + share x 2^(b - ref) of
    their reference values, worked out here for several shares and reference points."""
    net, x, y = net_and_data("tiny", 2)
    over = {"adc.energy_capacitive_share": 0.3, "adc.area_capacitive_share": 0.8,
            "adc.ref_bits": 7, "adc.per_array": 2, "adc.bits": 8}
    dense = simulate(net, (x, y), "isaac", "dense", overrides=over, batch_size=5)
    names = [lay["name"] for lay in dense.to_json()["layers"]]
    chosen = dict(zip(names, (3, 9, 5), strict=True))
    res = simulate(net, (x, y), "isaac",
                   EncodingScheme("none", "none", "calibrated", chosen, skip_zero_planes=False),
                   overrides=over, batch_size=5)
    hw = preset("isaac").with_overrides(over)

    def e_scale(b: int) -> float:
        return 0.7 * b / 7 + 0.3 * 2.0 ** (b - 7)

    def a_scale(b: int) -> float:
        return 0.2 * b / 7 + 0.8 * 2.0 ** (b - 7)

    for lay in res.to_json()["layers"]:
        b = chosen[lay["name"]]
        assert lay["adc_bits"] == b
        conv = lay["events"]["adc_conversions"]
        want_e = conv * hw.adc.energy_pj * e_scale(b)
        assert lay["energy_pj"]["adc"] == pytest.approx(want_e, rel=1e-12)
        want_a = lay["arrays"] * 2 * hw.adc.area_um2 * a_scale(b)
        assert lay["area_um2"]["adc"] == pytest.approx(want_a, rel=1e-12)
        # the dense baseline keeps the configured 8-bit ADC
        assert lay["dense_energy_pj"]["adc"] == pytest.approx(
            lay["dense_events"]["adc_conversions"] * hw.adc.energy_pj * e_scale(8), rel=1e-12)
        assert lay["dense_area_um2"]["adc"] == pytest.approx(
            lay["arrays"] * 2 * hw.adc.area_um2 * a_scale(8), rel=1e-12)


def test_storage_is_charged() -> None:
    net, x, _ = net_and_data("tiny", 4)
    hw = small_hw()
    layer = quantize_model(net, x, 8, 8).layers[1]
    none = EncodingScheme("none", "none", skip_zero_planes=False)
    bi = EncodingScheme("bus-invert", "none", skip_zero_planes=False)
    wc = EncodingScheme("none", "complement", skip_zero_planes=True)
    m_none, m_bi, m_wc = (s.map_layer(layer, hw) for s in (none, bi, wc))
    assert none.storage(m_none).lut_bits == 0 and none.storage(m_none).comparators == 0
    assert isinstance(m_bi, EncodingMappedLayer) and m_bi.encoding is not None
    consts = m_bi.encoding.recovery_constants(m_bi.col_channel, m_bi.col_weight,
                                              layer.out_channels)
    width = int(consts.abs().max()).bit_length() + 1
    assert bi.storage(m_bi).lut_bits == consts.numel() * width
    assert bi.storage(m_bi).comparators == m_bi.arrays
    assert isinstance(m_wc, EncodingMappedLayer) and m_wc.encoding is not None
    assert wc.storage(m_wc).lut_bits == m_wc.encoding.complemented.numel()
    assert wc.storage(m_wc).comparators == len(m_wc.row_tiles)


# ---- calibration --------------------------------------------------------------------------------
def test_calibration_bits_and_precision_reproduce_in_simulate() -> None:
    net = nets.tiny_cnn(size=8, width=3, seed=21)
    x = nets.random_images(24, size=8, seed=21)
    with torch.no_grad():
        y = net(x).argmax(dim=1)  # labels the float net gets right: accuracy can drop
    hw = preset("isaac").with_overrides({"array.rows": 16, "ou.rows": 16})
    q = quantize_model(net, x, 8, 8)
    base = EncodingScheme("bus-invert", "complement", skip_zero_planes=True)
    prec, p_top1, p_trials = calibrate_precision(q, hw, x, y, base, budget_points=5.0,
                                                 batch_size=10)
    assert p_trials and set(prec) == {lay.name for lay in q.layers}
    sch_p = base.variant(precision=prec)
    res_p = simulate(net, (x, y), hw, sch_p, qmodel=q, batch_size=10)
    assert res_p.top1 == pytest.approx(p_top1)
    cal = calibrate_adc_bits(q, hw, x, y, sch_p, budget_points=5.0, min_bits=2, batch_size=10)
    assert all(cal.adc_bits[n] <= cal.lossless_bits[n] for n in cal.adc_bits)
    assert any(cal.adc_bits[n] < cal.lossless_bits[n] for n in cal.adc_bits)
    assert cal.top1 >= cal.reference_top1 - 0.05 - 1e-12
    assert any(t["clipped_conversions"] > 0 for t in cal.trials)
    res = simulate(net, (x, y), hw, sch_p.variant(adc="calibrated", adc_bits=cal.adc_bits),
                   qmodel=q, batch_size=10)
    assert res.top1 == pytest.approx(cal.top1)
    assert [lay["adc_bits"] for lay in res.to_json()["layers"]] == list(cal.adc_bits.values())


def test_with_bits_changes_only_the_resolution() -> None:
    net, x, _ = net_and_data("tiny", 1)
    layer = quantize_model(net, x, 8, 8).layers[0]
    m = EncodingScheme().map_layer(layer, small_hw())
    assert isinstance(m, EncodingMappedLayer)
    m3 = with_bits(m, 3)
    assert m3.layer_bits == 3 and m3.layer_hw.adc.bits == 3 and m.layer_hw.adc.bits == m.layer_bits
    assert m3.hw is m.hw and m3.encoding is m.encoding


def test_reproduce_encoding_small(tmp_path: Path) -> None:
    """Every technique against the separate ISAAC-class baseline run; lossless rows equal it
    bit for bit with the exact network's top-1; lossy rows' whole-split top-1 from the same
    values the simulated run computes; headline rows from those rows."""
    from sparsexbar.schemes.encoding.study import LOSSLESS_SET, LOSSY_SET

    net = nets.tiny_fmnist_net()
    report = reproduce_encoding(tmp_path, net, "isaac", test_images=12, calibration_images=12,
                                budget_points=10.0, sweep=(3,), batch_size=12,
                                accuracy_images=40)
    rows = report["rows"]
    assert rows[0]["run"] == "baseline: dense on isaac" and len(rows) == 11
    assert report["baseline"].startswith("dense on isaac (ISAAC-class, ADC bits sized")
    assert report["baseline_classes_equal_exact"]
    for r in rows:
        assert r["accuracy_images"] == 40
        if r["lossless"]:
            assert r["outputs_equal_dense"] and r["top1_change_points"] == 0
            assert r["top1"] == report["exact_top1"]
        else:
            assert r["classes_equal_values_path"]
        assert r["throughput"] >= 1.0
    by = {r["run"]: r for r in rows}
    assert by["skip zero planes"]["throughput"] > 1
    head = report["headline"]
    assert [(h["setting"], h["key"]) for h in head] == [
        (f"encoding {s}", k) for s in (LOSSLESS_SET, LOSSY_SET)
        for k in ("throughput", "energy_efficiency", "area_efficiency")]
    for h in head:
        src = by[h["setting"].removeprefix("encoding ")]
        assert h["ours_value"] == src[h["key"]]
        assert h["ratio"] == pytest.approx(src[h["key"]] / h["published_value"])
    assert json.loads((tmp_path / "encoding_reproduce.json").read_text())["rows"] == rows
    assert "2x-4x" in (tmp_path / "encoding_reproduce.md").read_text()
    assert (tmp_path / "encoding_efficiency.png").stat().st_size > 0


# ---- bad input ----------------------------------------------------------------------------------
def test_refusals() -> None:
    net, x, y = net_and_data("tiny", 0)
    with pytest.raises(SparsexbarError, match="ideal device"):
        simulate(net, (x, y), "isaac", "encoding", overrides={"device.read_noise_sigma": 0.1})
    with pytest.raises(SparsexbarError, match="exceeds the 4 input chunks"):
        simulate(net, (x, y), "isaac", EncodingScheme(precision=5),
                 overrides={"numbers.input_bits": 4})
    with pytest.raises(SparsexbarError, match="no entry for layer 'conv2'"):
        simulate(net, (x, y), "isaac", EncodingScheme(adc="calibrated", adc_bits={"conv1": 3}))
    with pytest.raises(SparsexbarError, match="names layer 'x' but the model has no layer"):
        simulate(net, (x, y), "isaac", EncodingScheme(adc="calibrated", adc_bits={"x": 3}))
    # device effects without encodings: the engine converts; zero-plane skipping is lossless
    over = {"device.read_noise_sigma": 0.05, "adc.bits": 5}
    plain = EncodingScheme("none", "none", "fixed", skip_zero_planes=True)
    a = simulate(net, (x, y), "isaac", plain, overrides=over)
    b = simulate(net, (x, y), "isaac", "dense", overrides=over)
    assert a.outputs is not None and b.outputs is not None
    assert torch.equal(a.outputs, b.outputs)


@pytest.mark.parametrize("spec, fragment", [
    ("encoding:input=gray", "encoding input must be one of"),
    ("encoding:weight=flip", "encoding weight must be one of"),
    ("encoding:adc=tiny", "encoding adc must be one of"),
    ("encoding:adc=calibrated", "needs per-layer bits"),
    ("encoding:adc_bits=/nonexistent/bits.json", "adc_bits file not found"),
    ("encoding:precision=0", "precision must be a positive number"),
    ("encoding:precision=x", "precision must be a whole number"),
    ("encoding:skip=maybe", "skip must be on or off"),
    ("encoding:rounding=up", "rounding must be one of"),
    ("encoding:colour=red", "unknown option 'colour' for scheme 'encoding'"),
    ("encoding:adc", "expect key=value"),
    ("pattern:mode=weight", "takes no options"),
])
def test_cli_bad_scheme_options(capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str,
                                fragment: str) -> None:
    code, _, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--limit", "2",
                       "--scheme", spec, "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, fragment)


def test_cli_bad_files_and_numbers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--limit", "2",
                       "--scheme", f"encoding:adc_bits={bad}", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "cannot parse encoding adc_bits file")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"adc_bits": {"conv1": 40}}))
    code, _, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--limit", "2",
                       "--scheme", f"encoding:adc_bits={wrong}", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "adc_bits['conv1'] must be a whole number of bits")
    code, _, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--limit", "2",
                       "--scheme", "encoding", "--set", "device.read_noise_sigma=0.1",
                       "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "ideal device only")
    for args, fragment in [
        (("calibrate-encoding", "--budget", "-1"), "--budget must be in 0..100 points"),
        (("calibrate-encoding", "--images", "0"), "--images must be positive"),
        (("calibrate-encoding", "--min-bits", "0"), "--min-bits must be in 1..16"),
        (("calibrate-encoding", "--scheme", "dense"), "must be an encoding scheme"),
        (("reproduce", "encoding", "--test-images", "0"), "must be in 1..10000"),
        (("reproduce", "encoding", "--budget", "-1"), "--budget must be in 0..100 points"),
    ]:
        code, _, err = cli(capsys, *args, "--out", str(tmp_path / "c.json"))
        assert_one_line_error(code, err, fragment)


def test_cli_calibrate_then_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bits = tmp_path / "bits.json"
    code, out, err = cli(capsys, "calibrate-encoding", "--model", "tests.nets:tiny_fmnist_net",
                         "--images", "8", "--budget", "50", "--precision", "--out", str(bits))
    assert code == 0, err
    saved = json.loads(bits.read_text())
    assert set(saved["adc_bits"]) == set(saved["lossless_bits"]) and "precision" in saved
    code, out, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--limit", "4",
                         "--scheme", f"encoding:adc_bits={bits}:precision={bits}",
                         "--out", str(tmp_path / "run"))
    assert code == 0, err
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["scheme"]["name"] == "encoding"
    assert [lay["adc_bits"] for lay in res["layers"]] == list(saved["adc_bits"].values())
    assert res["scheme"]["parameters"]["precision"] == saved["precision"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu() -> None:
    net, x, y = net_and_data("residual", 9)
    names = [q.name for q in quantize_model(net, x, 8, 8).layers]
    for scheme in (EncodingScheme(),
                   EncodingScheme(adc="calibrated", adc_bits=dict.fromkeys(names, 3),
                                  precision=3)):
        cpu = simulate(net, (x, y), "isaac", scheme, batch_size=5)
        gpu = simulate(net, (x, y), "isaac", scheme, batch_size=5, device="cuda")
        assert cpu.outputs is not None and gpu.outputs is not None
        assert torch.equal(cpu.outputs, gpu.outputs)
        assert [lay["events"] for lay in cpu.to_json()["layers"]] == [
            lay["events"] for lay in gpu.to_json()["layers"]]


@pytest.mark.parametrize(("tiles", "width"), [(1, 4), (3, 8), (2, 12), (5, 16), (3, 5), (2, 2)])
def test_or_tile_masks_equal_the_halving_ors(tiles: int, width: int) -> None:
    """The tile masks folded from int64 words (width a multiple of 4) or by halving ORs
    (other widths, non-contiguous entries) equal the OR of every entry's mask bits."""
    gen = torch.Generator().manual_seed(tiles * 31 + width)
    entry = torch.randint(0, 2**12, (37, tiles * width), generator=gen).to(torch.int16)
    want = bitwise_or_rows((entry >> 4).view(37, tiles, width)).to(torch.int64)
    assert torch.equal(or_tile_masks(entry, tiles), want)
    wide = torch.randint(0, 2**12, (37, tiles * width + 3), generator=gen).to(torch.int16)
    view = wide[:, : tiles * width]  # non-contiguous rows: the halving path
    want = bitwise_or_rows((view >> 4).reshape(37, tiles, width)).to(torch.int64)
    assert torch.equal(or_tile_masks(view, tiles), want)
    assert bool((want > 0).any())
