"""Compositions of techniques (`a+b+c`) and the named `combined` scheme (issue 8, DESIGN.md 3.5).

- The generic counter reproduces every single scheme (sre in every mode and granularity,
  pattern, comprrae with and without alpha, encoding's lossless set, dense) event for event,
  cycle for cycle, ADC bits, energy and area, and its values bit for bit, on random nets (a
  clipping ADC included where the scheme allows it).
- Compositions the single schemes do not cover (act or pattern units with comprrae's live
  columns) equal a plain loop reference written here.
- Lossless compositions equal `dense` bit for bit (random nets and the shipped models).
- Adding a technique never adds crossbar work (per layer, per event type, and cycles);
  sre-weight+X never exceeds X on the dense layout; combined never exceeds dense.
- Validation: unknown, empty or repeated techniques, two layouts, act on a non-ideal device,
  comprrae on a clipping composition: one-line errors, exit code 2 from the CLI.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import sparsexbar
from sparsexbar import EngineOptions
from sparsexbar.core.config import load_config, preset
from sparsexbar.core.errors import SparsexbarError
from sparsexbar.core.frontend import QuantizedModel, QuantLayer, quantize_model
from sparsexbar.core.mapping import MappedLayer, map_dense
from sparsexbar.schemes import Scheme, get_scheme
from sparsexbar.schemes.combined import LAYOUTS, CombinedScheme, static_cost
from sparsexbar.schemes.comprrae import CompKernel, CompRRAEScheme
from sparsexbar.schemes.encoding import EncodingMappedLayer, EncodingScheme
from sparsexbar.schemes.pattern import PatternMappedLayer, PatternScheme
from sparsexbar.schemes.sre import SreScheme, map_sre
from sparsexbar.training.prune import pattern_prune_model
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli
from tests.test_sre import prune_blocks

WORK = ("ou_activations", "adc_conversions", "dac_activations", "cell_reads", "shift_adds")
CPU = torch.device("cpu")


def mixed_net(seed: int, signed: bool) -> nn.Module:
    """A residual net, pattern-pruned (3x3 convs) then block-pruned (sre's structure): every
    layout has something to exploit; without the ReLU after the add the tail's input is
    signed (two passes)."""
    net = nets.residual_net(c1=6, size=6, relu_after_add=not signed, seed=seed)
    pattern_prune_model(net, None, 4, 3, 0.6, steps=1, epochs=0)
    return prune_blocks(net.eval(), 0.3, seed)


def _mixed_case(seed: int, signed: bool, images: int
                ) -> tuple[nn.Module, tuple[Tensor, Tensor], QuantizedModel]:
    """`mixed_net(seed, signed)`, `images` random 6x6 two-channel images with labels, and the
    net quantized on them (8-bit weights and inputs)."""
    net = mixed_net(seed, signed)
    x = nets.random_images(images, channels=2, size=6, seed=seed, signed=signed)
    return net, (x, nets.random_labels(images, classes=5, seed=seed)), quantize_model(net, x, 8, 8)


# (preset, overrides): several row/column tiles; none can clip (comprrae allowed everywhere).
EXACT_HW = [("isaac", {"array.rows": 16, "array.cols": 24, "ou.rows": 4, "ou.cols": 8}),
            ("ideal-small", {}),
            ("pattern-nvmsa", {"adc.bits": 12, "array.rows": 64, "array.cols": 48}),
            ("isaac", {"ou.rows": 9, "ou.cols": 8, "dac.bits": 2})]
# A 3-bit ADC clips: the engine's and sre's packed conversions are exercised.
CLIP_HW = ("ideal-small", {"adc.bits": 3, "array.rows": 24, "ou.rows": 6})


def _run(net: nn.Module, data: tuple[Tensor, Tensor], hw: tuple[str, dict[str, Any]],
         scheme: Scheme | str, qmodel: Any = None) -> sparsexbar.Result:
    return sparsexbar.simulate(net, data, hw=hw[0], overrides=hw[1], scheme=scheme,
                               qmodel=qmodel)


def _assert_same(a: sparsexbar.Result, b: sparsexbar.Result, label: str) -> None:
    assert a.outputs is not None and b.outputs is not None
    assert torch.equal(a.outputs, b.outputs), label
    for la, lb in zip(a.to_json()["layers"], b.to_json()["layers"], strict=True):
        assert la["events"] == lb["events"], (label, la["name"])
        assert la["cycles"] == lb["cycles"], (label, la["name"])
        assert la["arrays"] == lb["arrays"], (label, la["name"])
        assert la["adc_bits"] == lb["adc_bits"], (label, la["name"])
        assert la["area_um2"] == lb["area_um2"], (label, la["name"])
        assert la["energy_pj"] == lb["energy_pj"], (label, la["name"])


def singles(clipping: bool) -> list[tuple[Scheme, Scheme]]:
    """(composition, the single scheme it must reproduce) pairs."""
    pairs: list[tuple[Scheme, Scheme]] = [
        (CombinedScheme(("dense",)), get_scheme("dense")),
        (CombinedScheme(("sre-weight",)), SreScheme("weight")),
        (CombinedScheme(("act",)), SreScheme("activation")),
        (CombinedScheme(("act",), granularity="word"), SreScheme("activation", "word")),
        (CombinedScheme(("sre-weight", "act")), SreScheme("joint")),
        (CombinedScheme(("sre-weight", "act"), granularity="word"), SreScheme("joint", "word")),
        (CombinedScheme(("pattern",)), PatternScheme()),
    ]
    if not clipping:  # (encoding's lossless ADC may rise above a clipping configured one)
        pairs += [(CombinedScheme(("comprrae",)), CompRRAEScheme()),
                  (CombinedScheme(("comprrae",), alpha=0.4), CompRRAEScheme(alpha=0.4)),
                  (CombinedScheme(("encoding",)), EncodingScheme(
                      "bus-invert", "complement", "auto", skip_zero_planes=True))]
    return pairs


# ---- each single scheme is a special case of the generic counter -----------------------------
@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), signed=st.booleans(),
       hw=st.sampled_from([*EXACT_HW, CLIP_HW]))
def test_generic_counter_reproduces_every_single_scheme(
        seed: int, signed: bool, hw: tuple[str, dict[str, Any]]) -> None:
    net, data, qmodel = _mixed_case(seed, signed, images=2)
    config = load_config(hw[0], hw[1])
    for composed, single in singles(hw == CLIP_HW):
        _assert_same(_run(net, data, hw, composed, qmodel), _run(net, data, hw, single, qmodel),
                     f"{composed.name} vs {single.name} on {config.name} {hw[1]}")


def test_generic_counter_reproduces_singles_on_vgg_shapes() -> None:
    """VGG-8 (width 1/8, pattern-pruned) on isaac: 128-row arrays, several row tiles, the
    pattern mapping on most 3x3 convs."""
    from sparsexbar.training.zoo import build_model

    torch.manual_seed(0)
    net = build_model("vgg8", in_channels=1, num_classes=10, input_size=28, width=0.125)
    pattern_prune_model(net, None, 4, 8, 0.8, steps=1, epochs=0)
    net.eval()
    x = nets.random_images(2, channels=1, size=28, seed=1)
    data = (x, nets.random_labels(2, seed=1))
    qmodel = quantize_model(net, x, 8, 8)
    hw = ("isaac", {})
    for composed, single in singles(False):
        res = _run(net, data, hw, composed, qmodel)
        _assert_same(res, _run(net, data, hw, single, qmodel), composed.name)
    res = _run(net, data, hw, CombinedScheme(("pattern",)), qmodel)
    layers = res.scheme.parameters["layers"]  # the run's choices (the object is not changed)
    assert sum(c["layout"] == "pattern" for c in layers.values()) >= 2


# ---- compositions the single schemes do not cover: a plain loop reference ---------------------
def _slots(mapped: MappedLayer) -> list[tuple[list[int], list[int], tuple[int, int]]]:
    """(rows, physical columns, array) of every OU slot, read off the mapping."""
    hw = mapped.hw
    if isinstance(mapped, PatternMappedLayer):
        plan = mapped.plan
        assert plan is not None
        out = []
        for u in range(plan.units):
            rows = [int(r) for r in plan.piece_rows[plan.unit_piece[u]] if r >= 0]
            cols = [int(c) for c in plan.unit_columns[u] if c >= 0]
            out.append((rows, cols, (int(plan.unit_array[u]), 0)))
        return out
    out = []
    for s in range(mapped.group_rows.shape[0]):
        cols = [int(c) for c in mapped.segment_cols[s] if c >= 0]
        rows_all = [int(r) for r in mapped.group_rows[s].reshape(-1) if r >= 0]
        for i, (a, b) in enumerate(mapped.row_tiles):
            rows = [r for r in rows_all if a <= r < b]
            if rows:
                out.append((rows, cols, (cols[0] // hw.array.cols, i)))
    return out


def reference_events(mapped: MappedLayer, x_int: Tensor, act: bool, word: bool,
                     executed: Tensor | None, skip: bool = False) -> tuple[dict[str, int], int]:
    """Loop over images, positions, passes, MSB-first cycles and slots: a slot runs when one
    of its columns' channels is still running (executed > t); act drives its nonzero rows
    packed into ceil(n / ou.rows) OUs, a pattern unit (no act) all its rows when one is
    nonzero, a static slot all its rows (with `skip`: only when a row of its array row tile
    has a nonzero chunk)."""
    hw, layer = mapped.hw, mapped.layer
    pattern = isinstance(mapped, PatternMappedLayer)
    patches = layer.patches(x_int.to(torch.float32)).to(torch.int64)
    n = int(x_int.shape[0])
    positions = patches.shape[0] // n
    parts = [patches.clamp(min=0), (-patches).clamp(min=0)] if layer.input_signed else [patches]
    slots = _slots(mapped)
    channel = mapped.col_channel.tolist()
    mask = 2**hw.dac.bits - 1
    out = dict.fromkeys(WORK, 0)
    busiest = 0
    for img in range(n):
        per_array: dict[tuple[int, int], int] = {}
        for pos in range(positions):
            for part in parts:
                vec = part[img * positions + pos].tolist()
                for t in range(hw.cycles):  # MSB-first: chunk cycles-1-t
                    k = hw.cycles - 1 - t
                    for rows, cols, array in slots:
                        live = [c for c in cols if executed is None
                                or int(executed[img, pos, channel[c]]) > t]
                        if not live:
                            continue
                        nonzero = [r for r in rows
                                   if (vec[r] != 0 if word else (vec[r] >> (k * hw.dac.bits))
                                       & mask)]
                        a0 = array[1] * hw.array.rows
                        if skip and not any((vec[r] >> (k * hw.dac.bits)) & mask
                                            for r in range(a0, min(a0 + hw.array.rows,
                                                                   len(vec)))):
                            continue  # a zero plane of the window: the tile skips the cycle
                        if act:
                            ou, driven = math.ceil(len(nonzero) / hw.ou.rows), len(nonzero)
                        elif pattern:
                            ou = 1 if nonzero else 0
                            driven = len(rows) * ou
                        else:
                            ou, driven = math.ceil(len(rows) / hw.ou.rows), len(rows)
                        out["ou_activations"] += ou
                        out["adc_conversions"] += ou * len(live)
                        out["shift_adds"] += ou * len(live)
                        out["dac_activations"] += driven
                        out["cell_reads"] += driven * len(cols)
                        per_array[array] = per_array.get(array, 0) + ou
        busiest += max(per_array.values(), default=0)
    return out, busiest


class ConvRelu(nn.Module):
    def __init__(self, in_ch: int = 3, out_ch: int = 5, size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.fc = nn.Linear(out_ch * size * size, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def _conv_layer(signed: bool, seed: int) -> tuple[QuantLayer, Tensor]:
    net = nets.seeded_init(ConvRelu(), seed).eval()
    pattern_prune_model(net, None, 4, 3, 0.6, steps=1, epochs=0)
    net = prune_blocks(net, 0.3, seed)
    x = nets.random_images(2, channels=3, size=5, seed=seed, signed=signed)
    x = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.3,
                    torch.zeros_like(x), x)
    layer = quantize_model(net, x, 8, 8).layers[0]
    return layer, layer.quantize_input(x)


@pytest.mark.parametrize(("spec", "signed", "alpha", "dac"), [
    ("pattern+act+comprrae", False, None, 1), ("pattern+comprrae", False, 0.4, 1),
    ("sre-weight+act+comprrae", False, None, 1), ("sre-weight+act+comprrae", True, 0.4, 2),
    ("act+comprrae", False, None, 1), ("pattern+act", True, None, 2),
    ("sre-weight+comprrae", True, None, 1), ("sre-weight+encoding", False, None, 1),
    ("sre-weight+comprrae+encoding", True, None, 2), ("comprrae+encoding", False, 0.4, 1)])
def test_compositions_equal_loop_reference(spec: str, signed: bool, alpha: float | None,
                                           dac: int) -> None:
    layer, x_int = _conv_layer(signed, seed=5)
    hw = preset("isaac").with_overrides({"array.rows": 16, "array.cols": 24, "ou.rows": 4,
                                         "ou.cols": 8, "dac.bits": dac})
    scheme = CombinedScheme(tuple(spec.split("+")), alpha=alpha)
    mapped = scheme.map_layer(layer, hw)
    if "pattern" in spec:
        assert isinstance(mapped, PatternMappedLayer)
    kernel = scheme.kernel(mapped, CPU)
    run = scheme.run_layer(kernel, x_int, EngineOptions())
    executed = None
    if "comprrae" in spec:
        comp = CompRRAEScheme(alpha=alpha)
        value, done = comp.terminate(CompKernel(map_dense(layer, hw), CPU, alpha), x_int)
        executed = done.permute(0, 2, 3, 1).reshape(x_int.shape[0], layer.positions, -1)
        assert torch.equal(run.accumulator, value)
        checks = int(executed.clamp(max=hw.cycles - 1).sum())
        if scheme.choices[layer.name].encodings:  # bus-invert adds its LUT reads
            assert run.events.lut_reads > checks
        else:
            assert run.events.lut_reads == checks
        assert run.events.comparisons >= checks * (2 if alpha is not None else 1)
    skip = "encoding" in spec and "act" not in spec and "pattern" not in spec
    assert scheme.choices[layer.name].skip_planes == skip
    if isinstance(mapped, EncodingMappedLayer):  # the dense layout in OU column groups
        mapped = map_sre(layer, hw, compress=False)
    expected, busiest = reference_events(mapped, x_int, "act" in spec, False, executed, skip)
    got = run.events.to_dict()
    for key, value in expected.items():
        assert got[key] == value, key
    assert run.cycles == busiest


# ---- lossless compositions equal dense --------------------------------------------------------
def all_compositions() -> list[tuple[str, ...]]:
    out = []
    for layout in LAYOUTS:
        for extra in itertools.chain.from_iterable(
                itertools.combinations(("act", "comprrae", "encoding"), r) for r in range(4)):
            out.append((layout, *extra))
    return out


@settings(max_examples=6)
@given(seed=st.integers(0, 10_000), signed=st.booleans(), hw=st.sampled_from(EXACT_HW))
def test_lossless_compositions_equal_dense_bit_for_bit(seed: int, signed: bool,
                                                       hw: tuple[str, dict[str, Any]]) -> None:
    net, data, qmodel = _mixed_case(seed, signed, images=2)
    dense = _run(net, data, hw, "dense", qmodel)
    assert dense.outputs is not None
    for techniques in all_compositions():
        res = _run(net, data, hw, CombinedScheme(techniques), qmodel)
        assert res.outputs is not None
        assert torch.equal(res.outputs, dense.outputs), techniques
    res = _run(net, data, hw, "combined", qmodel)
    assert res.outputs is not None and torch.equal(res.outputs, dense.outputs)


# ---- adding a technique never adds work -------------------------------------------------------
def _le(a: dict[str, Any], b: dict[str, Any], label: str, cycles: bool = True) -> None:
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        for key in WORK:
            assert la["events"][key] <= lb["events"][key], (label, la["name"], key)
        if cycles:
            assert la["cycles"] <= lb["cycles"], (label, la["name"], "cycles")


@pytest.mark.parametrize(("seed", "signed", "hw"), [(1, False, EXACT_HW[0]),
                                                    (2, True, EXACT_HW[1]),
                                                    (3, False, EXACT_HW[3])])
def test_adding_techniques_never_adds_work(seed: int, signed: bool,
                                           hw: tuple[str, dict[str, Any]]) -> None:
    net, data, qmodel = _mixed_case(seed, signed, images=3)
    runs = {t: _run(net, data, hw, CombinedScheme(t), qmodel).to_json()
            for t in all_compositions()}
    for more, fewer in itertools.permutations(runs, 2):
        if more[0] == fewer[0] and set(fewer) < set(more):  # same layout, a subset
            _le(runs[more], runs[fewer], f"{more} vs {fewer}")
        if more[0] == "sre-weight" and fewer[0] == "dense" and more[1:] == fewer[1:]:
            _le(runs[more], runs[fewer], f"{more} vs {fewer}")
    dense = runs[("dense",)]
    for t, res in runs.items():  # pattern's fallback rule: no crossbar event above dense
        _le(res, dense, f"{t} vs dense", cycles=t[0] != "pattern")
    combined = _run(net, data, hw, "combined", qmodel).to_json()
    layouts = [c["layout"] for c in combined["scheme"]["parameters"]["layers"].values()]
    for lay, layout in zip(combined["layers"], layouts, strict=True):
        full = runs[(layout, "act", "comprrae", "encoding")]["layers"]
        assert lay["events"] == next(f for f in full if f["name"] == lay["name"])["events"]
    _le(combined, dense, "combined vs dense", cycles="pattern" not in layouts)


# ---- the named `combined` scheme --------------------------------------------------------------
def test_combined_picks_the_cheapest_static_layout_and_records_it() -> None:
    """Pattern-pruned (no block pruning), 4-row OUs: pattern units fill OUs, sre-weight's
    column groups of two channels keep the union of two patterns; dense where nothing is
    pruned."""
    net = nets.residual_net(c1=6, size=6, seed=7)
    pattern_prune_model(net, None, 4, 3, 0.6, steps=1, epochs=0)
    net.eval()
    x = nets.random_images(2, channels=2, size=6, seed=7)
    data = (x, nets.random_labels(2, classes=5, seed=7))
    hw = ("isaac", {"array.rows": 32, "array.cols": 32, "ou.rows": 4, "ou.cols": 16})
    config = load_config(hw[0], hw[1])
    scheme = CombinedScheme()
    res = _run(net, data, hw, scheme).to_json()
    params = res["scheme"]["parameters"]
    assert res["scheme"]["name"] == "combined" and "rule" in params
    qmodel = quantize_model(net, x, 8, 8)
    for layer in qmodel.layers:
        choice = params["layers"][layer.name]
        assert choice["act"] and choice["comprrae"] == layer.followed_by_relu
        scores = {}
        for layout in LAYOUTS:
            mapped = scheme._layout(layer, config, layout)
            if scheme._layout_name(mapped, layout) == layout:
                energy, time_ns = static_cost(mapped, config, layout,
                                              scheme._lowered_bits(mapped, config, True)[0])
                scores[layout] = energy * time_ns
        assert scores[choice["layout"]] == min(scores.values()), (layer.name, scores)
        assert choice["adc_bits"] <= config.for_layer(layer.rows).adc_bits
    # the pattern-pruned 3x3 convs pick pattern; the others dense or sre-weight, whichever is
    # cheaper (fc: a few all-zero rows save DAC drives worth more than their indices)
    layouts = {name: c["layout"] for name, c in params["layers"].items()}
    assert layouts["stem"] == layouts["body"] == "pattern"
    assert {layouts["tail"], layouts["fc"]} <= {"dense", "sre-weight"}
    assert params["objective"] == "edp"


def test_combined_drops_what_the_hardware_refuses() -> None:
    net = mixed_net(4, False)
    x = nets.random_images(2, channels=2, size=6, seed=4)
    data = (x, nets.random_labels(2, classes=5, seed=4))
    noisy = sparsexbar.simulate(net, data, hw="ideal-small", scheme="combined",
                                overrides={"device.read_noise_sigma": 0.05})
    layers = noisy.to_json()["scheme"]["parameters"]["layers"]
    assert all(not c["act"] and not c["comprrae"] for c in layers.values())
    assert all("not ideal" in c["note"] for c in layers.values())
    # A 3-bit ADC: act's packing and comprrae's bounds need exact conversions; what clips is
    # dropped per layer, and the values are those of the chosen layouts (sre's packed path).
    clip = sparsexbar.simulate(net, data, hw=CLIP_HW[0], overrides=CLIP_HW[1], scheme="combined")
    notes = [c.get("note", "") for c in clip.to_json()["scheme"]["parameters"]["layers"].values()]
    assert any("off" in n and "ADC" in n for n in notes)
    assert clip.outputs is not None


# ---- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "fragments"), [
    ("pattern+sre-weight", ["pattern and sre-weight", "weight layout"]),
    ("dense+pattern", ["dense and pattern", "weight layout"]),
    ("act+act", ["act", "twice"]),
    ("sre+act", ["act", "twice", "'sre' includes act"]),
    ("pattern+nope", ["unknown technique", "nope", "known"]),
    ("pattern++act", ["empty technique"]),
    ("act+comprrae:alpha=-1", ["alpha", ">= 0"]),
    ("act+comprrae:alpha=x", ["alpha"]),
    ("act+comprrae:speed=2", ["unknown option", "speed"]),
    ("act+comprrae:alpha", ["key=value"]),
    ("sre-weight+act:alpha=0.4", ["alpha", "comprrae"]),
    ("sre-weight+act:estimate=running", ["estimate", "comprrae"]),
    ("pattern+comprrae:granularity=word", ["granularity", "act"]),
    ("act:granularity=byte", ["granularity", "byte"]),
    ("combined:objective=speed", ["objective", "speed"]),
    ("act+comprrae:objective=energy", ["objective", "combined"]),
])
def test_bad_specs_raise_one_line(spec: str, fragments: list[str]) -> None:
    with pytest.raises(SparsexbarError) as info:
        get_scheme(spec)
    message = str(info.value)
    assert "\n" not in message
    for frag in fragments:
        assert frag.lower() in message.lower(), (frag, message)


def test_spec_parsing_and_parameters() -> None:
    scheme = get_scheme("comprrae+act+pattern:alpha=0.4:granularity=word")
    assert isinstance(scheme, CombinedScheme)
    assert scheme.name == "pattern+act+comprrae" and not scheme.lossless
    assert scheme.parameters()["alpha"] == 0.4 and scheme.parameters()["granularity"] == "word"
    assert get_scheme("sre+comprrae").name == "sre-weight+act+comprrae"
    assert get_scheme("act").name == "act"  # one technique that is no scheme of its own
    assert isinstance(get_scheme("sre"), SreScheme)  # the named single schemes stay
    assert get_scheme("combined").name == "combined"


def test_refusals_on_hardware() -> None:
    net = mixed_net(3, False)
    x = nets.random_images(1, channels=2, size=6, seed=3)
    data = (x, nets.random_labels(1, classes=5, seed=3))
    with pytest.raises(SparsexbarError, match="act needs an ideal device"):
        sparsexbar.simulate(net, data, hw="ideal-small", scheme="pattern+act",
                            overrides={"device.read_noise_sigma": 0.05})
    with pytest.raises(SparsexbarError, match="comprrae needs exact conversions.*ADC"):
        sparsexbar.simulate(net, data, hw=CLIP_HW[0], overrides={**CLIP_HW[1], "adc.bits": 2},
                            scheme="sre-weight+act+comprrae")


@pytest.mark.parametrize(("args", "fragments"), [
    (["run", "--scheme", "pattern+sre-weight"], ["weight layout"]),
    (["run", "--scheme", "act+nope"], ["unknown technique", "nope"]),
    (["compare", "--schemes", "dense,act+act"], ["twice"]),
    (["run", "--scheme", "act+comprrae:alpha=-2"], ["alpha"]),
    (["run", "--scheme", "sre-weight+act+comprrae", "--set", "adc.bits=3",
      "--model", "tests.nets:tiny_fmnist_net", "--limit", "2"], ["comprrae", "exact"]),
    (["run", "--scheme", "pattern+act", "--set", "device.read_noise_sigma=0.1",
      "--model", "tests.nets:tiny_fmnist_net", "--limit", "2"], ["act", "ideal device"]),
])
def test_cli_bad_compositions(capsys: pytest.CaptureFixture[str], args: list[str],
                              fragments: list[str]) -> None:
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)


# ---- the shipped models -----------------------------------------------------------------------
def test_shipped_models_lossless_compositions_equal_dense() -> None:
    from sparsexbar.training.checkpoint import (
        load_shipped_pattern_model,
        shipped_model_path,
        shipped_pattern_model_path,
    )

    if not (shipped_model_path().is_file() and shipped_pattern_model_path().is_file()):
        pytest.skip("shipped checkpoints not built")
    pattern_model, _ = load_shipped_pattern_model()
    for model in ("default", pattern_model):
        dense = sparsexbar.simulate(model, "default", hw="isaac", scheme="dense", limit=8)
        for spec in ("combined", "pattern+act+comprrae"):
            res = sparsexbar.simulate(model, "default", hw="isaac", scheme=spec, limit=8)
            assert res.outputs is not None and dense.outputs is not None
            assert torch.equal(res.outputs, dense.outputs), spec
            _le(res.to_json(), dense.to_json(), spec, cycles=False)



def test_cli_compare_with_compositions(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Any) -> None:
    """`compare --schemes` takes compositions beside named schemes: one run each on the same
    inputs, one table, CSV and report."""
    import csv
    import json

    out = tmp_path / "cmp"
    code, printed, err = cli(capsys, "compare", "--schemes",
                             "dense,pattern+act+comprrae,sre+encoding,combined",
                             "--model", "tests.nets:tiny_fmnist_net", "--limit", "4",
                             "--out", str(out))
    assert code == 0, err
    names = ["dense", "pattern+act+comprrae", "sre-weight+act+encoding", "combined"]
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["scheme"] for r in rows] == names
    for name in names:
        res = json.loads((out / f"{name}_result.json").read_text())
        assert res["num_images"] == 4 and name in printed
        assert res["accuracy"]["top1"] == float(rows[0]["top1"])  # lossless: dense's
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 3


def test_cli_compare_keeps_variants_of_one_scheme_apart(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Any) -> None:
    """Variants of one scheme (options after ':') are labelled as given: their own table rows,
    CSV rows and files; the same run twice is refused with exit code 2."""
    import csv
    import json

    out = tmp_path / "cmp"
    code, printed, err = cli(capsys, "compare", "--schemes",
                             "comprrae,comprrae:alpha=0.4,encoding:skip=off",
                             "--model", "tests.nets:tiny_fmnist_net", "--limit", "3",
                             "--out", str(out))
    assert code == 0, err
    labels = ["comprrae", "comprrae:alpha=0.4", "encoding:skip=off"]
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["scheme"] for r in rows] == labels
    files = ["comprrae", "comprrae_alpha-0.4", "encoding_skip-off"]
    results = [json.loads((out / f"{f}_result.json").read_text()) for f in files]
    assert [r["scheme"]["label"] for r in results] == labels
    assert [r["scheme"]["name"] for r in results] == ["comprrae", "comprrae", "encoding"]
    assert results[1]["scheme"]["parameters"] != results[0]["scheme"]["parameters"]
    assert all(label in printed for label in labels)
    code, _, err = cli(capsys, "compare", "--schemes", "dense,sre,dense", "--limit", "2",
                       "--out", str(tmp_path / "dup"))
    assert code == 2 and err.count("\n") == 1 and "'dense' and 'dense'" in err
    assert not (tmp_path / "dup").exists()
    # spelt apart but the same options once resolved (a default given, or none for an
    # option whose default is none): two identical rows ran before
    for schemes, pair in (("sre,sre:mode=joint", "'sre' and 'sre:mode=joint'"),
                          ("comprrae:alpha=none,comprrae", "'comprrae:alpha=none' and 'comprrae'"),
                          ("encoding,encoding:input=bus-invert:weight=complement",
                           "'encoding' and 'encoding:input=bus-invert:weight=complement'")):
        code, _, err = cli(capsys, "compare", "--schemes", schemes, "--limit", "2",
                           "--out", str(tmp_path / "dup"))
        assert code == 2 and err.count("\n") == 1 and pair in err and "same run" in err, err
        assert not (tmp_path / "dup").exists()
