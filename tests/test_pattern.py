"""The `pattern` scheme (DESIGN.md 3.2): outputs equal `dense` bit for bit on pattern-pruned
random nets wherever the ADC cannot clip; every stored weight sits in exactly one unit and no
pruned kernel is stored; array count, shelf placement and every event count equal a plain loop
reference written here; a clipping ADC equals a loop reference of the pattern OUs; crossbar
events and arrays never exceed dense; bad input is refused with one line."""

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
from sparsexbar.core.errors import SparsexbarError
from sparsexbar.core.frontend import QuantLayer, quantize_model
from sparsexbar.core.mapping import map_dense
from sparsexbar.schemes import get_scheme
from sparsexbar.schemes.pattern import (
    PatternKernel,
    PatternMappedLayer,
    PatternScheme,
    infer_patterns,
    map_pattern,
    place_units,
)
from sparsexbar.schemes.pattern.kernel import MASKS_DIRECT
from sparsexbar.training.prune import code_masks, mask_codes, pattern_prune_model
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli
from tests.timing_ref import Timing

CROSSBAR_EVENTS = ("ou_activations", "adc_conversions", "dac_activations", "cell_reads",
                   "shift_adds")


def pattern_net(net: nn.Module, k: int, patterns: int, sparsity: float) -> nn.Module:
    """Pattern-prune every 3x3 conv of `net` (no fine-tuning)."""
    pattern_prune_model(net, None, k, patterns, sparsity, steps=1, epochs=0)
    return net.eval()


# ---- pattern inference -----------------------------------------------------------------------
def test_infer_patterns_merges_sub_masks_into_the_most_frequent_superset() -> None:
    a = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 0]])  # code 0b11011 = 27
    b = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 0, 0]])  # 54
    sub = torch.tensor([[0, 1, 0], [0, 1, 0], [0, 0, 0]])  # 18: inside a and b
    w = torch.stack([torch.stack([a, b, sub]), torch.stack([b, sub, 0 * a]),
                     torch.stack([b, a, b])])  # (Cout=3, Cin=3, 3, 3); b is most frequent
    patterns, kp = infer_patterns(w * 5)
    assert patterns.tolist() == [27, 54]
    assert kp.tolist() == [[0, 1, 1], [1, 1, -1], [1, 0, 1]]  # sub -> b (4 uses vs 2)
    assert mask_codes(a.bool()).item() == 27
    assert code_masks(torch.tensor(54)).tolist() == [False, True, True, False, True, True,
                                                     False, False, False]


# ---- bit for bit -----------------------------------------------------------------------------
# (preset, overrides): none of them can clip with 4-weight patterns or 9-row dense OUs.
HARDWARE = [("pattern-nvmsa", {"adc.bits": 12}), ("ideal-small", {}),
            ("pattern-nvmsa", {"adc.bits": 12, "array.rows": 64, "array.cols": 48}),
            ("isaac", {"ou.rows": 9, "ou.cols": 8}),
            ("pattern-nvmsa", {"adc.bits": 12, "ou.rows": 3, "numbers.input_bits": 6}),
            ("ideal-small", {"dac.bits": 2, "ou.rows": 4, "ou.cols": 6, "array.cols": 40})]


def _check_against_dense(net: nn.Module, x: Tensor, y: Tensor, hw: str,
                         overrides: dict[str, object]) -> dict[str, object]:
    dense = sparsexbar.simulate(net, (x, y), hw=hw, scheme="dense", overrides=overrides)
    res = sparsexbar.simulate(net, (x, y), hw=hw, scheme="pattern", overrides=overrides,
                              options=EngineOptions(exact_shortcut=False))
    assert res.outputs is not None and dense.outputs is not None
    assert torch.equal(res.outputs, dense.outputs)
    r, d = res.to_json(), dense.to_json()
    for lay, dlay in zip(r["layers"], d["layers"], strict=True):
        for key in CROSSBAR_EVENTS:
            assert lay["events"][key] <= dlay["events"][key], key
            assert lay["dense_events"][key] == dlay["events"][key]
        assert lay["arrays"] <= dlay["arrays"]
        assert lay["events"]["buffer_read_bytes"] <= dlay["events"]["buffer_read_bytes"]
        for key in ("buffer_write_bytes", "digital_ops"):
            assert lay["events"][key] == dlay["events"][key]
    return r


@settings(max_examples=8)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([2, 4, 5]),
       patterns=st.sampled_from([1, 3, 8]), sparsity=st.sampled_from([0.0, 0.6, 0.85]),
       signed=st.booleans(), hw=st.sampled_from(HARDWARE))
def test_outputs_equal_dense_random_pattern_nets(seed: int, k: int, patterns: int,
                                                 sparsity: float, signed: bool,
                                                 hw: tuple[str, dict[str, object]]) -> None:
    hw_name, overrides = hw
    net = pattern_net(nets.residual_net(c1=6, size=6, relu_after_add=not signed, seed=seed),
                      k, patterns, max(sparsity, 1 - k / 9))
    x = nets.random_images(3, channels=2, size=6, seed=seed, signed=signed)
    y = nets.random_labels(3, classes=5, seed=seed)
    r = _check_against_dense(net, x, y, hw_name, overrides)
    assert r["scheme"] == {"name": "pattern", "parameters": {}}


def test_outputs_equal_dense_vgg_shapes_and_pattern_mapping_used() -> None:
    """VGG-8 (width 1/8) on 1x28x28, pattern-pruned: the pattern mapping is used (index reads,
    fewer arrays), the outputs equal dense and the work is smaller."""
    from sparsexbar.training.zoo import build_model

    torch.manual_seed(0)
    net = pattern_net(build_model("vgg8", in_channels=1, num_classes=10, input_size=28,
                                  width=0.125), 4, 8, 0.8)
    x = nets.random_images(2, channels=1, size=28, seed=1)
    y = nets.random_labels(2, seed=1)
    r = _check_against_dense(net, x, y, "pattern-nvmsa", {"adc.bits": 12})
    used = [lay for lay in r["layers"] if lay["events"]["index_reads"] > 0]
    assert len(used) >= 4
    assert r["vs_dense"]["computation_reduction"]["ou_activations"] > 0.3


# ---- a small layer against loop references -----------------------------------------------------
def _layer(signed: bool, seed: int = 0, cin: int = 3, cout: int = 7, k: int = 3,
           patterns: int = 3, geometry: tuple[int, int, int] = (1, 1, 1)
           ) -> tuple[QuantLayer, Tensor]:
    """A pattern-pruned 3x3 conv ((stride, padding, dilation) = geometry) on 2 images of
    cin x 7 x 7, and its integer input with extra zeros (so whole blocks see zero inputs)."""
    stride, padding, dilation = geometry
    net = pattern_net(nets.single_conv(cin, cout, 3, stride, padding, dilation, seed=seed), k,
                      patterns, 0.75)
    x = nets.random_images(2, channels=cin, size=7, seed=seed, signed=signed)
    x = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.4,
                    torch.zeros_like(x), x)
    q = quantize_model(net, x, 8, 8)
    layer = q.layers[0]
    return layer, layer.quantize_input(x)


def _small_hw(**overrides: object) -> HardwareConfig:
    base: dict[str, object] = {"array.rows": 10, "array.cols": 12, "ou.rows": 3, "ou.cols": 4,
                               "dac.bits": 2, "cell.bits": 2, "adc.bits": 8,
                               "timing.read_ns": 1.0}
    base.update(overrides)
    return preset("ideal-small").with_overrides(base)


def reference_units(layer: QuantLayer, hw: HardwareConfig) -> list[dict[str, object]]:
    """Blocks by loops: kernel masks contained in a larger mask of the layer join the most
    frequent such maximal mask (ties: smaller code); per input channel and mask (ascending
    code), the output channels using it; rows cut into pieces of ou.rows, columns into groups
    of ou.cols. Unit order: tallest first, then input channel, mask, piece, column group."""
    w = layer.weight_int
    cout, cin = w.shape[0], w.shape[1]
    cpc = hw.polarities * hw.slices
    masks = {}
    for o in range(cout):
        for i in range(cin):
            code = sum(1 << p for p in range(9) if int(w[o, i].reshape(-1)[p]) != 0)
            if code:
                masks[(o, i)] = code
    counts: dict[int, int] = {}
    for code in masks.values():
        counts[code] = counts.get(code, 0) + 1
    maximal = [c for c in counts if not any(d != c and c & d == c for d in counts)]
    for key, code in masks.items():
        supersets = sorted(d for d in maximal if code & d == code)
        masks[key] = max(supersets, key=lambda d: (counts[d], -d))
    units = []
    for i in range(cin):
        for code in sorted({c for (o, ii), c in masks.items() if ii == i}):
            chans = [o for o in range(cout) if masks.get((o, i)) == code]
            positions = [p for p in range(9) if code >> p & 1]
            cols = [o * cpc + j for o in chans for j in range(cpc)]
            for a in range(0, len(positions), hw.ou.rows):
                rows = [i * 9 + p for p in positions[a : a + hw.ou.rows]]
                for b in range(0, len(cols), hw.ou.cols):
                    units.append({"rows": rows, "cols": cols[b : b + hw.ou.cols],
                                  "piece": (i, code, a)})
    units.sort(key=lambda u: -len(u["rows"]))  # stable: keeps (channel, mask, piece, group)
    # Next-fit shelves.
    slots = hw.array.cols // hw.ou.cols
    array, row, used, height = 0, 0, slots, 0
    for u in units:
        h = len(u["rows"])
        if used == slots or h != height:  # open a shelf
            if used != slots or height:  # a previous shelf exists: go below it
                row += height
            if row + h > hw.array.rows:
                array, row = array + 1, 0
            used, height = 0, h
        u["array"], u["row"], u["slot"] = array, row, used
        used += 1
    return units


def _ensure_pattern(mapped: object) -> PatternMappedLayer:
    assert isinstance(mapped, PatternMappedLayer) and mapped.plan is not None
    return mapped


@pytest.mark.parametrize(("k", "ou_rows", "signed", "dac_bits", "geometry"),
                         [(3, 3, False, 2, (1, 1, 1)), (3, 3, True, 2, (1, 1, 1)),
                          (5, 3, False, 2, (1, 1, 1)), (2, 4, False, 2, (1, 1, 1)),
                          (3, 3, True, 1, (1, 1, 1)),  # 1-bit DAC: 8 cycles, two flag words
                          (3, 3, False, 3, (2, 0, 1)), (3, 3, True, 2, (2, 2, 2))])
def test_placement_and_counts_equal_loop_reference(k: int, ou_rows: int, signed: bool,
                                                   dac_bits: int,
                                                   geometry: tuple[int, int, int]) -> None:
    layer, x_int = _layer(signed, seed=k + ou_rows, k=k, geometry=geometry)
    hw = _small_hw(**{"ou.rows": ou_rows, "dac.bits": dac_bits})
    mapped = _ensure_pattern(map_pattern(layer, hw, fallback=False))
    plan = mapped.plan
    assert plan is not None
    units = reference_units(layer, hw)
    assert plan.units == len(units)
    assert plan.arrays == max(int(u["array"]) for u in units) + 1 > 1
    placed = {}
    for s in range(plan.units):  # segments are in block order; placement sorted by height
        rows = tuple(int(r) for r in mapped.group_rows[s, 0] if r >= 0)
        cols = tuple(int(c) for c in mapped.segment_cols[s] if c >= 0)
        placed[(rows, cols)] = (int(plan.unit_array[s]), int(plan.unit_row[s]),
                                int(plan.unit_slot[s]))
    assert placed == {(tuple(u["rows"]), tuple(u["cols"])): (u["array"], u["row"], u["slot"])
                      for u in units}
    assert len({len(u["rows"]) for u in units}) == (2 if k > ou_rows else 1)
    # Events by loops over images, positions, passes, cycles and units.
    patches = layer.patches(x_int.to(torch.float32)).to(torch.int64)
    n = x_int.shape[0]
    positions = patches.shape[0] // n
    parts = [patches.clamp(min=0), (-patches).clamp(min=0)] if layer.input_signed else [patches]
    expected = dict.fromkeys(CROSSBAR_EVENTS + ("adc_rounds",), 0)
    timing = Timing(hw, 8)
    busiest = 0
    busiest_ns = 0.0
    for img in range(n):
        per_array = [0] * plan.arrays
        per_array_ns = [0.0] * plan.arrays
        for pos in range(positions):
            for part in parts:
                vec = part[img * positions + pos]
                for t in range(hw.cycles):
                    for u in units:
                        chunks = [(int(vec[r]) >> (t * hw.dac.bits)) & (2**hw.dac.bits - 1)
                                  for r in u["rows"]]
                        if not any(chunks):
                            continue  # input preprocessing skips the unit
                        h, c = len(u["rows"]), len(u["cols"])
                        expected["ou_activations"] += 1
                        expected["adc_conversions"] += c
                        expected["shift_adds"] += c
                        expected["dac_activations"] += h
                        expected["cell_reads"] += h * c
                        expected["adc_rounds"] += timing.rounds(c)
                        per_array[int(u["array"])] += 1
                        per_array_ns[int(u["array"])] += timing.ns(c)
        busiest += max(per_array)
        busiest_ns += max(per_array_ns)
    scheme = PatternScheme()
    events, cycles, time_ns = scheme.count(PatternKernel(mapped, torch.device("cpu")), x_int,
                                           EngineOptions())
    got = events.to_dict()
    for key, value in expected.items():
        assert got[key] == value, key
    assert cycles == busiest
    assert time_ns == pytest.approx(busiest_ns, rel=1e-12)
    # the logic pattern adds: input zero tests, gathered words, routed results
    steps = positions * n * len(parts)
    assert got["zero_checks"] == plan.used_rows * hw.cycles * steps
    # each row piece (block, piece) gathers its rows' input words
    pieces = {u["piece"]: len(u["rows"]) for u in units}
    assert got["gathers"] == sum(pieces.values()) * steps
    assert got["routes"] == got["shift_adds"]
    assert 0 < expected["ou_activations"] < len(units) * hw.cycles * positions * n * len(parts)
    # Index bits: per block input channel + pattern id, per stored kernel its output channel.
    cout, cin = layer.weight_int.shape[:2]
    in_bits = math.ceil(math.log2(cin)) + max(1, math.ceil(math.log2(len(plan.patterns))))
    index = plan.blocks * in_bits + plan.stored_kernels * math.ceil(math.log2(cout))
    assert got["index_reads"] == index * positions * n * len(parts)
    assert scheme.storage(mapped).index_bits == index + 9 * len(plan.patterns)
    assert got["comparisons"] == plan.pieces * hw.cycles * positions * n * len(parts)
    # Small memory budget: chunking over images changes no count.
    assert scheme.count(PatternKernel(mapped, torch.device("cpu")), x_int,
                        EngineOptions(memory_budget_mb=1e-6)) == (events, cycles, time_ns)


def test_every_stored_weight_in_exactly_one_unit() -> None:
    layer, _ = _layer(False, seed=3, cin=4, cout=9, k=4, patterns=4)
    hw = _small_hw()
    mapped = _ensure_pattern(map_pattern(layer, hw, fallback=False))
    levels = mapped.levels
    covered = torch.zeros(levels.shape, dtype=torch.int64)
    for s in range(mapped.group_rows.shape[0]):
        rows = mapped.group_rows[s, 0]
        cols = mapped.segment_cols[s]
        rr, cc = torch.meshgrid(rows[rows >= 0], cols[cols >= 0], indexing="ij")
        covered[rr, cc] += 1
    assert int(covered.max()) == 1
    assert bool((covered[levels != 0] == 1).all())
    # No cell of a pruned (all-zero) kernel is stored.
    cpc = hw.polarities * hw.slices
    zero_kernel = layer.weight_int.abs().sum(dim=(2, 3)) == 0  # (Cout, Cin)
    assert bool(zero_kernel.any())
    for o, i in zero_kernel.nonzero().tolist():
        assert int(covered[i * 9 : i * 9 + 9, o * cpc : (o + 1) * cpc].sum()) == 0


def test_clipping_adc_equals_loop_reference() -> None:
    """A 3-bit ADC clips: the engine on the pattern segments equals a loop over the units."""
    layer, x_int = _layer(False, seed=7, k=4, patterns=3)
    hw = _small_hw(**{"adc.bits": 3, "ou.rows": 4})
    mapped = _ensure_pattern(map_pattern(layer, hw, fallback=False))
    assert mapped.adc_can_clip()
    dense = map_dense(layer, hw)
    levels = dense.levels.to(torch.int64)
    patches = layer.patches(x_int.to(torch.float32)).to(torch.int64)
    top = hw.adc_max_code
    acc = torch.zeros((patches.shape[0], layer.out_channels), dtype=torch.float64)
    for u in reference_units(layer, hw):
        rows, cols = list(u["rows"]), list(u["cols"])
        for t in range(hw.cycles):
            chunk = (patches[:, rows] >> (t * hw.dac.bits)) & (2**hw.dac.bits - 1)
            q = (chunk @ levels[rows][:, cols]).clamp(0, top).to(torch.float64)
            for j, col in enumerate(cols):
                acc[:, int(dense.col_channel[col])] += (q[:, j] * 2 ** (t * hw.dac.bits)
                                                        * float(dense.col_weight[col]))
    expected = layer.fold_output(acc, x_int.shape[0])
    scheme = PatternScheme()
    run = scheme.run_layer(scheme.kernel(mapped, torch.device("cpu")), x_int,
                           EngineOptions(memory_budget_mb=0.05))
    assert torch.equal(run.accumulator, expected)
    assert not torch.equal(run.accumulator, layer.reference_accumulate(x_int).to(torch.float64))


# ---- placement -----------------------------------------------------------------------------
@settings(max_examples=30)
@given(heights=st.lists(st.integers(1, 4), min_size=1, max_size=60),
       rows=st.integers(4, 13), slots=st.integers(1, 5))
def test_shelves_never_overlap_and_fill_next_fit(heights: list[int], rows: int,
                                                 slots: int) -> None:
    hw = preset("ideal-small").with_overrides({"array.rows": rows, "array.cols": slots * 3 + 2,
                                               "ou.rows": 4, "ou.cols": 3})
    h = torch.tensor(heights)
    array, row, slot, arrays = place_units(h, hw)
    cells: set[tuple[int, int, int]] = set()
    for a, r, s, hh in zip(array.tolist(), row.tolist(), slot.tolist(), heights, strict=True):
        assert 0 <= s < slots and 0 <= r and r + hh <= rows
        for rr in range(r, r + hh):
            assert (a, rr, s) not in cells
            cells.add((a, rr, s))
    # Loop reference of next-fit decreasing height: array count.
    ordered = sorted(heights, reverse=True)
    count, top, used, height = 1, 0, slots, 0
    for hh in ordered:
        if used == slots or hh != height:
            top = top + height if (used != slots or height) else top
            if top + hh > rows:
                count, top = count + 1, 0
            used, height = 0, hh
        used += 1
    assert arrays == count


# ---- dense fallback, refusals -------------------------------------------------------------
def test_dense_layers_and_tall_ous_fall_back_to_dense() -> None:
    """An unpruned net on isaac (OU 16 rows): the 6-channel body conv would need 6 OU row
    groups of 9 rows where dense needs 4 of 16, so it is mapped as dense (counts equal dense);
    the 1x1 and linear layers are always dense; the 2-channel stem keeps the pattern mapping
    (2 blocks of 9 rows = dense's 2 row groups) and skips zero inputs."""
    net = nets.residual_net(c1=6, size=6, seed=4)
    x = nets.random_images(2, channels=2, size=6, seed=4)
    y = nets.random_labels(2, classes=5, seed=4)
    r = _check_against_dense(net, x, y, "isaac", {})
    mapped_as = {lay["name"]: lay["events"]["index_reads"] > 0 for lay in r["layers"]}
    assert mapped_as == {"stem": True, "body": False, "tail": False, "fc": False}
    for lay in r["layers"]:
        if not mapped_as[lay["name"]]:
            assert lay["events"] == lay["dense_events"]
            assert lay["cycles"] == lay["dense_cycles"]
            assert lay["arrays"] == lay["dense_arrays"]


def test_offset_cells_with_non_ideal_device_refused() -> None:
    layer, _ = _layer(False)
    ideal = _small_hw(**{"cell.sign": "offset"})
    assert isinstance(PatternScheme().map_layer(layer, ideal), PatternMappedLayer)
    noisy = ideal.with_overrides({"device.read_noise_sigma": 0.01})
    with pytest.raises(SparsexbarError, match="cell.sign=offset needs an ideal device"):
        PatternScheme().map_layer(layer, noisy)


def test_registry() -> None:
    assert isinstance(get_scheme("pattern"), PatternScheme)
    assert "pattern" in sparsexbar.schemes.scheme_names()


@pytest.mark.parametrize(("args", "fragments"), [
    (["prune", "--method", "pattern", "--k", "0"], ["--k", "1..9"]),
    (["prune", "--method", "pattern", "--k", "10"], ["--k", "10"]),
    (["prune", "--method", "pattern", "--max-patterns", "0"], ["--max-patterns"]),
    (["prune", "--method", "pattern", "--sparsity", "1.0"], ["--sparsity"]),
])
def test_cli_bad_pattern_arguments(capsys: pytest.CaptureFixture[str], args: list[str],
                                   fragments: list[str]) -> None:
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)


# ---- the shipped pattern-pruned VGG-8 ------------------------------------------------------
def test_shipped_pattern_model_accuracy_sparsity_and_patterns() -> None:
    from sparsexbar.training.checkpoint import (
        load_shipped_pattern_model,
        shipped_pattern_model_path,
    )
    from sparsexbar.training.data import load_dataset
    from sparsexbar.training.prune import pattern_summary, pattern_table
    from sparsexbar.training.train import evaluate

    if not shipped_pattern_model_path().is_file():
        pytest.skip("shipped pattern checkpoint not built")
    model, meta = load_shipped_pattern_model()
    test = load_dataset("fashion-mnist", "test").subset(0, 1000)
    top1 = evaluate(model, test)
    assert abs(top1 - meta["accuracy"]["float_top1_first1000"]) <= 0.01
    # Within 1 point of the dense parent (94.08%) on the whole split, as recorded.
    assert meta["accuracy"]["dense_parent_float_top1"] - meta["accuracy"]["float_top1"] <= 0.01
    table = pattern_table(model)
    summary = pattern_summary(table)
    assert summary["pattern_layers_sparsity"] >= 0.8
    assert summary == meta["pruning"]["summary"]
    assert summary["patterns_per_layer"] == [8] * 6 and summary["patterns_total"] == 48
    for row in table:
        if row["pattern_pruned"]:
            assert row["max_kept_per_kernel"] == 4
        else:
            assert row["sparsity"] == 0.0  # the two Linear layers stay dense
    # Lossless ADC: the pattern mapping equals dense on the shipped weights, fewer arrays.
    dense = sparsexbar.simulate(model, "default", hw="pattern-nvmsa", scheme="dense", limit=4,
                                overrides={"adc.bits": 12})
    pat = sparsexbar.simulate(model, "default", hw="pattern-nvmsa", scheme="pattern", limit=4,
                              overrides={"adc.bits": 12})
    assert dense.outputs is not None and pat.outputs is not None
    assert torch.equal(pat.outputs, dense.outputs)
    assert pat.to_json()["totals"]["arrays"] < dense.to_json()["totals"]["arrays"]


def test_unit_levels_equals_the_engine_gather() -> None:
    from sparsexbar.core.mapping import gather_group_levels
    from sparsexbar.schemes.pattern import unit_levels

    gen = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 16, (30, 20), generator=gen)
    rows = torch.randint(-1, 30, (7, 3, 4), generator=gen)
    cols = torch.randint(-1, 20, (7, 5), generator=gen)
    assert torch.equal(unit_levels(levels, rows, cols), gather_group_levels(levels, rows, cols))


@pytest.mark.parametrize(("input_bits", "dac_bits", "geometry"),
                         [(8, 1, (1, 1, 1)), (8, 2, (2, 0, 1)), (12, 1, (1, 1, 1)),
                          (16, 1, (1, 2, 2)), (9, 3, (1, 1, 1))])
def test_mask_counts_equal_code_histogram(input_bits: int, dac_bits: int,
                                          geometry: tuple[int, int, int]) -> None:
    """The two counters of active pieces (mask by mask with cycle-flag words of 1, 2 or 4
    bytes, and the 9-bit code histogram) give the same counts, all nonzero somewhere."""
    layer, _ = _layer(False, seed=3, cin=4, geometry=geometry, patterns=4)
    hw = _small_hw(**{"dac.bits": dac_bits, "numbers.input_bits": input_bits})
    kernel = PatternKernel(_ensure_pattern(map_pattern(layer, hw, fallback=False)),
                           torch.device("cpu"))
    gen = torch.Generator().manual_seed(input_bits)
    x = torch.randint(0, 2**input_bits, (3, *layer.input_shape), generator=gen)
    x = torch.where(torch.rand(x.shape, generator=gen) < 0.5, 0, x >> torch.randint(
        0, input_bits, x.shape, generator=gen))  # zeros and small values: zero chunks
    masks, _ = kernel.masks
    assert 1 < len(masks) <= MASKS_DIRECT
    direct = PatternScheme._mask_counts(kernel, x, masks)
    assert torch.equal(direct, PatternScheme._code_counts(kernel, x))
    # the narrow magnitudes `count` passes (uint8 up to 8 bits: 1-bit chunks read the flags
    # straight from the value; int32 beyond) count the same
    narrow = x.to(torch.uint8 if input_bits <= 8 else torch.int32)
    assert torch.equal(PatternScheme._mask_counts(kernel, narrow, masks), direct)
    assert torch.equal(PatternScheme._code_counts(kernel, narrow), direct)
    assert bool((direct > 0).any()) and bool((direct < hw.cycles * layer.positions).any())


@pytest.mark.parametrize(("input_bits", "dac_bits", "geometry"),
                         [(8, 1, (1, 1, 1)), (8, 2, (2, 1, 1)), (12, 1, (1, 2, 2)),
                          (9, 3, (1, 0, 1)), (16, 1, (1, 1, 1))])
def test_mask_counts_equal_unfold_reference(input_bits: int, dac_bits: int,
                                            geometry: tuple[int, int, int]) -> None:
    """`_mask_counts` on any masks (one position, two, all nine; flat runs at stride 1,
    strided windows otherwise; 1- and 2-byte flag words) equals counting with unfold: per image,
    channel and mask, the (output position, cycle)s where a row of the mask has a nonzero
    chunk."""
    layer, _ = _layer(False, seed=5, cin=3, geometry=geometry, patterns=4)
    hw = _small_hw(**{"dac.bits": dac_bits, "numbers.input_bits": input_bits})
    kernel = PatternKernel(_ensure_pattern(map_pattern(layer, hw, fallback=False)),
                           torch.device("cpu"))
    gen = torch.Generator().manual_seed(input_bits + dac_bits)
    x = torch.randint(0, 2**input_bits, (3, *layer.input_shape), generator=gen)
    x = torch.where(torch.rand(x.shape, generator=gen) < 0.5, 0, x >> torch.randint(
        0, input_bits, x.shape, generator=gen))
    masks = [0b000010000, 0b100000001, 0b011011000, 511]
    stride, padding, dilation = geometry
    expected = torch.zeros((3, layer.in_channels, len(masks)), dtype=torch.float64)
    for t in range(hw.cycles):
        nonzero = (((x >> (t * dac_bits)) & (2**dac_bits - 1)) != 0).to(torch.float64)
        cols = torch.nn.functional.unfold(nonzero, 3, dilation, padding, stride)
        cols = cols.view(3, layer.in_channels, 9, -1)  # (images, cin, kernel position, P)
        for d, mask in enumerate(masks):
            chosen = [k for k in range(9) if mask >> k & 1]
            expected[:, :, d] += (cols[:, :, chosen].amax(dim=2) > 0).sum(dim=2)
    narrow = x.to(torch.uint8 if input_bits <= 8 else torch.int32)
    assert torch.equal(PatternScheme._mask_counts(kernel, narrow, masks), expected)
    assert bool((expected > 0).any())


@settings(max_examples=25, deadline=None)
@given(images=st.integers(1, 3), cin=st.integers(1, 4), words=st.integers(1, 5),
       seed=st.integers(0, 2**31 - 1))
def test_set_bits_equal_the_bitwise_count_of_every_byte(images: int, cin: int, words: int,
                                                        seed: int) -> None:
    """`_set_bits` (numpy's popcount on CPU) and `_set_bits_swar` (torch, any device) count
    the set bits of each (image, channel)'s bytes: the per-byte count summed."""
    from sparsexbar.schemes.pattern.scheme import _set_bits, _set_bits_swar

    gen = torch.Generator().manual_seed(seed)
    buffer = torch.randint(0, 256, (images, cin, 8 * words), generator=gen, dtype=torch.uint8)
    buffer[0, 0, :8] = 255  # every bit of a word set: 64
    by_byte = sum(((buffer >> k) & 1).to(torch.int64) for k in range(8))
    want = by_byte.sum(dim=2)
    assert isinstance(want, Tensor) and int(want[0, 0]) >= 64
    assert torch.equal(_set_bits(buffer), want)
    assert torch.equal(_set_bits_swar(buffer.clone()), want)
