"""The engine's oracle (DESIGN.md 2.3): ideal device + lossless ADC gives exactly the
integer-quantized network's outputs, through the bit-accurate path and the exact shortcut, for
random conv/linear/residual nets, both sign encodings, both bit orders and many array/OU/cell/DAC
sizes."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import sparsexbar
from sparsexbar import EngineOptions
from sparsexbar.core import intconv
from sparsexbar.core.config import HardwareConfig, preset
from sparsexbar.core.engine import (
    LayerKernel,
    accumulate,
    exact_accumulate,
    exact_accumulator,
    exact_from_magnitudes,
)
from sparsexbar.core.engine.exact import exact_int8_op
from sparsexbar.core.frontend import QuantizedModel, QuantLayer, quantize_model
from sparsexbar.core.mapping import MappedLayer, map_dense
from sparsexbar.core.runtime import torch_threads
from sparsexbar.schemes.counting import narrow_magnitudes
from tests import nets

BIT_ACCURATE = EngineOptions(exact_shortcut=False)
SHORTCUT = EngineOptions()


def lossless_adc_bits(ou_rows: int, cell_bits: int, dac_bits: int) -> int:
    """Smallest ADC resolution with ou_rows * (2^cell-1) * (2^dac-1) <= 2^bits - 1."""
    worst = ou_rows * (2**cell_bits - 1) * (2**dac_bits - 1)
    return max(1, math.ceil(math.log2(worst + 1)))


def make_hw(array_rows: int = 32, array_cols: int = 32, ou_rows: int = 4, ou_cols: int = 4,
            cell_bits: int = 2, dac_bits: int = 1, sign: str = "differential",
            bit_order: str = "lsb_first", weight_bits: int = 8, input_bits: int = 8,
            slices: int | None = None, adc_bits: int | None = None) -> HardwareConfig:
    bits = lossless_adc_bits(ou_rows, cell_bits, dac_bits) if adc_bits is None else adc_bits
    return preset("isaac").with_overrides({
        "array.rows": array_rows, "array.cols": array_cols, "ou.rows": ou_rows,
        "ou.cols": ou_cols, "cell.bits": cell_bits, "cell.sign": sign, "cell.slices": slices,
        "dac.bits": dac_bits, "adc.bits": bits, "numbers.weight_bits": weight_bits,
        "numbers.input_bits": input_bits, "numbers.bit_order": bit_order,
    })


@dataclass
class Checked:
    """Per-layer facts collected while checking a network layer by layer."""

    mapped: dict[str, MappedLayer]
    calls: int = 0


def check_layers(qmodel: QuantizedModel, hw: HardwareConfig, x: Tensor,
                 budget_mb: float = 512.0) -> tuple[Tensor, Checked]:
    """Run the integer network; at every crossbar layer compare the bit-accurate kernel, the
    shortcut path and the full per-group path (a non-ideal device whose read noise, 1e-9, is
    far below half a level: every active group is converted and must read p exactly) with
    the exact integer accumulator (returned, so later layers see exact inputs). Returns the
    logits and the mapped layers."""
    checked = Checked({})
    faint = hw.with_overrides({"device.read_noise_sigma": 1e-9})
    bit_accurate = EngineOptions(memory_budget_mb=budget_mb, exact_shortcut=False)
    shortcut = EngineOptions(memory_budget_mb=budget_mb)

    def executor(layer: QuantLayer, x_int: Tensor) -> Tensor:
        ref = layer.reference_accumulate(x_int)
        mapped = map_dense(layer, hw)
        checked.mapped[layer.name] = mapped
        assert not mapped.adc_can_clip(), layer.name
        assert mapped.exact_linear()
        kernel = LayerKernel(mapped, torch.device("cpu"))
        slow = kernel.accumulate(x_int, bit_accurate)
        fast = accumulate(kernel, x_int, shortcut)
        full = LayerKernel(map_dense(layer, faint), torch.device("cpu")).accumulate(
            x_int, bit_accurate)
        for got in (slow, fast, full):
            assert got.shape == ref.shape
            assert bool((got == torch.round(got)).all())
            assert torch.equal(got.to(torch.int64), ref), layer.name
        checked.calls += 1
        return ref

    logits = qmodel.run(x, executor)
    return logits, checked


def simulate_logits(net: nn.Module, x: Tensor, hw: HardwareConfig,
                    options: EngineOptions) -> tuple[Tensor, dict[str, Any]]:
    labels = torch.zeros(x.shape[0], dtype=torch.int64)
    res = sparsexbar.simulate(net, (x, labels), hw=hw, scheme="dense", options=options,
                              batch_size=max(1, x.shape[0]))
    assert res.outputs is not None
    return res.outputs, res.to_json()


# ---- property test over random nets and hardware ------------------------------------------
@st.composite
def net_and_hw(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], bool]:
    k1 = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    stride = draw(st.integers(1, 2))
    reach = dilation * (k1 - 1) + 1
    size = draw(st.integers(max(4, reach - 2 * padding), 7))
    net = dict(in_ch=draw(st.integers(1, 3)), c1=draw(st.integers(1, 5)),
               c2=draw(st.integers(1, 4)), k1=k1, stride=stride, padding=padding,
               dilation=dilation, k2=draw(st.sampled_from([1, 3])), size=size,
               classes=draw(st.integers(2, 6)), relu_after_add=draw(st.booleans()),
               seed=draw(st.integers(0, 10_000)))
    array_rows = draw(st.sampled_from([16, 24, 32, 64]))
    array_cols = draw(st.sampled_from([16, 20, 32, 64]))
    cell_bits = draw(st.integers(1, 4))
    dac_bits = draw(st.integers(1, 4))
    weight_bits = draw(st.sampled_from([3, 4, 6, 8]))
    sign = draw(st.sampled_from(["differential", "offset"]))
    stored = weight_bits - 1 if sign == "differential" else weight_bits
    minimum = math.ceil(stored / cell_bits)
    hw = dict(array_rows=array_rows, array_cols=array_cols,
              ou_rows=draw(st.integers(1, min(16, array_rows))),
              ou_cols=draw(st.integers(1, min(16, array_cols))),
              cell_bits=cell_bits, dac_bits=dac_bits, sign=sign,
              bit_order=draw(st.sampled_from(["lsb_first", "msb_first"])),
              weight_bits=weight_bits,
              input_bits=draw(st.integers(max(dac_bits, 2), 8)),
              slices=draw(st.sampled_from([None, minimum, minimum + 1])))
    signed_input = draw(st.booleans())
    return net, hw, signed_input


@settings(max_examples=25, deadline=None)
@given(net_and_hw())
def test_random_nets_are_exact(params: tuple[dict[str, Any], dict[str, Any], bool]) -> None:
    net_kw, hw_kw, signed_input = params
    net = nets.residual_net(**net_kw)
    x = nets.random_images(2, net_kw["in_ch"], net_kw["size"], seed=net_kw["seed"],
                           signed=signed_input)
    hw = make_hw(**hw_kw)
    qmodel = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    ref_logits = qmodel.run_reference(x)
    logits, checked = check_layers(qmodel, hw, x)
    assert checked.calls == 4
    assert torch.equal(logits, ref_logits)
    assert qmodel.layer("stem").input_signed is signed_input
    assert qmodel.layer("tail").input_signed is (not net_kw["relu_after_add"])
    assert not qmodel.layer("body").input_signed and not qmodel.layer("fc").input_signed
    # The whole pipeline, bit-accurate path.
    out, result = simulate_logits(net, x, hw, BIT_ACCURATE)
    assert torch.equal(out, ref_logits)
    assert result["accuracy"]["top1"] == result["accuracy"]["quantized_top1"]
    assert not any(lay["adc_can_clip"] for lay in result["layers"])


# ---- deterministic cases covering the corners ----------------------------------------------
HW_CASES = {
    "isaac-small-arrays": dict(array_rows=16, array_cols=16, ou_rows=4, ou_cols=4),
    "offset-msb": dict(sign="offset", bit_order="msb_first", array_rows=24, array_cols=20,
                       ou_rows=3, ou_cols=5),
    "cell1-dac1": dict(cell_bits=1, dac_bits=1, ou_rows=16, ou_cols=16),
    "cell4-dac4": dict(cell_bits=4, dac_bits=4, ou_rows=9, ou_cols=8, array_rows=64,
                       array_cols=20),
    "cell3-dac3-ragged": dict(cell_bits=3, dac_bits=3, ou_rows=5, ou_cols=7, array_rows=17,
                              array_cols=23),
    "offset-cell4-dac2": dict(sign="offset", cell_bits=4, dac_bits=2, ou_rows=8, ou_cols=2,
                              array_cols=8),
    "ou1x1": dict(ou_rows=1, ou_cols=1, array_rows=16, array_cols=16, cell_bits=2, dac_bits=2),
    "whole-array-ou": dict(ou_rows=32, ou_cols=32, array_rows=32, array_cols=32),
    "extra-slices": dict(slices=5, cell_bits=2),
    "wide-weights": dict(weight_bits=12, cell_bits=4, dac_bits=2, input_bits=6),
}


@pytest.mark.parametrize("case", list(HW_CASES))
def test_residual_net_exact_on_every_case(case: str) -> None:
    hw = make_hw(**HW_CASES[case])
    net = nets.residual_net(in_ch=3, c1=6, c2=4, k1=3, stride=1, padding=1, size=8, classes=5,
                            relu_after_add=False, seed=11)
    x = nets.random_images(2, 3, 8, seed=5)
    qmodel = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    ref = qmodel.run_reference(x)
    logits, checked = check_layers(qmodel, hw, x)
    assert torch.equal(logits, ref)
    # Layers larger than one array in both directions.
    fc = checked.mapped["fc"]
    assert len(fc.row_tiles) > 1
    assert any(len(m.col_tiles) > 1 for m in checked.mapped.values())
    out, _ = simulate_logits(net, x, hw, BIT_ACCURATE)
    assert torch.equal(out, ref)


def test_signed_inputs_run_two_passes_and_stay_exact() -> None:
    hw = make_hw(array_rows=16, array_cols=16, ou_rows=8, ou_cols=4, cell_bits=2, dac_bits=2)
    net = nets.residual_net(in_ch=2, c1=4, c2=3, relu_after_add=False, seed=3)
    x = nets.random_images(3, 2, 8, seed=9, signed=True)
    assert bool((x < 0).any())
    qmodel = quantize_model(net, x, 8, 8)
    assert qmodel.layer("stem").input_signed  # network input with negative values
    assert qmodel.layer("tail").input_signed  # conv after a residual add without ReLU
    assert not qmodel.layer("body").input_signed
    assert qmodel.layer("stem").passes == 2
    x_int = qmodel.layer("stem").quantize_input(x)
    assert bool((x_int < 0).any()) and bool((x_int > 0).any())
    ref = qmodel.run_reference(x)
    logits, _ = check_layers(qmodel, hw, x)
    assert torch.equal(logits, ref)
    out, result = simulate_logits(net, x, hw, BIT_ACCURATE)
    assert torch.equal(out, ref)
    signed = {lay["name"]: lay["input_signed"] for lay in result["layers"]}
    assert signed == {"stem": True, "body": False, "tail": True, "fc": False}


def test_unsigned_network_input_is_not_signed() -> None:
    net = nets.residual_net(seed=1)
    x = nets.random_images(2, 2, 8, seed=1)
    qmodel = quantize_model(net, x, 8, 8)
    assert not qmodel.layer("stem").input_signed
    assert qmodel.layer("stem").passes == 1


def _calibration_net() -> nn.Module:
    """Conv-ReLU, a BatchNorm after the ReLU (not folded into a conv: it runs as a module),
    conv-ReLU, Linear."""
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
                        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 8 * 8, 10))
    return nets.randomize_bn(nets.seeded_init(net, 3), 3).eval()


def test_input_scales_come_from_a_float64_run_rounded_to_float32() -> None:
    """Each layer's input scale is float32(max |input|) / input_max, the maxima of the
    model run in float64 (here, all images with forward hooks; calibration runs again in
    float64 only the images near each float32 maximum): no CPU's float32 kernels (oneDNN
    sums in another order with and without AVX-512) move a scale by an ulp. The same on one
    thread and two, and in batches; the model's parameters are float32 again afterwards."""
    net = _calibration_net()
    x = nets.random_images(16, 2, 8, seed=3)
    maxima: list[float] = []
    ref = copy.deepcopy(net).double()
    for mod in ref.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            mod.register_forward_pre_hook(
                lambda _m, args: maxima.append(float(args[0].abs().max())))
    with torch.no_grad():
        ref(x.double())
    scales = []
    for threads in (1, 2):
        with torch_threads(threads):
            qmodel = quantize_model(net, x, 8, 8)
        scales.append([layer.input_scale for layer in qmodel.layers])
        tops = [layer.input_max for layer in qmodel.layers]
        assert all(p.dtype == torch.float32 for p in qmodel.graph_module.parameters())
        assert all(b.dtype == torch.float32 for b in qmodel.graph_module.buffers()
                   if b.is_floating_point())
    assert len(maxima) == len(tops) == 3
    expected = [float(torch.tensor(m, dtype=torch.float32)) / top
                for m, top in zip(maxima, tops, strict=True)]
    assert scales[0] == scales[1] == expected
    # in batches: the images to run again are found across them
    in_batches = quantize_model(net, [x[:5], x[5:9], x[9:]], 8, 8)
    assert [layer.input_scale for layer in in_batches.layers] == expected
    assert all(p.dtype == torch.float32 for p in net.parameters())  # the caller's model


def test_small_memory_budget_chunks_and_stays_exact() -> None:
    hw = make_hw(array_rows=16, array_cols=16, ou_rows=4, ou_cols=4, cell_bits=2, dac_bits=1)
    net = nets.residual_net(in_ch=2, c1=6, c2=4, size=8, relu_after_add=False, seed=4)
    x = nets.random_images(4, 2, 8, seed=4, signed=True)
    qmodel = quantize_model(net, x, 8, 8)
    stem = qmodel.layer("stem")
    kernel = LayerKernel(map_dense(stem, hw), torch.device("cpu"))
    # chunks really are smaller than the batch
    assert kernel.images_per_chunk((2, 8, 8), 0.01) < x.shape[0]
    ref = qmodel.run_reference(x)
    logits, _ = check_layers(qmodel, hw, x, budget_mb=0.01)
    assert torch.equal(logits, ref)
    out, _ = simulate_logits(net, x, hw, EngineOptions(memory_budget_mb=0.01,
                                                       exact_shortcut=False))
    assert torch.equal(out, ref)
    # Chunked and unchunked bit-accurate accumulators agree bit for bit.
    x_int = stem.quantize_input(x)
    small = kernel.accumulate(x_int, EngineOptions(memory_budget_mb=0.01, exact_shortcut=False))
    big = kernel.accumulate(x_int, BIT_ACCURATE)
    assert torch.equal(small, big)


@pytest.mark.parametrize("sign", ["differential", "offset"])
def test_linear_only_net_with_batchnorm1d_is_exact(sign: str) -> None:
    hw = make_hw(array_rows=16, array_cols=24, ou_rows=5, ou_cols=3, cell_bits=2, dac_bits=2,
                 sign=sign)
    net = nets.mlp(features=64, hidden=20, classes=7, seed=2)
    x = nets.random_images(5, 1, 8, seed=2)
    qmodel = quantize_model(net, x, 8, 8)
    assert [q.kind for q in qmodel.layers] == ["linear", "linear"]
    ref = qmodel.run_reference(x)
    logits, checked = check_layers(qmodel, hw, x)
    assert torch.equal(logits, ref)
    assert len(checked.mapped["fc1"].row_tiles) == 4 and len(checked.mapped["fc1"].col_tiles) > 1
    out, _ = simulate_logits(net, x, hw, BIT_ACCURATE)
    assert torch.equal(out, ref)


def test_tiny_cnn_exact_on_presets() -> None:
    net = nets.tiny_cnn(in_ch=1, classes=10, size=8, width=4, seed=7)
    x = nets.random_images(3, 1, 8, seed=7)
    for name in ("isaac", "pattern-nvmsa"):
        base = preset(name)
        hw = base.with_overrides({"adc.bits": lossless_adc_bits(base.ou.rows, base.cell.bits,
                                                                base.dac.bits)})
        qmodel = quantize_model(net, x, 8, 8)
        ref = qmodel.run_reference(x)
        logits, _ = check_layers(qmodel, hw, x)
        assert torch.equal(logits, ref)


def test_zero_input_and_zero_weight_channel_are_exact() -> None:
    """A layer that only ever sees zeros (scale 1) and an all-zero output channel."""
    hw = make_hw(array_rows=16, array_cols=16)
    net = nets.single_conv(in_ch=2, out_ch=3, k=3, padding=1, seed=1)
    with torch.no_grad():
        net.conv.weight[1].zero_()
    x = nets.random_images(2, 2, 6, seed=1)
    qmodel = quantize_model(net, x, 8, 8)
    layer = qmodel.layers[0]
    assert int(layer.weight_int[1].abs().sum()) == 0
    logits, _ = check_layers(qmodel, hw, x)
    assert torch.equal(logits, qmodel.run_reference(x))
    zeros = torch.zeros_like(x)
    logits, _ = check_layers(qmodel, hw, zeros)
    assert torch.equal(logits, qmodel.run_reference(zeros))


def test_bit_accurate_path_exact_for_accumulators_above_2_pow_24() -> None:
    # One linear layer, 700 inputs near the top code 255, weights +-127 in one 8-bit cell each:
    # per-row products up to 127*255, accumulators ~2e7 > 2^24.
    hw = make_hw(array_rows=1024, array_cols=16, ou_rows=1, ou_cols=1, cell_bits=8, dac_bits=8,
                 weight_bits=8, input_bits=8)
    assert hw.adc.bits == 16
    fc = nn.Linear(700, 2, bias=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fc.weight.copy_(torch.where(torch.rand(2, 700, generator=gen) < 0.98, 1.0, -1.0))
    net = nn.Sequential(nn.Flatten(), fc).eval()
    x = 0.9 + 0.1 * torch.rand((3, 700), generator=gen)
    x[:, :10] = 1.0
    qmodel = quantize_model(net, x, 8, 8)
    layer = qmodel.layers[0]
    x_int = layer.quantize_input(x)
    ref = layer.reference_accumulate(x_int)
    assert int(ref.abs().max()) > 2**24
    kernel = LayerKernel(map_dense(layer, hw), torch.device("cpu"))
    got = kernel.accumulate(x_int, BIT_ACCURATE)
    assert torch.equal(got.to(torch.int64), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_integer_reference() -> None:
    """On CUDA too (TF32 must not leak into the exact paths)."""
    hw = make_hw(array_rows=64, array_cols=64, ou_rows=8, ou_cols=8, cell_bits=2, dac_bits=2)
    net = nets.residual_net(in_ch=3, c1=16, c2=8, size=8, relu_after_add=False, seed=5)
    x = nets.random_images(8, 3, 8, seed=5)
    qmodel = quantize_model(net, x, 8, 8)
    ref = qmodel.run_reference(x)
    labels = torch.zeros(8, dtype=torch.int64)
    for opts in (BIT_ACCURATE, SHORTCUT):
        res = sparsexbar.simulate(net, (x, labels), hw=hw, options=opts, device="cuda")
        assert res.outputs is not None
        assert torch.equal(res.outputs.cpu(), ref)


@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 5), k=st.sampled_from([1, 2, 3, 5]), stride=st.sampled_from([1, 2, 3]),
       padding=st.integers(0, 2), dilation=st.sampled_from([1, 2]), size=st.integers(5, 11),
       dtype=st.sampled_from([torch.uint8, torch.int32, torch.int64]), seed=st.integers(0, 99))
def test_integer_patches_equal_float_im2col(cin: int, k: int, stride: int, padding: int,
                                            dilation: int, size: int, dtype: torch.dtype,
                                            seed: int) -> None:
    """im2col of integer inputs (strided copies per kernel element) equals torch's float
    im2col element for element, with strides, padding and dilation."""
    if (k - 1) * dilation + 1 > size + 2 * padding:
        return  # no output position
    net = nets.single_conv(cin, 2, k, stride=stride, padding=padding, dilation=dilation,
                           seed=seed)
    x = nets.random_images(2, channels=cin, size=size, seed=seed)
    layer = quantize_model(net, x, 8, 8).layers[0]
    x_int = torch.randint(0, 256, (2, cin, size, size),
                          generator=torch.Generator().manual_seed(seed))
    want = layer.patches(x_int.to(torch.float32))
    got = layer.patches(x_int.to(dtype))
    assert got.dtype == dtype and got.shape == (2 * layer.positions, layer.rows)
    assert torch.equal(got.to(torch.float32), want)


# ---- the exact shortcut's backends (engine/exact.py) -----------------------------------------


def _conv_layers(net: nn.Module, x: Tensor, weight_bits: int = 8,
                 input_bits: int = 8) -> list[tuple[QuantLayer, Tensor]]:
    """(layer, its integer input) of every conv layer of the quantized net on x."""
    qmodel = quantize_model(net, x, weight_bits, input_bits)
    seen: list[tuple[QuantLayer, Tensor]] = []

    def record(layer: QuantLayer, x_int: Tensor) -> Tensor:
        if layer.kind == "conv":
            seen.append((layer, x_int.clone()))
        return layer.reference_accumulate(x_int).to(torch.float64)

    qmodel.run(x, record)
    return seen


@pytest.mark.parametrize("net_name", ["residual", "strided", "grouped"])
def test_exact_shortcut_int8_convolution_equals_the_reference(net_name: str) -> None:
    """Unsigned 8-bit inputs, 8-bit weights: the int8 convolution (where this CPU has it)
    gives the integer accumulator exactly, on the layer's inputs, all-zero and all-255 inputs;
    the result is float64 and contiguous."""
    net = {"residual": nets.residual_net(in_ch=3, c1=8, c2=5, seed=11),
           "strided": nets.residual_net(in_ch=2, c1=6, c2=4, k1=5, stride=2, padding=2,
                                        dilation=1, size=12, seed=12),
           "grouped": nets.grouped_net(in_ch=2, channels=6, groups=6, seed=13)}[net_name]
    x = nets.random_images(3, 3 if net_name == "residual" else 2,
                           12 if net_name == "strided" else 8, seed=5)
    layers = [(lay, xi) for lay, xi in _conv_layers(net, x) if not lay.input_signed]
    assert layers
    int8 = intconv._int8_conv_available(torch.device("cpu"))
    for layer, x_int in layers:
        op = exact_int8_op(layer, torch.device("cpu"))
        assert (op is not None) == int8, layer.name
        for xi in (x_int, torch.zeros_like(x_int), torch.full_like(x_int, layer.input_max)):
            got = exact_accumulate(layer, xi)
            assert got.dtype == torch.float64 and got.is_contiguous()
            assert torch.equal(got, layer.reference_accumulate(xi).to(torch.float64))
            # the same from the narrow magnitudes a scheme already holds (uint8, channels-last),
            # and as a read-only result (float32 where exact: no float64 copy)
            shared = exact_from_magnitudes(layer, narrow_magnitudes(layer, xi), xi)
            native = exact_accumulator(layer, xi)
            for value in (shared, native):
                assert value.dtype == torch.float32  # every |value| < 2^24 here
                assert torch.equal(value.to(torch.float64), got)
            # the frontend dequantizes either to the same float32 output, in the
            # accumulator's memory format (channels-last from the int8 convolution)
            real = layer.dequantize(native)
            assert real.dtype == torch.float32 and real.stride() == native.stride()
            assert torch.equal(real, layer.dequantize(got))


def test_exact_shortcut_int8_refused_where_it_would_be_wrong(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No int8 convolution for signed inputs, inputs beyond 255 or weights beyond int8, and
    none for an input that holds a value the layer cannot (it would wrap in uint8): each
    takes the float path and stays exact."""
    cpu = torch.device("cpu")
    net = nets.residual_net(in_ch=2, c1=4, c2=3, relu_after_add=False, seed=3)
    x = nets.random_images(2, 2, 8, seed=9, signed=True)
    signed = [lay for lay, _ in _conv_layers(net, x) if lay.input_signed]
    assert signed and all(exact_int8_op(lay, cpu) is None for lay in signed)
    for layer, x_int in _conv_layers(net, x):
        assert torch.equal(exact_accumulate(layer, x_int),
                           layer.reference_accumulate(x_int).to(torch.float64))
        # from the magnitudes (signed: positive minus negative part)
        assert torch.equal(exact_from_magnitudes(layer, narrow_magnitudes(layer, x_int), x_int),
                           layer.reference_accumulate(x_int).to(torch.float64))
    # 9-bit inputs, 10-bit weights: outside uint8 / int8.
    wide_in = _conv_layers(nets.single_conv(seed=2), nets.random_images(2, 2, 6, seed=2),
                           input_bits=9)
    wide_w = _conv_layers(nets.single_conv(seed=2), nets.random_images(2, 2, 6, seed=2),
                          weight_bits=10)
    for layer, x_int in wide_in + wide_w:
        assert exact_int8_op(layer, cpu) is None
        assert torch.equal(exact_accumulate(layer, x_int),
                           layer.reference_accumulate(x_int).to(torch.float64))
        assert torch.equal(exact_from_magnitudes(layer, narrow_magnitudes(layer, x_int), x_int),
                           layer.reference_accumulate(x_int).to(torch.float64))
    assert int(wide_in[0][1].max()) > 255 and int(wide_w[0][0].weight_int.abs().max()) > 127
    # An 8-bit layer given a value above its input range: the guard sends it to the float
    # path (a uint8 copy would wrap 300 to 44).
    layer, x_int = _conv_layers(nets.single_conv(seed=4), nets.random_images(2, 2, 6, seed=4))[0]
    bad = x_int.clone()
    bad[0, 0, 0, 0] = 300
    assert torch.equal(exact_accumulate(layer, bad),
                       layer.reference_accumulate(bad).to(torch.float64))
    # Without the CPU's int8 convolution every layer takes the float path, still exact.
    monkeypatch.setattr(intconv, "_int8_conv_available", lambda device: False)
    layer, x_int = _conv_layers(nets.single_conv(seed=5), nets.random_images(2, 2, 6, seed=5))[0]
    assert exact_int8_op(layer, cpu) is None
    assert torch.equal(exact_accumulate(layer, x_int),
                       layer.reference_accumulate(x_int).to(torch.float64))


def test_a_quantized_input_is_trusted_only_as_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """`QuantLayer.holds_quantized`: the latest `quantize_input` result and its views, while
    unchanged, hold integers in the input range (the exact shortcut then skips its range
    check); a copy, a changed tensor or an older result does not, and the shortcut checks
    those itself. Either way the accumulator equals the reference."""
    cpu = torch.device("cpu")
    net = nets.single_conv(seed=4)
    x = nets.random_images(3, 2, 6, seed=4)
    layer = quantize_model(net, x, 8, 8).layers[0]
    if not intconv._int8_conv_available(cpu):  # the range check guards the int8 path only
        pytest.skip("oneDNN's int8 convolution is unavailable on this CPU (no VNNI)")
    assert exact_int8_op(layer, cpu) is not None
    x_int = layer.quantize_input(x)
    assert layer.holds_quantized(x_int) and layer.holds_quantized(x_int[1:])
    assert not layer.holds_quantized(x_int.clone())
    checks: list[int] = []
    real_aminmax = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: checks.append(1) or real_aminmax(t))
    reference = layer.reference_accumulate(x_int).to(torch.float64)
    assert torch.equal(exact_accumulate(layer, x_int), reference) and checks == []
    assert torch.equal(exact_accumulate(layer, x_int[1:]), reference[1:]) and checks == []
    copy = x_int.clone()
    assert torch.equal(exact_accumulate(layer, copy), reference) and checks == [1]
    # changed in place (the version counter moves, also for views): checked, and a value the
    # layer cannot hold goes to the float path, exact
    x_int[0, 0, 0, 0] = 300
    assert not layer.holds_quantized(x_int) and not layer.holds_quantized(x_int[:1])
    assert torch.equal(exact_accumulate(layer, x_int),
                       layer.reference_accumulate(x_int).to(torch.float64))
    assert checks == [1, 1]
    # a newer result replaces the older one
    older = layer.quantize_input(x)
    newer = layer.quantize_input(x * 0.5)
    assert layer.holds_quantized(newer) and not layer.holds_quantized(older)


def test_exact_shortcut_cache_follows_the_weights() -> None:
    """A layer copied with new weights (`dataclasses.replace`) builds its own int8 operator:
    the cache is not carried over, so the copy's accumulator uses the copy's weights."""
    layer, x_int = _conv_layers(nets.single_conv(seed=6), nets.random_images(2, 2, 6, seed=6))[0]
    first = exact_accumulate(layer, x_int)
    assert torch.equal(first, layer.reference_accumulate(x_int).to(torch.float64))
    flipped = dataclasses.replace(layer, weight_int=-layer.weight_int)
    assert not flipped._cache
    got = exact_accumulate(flipped, x_int)
    assert torch.equal(got, flipped.reference_accumulate(x_int).to(torch.float64))
    assert torch.equal(got, -first)
