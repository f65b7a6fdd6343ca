"""Event counts of the `dense` scheme (DESIGN.md 2.4, 2.5) against closed forms computed here,
independently, from the config and the layer shapes (read off the torch modules with hooks)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import sparsexbar
from sparsexbar.core.config import HardwareConfig, preset
from sparsexbar.core.events import Events
from tests import nets

EVENT_NAMES = ["ou_activations", "adc_conversions", "adc_rounds", "dac_activations",
               "cell_reads", "shift_adds", "index_reads", "comparisons", "lut_reads",
               "buffer_read_bytes", "buffer_write_bytes", "digital_ops", "zero_checks",
               "ou_forms", "gathers", "routes", "encodes", "decodes"]
SCHEME_LOGIC = ["index_reads", "comparisons", "lut_reads", "zero_checks", "ou_forms", "gathers",
                "routes", "encodes", "decodes"]


@dataclass
class Shape:
    name: str
    kind: str
    rows: int  # Cin*kh*kw
    out_channels: int
    positions: int  # output positions per image


def layer_shapes(model: nn.Module, x: Tensor) -> list[Shape]:
    """Crossbar layers in execution order, from forward hooks on the float model."""
    shapes: list[Shape] = []
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            def hook(m: nn.Module, _inp: Any, out: Tensor, name: str = name) -> None:
                conv = isinstance(m, nn.Conv2d)
                shapes.append(Shape(name, "conv" if conv else "linear", m.weight[0].numel(),
                                    m.weight.shape[0],
                                    out.shape[2] * out.shape[3] if conv else 1))
            handles.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(x[:1])
    for h in handles:
        h.remove()
    return shapes


def sizes(total: int, tile: int) -> list[int]:
    return [min(tile, total - a) for a in range(0, total, tile)]


def auto_bits(hw: HardwareConfig, rows: int) -> int:
    """adc.bits auto, worked out here: the fewest b with 2^b - 1 >= the largest OU partial sum
    (min(ou.rows, array.rows, layer rows) x largest level x largest chunk), unit step."""
    if hw.adc.bits != "auto":
        return int(hw.adc.bits)
    worst = (min(hw.ou.rows, hw.array.rows, rows) * (2**hw.cell.bits - 1)
             * (2**hw.dac.bits - 1))
    return max(1, math.ceil(math.log2(worst + 1)))


def closed_form(shape: Shape, hw: HardwareConfig, images: int, signed: bool) -> dict[str, Any]:
    differential = hw.cell.sign.value == "differential"
    stored = hw.numbers.weight_bits - (1 if differential else 0)
    slices = hw.cell.slices if hw.cell.slices is not None else math.ceil(stored / hw.cell.bits)
    cols = shape.out_channels * slices * (2 if differential else 1)
    cycles = math.ceil(hw.numbers.input_bits / hw.dac.bits)
    per = images * shape.positions * cycles * (2 if signed else 1)
    ou_r, ou_c = hw.ou.rows, hw.ou.cols
    row_sizes, col_sizes = sizes(shape.rows, hw.array.rows), sizes(cols, hw.array.cols)
    arrays = [(ra, ca) for ra in row_sizes for ca in col_sizes]
    # timing: a SAR conversion of b bits takes b / (ref_bits x rate) ns; an OU activation
    # converting w columns with A ADCs takes max(read, ceil(w / A) x conversion)
    bits = auto_bits(hw, shape.rows)
    conv_ns = bits / (hw.adc.ref_bits * hw.adc.sample_rate_gsps)
    adcs = hw.adc.per_array

    def act_ns(w: int) -> float:
        return max(hw.timing.read_ns, math.ceil(w / adcs) * conv_ns)

    tile_ns = max(sum(act_ns(w) for w in sizes(ca, ou_c)) for ca in col_sizes)
    return {
        "cols": cols,
        "arrays": len(row_sizes) * len(col_sizes),
        "adc_bits": bits,
        "ou_activations": per * sum(math.ceil(ra / ou_r) * math.ceil(ca / ou_c)
                                    for ra, ca in arrays),
        "adc_conversions": per * sum(math.ceil(ra / ou_r) * ca for ra, ca in arrays),
        "adc_rounds": per * sum(math.ceil(ra / ou_r) * sum(math.ceil(w / adcs)
                                                           for w in sizes(ca, ou_c))
                                for ra, ca in arrays),
        "dac_activations": per * sum(ra * math.ceil(ca / ou_c) for ra, ca in arrays),
        "cell_reads": per * sum(ra * ca for ra, ca in arrays),
        "shift_adds": per * sum(math.ceil(ra / ou_r) * ca for ra, ca in arrays),
        "cycles": per * max(math.ceil(ra / ou_r) * math.ceil(ca / ou_c) for ra, ca in arrays),
        "time_ns": per * max(math.ceil(ra / ou_r) for ra in row_sizes) * tile_ns,
    }


def run(model: nn.Module, x: Tensor, hw: HardwareConfig, batch_size: int = 64,
        calibration: Tensor | None = None) -> dict[str, Any]:
    labels = torch.zeros(x.shape[0], dtype=torch.int64)
    res = sparsexbar.simulate(model, (x, labels), hw=hw, scheme="dense", batch_size=batch_size,
                              calibration=calibration)
    return res.to_json()


def hw_with(**overrides: Any) -> HardwareConfig:
    return preset("isaac").with_overrides(overrides)


CASES: dict[str, dict[str, Any]] = {
    "isaac": {},
    "small-ragged": {"array.rows": 20, "array.cols": 24, "ou.rows": 6, "ou.cols": 5},
    "offset-cell3-dac2": {"cell.sign": "offset", "cell.bits": 3, "dac.bits": 2,
                          "array.rows": 32, "array.cols": 16, "ou.rows": 7, "ou.cols": 3},
    "dac3-input7": {"dac.bits": 3, "numbers.input_bits": 7, "array.rows": 16, "array.cols": 16,
                    "ou.rows": 16, "ou.cols": 16},
    "nvmsa-like": {"array.rows": 64, "array.cols": 64, "cell.bits": 4, "dac.bits": 4,
                   "ou.rows": 9, "ou.cols": 8, "energy.leakage_mw": 0.5,
                   "energy.ou_activation_pj": 4.8},
    "slices-explicit": {"cell.slices": 5, "ou.rows": 1, "ou.cols": 1, "array.rows": 16,
                        "array.cols": 16, "numbers.weight_bits": 6},
}

MODELS = {
    # name: (factory, images, signed input per layer)
    "tiny-cnn": (lambda: nets.tiny_cnn(1, 10, 8, 4, seed=1),
                 lambda n: nets.random_images(n, 1, 8, seed=1), [False, False, False]),
    "residual-signed": (lambda: nets.residual_net(in_ch=2, c1=5, c2=3, k1=3, stride=2,
                                                  padding=2, dilation=2, size=8,
                                                  relu_after_add=False, seed=2),
                        lambda n: nets.random_images(n, 2, 8, seed=2, signed=True),
                        [True, False, True, False]),
    "mlp": (lambda: nets.mlp(64, 20, 10, seed=3), lambda n: nets.random_images(n, 1, 8, seed=3),
            [False, False]),
}


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("case", list(CASES))
def test_dense_events_equal_the_closed_forms(case: str, model_name: str) -> None:
    hw = hw_with(**CASES[case])
    factory, images, signed = MODELS[model_name]
    model = factory()
    x = images(2)
    result = run(model, x, hw)
    shapes = layer_shapes(model, x)
    assert [lay["name"] for lay in result["layers"]] == [s.name for s in shapes]
    assert [lay["input_signed"] for lay in result["layers"]] == signed
    for lay, shape, sgn in zip(result["layers"], shapes, signed, strict=True):
        want = closed_form(shape, hw, 2, sgn)
        ev = lay["events"]
        assert lay["kind"] == shape.kind
        assert lay["rows"] == shape.rows
        assert lay["cols"] == want["cols"]
        assert lay["arrays"] == want["arrays"]
        assert lay["cycles"] == want["cycles"]
        assert lay["adc_bits"] == lay["dense_adc_bits"] == want["adc_bits"]
        for key in ("ou_activations", "adc_conversions", "adc_rounds", "dac_activations",
                    "cell_reads", "shift_adds"):
            assert ev[key] == want[key], (lay["name"], key)
            assert type(ev[key]) is int
        assert all(ev[key] == 0 for key in SCHEME_LOGIC)
        assert set(ev) == set(EVENT_NAMES) == set(Events.names())
        assert lay["latency_ns_per_image"] == pytest.approx(want["time_ns"] / 2, rel=1e-12)
        assert lay["dense_latency_ns_per_image"] == lay["latency_ns_per_image"]
        assert lay["dense_events"] == ev
        assert lay["dense_cycles"] == lay["cycles"] and lay["dense_arrays"] == lay["arrays"]


def test_physical_columns_and_arrays_for_a_known_layer() -> None:
    """A worked example: Cout=10, 7 magnitude bits in 2-bit cells -> 4 slices, x2 polarities =
    80 columns; rows 4*3*3=36; arrays of 16x32 -> 3 x 3 = 9 arrays."""
    model = nn.Sequential(nets.single_conv(in_ch=4, out_ch=10, k=3, padding=1), nn.Flatten())
    x = nets.random_images(2, 4, 5)
    hw = hw_with(**{"array.rows": 16, "array.cols": 32, "ou.rows": 4, "ou.cols": 8})
    (lay,) = run(model, x, hw)["layers"]
    assert (lay["rows"], lay["cols"], lay["arrays"]) == (36, 80, 9)
    # rows tiles 16,16,4 -> groups 4,4,1; col tiles 32,32,16 -> col groups 4,4,2
    per = 2 * 25 * 8
    assert lay["events"]["ou_activations"] == per * (4 + 4 + 1) * (4 + 4 + 2)
    assert lay["events"]["adc_conversions"] == per * (4 + 4 + 1) * 80
    assert lay["events"]["dac_activations"] == per * 36 * (4 + 4 + 2)
    assert lay["events"]["cell_reads"] == per * 36 * 80
    assert lay["cycles"] == per * 4 * 4
    off = hw.with_overrides({"cell.sign": "offset"})  # 8 bits -> 4 slices, one polarity
    (lay,) = run(model, x, off)["layers"]
    assert (lay["cols"], lay["arrays"]) == (40, 6)


@pytest.mark.parametrize("case", ["isaac", "small-ragged", "nvmsa-like"])
def test_totals_energy_and_ratios(case: str) -> None:
    hw = hw_with(**CASES[case])
    factory, images, _ = MODELS["residual-signed"]
    result = run(factory(), images(2), hw)
    layers, totals = result["layers"], result["totals"]
    for name in EVENT_NAMES:
        assert totals["events"][name] == sum(lay["events"][name] for lay in layers)
        assert result["dense_totals"]["events"][name] == totals["events"][name]
    assert totals["cycles"] == sum(lay["cycles"] for lay in layers)
    assert totals["arrays"] == sum(lay["arrays"] for lay in layers)
    shapes = layer_shapes(factory(), images(2))
    latency_s = 0.0
    for lay, shape, sgn in zip(layers, shapes, [True, False, True, False], strict=True):
        ev, en = lay["events"], lay["energy_pj"]
        components = {k: v for k, v in en.items() if k != "total"}
        assert en["total"] == pytest.approx(sum(components.values()), rel=1e-12)
        bits = auto_bits(hw, shape.rows)
        assert components["adc"] == pytest.approx(
            ev["adc_conversions"] * hw.adc_energy_pj(bits), rel=1e-12)
        assert components["dac"] == pytest.approx(ev["dac_activations"] * hw.dac.energy_pj,
                                                  rel=1e-12)
        assert components["crossbar"] == pytest.approx(
            ev["cell_reads"] * hw.energy.cell_read_pj
            + ev["ou_activations"] * hw.energy.ou_activation_pj, rel=1e-12)
        assert components["shift_add"] == pytest.approx(ev["shift_adds"] * hw.energy.shift_add_pj,
                                                        rel=1e-12)
        time_ns = closed_form(shape, hw, 2, sgn)["time_ns"]
        latency_s += time_ns / 2 * 1e-9
        assert components["leakage"] == pytest.approx(hw.energy.leakage_mw * time_ns, rel=1e-12)
        assert lay["latency_ns_per_image"] == pytest.approx(time_ns / 2, rel=1e-12)
        area = {k: v for k, v in lay["area_um2"].items() if k != "total"}
        assert lay["area_um2"]["total"] == pytest.approx(sum(area.values()), rel=1e-12)
        assert area["crossbar"] == pytest.approx(
            lay["arrays"] * hw.array.rows * hw.array.cols * hw.area.cell_um2, rel=1e-12)
        assert area["adc"] == pytest.approx(
            lay["arrays"] * hw.adc.per_array * hw.adc_area_um2(bits), rel=1e-12)
    for comp in totals["energy_pj"]:
        assert totals["energy_pj"][comp] == pytest.approx(
            sum(lay["energy_pj"][comp] for lay in layers), rel=1e-12)
    assert totals["energy_pj"]["total"] == pytest.approx(
        sum(v for k, v in totals["energy_pj"].items() if k != "total"), rel=1e-12)
    assert totals["latency_s"] == pytest.approx(latency_s, rel=1e-12)
    assert totals["images_per_s"] == pytest.approx(1 / latency_s, rel=1e-12)
    # dense against itself: every ratio is exactly one, every reduction exactly zero
    vs = result["vs_dense"]
    assert vs["speedup"] == 1.0 and vs["energy_efficiency"] == 1.0
    assert vs["area_efficiency"] == 1.0
    assert vs.get("total_area_efficiency", 1.0) == 1.0
    assert vs.get("rram_adc_dac_energy_efficiency", 1.0) == 1.0
    reduction = vs["computation_reduction"]
    assert reduction["adc_conversions"] == 0.0 and reduction["ou_activations"] == 0.0


@pytest.mark.parametrize("model_name", list(MODELS))
def test_events_scale_linearly_with_images(model_name: str) -> None:
    hw = hw_with(**CASES["small-ragged"])
    factory, images, _ = MODELS[model_name]
    model = factory()
    x = images(3)
    calib = x[:1]
    one = run(model, x[:1], hw, calibration=calib)
    three = run(model, x, hw, calibration=calib)
    for a, b in zip(one["layers"], three["layers"], strict=True):
        for name in EVENT_NAMES:
            assert b["events"][name] == 3 * a["events"][name], (a["name"], name)
            assert b["dense_events"][name] == 3 * a["dense_events"][name]
        assert b["cycles"] == 3 * a["cycles"]
        assert b["arrays"] == a["arrays"]
        # Per-image latency does not depend on the number of images.
        assert b["latency_ns_per_image"] == pytest.approx(a["latency_ns_per_image"], rel=1e-12)
    assert three["totals"]["energy_pj"]["total"] == pytest.approx(
        3 * one["totals"]["energy_pj"]["total"], rel=1e-12)
    assert three["totals"]["latency_s"] == pytest.approx(one["totals"]["latency_s"], rel=1e-12)


def test_dense_events_do_not_depend_on_the_values() -> None:
    """Dense skips nothing: zero images cost exactly what random images cost."""
    hw = hw_with(**CASES["small-ragged"])
    model = nets.tiny_cnn(1, 10, 8, 4, seed=5)
    x = nets.random_images(3, 1, 8, seed=5)
    a = run(model, x, hw, calibration=x)
    b = run(model, torch.zeros_like(x), hw, calibration=x)
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        for key in ("ou_activations", "adc_conversions", "dac_activations", "cell_reads",
                    "shift_adds"):
            assert la["events"][key] == lb["events"][key]


def test_dense_events_per_mapping_sums_are_cached_per_mapping() -> None:
    """`dense_events` keeps a mapping's per-step sums (computed once): later calls, any image
    count, give what the worked example gives, and a mapping of other hardware (its own
    cache) gives its own."""
    from sparsexbar.core.frontend import quantize_model
    from sparsexbar.core.mapping import dense_events, map_dense

    model = nn.Sequential(nets.single_conv(in_ch=4, out_ch=10, k=3, padding=1), nn.Flatten())
    x = nets.random_images(2, 4, 5)
    hw = hw_with(**{"array.rows": 16, "array.cols": 32, "ou.rows": 4, "ou.cols": 8})
    layer = quantize_model(model, x, hw.numbers.weight_bits, hw.numbers.input_bits).layers[0]
    mapped = map_dense(layer, hw)
    per_image = 25 * 8  # positions x cycles (unsigned inputs: one pass)
    for images in (1, 3, 1):
        events, busiest = dense_events(mapped, images)
        assert events.ou_activations == images * per_image * (4 + 4 + 1) * (4 + 4 + 2)
        assert events.adc_conversions == images * per_image * (4 + 4 + 1) * 80
        assert busiest == images * per_image * 4 * 4  # a 16 x 32 array: 4 x 4 OUs
    assert "dense_per_step" in mapped._cache
    other = map_dense(layer, hw.with_overrides({"ou.rows": 8}))
    events, _ = dense_events(other, 1)
    assert events.ou_activations == per_image * (2 + 2 + 1) * (4 + 4 + 2)
    assert dense_events(mapped, 1)[0].ou_activations == per_image * (4 + 4 + 1) * (4 + 4 + 2)
