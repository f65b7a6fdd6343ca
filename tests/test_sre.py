"""The `sre` scheme (DESIGN.md 3.1): outputs equal `dense` bit for bit wherever the ADC is
lossless, event counts equal a plain loop reference written here (per image, position, pass,
cycle, array, OU column group: ceil(active rows / ou.rows)), never exceed dense, and the weight
mode with a clipping ADC equals a loop reference of packed OU groups."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import sparsexbar
from sparsexbar import EngineOptions
from sparsexbar.core.config import HardwareConfig, preset
from sparsexbar.core.errors import SparsexbarError, SparsexbarNote
from sparsexbar.core.frontend import QuantLayer, quantize_model
from sparsexbar.core.mapping import map_dense
from sparsexbar.schemes import get_scheme
from sparsexbar.schemes.sre import SreKernel, SreScheme, map_sre, packing
from tests import nets
from tests.timing_ref import Timing, layer_bits

MODES = [(m, g) for m in ("weight", "activation", "joint") for g in ("bit", "word")]
CROSSBAR_EVENTS = ("ou_activations", "adc_conversions", "dac_activations", "cell_reads",
                   "shift_adds")


def prune_blocks(model: nn.Module, fraction: float, seed: int) -> nn.Module:
    """Zero whole input rows of some layers' weights and random single weights (seeded), so
    static compression finds all-zero rows and the data has zero inputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                w = mod.weight
                flat = w.reshape(w.shape[0], -1)
                rows = torch.rand(flat.shape[1], generator=gen) < fraction
                flat[:, rows] = 0
                flat[torch.rand(flat.shape, generator=gen) < fraction] = 0
    return model


# ---- bit for bit ----------------------------------------------------------------------------
# (preset, overrides): all lossless for any packing of ou.rows rows.
HARDWARE = [("isaac", {}), ("ideal-small", {}), ("isaac", {"dac.bits": 2}),
            ("isaac", {"cell.sign": "offset"}), ("isaac", {"numbers.input_bits": 5}),
            ("ideal-small", {"array.rows": 16, "array.cols": 24, "ou.cols": 5})]


@settings(max_examples=8)
@given(seed=st.integers(0, 10_000), fraction=st.sampled_from([0.0, 0.3, 0.7]),
       signed=st.booleans(), relu=st.booleans(), hw=st.sampled_from(HARDWARE))
def test_outputs_equal_dense_random_nets(seed: int, fraction: float, signed: bool, relu: bool,
                                         hw: tuple[str, dict[str, object]]) -> None:
    hw_name, overrides = hw
    net = prune_blocks(nets.residual_net(size=6, relu_after_add=relu, seed=seed), fraction, seed)
    x = nets.random_images(3, channels=2, size=6, seed=seed, signed=signed)
    y = nets.random_labels(3, classes=5, seed=seed)
    dense = sparsexbar.simulate(net, (x, y), hw=hw_name, scheme="dense", overrides=overrides)
    d = dense.to_json()
    for mode, gran in MODES:
        res = sparsexbar.simulate(net, (x, y), hw=hw_name, scheme=SreScheme(mode, gran),
                                  overrides=overrides)
        assert res.outputs is not None and dense.outputs is not None
        assert torch.equal(res.outputs, dense.outputs), (mode, gran)
        r = res.to_json()
        for lay, dlay in zip(r["layers"], d["layers"], strict=True):
            for key in CROSSBAR_EVENTS:
                assert lay["events"][key] <= dlay["events"][key], (mode, gran, key)
                assert lay["dense_events"][key] == dlay["events"][key]
            assert lay["cycles"] <= dlay["cycles"]
            for key in ("buffer_read_bytes", "buffer_write_bytes", "digital_ops"):
                assert lay["events"][key] == dlay["events"][key]
        assert r["scheme"] == {"name": "sre", "parameters": {"mode": mode,
                                                             "granularity": gran}}


def test_outputs_equal_dense_vgg8_shapes() -> None:
    """The shipped model's architecture (VGG-8 on 1x28x28), pruned, on real data shapes."""
    torch.manual_seed(0)
    from sparsexbar.training.zoo import build_model

    net = prune_blocks(build_model("vgg8", in_channels=1, num_classes=10, input_size=28,
                                   width=0.125), 0.5, 1).eval()
    x = nets.random_images(2, channels=1, size=28, seed=1)
    y = nets.random_labels(2, seed=1)
    dense = sparsexbar.simulate(net, (x, y), hw="isaac", scheme="dense")
    joint = sparsexbar.simulate(net, (x, y), hw="isaac", scheme="sre")
    assert dense.outputs is not None and joint.outputs is not None
    assert torch.equal(joint.outputs, dense.outputs)
    assert joint.to_json()["vs_dense"]["speedup"] > 1.0


# ---- counts against a loop reference ---------------------------------------------------------
def _layer(signed: bool, seed: int = 0) -> tuple[QuantLayer, Tensor]:
    """A small pruned conv layer and its integer input (N=2, 2x5x5 -> 3 output channels)."""
    net = prune_blocks(nets.single_conv(2, 3, 3, padding=1, seed=seed), 0.4, seed)
    x = nets.random_images(2, channels=2, size=5, seed=seed, signed=signed)
    x = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.3,
                    torch.zeros_like(x), x)  # zero inputs for the dynamic modes
    q = quantize_model(net, x, 8, 8)
    layer = q.layers[0]
    return layer, layer.quantize_input(x)


def _small_hw() -> HardwareConfig:
    # Several row and column tiles, OU groups that do not divide the tiles, 2-bit DAC.
    # A short analog read (1 ns): activations converting 2 or more columns wait for the ADC.
    return preset("ideal-small").with_overrides(
        {"array.rows": 8, "array.cols": 10, "ou.rows": 3, "ou.cols": 4, "dac.bits": 2,
         "timing.read_ns": 1.0})


def reference_counts(layer: QuantLayer, x_int: Tensor, hw: HardwareConfig, mode: str,
                     gran: str) -> tuple[dict[str, int], int, float]:
    """Loop over images, positions, passes, cycles, arrays and OU column groups: events, and
    per image the busiest array's OU activations and time (summed over the images)."""
    levels = map_dense(layer, hw).levels.to(torch.int64)  # (R, C)
    timing = Timing(hw, layer_bits(hw, layer.rows))
    r, c = levels.shape
    patches = layer.patches(x_int.to(torch.float32)).to(torch.int64)
    n = x_int.shape[0]
    positions = patches.shape[0] // n
    parts = [patches.clamp(min=0), (-patches).clamp(min=0)] if layer.input_signed else [patches]
    idx_bits = max(1, math.ceil(math.log2(hw.array.rows)))
    out = dict.fromkeys(CROSSBAR_EVENTS + ("index_reads", "adc_rounds", "zero_checks",
                                           "ou_forms"), 0)
    busiest_total = 0
    busiest_ns = 0.0
    for img in range(n):
        per_array: dict[tuple[int, int], int] = {}
        per_array_ns: dict[tuple[int, int], float] = {}
        for pos in range(positions):
            for part in parts:
                vec = part[img * positions + pos]
                for r0 in range(0, r, hw.array.rows):
                    r1 = min(r, r0 + hw.array.rows)
                    for t0 in range(0, c, hw.array.cols):
                        t1 = min(c, t0 + hw.array.cols)
                        for g0 in range(t0, t1, hw.ou.cols):
                            g1 = min(t1, g0 + hw.ou.cols)
                            kept = [row for row in range(r0, r1)
                                    if mode == "activation" or bool(levels[row, g0:g1].any())]
                            if mode != "activation":
                                out["index_reads"] += len(kept) * idx_bits
                            for t in range(hw.cycles):
                                chunk = [(int(vec[row]) >> (t * hw.dac.bits)) & (
                                    2**hw.dac.bits - 1) for row in kept]
                                word = [int(vec[row]) for row in kept]
                                if mode == "weight":
                                    active = len(kept)
                                elif gran == "bit":
                                    active = sum(1 for v in chunk if v)
                                else:
                                    active = sum(1 for v in word if v)
                                ou = math.ceil(active / hw.ou.rows)
                                out["ou_activations"] += ou
                                out["adc_rounds"] += ou * timing.rounds(g1 - g0)
                                if mode != "weight":  # dynamic packing: tests and forms
                                    out["ou_forms"] += ou
                                out["adc_conversions"] += ou * (g1 - g0)
                                out["shift_adds"] += ou * (g1 - g0)
                                out["dac_activations"] += active
                                out["cell_reads"] += active * (g1 - g0)
                                key = (r0, t0)
                                per_array[key] = per_array.get(key, 0) + ou
                                per_array_ns[key] = (per_array_ns.get(key, 0.0)
                                                     + ou * timing.ns(g1 - g0))
        busiest_total += max(per_array.values())
        busiest_ns += max(per_array_ns.values())
    if mode != "weight":  # every row's chunk (bit) or word tested for zero, every cycle/word
        out["zero_checks"] = (layer.rows * n * positions * len(parts)
                              * (hw.cycles if gran == "bit" else 1))
    return out, busiest_total, busiest_ns


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(("mode", "gran"), MODES)
def test_counts_equal_loop_reference(mode: str, gran: str, signed: bool) -> None:
    layer, x_int = _layer(signed)
    hw = _small_hw()
    scheme = SreScheme(mode, gran)
    mapped = map_sre(layer, hw, scheme.compress)
    assert len(mapped.row_tiles) == 3 and len(mapped.col_tiles) == 3
    kernel = SreKernel(mapped, torch.device("cpu"))
    events, cycles, time_ns = scheme.count(kernel, x_int, EngineOptions())
    expected, busiest, busiest_ns = reference_counts(layer, x_int, hw, mode, gran)
    got = events.to_dict()
    for key, value in expected.items():
        assert got[key] == value, key
    assert cycles == busiest
    assert time_ns == pytest.approx(busiest_ns, rel=1e-12)
    assert expected["ou_activations"] > 0


def test_counts_small_memory_budget_same() -> None:
    """Chunking over images (tiny memory budget) does not change any count."""
    layer, x_int = _layer(False, seed=3)
    hw = _small_hw()
    scheme = SreScheme("joint", "bit")
    kernel = SreKernel(map_sre(layer, hw, True), torch.device("cpu"))
    big = scheme.count(kernel, x_int, EngineOptions())
    small = scheme.count(kernel, x_int, EngineOptions(memory_budget_mb=1e-6))
    assert big == small


def test_index_storage_and_reads() -> None:
    layer, x_int = _layer(False, seed=5)
    hw = _small_hw()
    levels = map_dense(layer, hw).levels.to(torch.int64)
    kept = 0
    for r0 in range(0, levels.shape[0], hw.array.rows):
        for t0 in range(0, levels.shape[1], hw.array.cols):
            t1 = min(levels.shape[1], t0 + hw.array.cols)
            for g0 in range(t0, t1, hw.ou.cols):
                blk = levels[r0 : r0 + hw.array.rows, g0 : min(t1, g0 + hw.ou.cols)]
                kept += int((blk != 0).any(dim=1).sum())
    bits = math.ceil(math.log2(8))  # array.rows = 8
    assert kept < levels.shape[0] * 7  # some rows were dropped (7 column groups)
    weight = SreScheme("weight")
    assert weight.storage(map_sre(layer, hw, True)).index_bits == kept * bits
    assert SreScheme("activation").storage(map_sre(layer, hw, False)).index_bits == 0
    events, _, _ = weight.count(SreKernel(map_sre(layer, hw, True), torch.device("cpu")), x_int,
                             EngineOptions())
    assert events.index_reads == kept * bits * layer.positions * 2  # 2 images, 1 pass


# ---- weight mode with a clipping ADC ---------------------------------------------------------
def reference_weight_values(layer: QuantLayer, x_int: Tensor, hw: HardwareConfig) -> Tensor:
    """Loop reference of statically packed OUs with the ADC clamp, (N*P, Cout) float64."""
    dense = map_dense(layer, hw)
    levels = dense.levels.to(torch.int64)
    r, c = levels.shape
    patches = layer.patches(x_int.to(torch.float32)).to(torch.int64)
    top = hw.adc_max_code
    acc = torch.zeros((patches.shape[0], layer.out_channels), dtype=torch.float64)
    for r0 in range(0, r, hw.array.rows):
        r1 = min(r, r0 + hw.array.rows)
        for t0 in range(0, c, hw.array.cols):
            t1 = min(c, t0 + hw.array.cols)
            for g0 in range(t0, t1, hw.ou.cols):
                g1 = min(t1, g0 + hw.ou.cols)
                kept = [row for row in range(r0, r1) if bool(levels[row, g0:g1].any())]
                for a in range(0, len(kept), hw.ou.rows):
                    rows = kept[a : a + hw.ou.rows]
                    for t in range(hw.cycles):
                        chunk = (patches[:, rows] >> (t * hw.dac.bits)) & (2**hw.dac.bits - 1)
                        p = chunk @ levels[rows, g0:g1]  # (M, cols)
                        q = p.clamp(0, top).to(torch.float64) * 2 ** (t * hw.dac.bits)
                        for j, col in enumerate(range(g0, g1)):
                            acc[:, int(dense.col_channel[col])] += q[:, j] * float(
                                dense.col_weight[col])
    return acc


def test_weight_mode_clipping_adc_equals_reference() -> None:
    layer, x_int = _layer(False, seed=7)
    hw = _small_hw().with_overrides({"adc.bits": 3})  # 3 rows x 3 x 3 = 27 > 7: clips
    mapped = map_sre(layer, hw, True)
    assert mapped.adc_can_clip()
    scheme = SreScheme("weight")
    run = scheme.run_layer(scheme.kernel(mapped, torch.device("cpu")), x_int, EngineOptions())
    expected = layer.fold_output(reference_weight_values(layer, x_int, hw), x_int.shape[0])
    assert torch.equal(run.accumulator, expected)
    exact = layer.reference_accumulate(x_int).to(torch.float64)
    assert not torch.equal(run.accumulator, exact)  # clipping did change the result


def reference_packed_values(layer: QuantLayer, x_int: Tensor, hw: HardwareConfig, mode: str,
                            gran: str) -> Tensor:
    """Loop reference of dynamic packing with the ADC: per position, pass, cycle, array and
    column group, the active kept rows in row order, packed into OUs of ou.rows;
    p = chunk . levels per column, ADC = clamp(round(p / step), 0, top) * step; (N*P, Cout)."""
    dense = map_dense(layer, hw)
    levels = dense.levels.to(torch.float64)
    r, c = levels.shape
    patches = layer.patches(x_int.to(torch.float32)).to(torch.int64)
    parts = ([(patches.clamp(min=0), 1.0), ((-patches).clamp(min=0), -1.0)]
             if layer.input_signed else [(patches, 1.0)])
    top, step = hw.adc_max_code, hw.adc.step
    acc = torch.zeros((patches.shape[0], layer.out_channels), dtype=torch.float64)
    for m in range(patches.shape[0]):
        for part, sign in parts:
            vec = part[m]
            for r0 in range(0, r, hw.array.rows):
                r1 = min(r, r0 + hw.array.rows)
                for t0 in range(0, c, hw.array.cols):
                    t1 = min(c, t0 + hw.array.cols)
                    for g0 in range(t0, t1, hw.ou.cols):
                        g1 = min(t1, g0 + hw.ou.cols)
                        kept = [row for row in range(r0, r1) if mode == "activation"
                                or bool(levels[row, g0:g1].any())]
                        for t in range(hw.cycles):
                            chunk = {row: (int(vec[row]) >> (t * hw.dac.bits))
                                     & (2**hw.dac.bits - 1) for row in kept}
                            active = [row for row in kept if (
                                chunk[row] if gran == "bit" else int(vec[row]))]
                            for a in range(0, len(active), hw.ou.rows):
                                rows = active[a : a + hw.ou.rows]
                                ch = torch.tensor([float(chunk[row]) for row in rows],
                                                  dtype=torch.float64)
                                p = ch @ levels[rows, g0:g1]
                                q = torch.round(p / step).clamp(0, top) * step
                                for j, col in enumerate(range(g0, g1)):
                                    acc[m, int(dense.col_channel[col])] += (
                                        sign * float(q[j]) * 2 ** (t * hw.dac.bits)
                                        * float(dense.col_weight[col]))
    if dense.offset:
        acc -= float(dense.offset) * patches.to(torch.float64).sum(dim=1, keepdim=True)
    return acc


@pytest.mark.parametrize(("mode", "gran", "signed", "overrides"), [
    ("joint", "bit", False, {"adc.bits": 3}),
    ("activation", "word", True, {"adc.bits": 3}),
    ("joint", "word", False, {"adc.bits": 4, "adc.step": 2.0}),
    ("activation", "bit", True, {"adc.bits": 4, "cell.sign": "offset"}),
])
def test_dynamic_modes_clipping_adc_equal_reference(mode: str, gran: str, signed: bool,
                                                    overrides: dict[str, object]) -> None:
    layer, x_int = _layer(signed, seed=11)
    hw = _small_hw().with_overrides(overrides)
    scheme = SreScheme(mode, gran)
    mapped = scheme.map_layer(layer, hw)
    run = scheme.run_layer(scheme.kernel(mapped, torch.device("cpu")), x_int,
                           EngineOptions(memory_budget_mb=0.01))
    expected = layer.fold_output(reference_packed_values(layer, x_int, hw, mode, gran),
                                 x_int.shape[0])
    assert torch.equal(run.accumulator, expected)
    exact = layer.reference_accumulate(x_int).to(torch.float64)
    assert not torch.equal(run.accumulator, exact)  # the ADC did change the result


@pytest.mark.parametrize("pair_dense", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("mode", "gran", "signed"), [
    ("joint", "bit", False), ("activation", "word", True), ("joint", "word", True)])
def test_packed_path_skips_positions_that_cannot_clip(monkeypatch: pytest.MonkeyPatch,
                                                      pair_dense: float, mode: str, gran: str,
                                                      signed: bool) -> None:
    """A cycle's (set, position) pairs whose bound (chunk x each entry's largest level) stays
    within the ADC range are skipped: the result equals the loop reference whether the
    cycles run on the other pairs, packed in blocks of one set (pair_dense 1), on all pairs
    (0) or on either (0.5), and the packed runs did see fewer positions than their chunk."""
    layer, x_int = _layer(signed, seed=5)
    hw = _small_hw().with_overrides({"adc.bits": 4})
    scheme = SreScheme(mode, gran)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), torch.device("cpu"))
    seen: list[tuple[int, int]] = []  # (positions of a cycle's run, positions of its chunk)
    real = packing._bucket_deltas

    def spy(bucket, x, past, first, step, top):  # type: ignore[no-untyped-def]
        seen.append((int(x.shape[1]), chunk_positions[0]))
        return real(bucket, x, past, first, step, top)

    chunk_positions = [0]
    real_chunk = packing._chunk_deltas

    def chunk_spy(bucket, chunks, *args):  # type: ignore[no-untyped-def]
        chunk_positions[0] = int(chunks[0][1].shape[1])  # (cycle, (R + 1, m) plane)s
        return real_chunk(bucket, chunks, *args)

    monkeypatch.setattr(packing, "PAIR_DENSE", pair_dense)
    monkeypatch.setattr(packing, "_bucket_deltas", spy)
    monkeypatch.setattr(packing, "_chunk_deltas", chunk_spy)
    got = scheme.packed_accumulate(kernel, x_int, EngineOptions())
    expected = layer.fold_output(reference_packed_values(layer, x_int, hw, mode, gran),
                                 x_int.shape[0])
    assert torch.equal(got, expected)
    assert not torch.equal(got, layer.reference_accumulate(x_int).to(torch.float64))
    gathered = sum(1 for run, whole in seen if run < whole)
    if pair_dense == 0.0:
        assert gathered == 0 and seen
    elif pair_dense == 1.0:
        assert gathered > 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ou_rows=st.integers(1, 5), array_rows=st.integers(4, 12),
       adc_bits=st.integers(2, 5), mode=st.sampled_from(["joint", "activation"]),
       gran=st.sampled_from(["bit", "word"]), step=st.sampled_from([1.0, 2.0]),
       zeros=st.floats(0.0, 0.9))
def test_packed_path_equals_reference_property(seed: int, ou_rows: int, array_rows: int,
                                               adc_bits: int, mode: str, gran: str,
                                               step: float, zeros: float) -> None:
    """The vectorized packed path (static blocks split at the packed-OU boundary, running
    sums per kept-row set) equals the loop reference for any OU height, array height, input
    sparsity and ADC: boundaries inside a set's last block, sets of one block, empty OUs."""
    ou_rows = min(ou_rows, array_rows)
    net = prune_blocks(nets.single_conv(2, 3, 3, padding=1, seed=seed), 0.5, seed)
    x = nets.random_images(2, channels=2, size=4, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.where(torch.rand(x.shape, generator=gen) < zeros, torch.zeros_like(x), x)
    layer = quantize_model(net, x, 8, 8).layers[0]
    x_int = layer.quantize_input(x)
    hw = preset("ideal-small").with_overrides(
        {"array.rows": array_rows, "array.cols": 10, "ou.rows": ou_rows, "ou.cols": 4,
         "dac.bits": 2, "adc.bits": adc_bits, "adc.step": step})
    scheme = SreScheme(mode, gran)
    mapped = scheme.map_layer(layer, hw)
    kernel = scheme.kernel(mapped, torch.device("cpu"))
    got = scheme.packed_accumulate(kernel, x_int, EngineOptions(memory_budget_mb=0.002))
    expected = layer.fold_output(reference_packed_values(layer, x_int, hw, mode, gran),
                                 x_int.shape[0])
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("mode", "gran", "signed"), [
    ("joint", "bit", False), ("joint", "word", True)])
def test_packed_path_in_chunks_of_sets_equals_reference(monkeypatch: pytest.MonkeyPatch,
                                                        mode: str, gran: str,
                                                        signed: bool) -> None:
    """A bucket of which fewer than MIN_POSITIONS positions fit the memory budget (a fully
    connected layer's many sets) runs in chunks of its sets on MIN_POSITIONS positions each:
    the result equals the loop reference, and the chunks did split the bucket's sets."""
    layer, x_int = _layer(signed, seed=3)
    hw = _small_hw().with_overrides({"adc.bits": 3})
    scheme = SreScheme(mode, gran)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), torch.device("cpu"))
    plan = kernel.pack_plan()
    widest = max(plan.buckets, key=lambda b: b.sets)
    assert widest.sets >= 4
    # 4 positions of the widest bucket fit: it runs in chunks of about a quarter of its sets
    budget_mb = 4 * widest.bytes_per_position / 2**20
    seen: list[tuple[int, int]] = []  # (sets of a chunk's bucket, positions of the chunk)
    real_chunk = packing._chunk_deltas

    def chunk_spy(bucket, chunks, *args):  # type: ignore[no-untyped-def]
        seen.append((bucket.sets, int(chunks[0][1].shape[1])))  # (cycle, (R + 1, m) plane)s
        return real_chunk(bucket, chunks, *args)

    monkeypatch.setattr(packing, "_chunk_deltas", chunk_spy)
    got = scheme.packed_accumulate(kernel, x_int, EngineOptions(memory_budget_mb=budget_mb))
    expected = layer.fold_output(reference_packed_values(layer, x_int, hw, mode, gran),
                                 x_int.shape[0])
    assert torch.equal(got, expected)
    assert not torch.equal(got, layer.reference_accumulate(x_int).to(torch.float64))
    split = [(sets, m) for sets, m in seen if sets < widest.sets and m > 4]
    assert split and all(m == packing.MIN_POSITIONS for _, m in split)
    assert sum(sets for sets, _ in split) % widest.sets == 0  # every set, once per chunk


@pytest.mark.parametrize("gran", ["bit", "word"])
def test_packed_path_wide_inputs_equal_reference(gran: str) -> None:
    """Inputs above a byte (10-bit inputs: the chunk planes stay int32) give the loop
    reference's result too."""
    net = prune_blocks(nets.single_conv(2, 3, 3, padding=1, seed=4), 0.4, 4)
    x = nets.random_images(2, channels=2, size=5, seed=4)
    layer = quantize_model(net, x, 8, 10).layers[0]
    x_int = layer.quantize_input(x)
    assert int(x_int.max()) > 255
    hw = _small_hw().with_overrides({"adc.bits": 3, "numbers.input_bits": 10})
    scheme = SreScheme("joint", gran)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), torch.device("cpu"))
    got = scheme.packed_accumulate(kernel, x_int, EngineOptions())
    expected = layer.fold_output(reference_packed_values(layer, x_int, hw, "joint", gran),
                                 x_int.shape[0])
    assert torch.equal(got, expected)
    assert not torch.equal(got, layer.reference_accumulate(x_int).to(torch.float64))


def test_pack_bucket_part_is_the_sets_own_slices() -> None:
    """`PackBucket.part` holds exactly the entries, levels and columns of its sets."""
    layer, _ = _layer(False, seed=3)
    hw = _small_hw().with_overrides({"adc.bits": 3})
    scheme = SreScheme("joint", "bit")
    bucket = max(scheme.kernel(scheme.map_layer(layer, hw), torch.device("cpu"))
                 .pack_plan().buckets, key=lambda b: b.sets)
    width, per_set = int(bucket.levels.shape[1]), bucket.blocks * hw.ou.rows
    part = bucket.part(1, 3)
    assert part.sets == 2 and part.blocks == bucket.blocks
    assert torch.equal(part.entry_row, bucket.entry_row.view(bucket.sets, per_set)[1:3]
                       .reshape(-1))
    assert torch.equal(part.levels, bucket.levels.view(bucket.sets, bucket.blocks, width, -1)
                       [1:3].reshape(-1, width, hw.ou.rows))
    assert torch.equal(part.col_channel, bucket.col_channel.view(bucket.sets, width)[1:3]
                       .reshape(-1))
    assert torch.equal(part.col_weight, bucket.col_weight.view(bucket.sets, width)[1:3]
                       .reshape(-1))
    assert torch.equal(part.set_levels, bucket.set_levels[1:3])


def test_dynamic_modes_refuse_non_ideal_device() -> None:
    layer, _ = _layer(False)
    hw = preset("isaac").with_overrides({"device.read_noise_sigma": 0.01})
    for mode in ("activation", "joint"):
        with pytest.raises(SparsexbarError, match="needs an ideal device"):
            SreScheme(mode).map_layer(layer, hw)
    assert SreScheme("weight").map_layer(layer, hw).segment_cols.shape[1] == hw.ou.cols


def test_registry_and_parameters() -> None:
    scheme = get_scheme("sre")
    assert isinstance(scheme, SreScheme)
    assert scheme.parameters() == {"mode": "joint", "granularity": "bit"}
    with pytest.raises(SparsexbarError, match="sre mode"):
        SreScheme("both")
    with pytest.raises(SparsexbarError, match="granularity"):
        SreScheme("joint", "byte")


def test_shipped_model_joint_equals_dense() -> None:
    from sparsexbar.training.checkpoint import shipped_model_path

    if not shipped_model_path().is_file():
        pytest.skip("shipped checkpoint not built")
    dense = sparsexbar.simulate("default", "default", hw="isaac", scheme="dense", limit=8)
    for mode, gran in (("joint", "bit"), ("activation", "word"), ("weight", "bit")):
        res = sparsexbar.simulate("default", "default", hw="isaac",
                                  scheme=SreScheme(mode, gran), limit=8)
        assert res.outputs is not None and dense.outputs is not None
        assert torch.equal(res.outputs, dense.outputs), (mode, gran)
        assert res.to_json()["totals"]["cycles"] <= dense.to_json()["totals"]["cycles"]


# ---- the packed-plane counting paths ---------------------------------------------------------
class _Linear(nn.Module):
    def __init__(self, features: int = 30, out: int = 5) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(features, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(x))


def _linear_layer(signed: bool, seed: int = 0) -> tuple[QuantLayer, Tensor]:
    """A pruned linear layer (30 inputs -> 5) and its integer input, some inputs zero."""
    net = prune_blocks(nets.seeded_init(_Linear(), seed).eval(), 0.4, seed)
    x = nets.random_images(3, channels=30, size=1, seed=seed, signed=signed)
    x = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.3,
                    torch.zeros_like(x), x)
    layer = quantize_model(net, x, 8, 8).layers[0]
    return layer, layer.quantize_input(x)


@pytest.mark.parametrize("int8", [True, False])
@pytest.mark.parametrize(("kind", "signed", "dac", "mode", "gran"), [
    ("conv", False, 1, "joint", "bit"), ("conv", True, 1, "activation", "bit"),
    ("conv", False, 1, "joint", "word"), ("conv", False, 3, "joint", "bit"),
    ("linear", False, 1, "joint", "bit"), ("linear", True, 2, "activation", "bit"),
])
def test_counts_packed_planes_equal_loop_reference(
        int8: bool, kind: str, signed: bool, dac: int, mode: str, gran: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Several cycles per call of the kept-set convolution (base-B digits): 1-bit DAC (bit
    pairs/triples taken from one shift), multi-bit DAC (nonzero chunks), linear layers; the
    int8 convolution and the float32 path (int8 made unavailable: up to 7 cycles per call)."""
    from sparsexbar.core import intconv

    if not int8:
        monkeypatch.setattr(intconv, "_int8_conv_available", lambda device: False)
    layer, x_int = _layer(signed, seed=11) if kind == "conv" else _linear_layer(signed, seed=4)
    hw = _small_hw().with_overrides({"dac.bits": dac})
    scheme = SreScheme(mode, gran)
    kernel = SreKernel(map_sre(layer, hw, scheme.compress), torch.device("cpu"))
    events, cycles, time_ns = scheme.count(kernel, x_int, EngineOptions())
    op = kernel.count_op()
    packed = 1 if gran == "word" else min(kernel.fields, hw.cycles)
    assert (op.backend == "int8") == (int8 and kind == "conv"
                                       and intconv._int8_conv_available(torch.device("cpu")))
    if gran == "bit":  # several cycles share a call
        assert packed >= (2 if op.backend == "int8" else 3)
    expected, busiest, busiest_ns = reference_counts(layer, x_int, hw, mode, gran)
    got = events.to_dict()
    for key, value in expected.items():
        assert got[key] == value, key
    assert cycles == busiest
    assert time_ns == pytest.approx(busiest_ns, rel=1e-12)


def test_counts_128_row_arrays_equal_loop_reference() -> None:
    """isaac's 128-row arrays: base 129, two cycles per int8 call, three row tiles."""
    net = prune_blocks(nets.single_conv(32, 3, 3, padding=1, seed=2), 0.3, 2)
    x = nets.random_images(1, channels=32, size=3, seed=2)
    x = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.4,
                    torch.zeros_like(x), x)
    layer = quantize_model(net, x, 8, 8).layers[0]
    x_int = layer.quantize_input(x)
    hw = preset("isaac")
    scheme = SreScheme("joint", "bit")
    kernel = SreKernel(map_sre(layer, hw, True), torch.device("cpu"))
    events, cycles, time_ns = scheme.count(kernel, x_int, EngineOptions())
    kernel.count_op()
    assert len(kernel.mapped.row_tiles) == 3 and kernel.field_base <= 129
    expected, busiest, busiest_ns = reference_counts(layer, x_int, hw, "joint", "bit")
    got = events.to_dict()
    for key, value in expected.items():
        assert got[key] == value, key
    assert cycles == busiest
    assert time_ns == pytest.approx(busiest_ns, rel=1e-12)


def test_weight_compression_with_offset_cells_is_noted() -> None:
    """With cell.sign=offset a zero weight is 2^(B-1) in the cells: the compression keeps
    more rows than with differential cells (here: a 70%-pruned conv), and the user is told."""
    net = prune_blocks(nets.single_conv(4, 8, 3, padding=1, seed=2), 0.7, 2)
    layer = quantize_model(net, nets.random_images(2, channels=4, size=6, seed=2), 8, 8).layers[0]
    hw = preset("isaac")
    diff = SreScheme("weight").map_layer(layer, hw)
    with pytest.warns(SparsexbarNote, match="cell.sign=offset"):
        off = SreScheme("weight").map_layer(layer, hw.with_overrides({"cell.sign": "offset"}))
    kept_diff, kept_off = (int((m.group_rows >= 0).sum()) for m in (diff, off))
    assert kept_diff < kept_off
