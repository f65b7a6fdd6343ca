"""Grouped and depthwise convolutions (core/mapping.py `map_grouped`): exact in ideal mode (the
integer reference is the grouped convolution itself), a lossy ADC gives what each group alone
gives as a dense layer, events and arrays equal closed forms of the block-diagonal packing, and
every scheme maps them or refuses them in one line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import sparsexbar
from sparsexbar import EngineOptions
from sparsexbar.core.config import HardwareConfig, preset
from sparsexbar.core.engine import LayerKernel, accumulate
from sparsexbar.core.errors import UnsupportedModelError
from sparsexbar.core.frontend import QuantLayer, quantize_model
from sparsexbar.core.mapping import map_dense
from sparsexbar.schemes import scheme_names
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli
from tests.test_engine_exact import make_hw
from tests.timing_ref import Timing, layer_bits

CPU = torch.device("cpu")
BIT_ACCURATE = EngineOptions(exact_shortcut=False)


def layer_checks(net: nn.Module, x: Tensor, hw: HardwareConfig) -> dict[str, QuantLayer]:
    """Every crossbar layer through the bit-accurate kernel, the shortcut and the full
    per-group path (read noise far below half a level) equals the integer reference."""
    qmodel = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    faint = hw.with_overrides({"device.read_noise_sigma": 1e-9})
    seen: dict[str, QuantLayer] = {}

    def executor(layer: QuantLayer, x_int: Tensor) -> Tensor:
        ref = layer.reference_accumulate(x_int)
        mapped = map_dense(layer, hw)
        assert mapped.exact_linear(), layer.name
        kernel = LayerKernel(mapped, CPU)
        full = LayerKernel(map_dense(layer, faint), CPU).accumulate(x_int, BIT_ACCURATE)
        for got in (kernel.accumulate(x_int, BIT_ACCURATE),
                    accumulate(kernel, x_int, EngineOptions()), full):
            assert torch.equal(got.to(torch.int64), ref), layer.name
        seen[layer.name] = layer
        return ref

    qmodel.run(x, executor)
    return seen


@st.composite
def grouped_case(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], bool]:
    groups = draw(st.sampled_from([1, 2, 3, 6]))
    channels = groups * draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 3]))
    stride = draw(st.integers(1, 2))
    net = dict(in_ch=draw(st.integers(1, 3)), channels=channels, groups=groups, k=k,
               stride=stride, padding=draw(st.integers(0, 1)) if k == 3 else 0,
               size=draw(st.integers(5, 8)),
               pw_groups=draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0])),
               seed=draw(st.integers(0, 10_000)))
    # Arrays from smaller than one group (rows 4 < 9 rows of a 3x3 group) to many groups.
    hw = dict(array_rows=draw(st.sampled_from([4, 8, 16, 64])),
              array_cols=draw(st.sampled_from([4, 6, 16, 64])),
              ou_rows=draw(st.integers(1, 4)), ou_cols=draw(st.integers(1, 4)),
              cell_bits=draw(st.integers(1, 3)), dac_bits=draw(st.integers(1, 3)),
              sign=draw(st.sampled_from(["differential", "offset"])),
              bit_order=draw(st.sampled_from(["lsb_first", "msb_first"])))
    return net, hw, draw(st.booleans())


@settings(max_examples=20, deadline=None)
@given(grouped_case())
def test_grouped_layers_equal_the_integer_reference(
        case: tuple[dict[str, Any], dict[str, Any], bool]) -> None:
    net_kw, hw_kw, signed = case
    net = nets.grouped_net(**net_kw)
    hw = make_hw(**hw_kw)
    x = nets.random_images(2, net_kw["in_ch"], net_kw["size"], seed=net_kw["seed"],
                           signed=signed)
    layers = layer_checks(net, x, hw)
    assert layers["dw"].groups == net_kw["groups"]
    assert layers["pw"].groups == net_kw["pw_groups"]
    assert not layers["pw"].input_signed  # ReLU after the grouped conv: unsigned
    # The whole pipeline: simulated logits equal the integer-quantized network's.
    labels = torch.zeros(2, dtype=torch.int64)
    res = sparsexbar.simulate(net, (x, labels), hw=hw, scheme="dense", options=BIT_ACCURATE)
    qmodel = quantize_model(net, x[:256], hw.numbers.weight_bits, hw.numbers.input_bits)
    assert res.outputs is not None
    assert torch.equal(res.outputs, qmodel.run_reference(x))


def group_sublayer(layer: QuantLayer, g: int) -> QuantLayer:
    """Group `g` of a grouped layer as a dense (groups=1) layer of its own."""
    per = layer.out_channels // layer.groups
    sl = slice(g * per, (g + 1) * per)
    sub = QuantLayer(f"{layer.name}.g{g}", "conv", layer.weight_int[sl].clone(),
                     layer.weight_scale[sl].clone(), layer.bias[sl].clone(),
                     layer.float_weight[sl].clone(), layer.input_scale, layer.input_signed,
                     layer.followed_by_relu, layer.input_bits, layer.stride, layer.padding,
                     layer.dilation, 1)
    cin = int(layer.weight_int.shape[1])
    sub.input_shape = (cin, *layer.input_shape[1:])
    sub.output_shape = (per, *layer.output_shape[1:])
    return sub


@pytest.mark.parametrize("overrides", [
    {"adc.bits": 3},  # clips: the clip path
    {"adc.bits": 4, "adc.step": 2.0},  # a step other than 1: the full path
    {"adc.bits": 3, "array.rows": 4, "array.cols": 6},  # one group over several arrays
])
def test_a_lossy_adc_gives_what_each_group_gives_alone(overrides: dict[str, Any]) -> None:
    """With an ADC that clips (or rounds), a grouped layer's outputs are its groups' outputs as
    dense layers of their own (OUs never straddle two groups; the per-group dense layer is
    checked against a pure-Python reference in test_adc_lossy.py)."""
    hw = make_hw(array_rows=64, array_cols=64, ou_rows=4, ou_cols=3, dac_bits=2).with_overrides(
        overrides)
    net = nets.grouped_net(in_ch=2, channels=6, groups=3, k=3, pw_groups=2, seed=5)
    x = nets.random_images(3, 2, 8, seed=5)
    qmodel = quantize_model(net, x, 8, 8)
    checked: list[str] = []

    def executor(layer: QuantLayer, x_int: Tensor) -> Tensor:
        if layer.groups > 1:
            mapped = map_dense(layer, hw)
            assert mapped.adc_can_clip() or hw.adc.step != 1
            got = LayerKernel(mapped, CPU).accumulate(x_int, BIT_ACCURATE)
            cin = int(layer.weight_int.shape[1])
            parts = [LayerKernel(map_dense(group_sublayer(layer, g), hw), CPU).accumulate(
                x_int[:, g * cin:(g + 1) * cin], BIT_ACCURATE) for g in range(layer.groups)]
            assert torch.equal(got, torch.cat(parts, dim=1)), layer.name
            assert not torch.equal(got.to(torch.int64), layer.reference_accumulate(x_int))
            checked.append(layer.name)
        return layer.reference_accumulate(x_int)

    qmodel.run(x, executor)
    assert checked == ["dw", "pw"]


# ---- events, arrays, ADC bits and time: closed forms -----------------------------------------
def grouped_closed_form(cin: int, cout: int, groups: int, kk: int, positions: int,
                        hw: HardwareConfig, images: int) -> dict[str, Any]:
    """Block-diagonal packing: a group is Rg = Cin/g x kk rows by Cg = Cout/g x polarities x
    slices columns; k = min(rows // Rg, cols // Cg, groups) groups per array when a group fits
    one array, else each group tiled over ceil(Rg / rows) x ceil(Cg / cols) arrays of its own.
    Every block is cut into OUs of its own rows and columns (column groups from the block's
    first column). ADC bits `auto`: from a group's rows (an OU never holds two groups' rows).
    Time (docs/cost.md): an activation converting w columns takes max(read, ceil(w / A) x
    conversion); an array runs its blocks one after another; the busiest array sets it.
    Unsigned inputs (one pass): the grouped layers of `grouped_net` follow a ReLU(6)."""
    differential = hw.cell.sign.value == "differential"
    stored = hw.numbers.weight_bits - (1 if differential else 0)
    slices = hw.cell.slices if hw.cell.slices is not None else math.ceil(stored / hw.cell.bits)
    rg, cg = cin // groups * kk, cout // groups * slices * (2 if differential else 1)
    ar, ac, ou_r, ou_c = hw.array.rows, hw.array.cols, hw.ou.rows, hw.ou.cols
    per = images * positions * math.ceil(hw.numbers.input_bits / hw.dac.bits)
    bits = layer_bits(hw, rg)
    timing = Timing(hw, bits)

    def parts(total: int, size: int) -> list[int]:
        return [min(size, total - a) for a in range(0, total, size)]

    def block_ou(r: int, c: int) -> int:
        return math.ceil(r / ou_r) * math.ceil(c / ou_c)

    def block_ns(r: int, c: int) -> float:
        return math.ceil(r / ou_r) * sum(timing.ns(w) for w in parts(c, ou_c))

    if rg <= ar and cg <= ac:
        k = min(ar // rg, ac // cg, groups)
        arrays = math.ceil(groups / k)
        blocks = [(rg, cg)] * groups
        busiest, busiest_ns = k * block_ou(rg, cg), k * block_ns(rg, cg)
    else:
        row_parts, col_parts = parts(rg, ar), parts(cg, ac)
        arrays = groups * len(row_parts) * len(col_parts)
        blocks = [(r, c) for _ in range(groups) for r in row_parts for c in col_parts]
        busiest = max(block_ou(r, c) for r, c in blocks)
        busiest_ns = max(block_ns(r, c) for r, c in blocks)
    return {
        "arrays": arrays,
        "cols": cg * groups,
        "adc_bits": bits,
        "ou_activations": per * sum(block_ou(r, c) for r, c in blocks),
        "adc_conversions": per * sum(math.ceil(r / ou_r) * c for r, c in blocks),
        "adc_rounds": per * sum(math.ceil(r / ou_r) * sum(timing.rounds(w)
                                                          for w in parts(c, ou_c))
                                for r, c in blocks),
        "dac_activations": per * sum(r * math.ceil(c / ou_c) for r, c in blocks),
        "cell_reads": per * sum(r * c for r, c in blocks),
        "cycles": per * busiest,
        "time_ns": per * busiest_ns,
    }


def check_closed_forms(net_kw: dict[str, Any], hw: HardwareConfig,
                       arrays: dict[str, int] | None = None) -> None:
    """Simulate `grouped_net(**net_kw)` on two images with dense and pattern: each grouped
    layer's events, arrays, ADC bits, busiest array's OU activations and latency equal
    `grouped_closed_form`, exactly (latency to float rounding), and pattern's equal dense's."""
    net = nets.grouped_net(**net_kw)
    x = nets.random_images(2, net_kw["in_ch"], net_kw["size"], seed=3)
    labels = torch.zeros(2, dtype=torch.int64)
    results = [sparsexbar.simulate(net, (x, labels), hw=hw, scheme=s).to_json()
               for s in ("dense", "pattern")]
    mods = dict(net.named_modules())
    out_sizes: dict[str, int] = {}
    handles = [mods[name].register_forward_hook(
        lambda _m, _i, out, name=name: out_sizes.__setitem__(name, out.shape[2] * out.shape[3]))
        for name in ("dw", "pw")]
    with torch.no_grad():
        net(x[:1])
    for h in handles:
        h.remove()
    checked = []
    for lay, pat in zip(*(r["layers"] for r in results), strict=True):
        mod = mods[lay["name"]]
        if not isinstance(mod, nn.Conv2d) or mod.groups == 1:
            continue
        want = grouped_closed_form(mod.in_channels, mod.out_channels, mod.groups,
                                   mod.kernel_size[0] * mod.kernel_size[1],
                                   out_sizes[lay["name"]], hw, 2)
        assert not lay["input_signed"]
        assert lay["rows"] == mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
        assert lay["cols"] == want["cols"]
        assert lay["arrays"] == want["arrays"] == lay["dense_arrays"], lay["name"]
        if arrays is not None:
            assert lay["arrays"] == arrays[lay["name"]]
        assert lay["adc_bits"] == lay["dense_adc_bits"] == want["adc_bits"], lay["name"]
        assert lay["cycles"] == want["cycles"], lay["name"]
        for key in ("ou_activations", "adc_conversions", "adc_rounds", "dac_activations",
                    "cell_reads"):
            assert lay["events"][key] == want[key], (lay["name"], key)
            assert type(lay["events"][key]) is int
        assert lay["events"]["shift_adds"] == want["adc_conversions"]
        assert lay["latency_ns_per_image"] == pytest.approx(want["time_ns"] / 2, rel=1e-12)
        assert lay["dense_latency_ns_per_image"] == lay["latency_ns_per_image"]
        assert lay["dense_events"] == lay["events"]
        for key in ("events", "arrays", "cycles", "adc_bits", "latency_ns_per_image"):
            assert pat[key] == lay[key], (lay["name"], key)
        checked.append(lay["name"])
    assert checked == [n for n in ("dw", "pw") if mods[n].groups > 1]  # type: ignore[union-attr]


@pytest.mark.parametrize(("net_kw", "overrides", "arrays"), [
    # depthwise 3x3 (9 rows x 8 columns a group): 128x128 arrays hold 14 groups -> 2 arrays
    ({"channels": 16, "groups": 16}, {}, {"dw": 2, "pw": 1}),
    # 9 x 8 groups, 20x20 arrays: 2 per array, 8 arrays; pw (8 x 64 groups) over 4 column tiles
    ({"channels": 16, "groups": 16, "pw_groups": 2}, {"array.rows": 20, "array.cols": 20},
     {"dw": 8, "pw": 8}),
    # arrays smaller than one group: 4 rows < 18 rows of a 2-channel 3x3 group
    ({"channels": 6, "groups": 3, "stride": 2}, {"array.rows": 4, "array.cols": 6,
                                                 "ou.rows": 3, "ou.cols": 4}, None),
    # offset cells (8 slices of 1 bit, one polarity), ragged OUs, one ADC per array
    ({"channels": 6, "groups": 6}, {"cell.sign": "offset", "cell.bits": 1, "array.rows": 30,
                                    "array.cols": 17, "ou.rows": 4, "ou.cols": 5,
                                    "adc.per_array": 1}, None),
])
def test_grouped_events_and_arrays_equal_closed_forms(net_kw: dict[str, Any],
                                                      overrides: dict[str, Any],
                                                      arrays: dict[str, int] | None) -> None:
    check_closed_forms({"in_ch": 2, "size": 6, **net_kw},
                       preset("isaac").with_overrides(overrides), arrays)


@st.composite
def closed_form_case(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    groups = draw(st.sampled_from([2, 3, 4, 6, 8]))
    channels = groups * draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 3]))
    net = dict(in_ch=draw(st.integers(1, 2)), channels=channels, groups=groups, k=k,
               stride=draw(st.integers(1, 3)), padding=draw(st.integers(0, 1)) if k == 3 else 0,
               size=draw(st.integers(5, 7)),
               pw_groups=draw(st.sampled_from([g for g in (1, 2, 3, 4) if channels % g == 0])),
               seed=draw(st.integers(0, 10_000)))
    # from arrays smaller than one group (4 rows < 9) to arrays holding every group
    hw = {"array.rows": draw(st.sampled_from([4, 9, 20, 128])),
          "array.cols": draw(st.sampled_from([3, 8, 24, 128])),
          "ou.rows": draw(st.integers(1, 9)), "ou.cols": draw(st.integers(1, 8)),
          "cell.bits": draw(st.integers(1, 4)), "dac.bits": draw(st.sampled_from([1, 2, 4])),
          "cell.sign": draw(st.sampled_from(["differential", "offset"])),
          "adc.per_array": draw(st.sampled_from([1, 2, 8])),
          "adc.bits": draw(st.sampled_from(["auto", 12]))}
    hw["ou.rows"] = min(hw["ou.rows"], hw["array.rows"])
    hw["ou.cols"] = min(hw["ou.cols"], hw["array.cols"])
    return net, hw


@settings(max_examples=25, deadline=None)
@given(closed_form_case())
def test_grouped_closed_forms_hold_for_any_packing(
        case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    net_kw, overrides = case
    check_closed_forms(net_kw, preset("isaac").with_overrides(overrides))


def test_packing_puts_many_groups_in_one_array_and_stores_no_off_diagonal_cell() -> None:
    """A depthwise layer of 16 channels on isaac (128x128, 2-bit cells, differential: 9 rows x
    8 columns a group): 14 groups in the first array, 2 in the second; the levels outside the
    blocks are zero and no OU row group or segment column leaves its group."""
    hw = preset("isaac")
    net = nets.grouped_net(in_ch=1, channels=16, groups=16, size=6, pw_groups=1)
    qmodel = quantize_model(net, nets.random_images(2, 1, 6))
    layer = qmodel.layer("dw")
    mapped = map_dense(layer, hw)
    assert mapped.blocks is not None and mapped.arrays == 2
    assert [b[4] for b in mapped.blocks] == [0] * 14 + [1] * 2
    assert mapped.blocks[3] == (27, 36, 24, 32, 0)
    on = torch.zeros_like(mapped.levels, dtype=torch.bool)
    for r0, r1, c0, c1, _ in mapped.blocks:
        on[r0:r1, c0:c1] = True
    assert int(mapped.levels[~on].abs().sum()) == 0
    for seg in range(mapped.segment_cols.shape[0]):
        cols = mapped.segment_cols[seg][mapped.segment_cols[seg] >= 0]
        rows = mapped.group_rows[seg][mapped.group_rows[seg] >= 0]
        assert bool((cols // 8 == seg).all()) and bool((rows // 9 == seg).all())


# ---- schemes --------------------------------------------------------------------------------
def test_pattern_maps_grouped_layers_as_dense_does() -> None:
    net = nets.grouped_net(in_ch=2, channels=6, groups=6, seed=7)
    x = nets.random_images(2, 2, 8, seed=7)
    labels = torch.zeros(2, dtype=torch.int64)
    dense = sparsexbar.simulate(net, (x, labels), hw="isaac", scheme="dense")
    pattern = sparsexbar.simulate(net, (x, labels), hw="isaac", scheme="pattern")
    assert pattern.outputs is not None and dense.outputs is not None
    assert torch.equal(pattern.outputs, dense.outputs)
    for a, b in zip(pattern.layers, dense.layers, strict=True):
        if a.name in ("dw", "pw"):
            assert a.events == b.events and a.arrays == b.arrays and a.cycles == b.cycles


@pytest.mark.parametrize("scheme", [s for s in scheme_names()
                                    if s not in ("dense", "pattern")])
def test_other_schemes_refuse_grouped_layers_in_one_line(scheme: str) -> None:
    net = nets.grouped_net(in_ch=1, channels=4, groups=2, seed=1)
    x = nets.random_images(2, 1, 8)
    with pytest.raises(UnsupportedModelError) as info:
        sparsexbar.simulate(net, (x, torch.zeros(2, dtype=torch.int64)), hw="isaac",
                            scheme=scheme)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{scheme} does not map grouped convolutions: layer 'dw'")
    assert "groups=2" in text


def test_the_cli_refuses_a_grouped_layer_for_sre_with_exit_2(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "run", "--model", "tests.nets:grouped_conv_net", "--data",
                       "default", "--limit", "2", "--scheme", "sre", "--out",
                       str(tmp_path / "out"))
    assert_one_line_error(code, err, "sre", "'conv'", "groups=2")


def test_relu6_is_a_digital_clamp_with_unsigned_outputs() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 3, 3, padding=1)
            self.act = nn.ReLU6()
            self.b = nn.Conv2d(3, 3, 3, padding=1, groups=3)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(3 * 6 * 6, 2)

        def forward(self, x: Tensor) -> Tensor:
            y = torch.nn.functional.relu6(self.b(self.act(self.a(x))))
            return self.fc(self.flatten(y))

    net = nets.seeded_init(Net(), 4).eval()
    x = nets.random_images(2, 1, 6, seed=4) * 9  # pre-activations beyond 6 are clamped
    qmodel = quantize_model(net, x)
    assert [q.followed_by_relu for q in qmodel.layers] == [True, True, False]
    assert [q.input_signed for q in qmodel.layers] == [False, False, False]
    with torch.no_grad():
        assert torch.allclose(qmodel.run_float(x), net(x), atol=1e-5)
