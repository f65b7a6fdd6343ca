"""`comprrae` (issue 6): early negative detection equals dense bit for bit with either bound
(per output, per (bit, slice) step); the bounds always hold; event counts match a loop reference
written here (END, alpha, predictive beta, both bounds); the lossy estimators are measured and
calibrated within a budget; bad options give one line and exit 2."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from sparsexbar.core.config import HardwareConfig, preset
from sparsexbar.core.engine import EngineOptions
from sparsexbar.core.errors import SparsexbarError
from sparsexbar.core.frontend import QuantLayer, quantize_model
from sparsexbar.core.mapping import dense_events, map_dense
from sparsexbar.schemes import get_scheme
from sparsexbar.schemes.comprrae import CompKernel, CompRRAEScheme
from sparsexbar.simulate import simulate
from sparsexbar.training.checkpoint import shipped_model_path
from tests import nets
from tests.timing_ref import Timing

CPU = torch.device("cpu")


def small_hw(**over: Any) -> HardwareConfig:
    # a short analog read (1 ns): activations converting 2 or more columns wait for the ADC
    base = {"array.rows": 8, "array.cols": 10, "ou.rows": 3, "ou.cols": 4, "adc.bits": 8,
            "timing.read_ns": 1.0}
    base.update(over)
    return preset("isaac").with_overrides(base)


class ConvRelu(nn.Module):
    """conv -> ReLU -> flatten -> linear: one checked layer and one unchecked layer."""

    def __init__(self, in_ch: int = 2, out_ch: int = 3, size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(out_ch * size * size, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.relu(self.conv(x)), 1))


def conv_relu(seed: int = 0) -> nn.Module:
    return nets.seeded_init(ConvRelu(), seed).eval()


# ---- exactness of early negative detection -----------------------------------------------------
@settings(max_examples=12)
@given(seed=st.integers(0, 10_000), net_kind=st.sampled_from(["tiny", "residual", "signed"]),
       dac_bits=st.sampled_from([1, 2, 3]), sign=st.sampled_from(["differential", "offset"]),
       bounds=st.sampled_from(["output", "slice"]))
def test_end_equals_dense_bit_for_bit(seed: int, net_kind: str, dac_bits: int,
                                      sign: str, bounds: str) -> None:
    if net_kind == "tiny":
        net, ch, classes = nets.tiny_cnn(size=8, width=3, seed=seed), 1, 10
    else:  # "signed": no ReLU after the residual add, so the tail conv's input is signed
        net, ch, classes = nets.residual_net(relu_after_add=net_kind == "residual",
                                             seed=seed), 2, 5
    x = nets.random_images(6, channels=ch, size=8, seed=seed)
    y = nets.random_labels(6, classes=classes, seed=seed)
    over = {"dac.bits": dac_bits, "cell.sign": sign, "ou.rows": 8}
    dense = simulate(net, (x, y), "isaac", "dense", overrides=over, batch_size=4)
    comp = simulate(net, (x, y), "isaac", CompRRAEScheme(bounds=bounds), overrides=over,
                    batch_size=4)
    assert dense.outputs is not None and comp.outputs is not None
    assert torch.equal(comp.outputs, dense.outputs)
    assert comp.top1 == dense.top1
    for lay in comp.to_json()["layers"]:
        ev, de = lay["events"], lay["dense_events"]
        assert ev["adc_conversions"] <= de["adc_conversions"]
        assert ev["ou_activations"] <= de["ou_activations"]
        if not lay["followed_by_relu"]:
            assert ev == de
    if net_kind == "signed":
        assert any(lay["input_signed"] and lay["followed_by_relu"]
                   for lay in comp.to_json()["layers"])


@pytest.mark.skipif(not shipped_model_path().is_file(), reason="shipped checkpoint not built")
def test_end_equals_dense_on_shipped_model() -> None:
    from sparsexbar.training.data import fashion_mnist

    ds = fashion_mnist("test").subset(0, 64)
    data = (ds.to_float(), ds.labels.long())
    dense = simulate("default", data, "isaac", "dense", batch_size=64)
    comp = simulate("default", data, "isaac", "comprrae", batch_size=64)
    tight = simulate("default", data, "isaac", "comprrae:bounds=slice", batch_size=64)
    assert dense.outputs is not None and comp.outputs is not None and tight.outputs is not None
    assert torch.equal(comp.outputs, dense.outputs)
    assert torch.equal(tight.outputs, dense.outputs)
    red = comp.to_json()["vs_dense"]["computation_reduction"]["adc_conversions"]
    red_tight = tight.to_json()["vs_dense"]["computation_reduction"]["adc_conversions"]
    assert red_tight > red > 0


# ---- soundness of the bounds -------------------------------------------------------------------
@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), dac_bits=st.sampled_from([1, 2, 4]),
       input_bits=st.sampled_from([4, 8]), signed=st.booleans(),
       bounds=st.sampled_from(["output", "slice"]),
       sign=st.sampled_from(["differential", "offset"]), cell_bits=st.sampled_from([1, 2, 3]))
def test_bounds_always_hold(seed: int, dac_bits: int, input_bits: int, signed: bool,
                            bounds: str, sign: str, cell_bits: int) -> None:
    net = conv_relu(seed)
    x = nets.random_images(3, channels=2, size=5, seed=seed, signed=signed)
    hw = small_hw(**{"dac.bits": dac_bits, "numbers.input_bits": input_bits,
                     "cell.sign": sign, "cell.bits": cell_bits, "adc.bits": 10})
    q = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    layer = q.layers[0]
    assert layer.input_signed == signed
    scheme = CompRRAEScheme(bounds=bounds)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    assert isinstance(kernel, CompKernel)
    x_int = layer.quantize_input(x)
    final = layer.reference_accumulate(x_int).to(torch.float64)
    steps = list(scheme.trace(kernel, x_int))
    assert len(steps) == hw.cycles * (hw.slices if bounds == "slice" else 1) == kernel.steps
    previous_max = None
    for _, acc, y_min, y_max in steps:
        assert bool((y_min <= final).all()) and bool((final <= y_max).all())
        assert bool((y_min <= acc).all()) and bool((acc <= y_max).all())
        if kernel.monotone and previous_max is not None:  # what END's backwards visit needs
            assert bool((y_max <= previous_max).all())
        previous_max = y_max
    _, acc, y_min, y_max = steps[-1]
    assert torch.equal(acc, final) and torch.equal(y_min, final) and torch.equal(y_max, final)
    if bounds == "slice":  # each slice step's bounds are inside its cycle's per-output ones
        per_output = list(CompRRAEScheme().trace(
            CompRRAEScheme().kernel(map_dense(layer, hw), CPU), x_int))
        for t, acc_t, lo_t, hi_t in per_output:
            _, acc, y_min, y_max = steps[(t + 1) * hw.slices - 1]
            assert torch.equal(acc, acc_t) and torch.equal(y_min, lo_t)
            assert torch.equal(y_max, hi_t)


# ---- event counts against a loop reference ----------------------------------------------------
def _largest_negative(real: Any, c: int, bound: int) -> int:
    """The largest integer y with real(y, c) < 0 (bisection over [-bound, bound])."""
    lo, hi = -bound, bound
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if real(mid, c) < 0:
            lo = mid
        else:
            hi = mid - 1
    return lo


def reference_run(layer: QuantLayer, hw: HardwareConfig, x_int: Tensor,
                  alpha: float | None, bounds: str = "output", beta: float | None = None,
                  lam: list[float] | None = None, estimate: str = "midpoint",
                  ) -> tuple[Tensor, dict[str, int], int]:
    """Plain loops: per output the step it stops at, then every array / OU / column counted.

    Steps: one per input cycle (MSB first), or with `slice` one per (cycle, weight slice),
    slices most significant first, the columns laid out slice-major (slice, channel, polarity).
    Differential cells only with `slice` (slices of |w| with w's sign)."""
    n = x_int.shape[0]
    w = layer.matrix().tolist()  # rows x Cout
    cout, rows = layer.out_channels, layer.rows
    patches = layer.patches(x_int).to(torch.int64).tolist()  # (N*P, rows)
    p_count = layer.positions
    cycles, dac, cb, slices = hw.cycles, hw.dac.bits, hw.cell.bits, hw.slices
    per = slices if bounds == "slice" else 1
    steps = cycles * per
    cmax = 2**dac - 1
    pos = [sum(max(w[r][c], 0) for r in range(rows)) for c in range(cout)]
    neg = [sum(min(w[r][c], 0) for r in range(rows)) for c in range(cout)]
    signed = layer.input_signed  # sign-magnitude inputs, two passes interleaved per cycle
    passes = 2 if signed else 1
    scale = (layer.weight_scale * layer.input_scale).tolist()
    bias = layer.bias.tolist()
    lam = lam or [0.0] * cycles

    def real(acc: float, c: int) -> float:  # float32 like QuantLayer.dequantize
        a = torch.tensor(acc, dtype=torch.float32)
        return float(a * torch.tensor(scale[c], dtype=torch.float32)
                     + torch.tensor(bias[c], dtype=torch.float32))

    def slice_value(v: int, s: int) -> int:  # slice s of weight v, with v's sign and shift
        return (1 if v >= 0 else -1) * ((abs(v) >> (s * cb)) & (2**cb - 1)) * 2 ** (s * cb)

    bound = sum(abs(w[r][c]) for r in range(rows) for c in range(cout)) * layer.input_max + 2
    caps = [_largest_negative(real, c, bound) for c in range(cout)]
    executed = [[steps] * cout for _ in range(n * p_count)]
    out = [[0.0] * cout for _ in range(n * p_count)]
    for m, patch in enumerate(patches):
        for c in range(cout):
            acc = 0
            done = False
            for t in range(cycles):
                shift = (cycles - 1 - t) * dac
                chunk = [(1 if patch[r] >= 0 else -1) * ((abs(patch[r]) >> shift) & cmax)
                         for r in range(rows)]
                order = list(range(slices - 1, -1, -1)) if per > 1 else [None]
                for j, s in enumerate(order):
                    step = t * per + j
                    if s is None:
                        acc += sum(w[r][c] * chunk[r] for r in range(rows)) * 2**shift
                    else:
                        acc += sum(slice_value(w[r][c], s) * chunk[r]
                                   for r in range(rows)) * 2**shift
                    out[m][c] = float(acc)
                    if step == steps - 1:
                        break
                    rem = 2**shift - 1
                    low = [sum(slice_value(w[r][c], z) for z in range(s or 0))
                           for r in range(rows)]  # the slices below s, still to come
                    lo_up = sum(v for v in low if v > 0) * cmax * 2**shift
                    lo_dn = sum(v for v in low if v < 0) * cmax * 2**shift
                    if signed:
                        up = (pos[c] - neg[c]) * rem + lo_up - lo_dn
                        down = -up
                    else:
                        up, down = pos[c] * rem + lo_up, neg[c] * rem + lo_dn
                    hi, lo = acc + up, acc + down
                    mu = (pos[c] + neg[c]) * (lam[t] * rem)
                    if beta is None:
                        negative = real(hi, c) < 0
                    else:
                        negative = real(acc + math.floor((1 - beta) * mu + beta * up), c) < 0
                    if negative:
                        executed[m][c] = step + 1
                        out[m][c] = float(min(acc, caps[c]) if beta is not None else acc)
                        done = True
                    elif alpha is not None and real(lo, c) > 0 and hi - lo <= alpha * abs(acc):
                        executed[m][c] = step + 1
                        out[m][c] = float(math.floor((hi + lo) / 2) if estimate == "midpoint"
                                          else acc + math.floor(mu) if estimate == "expected"
                                          else acc)
                        done = True
                    if done:
                        break
                if done or t == cycles - 1:
                    break
    ev = dict.fromkeys(["ou_activations", "adc_conversions", "adc_rounds", "dac_activations",
                        "cell_reads", "comparisons", "lut_reads", "digital_ops"], 0)
    timing = Timing(hw, hw.adc_bits)
    pols = hw.polarities
    if per > 1:  # slice-major: (slice, channel, polarity); step offset in the cycle
        layout = [(c, slices - 1 - s) for s in range(slices - 1, -1, -1) for c in range(cout)
                  for _p in range(pols)]
    else:  # channel-major: (channel, polarity, slice)
        layout = [(c, 0) for c in range(cout) for _p in range(pols) for _s in range(slices)]
    ncols = len(layout)
    row_tiles = [(a, min(a + hw.array.rows, rows)) for a in range(0, rows, hw.array.rows)]
    col_tiles = [(a, min(a + hw.array.cols, ncols)) for a in range(0, ncols, hw.array.cols)]
    busiest_total = 0
    busiest_ns = 0.0
    for img in range(n):
        per_array = {}
        per_array_ns = {}
        for r0, r1 in row_tiles:
            for c0, c1 in col_tiles:
                acts = 0
                ns = 0.0
                for p in range(p_count):
                    m = img * p_count + p
                    for t in range(cycles):
                        for g0 in range(r0, r1, hw.ou.rows):
                            g_rows = min(g0 + hw.ou.rows, r1) - g0
                            for k0 in range(c0, c1, hw.ou.cols):
                                cols = range(k0, min(k0 + hw.ou.cols, c1))
                                live = [col for col in cols
                                        if executed[m][layout[col][0]] > t * per + layout[col][1]]
                                if not live:
                                    continue
                                for _pass in range(passes):
                                    acts += 1
                                    ns += timing.ns(len(live))
                                    ev["ou_activations"] += 1
                                    ev["adc_conversions"] += len(live)
                                    ev["adc_rounds"] += timing.rounds(len(live))
                                    ev["dac_activations"] += g_rows
                                    ev["cell_reads"] += g_rows * len(cols)
                per_array[(r0, c0)] = acts
                per_array_ns[(r0, c0)] = ns
        busiest_total += max(per_array.values())
        busiest_ns += max(per_array_ns.values())
    for m in range(n * p_count):
        for c in range(cout):
            checks = min(executed[m][c], steps - 1)
            ev["lut_reads"] += checks
            ev["comparisons"] += checks * (2 if alpha is not None else 1)
            ev["digital_ops"] += checks if beta is not None else 0
    acc_t = torch.tensor(out, dtype=torch.float64)  # (N*P, Cout)
    acc_t = layer.fold_output(acc_t, n)
    return acc_t, ev, busiest_total, busiest_ns


LAMBDAS = [0.3, 0.25, 0.2, 0.25, 0.3, 0.35, 0.4, 0.0]


# The timing rule's shapes (`cost.TimingShape`): ADC-bound (time and rounds per activation
# from its live columns), read-bound with one ADC per array or an ADC per OU column (time and
# rounds from the activation and conversion sums).
TIMINGS = {"adc-bound": {}, "read-bound": {"timing.read_ns": 100.0},
           "read-bound-adc-per-column": {"timing.read_ns": 100.0, "adc.per_array": 4}}


@pytest.mark.parametrize("timing_name", list(TIMINGS))
@pytest.mark.parametrize(("alpha", "signed", "bounds", "beta"), [
    (None, False, "output", None), (0.4, False, "output", None), (None, True, "output", None),
    (0.4, True, "output", None), (None, False, "slice", None), (None, True, "slice", None),
    (0.4, False, "slice", None), (None, False, "output", 0.25), (0.4, True, "output", 0.25),
    (None, True, "slice", 0.125)])
def test_counts_match_loop_reference(alpha: float | None, signed: bool, bounds: str,
                                     beta: float | None, timing_name: str) -> None:
    net = conv_relu(seed=5)
    x = nets.random_images(2, channels=2, size=5, seed=7, signed=signed)
    hw = small_hw(**{"dac.bits": 2, **TIMINGS[timing_name]})
    q = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    layer = q.layers[0]
    assert layer.followed_by_relu and layer.input_signed == signed
    lam = LAMBDAS[: hw.cycles]
    scheme = CompRRAEScheme(alpha=alpha, bounds=bounds, beta=beta,
                            remaining_mean={layer.name: lam})
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    x_int = layer.quantize_input(x)
    run = scheme.run_layer(kernel, x_int, EngineOptions())
    ref_acc, ref_ev, ref_cycles, ref_ns = reference_run(layer, hw, x_int, alpha, bounds, beta,
                                                        lam)
    assert torch.equal(run.accumulator, ref_acc)
    got = run.events.to_dict()
    dense, _ = dense_events(kernel.mapped, 2)
    got["digital_ops"] -= dense.digital_ops  # the predictive thresholds' multiply-adds
    for key, value in ref_ev.items():
        assert got[key] == value, key
    assert got["shift_adds"] == ref_ev["adc_conversions"]
    assert run.cycles == ref_cycles
    assert run.time_ns == pytest.approx(ref_ns, rel=1e-12)
    assert ref_ev["adc_conversions"] < dense.adc_conversions  # something was skipped
    if alpha is not None or beta is not None:  # the lossy rule fired too, beyond END
        _, end_ev, _, _ = reference_run(layer, hw, x_int, None, bounds)
        assert ref_ev["adc_conversions"] < end_ev["adc_conversions"]
    if bounds == "slice" and alpha is None and beta is None:  # tighter than per output
        _, out_ev, _, _ = reference_run(layer, hw, x_int, None, "output")
        assert ref_ev["adc_conversions"] < out_ev["adc_conversions"]


# ---- adaptive termination ----------------------------------------------------------------------
def test_alpha_is_lossy_and_skips_more() -> None:
    net = nets.tiny_cnn(size=8, width=4, seed=11)
    x = nets.random_images(32, size=8, seed=12)
    dense = simulate(net, (x, nets.random_labels(32)), "isaac", "dense", batch_size=32)
    assert dense.outputs is not None
    labels = dense.outputs.argmax(dim=1)  # the quantized network is right by construction
    data = (x, labels)
    end = simulate(net, data, "isaac", "comprrae", batch_size=32)
    lossy = simulate(net, data, "isaac", CompRRAEScheme(alpha=1.0), batch_size=32)
    assert end.top1 == 1.0
    assert lossy.outputs is not None and end.outputs is not None
    assert not torch.equal(lossy.outputs, end.outputs)  # the change is real and measured
    red_end = end.to_json()["vs_dense"]["computation_reduction"]["adc_conversions"]
    red_lossy = lossy.to_json()["vs_dense"]["computation_reduction"]["adc_conversions"]
    assert red_lossy > red_end > 0
    assert lossy.to_json()["scheme"]["parameters"]["alpha"] == 1.0
    per_layer = CompRRAEScheme(alpha={"conv1": 1.0})
    assert per_layer.layer_alpha("conv1") == 1.0 and per_layer.layer_alpha("conv2") is None


def test_refuses_lossy_adc_and_bad_parameters() -> None:
    net = conv_relu(seed=1)
    x = nets.random_images(2, channels=2, size=5)
    with pytest.raises(SparsexbarError, match="comprrae needs a lossless ADC for now"):
        simulate(net, (x, torch.zeros(2, dtype=torch.long)), "isaac", "comprrae",
                 overrides={"adc.bits": 3, "ou.rows": 16})
    with pytest.raises(SparsexbarError, match="alpha"):
        CompRRAEScheme(alpha=-1.0)
    with pytest.raises(SparsexbarError, match="bounds"):
        CompRRAEScheme(bounds="conversion")
    with pytest.raises(SparsexbarError, match="beta"):
        CompRRAEScheme(beta={"conv": 1.5})
    assert get_scheme("comprrae").name == "comprrae"
    scheme = CompRRAEScheme(beta=0.5, remaining_mean={"conv": [0.2, 0.3]})
    q = quantize_model(net, x, 8, 8)
    with pytest.raises(SparsexbarError, match="remaining_mean of layer 'conv' needs 7"):
        scheme.kernel(scheme.map_layer(q.layers[0], preset("isaac")), CPU)


def test_scheme_options_from_text(tmp_path: Any) -> None:
    import json

    made = get_scheme("comprrae:bounds=slice:beta=0.25:alpha=none:estimate=expected")
    assert isinstance(made, CompRRAEScheme)
    assert (made.bounds, made.beta, made.alpha, made.estimate) == ("slice", 0.25, None,
                                                                    "expected")
    assert not made.lossless and CompRRAEScheme(beta=1.0).lossless
    file = tmp_path / "cal.json"
    file.write_text(json.dumps({"alphas": {"conv": None}, "betas": {"conv": 0.5},
                                "remaining_mean": {"conv": [0.1] * 7}}))
    loaded = get_scheme(f"comprrae:calibration={file}:alpha=0.4")
    assert isinstance(loaded, CompRRAEScheme)
    assert loaded.layer_beta("conv") == 0.5 and loaded.layer_alpha("conv") == 0.4
    assert loaded.layer_remaining_mean("conv") == [0.1] * 7
    assert loaded.parameters()["beta"] == {"conv": 0.5}
    for bad, fragment in [("comprrae:beta=x", "beta"), ("comprrae:nope=1", "nope"),
                          ("comprrae:calibration=/nonexistent/c.json", "c.json"),
                          ("comprrae:bounds=rows", "bounds")]:
        with pytest.raises(SparsexbarError, match=fragment):
            get_scheme(bad)


def test_storage_lut_and_comparators() -> None:
    net = conv_relu(seed=2)
    x = nets.random_images(2, channels=2, size=5)
    hw = small_hw()
    q = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    conv, fc = q.layers
    end, lossy = CompRRAEScheme(), CompRRAEScheme(alpha=0.1)
    # 3 channels x 2 entries x (8 + ceil(log2 18) = 13) bits; 24 columns in tiles 10, 10, 4 ->
    # OU column groups 3 + 3 + 1 = 7.
    st_end = end.storage(end.map_layer(conv, hw))
    assert (st_end.lut_bits, st_end.comparators) == (3 * 2 * 13, 7)
    assert lossy.storage(lossy.map_layer(conv, hw)).comparators == 14
    assert end.storage(end.map_layer(fc, hw)).lut_bits == 0
    # (bit, slice) bounds: 2 entries per slice (4 slices of 2-bit cells for 7 magnitude bits);
    # beta: 2 constants per input cycle (8).
    tight = CompRRAEScheme(bounds="slice", beta=0.5)
    st_tight = tight.storage(tight.map_layer(conv, hw))
    assert (st_tight.lut_bits, st_tight.comparators) == ((3 * 2 * 4 + 2 * 8) * 13, 7)


# ---- (bit, slice) steps and predictive negative detection ------------------------------------
def test_slice_major_layout_and_groups() -> None:
    """Slice-major columns: one OU column group holds one slice of ou.cols / 2 channels; the
    group runs in cycle t while a channel still needs that slice."""
    net = conv_relu(seed=4)
    x = nets.random_images(2, channels=2, size=5)
    hw = small_hw(**{"array.cols": 12})
    layer = quantize_model(net, x, 8, 8).layers[0]
    scheme = CompRRAEScheme(bounds="slice")
    mapped = scheme.map_layer(layer, hw)
    # 3 channels x 2 polarities x 4 slices: columns (slice 3: c0+ c0- c1+ c1- c2+ c2-), ...
    assert mapped.col_channel[:6].tolist() == [0, 0, 1, 1, 2, 2]
    assert mapped.col_weight[:6].tolist() == [64.0, -64.0] * 3
    assert mapped.col_weight[-2:].tolist() == [1.0, -1.0]
    kernel = scheme.kernel(mapped, CPU)
    assert isinstance(kernel, CompKernel) and kernel.steps == 32
    # tiles of 12 columns, OU groups of 4: group 1 holds c2 (slice 3) and c0 (slice 2)
    assert kernel.group_channels[1].tolist() == [0, 2]
    assert kernel.group_offsets[1].tolist() == [1.0, 0.0]
    executed = torch.tensor([[[1.0, 30.0, 5.0]]])  # (N, P, Cout) steps
    # group 1 runs cycle t while 5 > 4t (c2, offset 0) or 1 > 4t + 1 (c0): cycles 0 and 1
    assert kernel.group_cycles(executed)[0, 0, 1].item() == 2.0


def test_beta_one_is_end_and_smaller_beta_is_lossy() -> None:
    net = nets.tiny_cnn(size=8, width=4, seed=11)
    x = nets.random_images(32, size=8, seed=12)
    dense = simulate(net, (x, nets.random_labels(32)), "isaac", "dense", batch_size=32)
    assert dense.outputs is not None
    data = (x, dense.outputs.argmax(dim=1))
    end = simulate(net, data, "isaac", "comprrae", batch_size=32)
    one = simulate(net, data, "isaac", CompRRAEScheme(beta=1.0), batch_size=32)
    low = simulate(net, data, "isaac", CompRRAEScheme(beta=0.0), batch_size=32)
    assert one.outputs is not None and end.outputs is not None and low.outputs is not None
    assert torch.equal(one.outputs, end.outputs)
    assert one.to_json()["layers"] == end.to_json()["layers"]
    assert not torch.equal(low.outputs, end.outputs)  # the change is real and measured
    red = {k: r.to_json()["vs_dense"]["computation_reduction"]["adc_conversions"]
           for k, r in (("end", end), ("low", low))}
    assert red["low"] > red["end"] > 0
    # a predicted-negative output's value dequantizes below 0: its ReLU is 0
    q = quantize_model(net, x, 8, 8)
    layer = q.layers[1]
    scheme = CompRRAEScheme(beta=0.0)
    kernel = scheme.kernel(scheme.map_layer(layer, preset("isaac")), CPU)
    assert isinstance(kernel, CompKernel)
    x_int = layer.quantize_input(torch.rand((4, *layer.input_shape), generator=torch.Generator(
        ).manual_seed(1)) * 4)
    value, executed = scheme.terminate(kernel, x_int)
    stopped = executed < kernel.steps
    assert bool(stopped.any())
    assert bool((layer.dequantize(value)[stopped] < 0).all())


# ---- calibration -------------------------------------------------------------------------------
def test_calibration_respects_budget_and_split(tmp_path: Any) -> None:
    import json

    from sparsexbar.app.cli import main
    from sparsexbar.schemes.comprrae.calibration import calibrate_alphas, top1_with_alphas
    from sparsexbar.studies.setup import fmnist_split
    from sparsexbar.training.data import fashion_mnist

    x_cal, y_cal = fmnist_split("calibration", 40)
    x_test, _ = fmnist_split("test", 40)
    assert torch.equal(x_cal, fashion_mnist("train").subset(0, 40).to_float())
    assert torch.equal(x_test, fashion_mnist("test").subset(0, 40).to_float())
    net = nets.tiny_fmnist_net()
    hw = preset("isaac")
    q = quantize_model(net, x_cal, 8, 8)
    # budget 0: no calibration image may change class; a huge budget takes the largest alpha
    strict = calibrate_alphas(q, hw, x_cal, y_cal, budget_points=0.0, candidates=(8.0, 0.5))
    assert strict.flips == 0 and strict.top1 == strict.exact_top1
    loose = calibrate_alphas(q, hw, x_cal, y_cal, budget_points=100.0, candidates=(8.0, 0.5))
    assert set(loose.alphas) == {"conv1", "conv2"}
    assert all(a == 8.0 for a in loose.alphas.values())
    assert len(loose.trials) == 2 * 2 + 1  # each layer x candidate alone, then together
    kernels = {}
    scheme = CompRRAEScheme()
    for layer in q.layers:
        if layer.followed_by_relu:
            kernels[layer.name] = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    again = top1_with_alphas(q, kernels, loose.alphas, x_cal, y_cal)  # type: ignore[arg-type]
    assert again == loose.top1
    out = tmp_path / "alphas.json"
    main(["calibrate-comprrae", "--model", "tests.nets:tiny_fmnist_net", "--images", "30",
          "--budget", "100", "--candidates", "8", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["alphas"] == {"conv1": 8.0, "conv2": 8.0} and saved["images"] == 30
    with pytest.raises(SystemExit) as bad:
        main(["calibrate-comprrae", "--candidates", "x", "--out", str(out)])
    assert bad.value.code == 2


def test_remaining_mean_is_the_mean_of_the_bits_to_come() -> None:
    from sparsexbar.schemes.comprrae.calibration import measure_remaining_mean

    net = conv_relu(seed=3)
    x = nets.random_images(5, channels=2, size=5, seed=2)
    hw = small_hw(**{"dac.bits": 2})
    q = quantize_model(net, x, 8, 8)
    lam = measure_remaining_mean(q, hw, x, batch_size=2)
    x_int = q.layers[0].quantize_input(x).to(torch.int64)
    expect = [float((x_int % 2**s).double().mean()) / (2**s - 1) for s in (6, 4, 2)] + [0.0]
    assert list(lam) == ["conv"]
    assert lam["conv"] == pytest.approx(expect, rel=1e-12)


def test_beta_calibration_flips_within_budget(tmp_path: Any) -> None:
    import json

    from sparsexbar.app.cli import main
    from sparsexbar.schemes.comprrae.calibration import calibrate_comprrae
    from sparsexbar.studies.setup import fmnist_split

    x_cal, y_cal = fmnist_split("calibration", 60)
    net = nets.tiny_fmnist_net()
    hw = preset("isaac")
    q = quantize_model(net, x_cal, 8, 8)
    betas = (0.5, 0.0)
    strict = calibrate_comprrae(q, hw, x_cal, y_cal, 0.0, "beta", betas)
    assert strict.flips == 0 and strict.top1 == strict.exact_top1
    assert set(strict.remaining_mean) == {"conv1", "conv2"}
    costs = {(t["layer"], t["beta"]): t["cost"] for t in strict.trials if t["layer"] != "all"}
    for name, value in strict.betas.items():  # each chosen beta flipped nothing alone
        assert value is None or costs[(name, value)] == 0
    loose = calibrate_comprrae(q, hw, x_cal, y_cal, 100.0, "beta", betas)
    assert loose.betas == {"conv1": 0.0, "conv2": 0.0}  # the most aggressive candidates
    assert loose.alphas == {"conv1": None, "conv2": None}
    drop = calibrate_comprrae(q, hw, x_cal, y_cal, 5.0, "beta", betas, criterion="top1")
    assert drop.top1 >= drop.exact_top1 - 0.05 - 1e-12
    # the calibrated scheme runs from its file, and its accuracy there is the calibration's
    out = tmp_path / "betas.json"
    main(["calibrate-comprrae", "--model", "tests.nets:tiny_fmnist_net", "--images", "60",
          "--budget", "0", "--estimator", "beta", "--candidates", "0.5,0", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["estimator"] == "beta" and saved["flips"] == 0
    assert set(saved["remaining_mean"]) == {"conv1", "conv2"}
    scheme = get_scheme(f"comprrae:calibration={out}")
    res = simulate(net, (x_cal, y_cal), "isaac", scheme, batch_size=60)
    assert res.top1 == pytest.approx(saved["exact_top1"])


def test_calibrate_cli_bad_options(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from tests.test_cli_errors import assert_one_line_error, cli

    out = str(tmp_path / "x.json")
    for args, fragment in [(["--estimator", "gamma"], "--estimator"),
                           (["--criterion", "loss"], "--criterion"),
                           (["--bounds", "rows"], "--bounds"),
                           (["--estimator", "beta", "--candidates", "0.5,2"], "--candidates")]:
        code, _, err = cli(capsys, "calibrate-comprrae", *args, "--out", out)
        assert_one_line_error(code, err, fragment)
    for spec, fragment in [("comprrae:bounds=rows", "bounds"), ("comprrae:beta=2", "beta"),
                           ("comprrae:gamma=1", "gamma"), ("comprrae:alpha=x", "alpha"),
                           ("comprrae:calibration=/nonexistent/c.json", "c.json")]:
        code, _, err = cli(capsys, "run", "--scheme", spec, "--limit", "2", "--out",
                           str(tmp_path / "run"))
        assert_one_line_error(code, err, fragment)
    code, _, err = cli(capsys, "reproduce", "comprrae", "--budget", "-1", "--out",
                       str(tmp_path / "r"))
    assert_one_line_error(code, err, "--budget")


# ---- the profile and the reproduction ----------------------------------------------------------
def test_stop_profile_counts() -> None:
    from sparsexbar.schemes.comprrae.study import stop_profile

    net = nets.tiny_cnn(size=8, width=4, seed=11)
    x = nets.random_images(6, size=8, seed=12)
    hw = preset("isaac")
    q = quantize_model(net, x, 8, 8)
    rows = stop_profile(q, hw, x, batch_size=4, slack_images=4)
    assert [r["layer"] for r in rows] == ["conv1", "conv2"]
    inputs: dict[str, Tensor] = {}

    def keep(layer: QuantLayer, x_int: Tensor) -> Tensor:
        inputs[layer.name] = x_int
        return layer.reference_accumulate(x_int).to(torch.float64)

    q.run(x, keep)
    for row in rows:
        layer = q.layer(row["layer"])
        final = layer.reference_accumulate(inputs[layer.name])
        assert row["outputs"] == final.numel()
        assert row["negative"] == float((layer.dequantize(final) < 0).double().mean())
        scheme = CompRRAEScheme()
        _, executed = scheme.terminate(scheme.kernel(map_dense(layer, hw), CPU),
                                       inputs[layer.name])
        assert row["end_removed"] == pytest.approx(
            1 - float(executed.double().mean()) / hw.cycles, abs=1e-12)
        assert sum(row["end_stop"]) == pytest.approx(float((executed < hw.cycles).double()
                                                           .mean()))
        assert row["slice_removed"] >= row["end_removed"]
        assert row["zero"] + sum(row["first_one"]) == pytest.approx(1.0)
        assert row["ceiling"] >= row["end_removed"]


def test_reproduce_writes_table_json_and_plot(tmp_path: Any) -> None:
    """Both input widths; END alone lossless (the exact network's classes); the lossy settings'
    whole-split top-1 from the same values the simulated run computes; ratios against the
    separate ISAAC-class baseline run; headline rows from those rows; files written."""
    import json

    from sparsexbar.app.cli import main
    from sparsexbar.schemes.comprrae.study import SETTINGS, reproduce_comprrae

    report = reproduce_comprrae(tmp_path, model="tests.nets:tiny_fmnist_net", test_images=20,
                                calibration_images=20, candidates=(1.0,), curve=(4.0,),
                                betas=(0.25,), beta_curve=(0.0,), batch_size=20,
                                profile_images=8, accuracy_images=60, input_bits=(8, 16),
                                slice_bounds=True)
    assert [w["input_bits"] for w in report["widths"]] == [8, 16]
    for width in report["widths"]:
        dense, end, cal, pred, end_slice, pred_slice = width["rows"]
        assert [end["run"], cal["run"], pred["run"]] == list(SETTINGS)
        assert end["classes_equal_exact"] and end["top1"] == width["exact_top1"]
        assert end["top1_change_points"] == 0.0 and dense["conversion_reduction"] == 0.0
        assert end["accuracy_images"] == cal["accuracy_images"] == 60
        assert cal["classes_equal_values_path"] and pred["classes_equal_values_path"]
        assert pred_slice["bounds"] == "slice"
        assert end_slice["conversion_reduction"] > end["conversion_reduction"] > 0
        assert width["curve"][0]["conversion_reduction"] > end["conversion_reduction"]
        assert pred["beta"] == width["beta_calibration"]["betas"]
        assert width["baseline"].startswith("dense on isaac")
        # isaac is the study's hardware too: the baseline run is the in-run dense
        assert end["baseline_speedup"] == pytest.approx(end["throughput"], rel=1e-9)
    assert [r["layer"] for r in report["profile"]] == ["conv1", "conv2"]
    head = report["headline"]
    assert len(head) == 2 * 3 * 4 and sum(h["primary"] for h in head) == 4
    by = {(h["input_bits"], h["setting"].split(",")[0], h["key"]): h for h in head}
    w16 = report["widths"][1]["rows"]
    assert by[(16, SETTINGS[2], "throughput")]["ours_value"] == w16[3]["baseline_speedup"]
    assert by[(8, SETTINGS[0], "top1_change")]["ours_value"] == 0.0
    saved = json.loads((tmp_path / "comprrae_reproduce.json").read_text())
    assert saved["headline"] == head and saved["rows"] == report["rows"]
    assert (tmp_path / "comprrae_tradeoff.png").stat().st_size > 1000
    md = (tmp_path / "comprrae_reproduce.md").read_text()
    assert "| END alone |" in md and "| uniform beta 0 |" in md and "| conv2 |" in md
    with pytest.raises(SystemExit) as bad:
        main(["reproduce", "nope"])
    assert bad.value.code == 2


# ---- the fast paths against the loop reference -----------------------------------------------
def _check_against_reference(layer: QuantLayer, hw: HardwareConfig, x_int: Tensor,
                             alpha: float | None, bounds: str = "output") -> CompKernel:
    scheme = CompRRAEScheme(alpha=alpha, bounds=bounds)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    assert isinstance(kernel, CompKernel)
    run = scheme.run_layer(kernel, x_int, EngineOptions())
    ref_acc, ref_ev, ref_cycles, ref_ns = reference_run(layer, hw, x_int, alpha, bounds)
    assert torch.equal(run.accumulator, ref_acc)
    got = run.events.to_dict()
    got["digital_ops"] -= dense_events(kernel.mapped, int(x_int.shape[0]))[0].digital_ops
    for key, value in ref_ev.items():
        assert got[key] == value, key
    assert run.cycles == ref_cycles
    assert run.time_ns == pytest.approx(ref_ns, rel=1e-12)
    out, executed = scheme.terminate(kernel, x_int)  # the calibration's entry point
    assert torch.equal(out, ref_acc) and executed.dtype == torch.int8
    return kernel


@pytest.mark.parametrize("int8", [True, False])
@pytest.mark.parametrize(("alpha", "dac_bits", "signed", "bounds"), [
    (None, 1, False, "output"), (0.4, 1, False, "output"), (None, 1, True, "output"),
    (1.6, 2, True, "output"), (None, 1, False, "slice"), (0.4, 2, True, "slice")])
def test_backends_match_loop_reference(int8: bool, alpha: float | None, dac_bits: int,
                                       signed: bool, bounds: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Running sums by the int8 convolution (2^shift in its epilogue) or, int8 made
    unavailable, float32; cycles visited last to first, END stopping early."""
    from sparsexbar.core import intconv

    if not int8:
        monkeypatch.setattr(intconv, "_int8_conv_available", lambda device: False)
    net = conv_relu(seed=9)
    x = nets.random_images(2, channels=2, size=5, seed=3, signed=signed)
    hw = small_hw(**{"dac.bits": dac_bits})
    layer = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits).layers[0]
    kernel = _check_against_reference(layer, hw, layer.quantize_input(x), alpha, bounds)
    assert kernel.direct
    assert (kernel.op.backend == "int8") == (int8 and intconv._int8_conv_available(CPU))
    assert kernel.low_op is None or kernel.low_op.backend == kernel.op.backend


class WideConv(nn.Module):
    """64 input channels (576 rows) of weights +-1: every |weight| quantizes to 127, so a
    column's |weight| sum x 255 is above 2^24 (float32 running sums would not be exact)."""

    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(64, 2, 3, padding=1)
        gen = torch.Generator().manual_seed(4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randint(0, 2, self.conv.weight.shape,
                                                 generator=gen) * 2.0 - 1)
            self.conv.bias.fill_(bias)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x))


@pytest.mark.parametrize(("alpha", "signed", "bounds"), [
    (None, False, "output"), (0.4, False, "output"), (0.4, True, "output"),
    (None, False, "slice")])
def test_wide_layer_matches_loop_reference(alpha: float | None, signed: bool,
                                           bounds: str) -> None:
    """Float64 running sums one cycle's contribution apart, from the exact result."""
    x = nets.random_images(1, channels=64, size=3, seed=5, signed=signed)
    net = WideConv().eval()
    hw = small_hw(**{"array.rows": 64, "ou.rows": 16, "dac.bits": 2})
    layer = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits).layers[0]
    x_int = layer.quantize_input(x)
    kernel = _check_against_reference(layer, hw, x_int, alpha, bounds)
    assert not kernel.direct and kernel.value_bound >= 2**24
    steps = list(CompRRAEScheme().trace(kernel, x_int))
    final = layer.reference_accumulate(x_int).to(torch.float64)
    assert torch.equal(steps[-1][1], final)


def test_positive_bias_settles_negative_running_sums() -> None:
    """With a large positive bias y_min > 0 holds for negative accumulators: the second
    settle interval (settle threshold <= A <= -smallest |A|) is taken and matches the loop."""
    net = ConvRelu()
    nets.seeded_init(net, 6)
    with torch.no_grad():
        net.conv.bias.fill_(3.0)
    net = net.eval()
    x = nets.random_images(2, channels=2, size=5, seed=8)
    hw = small_hw(**{"dac.bits": 2})
    layer = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits).layers[0]
    x_int = layer.quantize_input(x)
    kernel = _check_against_reference(layer, hw, x_int, 0.2)
    assert any(test.negative is not None for test in kernel.alpha_thresholds(0.2))
    running = CompRRAEScheme(alpha=0.2, estimate="running")
    out, executed = running.terminate(kernel, x_int)
    assert bool(((executed < hw.cycles) & (out < 0)).any())  # settled below zero
