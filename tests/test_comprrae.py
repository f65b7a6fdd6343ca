"""`comprrae` (issue 6): early negative detection equals dense bit for bit; the bounds always hold;
event counts match a loop reference written here; adaptive termination is lossy and measured."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from sparsexbar.checkpoint import shipped_model_path
from sparsexbar.config import HardwareConfig, preset
from sparsexbar.engine import EngineOptions
from sparsexbar.errors import SparsexbarError
from sparsexbar.frontend import QuantLayer, quantize_model
from sparsexbar.mapping import dense_events
from sparsexbar.schemes import get_scheme
from sparsexbar.schemes.comprrae import CompKernel, CompRRAEScheme
from sparsexbar.simulate import simulate
from tests import nets

CPU = torch.device("cpu")


def small_hw(**over: Any) -> HardwareConfig:
    base = {"array.rows": 8, "array.cols": 10, "ou.rows": 3, "ou.cols": 4, "adc.bits": 8}
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
@settings(max_examples=8)
@given(seed=st.integers(0, 10_000), net_kind=st.sampled_from(["tiny", "residual", "signed"]),
       dac_bits=st.sampled_from([1, 2, 3]), sign=st.sampled_from(["differential", "offset"]))
def test_end_equals_dense_bit_for_bit(seed: int, net_kind: str, dac_bits: int,
                                      sign: str) -> None:
    if net_kind == "tiny":
        net, ch, classes = nets.tiny_cnn(size=8, width=3, seed=seed), 1, 10
    else:  # "signed": no ReLU after the residual add, so the tail conv's input is signed
        net, ch, classes = nets.residual_net(relu_after_add=net_kind == "residual",
                                             seed=seed), 2, 5
    x = nets.random_images(6, channels=ch, size=8, seed=seed)
    y = nets.random_labels(6, classes=classes, seed=seed)
    over = {"dac.bits": dac_bits, "cell.sign": sign, "ou.rows": 8}
    dense = simulate(net, (x, y), "isaac", "dense", overrides=over, batch_size=4)
    comp = simulate(net, (x, y), "isaac", "comprrae", overrides=over, batch_size=4)
    assert dense.outputs is not None and comp.outputs is not None
    assert torch.equal(comp.outputs, dense.outputs)
    assert comp.top1 == dense.top1
    for lay in comp.data["layers"]:
        ev, de = lay["events"], lay["dense_events"]
        assert ev["adc_conversions"] <= de["adc_conversions"]
        assert ev["ou_activations"] <= de["ou_activations"]
        if not lay["followed_by_relu"]:
            assert ev == de
    if net_kind == "signed":
        assert any(lay["input_signed"] and lay["followed_by_relu"]
                   for lay in comp.data["layers"])


@pytest.mark.skipif(not shipped_model_path().is_file(), reason="shipped checkpoint not built")
def test_end_equals_dense_on_shipped_model() -> None:
    from sparsexbar.data import fashion_mnist

    ds = fashion_mnist("test").subset(0, 64)
    data = (ds.to_float(), ds.labels.long())
    dense = simulate("default", data, "isaac", "dense", batch_size=64)
    comp = simulate("default", data, "isaac", "comprrae", batch_size=64)
    assert dense.outputs is not None and comp.outputs is not None
    assert torch.equal(comp.outputs, dense.outputs)
    red = comp.data["vs_dense"]["computation_reduction"]["adc_conversions"]
    assert red > 0


# ---- soundness of the bounds -------------------------------------------------------------------
@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), dac_bits=st.sampled_from([1, 2, 4]),
       input_bits=st.sampled_from([4, 8]), signed=st.booleans())
def test_bounds_always_hold(seed: int, dac_bits: int, input_bits: int, signed: bool) -> None:
    net = conv_relu(seed)
    x = nets.random_images(3, channels=2, size=5, seed=seed, signed=signed)
    hw = small_hw(**{"dac.bits": dac_bits, "numbers.input_bits": input_bits})
    q = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    layer = q.layers[0]
    assert layer.input_signed == signed
    scheme = CompRRAEScheme()
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    assert isinstance(kernel, CompKernel)
    x_int = layer.quantize_input(x)
    final = layer.reference_accumulate(x_int).to(torch.float64)
    steps = list(scheme.trace(kernel, x_int))
    assert len(steps) == hw.cycles
    for _, acc, y_min, y_max in steps:
        assert bool((y_min <= final).all()) and bool((final <= y_max).all())
        assert bool((y_min <= acc).all()) and bool((acc <= y_max).all())
    _, acc, y_min, y_max = steps[-1]
    assert torch.equal(acc, final) and torch.equal(y_min, final) and torch.equal(y_max, final)


# ---- event counts against a loop reference ----------------------------------------------------
def reference_run(layer: QuantLayer, hw: HardwareConfig, x_int: Tensor,
                  alpha: float | None) -> tuple[Tensor, dict[str, int], int]:
    """Plain loops: per output the cycle it stops at, then every array / OU / column counted."""
    n = x_int.shape[0]
    w = layer.matrix().tolist()  # rows x Cout
    cout, rows = layer.out_channels, layer.rows
    patches = layer.patches(x_int).to(torch.int64).tolist()  # (N*P, rows)
    p_count = layer.positions
    cycles, dac = hw.cycles, hw.dac.bits
    pos = [sum(max(w[r][c], 0) for r in range(rows)) for c in range(cout)]
    neg = [sum(min(w[r][c], 0) for r in range(rows)) for c in range(cout)]
    signed = layer.input_signed  # sign-magnitude inputs, two passes interleaved per cycle
    passes = 2 if signed else 1
    scale = (layer.weight_scale * layer.input_scale).tolist()
    bias = layer.bias.tolist()

    def real(acc: float, c: int) -> float:  # float32 like QuantLayer.dequantize
        a = torch.tensor(acc, dtype=torch.float32)
        return float(a * torch.tensor(scale[c], dtype=torch.float32)
                     + torch.tensor(bias[c], dtype=torch.float32))

    executed = [[cycles] * cout for _ in range(n * p_count)]
    out = [[0.0] * cout for _ in range(n * p_count)]
    for m, patch in enumerate(patches):
        for c in range(cout):
            acc = 0
            for t in range(cycles):
                shift = (cycles - 1 - t) * dac
                acc += sum(w[r][c] * (1 if patch[r] >= 0 else -1)
                           * ((abs(patch[r]) >> shift) & (2**dac - 1))
                           for r in range(rows)) * 2**shift
                out[m][c] = float(acc)
                if t == cycles - 1:
                    break
                rem = 2**shift - 1
                if signed:
                    hi, lo = acc + (pos[c] - neg[c]) * rem, acc - (pos[c] - neg[c]) * rem
                else:
                    hi, lo = acc + pos[c] * rem, acc + neg[c] * rem
                if real(hi, c) < 0:
                    executed[m][c] = t + 1
                    break
                if alpha is not None and real(lo, c) > 0 and hi - lo <= alpha * abs(acc):
                    executed[m][c] = t + 1
                    out[m][c] = float(math.floor((hi + lo) / 2))
                    break
    ev = dict.fromkeys(["ou_activations", "adc_conversions", "dac_activations", "cell_reads",
                        "comparisons", "lut_reads"], 0)
    col_channel = [col // (hw.polarities * hw.slices)
                   for col in range(cout * hw.polarities * hw.slices)]
    ncols = len(col_channel)
    row_tiles = [(a, min(a + hw.array.rows, rows)) for a in range(0, rows, hw.array.rows)]
    col_tiles = [(a, min(a + hw.array.cols, ncols)) for a in range(0, ncols, hw.array.cols)]
    busiest_total = 0
    for img in range(n):
        per_array = {}
        for r0, r1 in row_tiles:
            for c0, c1 in col_tiles:
                acts = 0
                for p in range(p_count):
                    m = img * p_count + p
                    for t in range(cycles):
                        for g0 in range(r0, r1, hw.ou.rows):
                            g_rows = min(g0 + hw.ou.rows, r1) - g0
                            for k0 in range(c0, c1, hw.ou.cols):
                                cols = range(k0, min(k0 + hw.ou.cols, c1))
                                live = [col for col in cols
                                        if executed[m][col_channel[col]] > t]
                                if not live:
                                    continue
                                for _pass in range(passes):
                                    acts += 1
                                    ev["ou_activations"] += 1
                                    ev["adc_conversions"] += len(live)
                                    ev["dac_activations"] += g_rows
                                    ev["cell_reads"] += g_rows * len(cols)
                per_array[(r0, c0)] = acts
        busiest_total += max(per_array.values())
    for m in range(n * p_count):
        for c in range(cout):
            checks = min(executed[m][c], cycles - 1)
            ev["lut_reads"] += checks
            ev["comparisons"] += checks * (2 if alpha is not None else 1)
    acc_t = torch.tensor(out, dtype=torch.float64)  # (N*P, Cout)
    acc_t = layer.fold_output(acc_t, n)
    return acc_t, ev, busiest_total


@pytest.mark.parametrize(("alpha", "signed"), [(None, False), (0.4, False), (None, True),
                                               (0.4, True)])
def test_counts_match_loop_reference(alpha: float | None, signed: bool) -> None:
    net = conv_relu(seed=5)
    x = nets.random_images(2, channels=2, size=5, seed=7, signed=signed)
    hw = small_hw(**{"dac.bits": 2})
    q = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    layer = q.layers[0]
    assert layer.followed_by_relu and layer.input_signed == signed
    scheme = CompRRAEScheme(alpha=alpha)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    x_int = layer.quantize_input(x)
    run = scheme.run_layer(kernel, x_int, EngineOptions())
    ref_acc, ref_ev, ref_cycles = reference_run(layer, hw, x_int, alpha)
    assert torch.equal(run.accumulator, ref_acc)
    got = run.events.to_dict()
    for key, value in ref_ev.items():
        assert got[key] == value, key
    assert got["shift_adds"] == ref_ev["adc_conversions"]
    assert run.cycles == ref_cycles
    dense, _ = dense_events(kernel.mapped, 2)
    assert ref_ev["adc_conversions"] < dense.adc_conversions  # something was skipped
    if alpha is not None:  # termination fired too, beyond early negative detection
        _, end_ev, _ = reference_run(layer, hw, x_int, None)
        assert ref_ev["adc_conversions"] < end_ev["adc_conversions"]


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
    red_end = end.data["vs_dense"]["computation_reduction"]["adc_conversions"]
    red_lossy = lossy.data["vs_dense"]["computation_reduction"]["adc_conversions"]
    assert red_lossy > red_end > 0
    assert lossy.data["scheme"]["parameters"]["alpha"] == 1.0
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
    assert get_scheme("comprrae").name == "comprrae"


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


# ---- alpha calibration -------------------------------------------------------------------------
def test_calibration_respects_budget_and_split(tmp_path: Any) -> None:
    import json

    from sparsexbar.cli import main
    from sparsexbar.comprrae_study import calibrate_alphas, fmnist_split, top1_with_alphas
    from sparsexbar.data import fashion_mnist

    x_cal, y_cal = fmnist_split("calibration", 40)
    x_test, _ = fmnist_split("test", 40)
    full = fashion_mnist("test")
    assert torch.equal(x_cal, full.subset(5000, 5040).to_float())
    assert torch.equal(x_test, full.subset(0, 40).to_float())
    net = nets.tiny_fmnist_net()
    hw = preset("isaac")
    q = quantize_model(net, x_cal, 8, 8)
    # budget 0: whatever is chosen keeps the exact top-1; a huge budget takes the largest alpha
    strict = calibrate_alphas(q, hw, x_cal, y_cal, budget_points=0.0, candidates=(8.0, 0.5))
    assert strict.top1 >= strict.exact_top1
    loose = calibrate_alphas(q, hw, x_cal, y_cal, budget_points=100.0, candidates=(8.0, 0.5))
    assert set(loose.alphas) == {"conv1", "conv2"}
    assert all(a == 8.0 for a in loose.alphas.values())
    assert len(loose.trials) == 2
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


def test_reproduce_writes_table_json_and_plot(tmp_path: Any) -> None:
    import json

    from sparsexbar.cli import main
    from sparsexbar.comprrae_study import reproduce_comprrae

    report = reproduce_comprrae(tmp_path, model="tests.nets:tiny_fmnist_net", test_images=20,
                                calibration_images=20, candidates=(1.0,), curve=(4.0,),
                                batch_size=20)
    dense, end, cal = report["rows"]
    assert report["outputs_equal_dense_with_end"]
    assert end["top1_change_points"] == 0.0 and dense["conversion_reduction"] == 0.0
    assert end["conversion_reduction"] > 0
    assert report["curve"][0]["conversion_reduction"] > end["conversion_reduction"]
    saved = json.loads((tmp_path / "comprrae_reproduce.json").read_text())
    assert saved["rows"] == report["rows"]
    assert (tmp_path / "comprrae_tradeoff.png").stat().st_size > 1000
    assert "| END only (exact) |" in (tmp_path / "comprrae_reproduce.md").read_text()
    with pytest.raises(SystemExit) as bad:
        main(["reproduce", "nope"])
    assert bad.value.code == 2


# ---- the fast paths against the loop reference -----------------------------------------------
def _check_against_reference(layer: QuantLayer, hw: HardwareConfig, x_int: Tensor,
                             alpha: float | None) -> CompKernel:
    scheme = CompRRAEScheme(alpha=alpha)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    assert isinstance(kernel, CompKernel)
    run = scheme.run_layer(kernel, x_int, EngineOptions())
    ref_acc, ref_ev, ref_cycles = reference_run(layer, hw, x_int, alpha)
    assert torch.equal(run.accumulator, ref_acc)
    got = run.events.to_dict()
    for key, value in ref_ev.items():
        assert got[key] == value, key
    assert run.cycles == ref_cycles
    out, executed = scheme.terminate(kernel, x_int)  # the calibration's entry point
    assert torch.equal(out, ref_acc) and executed.dtype == torch.int8
    return kernel


@pytest.mark.parametrize("int8", [True, False])
@pytest.mark.parametrize(("alpha", "dac_bits", "signed"), [
    (None, 1, False), (0.4, 1, False), (None, 1, True), (1.6, 2, True)])
def test_backends_match_loop_reference(int8: bool, alpha: float | None, dac_bits: int,
                                       signed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Running sums by the int8 convolution (2^shift in its epilogue) or, int8 made
    unavailable, float32; cycles visited last to first, END stopping early."""
    from sparsexbar import intconv

    if not int8:
        monkeypatch.setattr(intconv, "_int8_conv_available", lambda device: False)
    net = conv_relu(seed=9)
    x = nets.random_images(2, channels=2, size=5, seed=3, signed=signed)
    hw = small_hw(**{"dac.bits": dac_bits})
    layer = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits).layers[0]
    kernel = _check_against_reference(layer, hw, layer.quantize_input(x), alpha)
    assert kernel.direct
    assert (kernel.op.backend == "int8") == (int8 and intconv._int8_conv_available(CPU))


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


@pytest.mark.parametrize(("alpha", "signed"), [(None, False), (0.4, False), (0.4, True)])
def test_wide_layer_matches_loop_reference(alpha: float | None, signed: bool) -> None:
    """Float64 running sums one cycle's contribution apart, from the exact result."""
    x = nets.random_images(1, channels=64, size=3, seed=5, signed=signed)
    net = WideConv().eval()
    hw = small_hw(**{"array.rows": 64, "ou.rows": 16, "dac.bits": 2})
    layer = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits).layers[0]
    x_int = layer.quantize_input(x)
    kernel = _check_against_reference(layer, hw, x_int, alpha)
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
