"""`sparsexbar.simulate()` end to end on tiny nets: the result schema of DESIGN.md 4, the
resolved hardware, accuracy in ideal lossless mode, batch-size independence, seeded device
effects, the written result files, and bad inputs refused with the package's errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import sparsexbar
from sparsexbar import EngineOptions, HardwareConfig, Result, simulate
from sparsexbar.app.report import write_result
from sparsexbar.core.config import preset
from sparsexbar.core.errors import DataError, SparsexbarError, UnsupportedModelError
from sparsexbar.core.events import Events
from sparsexbar.core.frontend import quantize_model
from sparsexbar.schemes import get_scheme
from tests import nets

HW = preset("isaac").with_overrides({"array.rows": 32, "array.cols": 32, "ou.rows": 8,
                                     "ou.cols": 8})  # 8*3*1 = 24 <= 255: lossless


def data(n: int = 10, seed: int = 0, size: int = 8) -> tuple[Tensor, Tensor]:
    return nets.random_images(n, 1, size, seed=seed), nets.random_labels(n, 10, seed=seed)


def tiny() -> nn.Module:
    return nets.tiny_cnn(1, 10, 8, 4, seed=0)


def sim(model: nn.Module | None = None, d: Any = None, **kw: Any) -> Result:
    kw.setdefault("hw", HW)
    return simulate(model if model is not None else tiny(), d if d is not None else data(), **kw)


# ---- the result schema ------------------------------------------------------------------------
def test_result_has_every_key_of_the_schema() -> None:
    res = sim(limit=7, batch_size=4)
    out = res.to_json()
    for key in ("version", "model", "dataset", "num_images", "hardware", "scheme", "accuracy",
                "layers", "totals", "vs_dense"):
        assert key in out, key
    assert out["version"] == sparsexbar.__version__
    assert out["model"] == "TinyCNN" and out["dataset"] == "tensors"
    assert out["num_images"] == 7
    assert out["scheme"]["name"] == "dense" and isinstance(out["scheme"]["parameters"], dict)
    assert set(out["accuracy"]) >= {"top1", "float_top1", "quantized_top1"}
    for v in out["accuracy"].values():
        assert 0.0 <= v <= 1.0
    assert [lay["name"] for lay in out["layers"]] == ["conv1", "conv2", "fc"]
    assert [lay["kind"] for lay in out["layers"]] == ["conv", "conv", "linear"]
    for lay in out["layers"]:
        for key in ("name", "kind", "rows", "cols", "arrays", "events", "dense_events", "cycles",
                    "energy_pj", "area_um2"):
            assert key in lay, key
        assert set(lay["events"]) == set(Events.names())
        assert set(lay["dense_events"]) == set(Events.names())
        assert all(type(v) is int and v >= 0 for v in lay["events"].values())
        assert "total" in lay["energy_pj"] and len(lay["energy_pj"]) > 1
        assert "total" in lay["area_um2"] and len(lay["area_um2"]) > 1
        assert type(lay["rows"]) is int and type(lay["cols"]) is int
        assert type(lay["arrays"]) is int and type(lay["cycles"]) is int
    totals = out["totals"]
    for key in ("events", "cycles", "arrays", "energy_pj", "area_um2", "latency_s",
                "images_per_s"):
        assert key in totals, key
    assert "total" in totals["energy_pj"] and "total" in totals["area_um2"]
    assert totals["latency_s"] > 0 and totals["images_per_s"] == pytest.approx(
        1 / totals["latency_s"], rel=1e-12)
    for key in ("speedup", "energy_efficiency", "area_efficiency", "computation_reduction"):
        assert key in out["vs_dense"], key
    # Plain JSON: it survives a dumps/loads round trip unchanged.
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert res.top1 == out["accuracy"]["top1"]


def test_hardware_in_the_result_round_trips_into_the_config() -> None:
    hw = HW.with_overrides({"cell.sign": "offset", "numbers.bit_order": "msb_first"})
    out = sim(hw=hw, limit=3).to_json()
    assert HardwareConfig.from_dict(out["hardware"]) == hw
    assert out["hardware"]["cell"]["sign"] == "offset"
    # Overrides are resolved into the recorded hardware too.
    out = sim(hw="isaac", overrides={"ou.rows": 9}, limit=2).to_json()
    assert HardwareConfig.from_dict(out["hardware"]) == preset("isaac").with_overrides(
        {"ou.rows": 9})


def test_ideal_lossless_run_is_the_quantized_network() -> None:
    images, labels = data(12, seed=4)
    res = sim(d=(images, labels), batch_size=5)
    acc = res.to_json()["accuracy"]
    assert acc["top1"] == acc["quantized_top1"]
    qmodel = quantize_model(tiny(), images, 8, 8)
    ref = qmodel.run_reference(images)
    assert res.outputs is not None and torch.equal(res.outputs, ref)
    assert acc["quantized_top1"] == (ref.argmax(1) == labels).float().mean().item()
    float_acc = (qmodel.run_float(images).argmax(1) == labels).float().mean().item()
    assert acc["float_top1"] == float_acc
    assert not any(lay["adc_can_clip"] for lay in res.to_json()["layers"])


def test_labels_are_matched_to_the_right_images() -> None:
    """Accuracy is exactly 1 when the labels are the network's own predictions."""
    images, _ = data(9, seed=8)
    ref = quantize_model(tiny(), images, 8, 8).run_reference(images)
    res = sim(d=(images, ref.argmax(1)), batch_size=4)
    assert res.to_json()["accuracy"]["top1"] == 1.0
    assert res.to_json()["accuracy"]["quantized_top1"] == 1.0


def test_batch_size_changes_neither_outputs_nor_events() -> None:
    a = sim(batch_size=3)
    b = sim(batch_size=8)
    c = sim(batch_size=10)
    assert a.outputs is not None and b.outputs is not None and c.outputs is not None
    assert torch.equal(a.outputs, b.outputs) and torch.equal(a.outputs, c.outputs)
    assert a.to_json() == b.to_json() == c.to_json()


def test_batch_size_does_not_change_programmed_variation() -> None:
    """Conductance variation is programmed once per cell: independent of the batching."""
    over = {"device.variation": "lognormal", "device.variation_sigma": 0.2, "device.seed": 3}
    d = data(5, seed=1)
    a = sim(d=d, overrides=over, batch_size=2)
    b = sim(d=d, overrides=over, batch_size=5)
    assert a.outputs is not None and b.outputs is not None
    assert torch.equal(a.outputs, b.outputs)


def test_limit_takes_the_first_images() -> None:
    """`limit` runs the first images, calibrated as the whole run is (on the data's first
    `calibration_images`): its outputs are the first rows of the whole run's. A run of 4
    calibrated on its 4 and its outputs differed from the whole run's."""
    images, labels = data(10, seed=2)
    res = sim(d=(images, labels), limit=4)
    whole = sim(d=(images, labels))
    alone = sim(d=(images[:4], labels[:4]), calibration=images)
    assert res.to_json()["num_images"] == 4
    assert res.outputs is not None and whole.outputs is not None and alone.outputs is not None
    assert torch.equal(res.outputs, whole.outputs[:4]) and torch.equal(res.outputs, alone.outputs)
    own = sim(d=(images[:4], labels[:4]))  # calibrated on the 4: another quantization here
    assert own.outputs is not None and not torch.equal(own.outputs, res.outputs)
    few = sim(d=(images, labels), limit=4, calibration_images=4)  # the old behaviour, asked
    assert few.outputs is not None and torch.equal(few.outputs, own.outputs)


def test_other_data_and_config_forms_give_the_same_result(tmp_path: Path) -> None:
    images, labels = data(4, seed=5)
    base = sim(d=(images, labels)).to_json()
    ds = TensorDataset(images, labels)
    for d, name in ((ds, "TensorDataset"), (DataLoader(ds, batch_size=4),
                                             "DataLoader(TensorDataset)")):
        out = sim(d=d).to_json()
        assert out["dataset"] == name  # what the result records as the data
        out["dataset"] = base["dataset"]
        assert out == base
    path = tmp_path / "hw.yaml"
    HW.save(path)
    assert sim(d=(images, labels), hw=str(path)).to_json() == base
    assert sim(d=(images, labels), hw=HW.to_dict()).to_json() == base
    assert sim(d=(images, labels), scheme=get_scheme("dense")).to_json() == base
    # uint8 images are pixels, scaled to [0, 1] (the default input spec); float images are
    # used as given; the result's `input` says which
    u8 = (images * 255).round().to(torch.uint8)
    out = sim(d=(u8, labels)).to_json()
    again = sim(d=(u8.float() / 255, labels)).to_json()
    assert out.pop("input") == {"shape": [1, 8, 8], "data_shape": [1, 8, 8], "fitted": None,
                                "pixels": True, "scale": 1 / 255, "mean": [0.0], "std": [1.0],
                                "labels": "the data's labels"}
    assert again.pop("input")["pixels"] is False
    assert out == again


# ---- device effects ---------------------------------------------------------------------------
DEVICE_EFFECTS = {
    "variation-lognormal": {"device.variation": "lognormal", "device.variation_sigma": 0.3},
    "variation-normal": {"device.variation": "normal", "device.variation_sigma": 0.3},
    "read-noise": {"device.read_noise_sigma": 0.3},
    "accumulated-deviation": {"device.accumulated_deviation_sigma": 1.0},
    "stuck-at": {"device.stuck_at_off_rate": 0.1, "device.stuck_at_on_rate": 0.05},
}
TINY_SIGMA = {
    "variation-lognormal": {"device.variation": "lognormal", "device.variation_sigma": 1e-6},
    "variation-normal": {"device.variation": "normal", "device.variation_sigma": 1e-6},
    "read-noise": {"device.read_noise_sigma": 1e-6},
    "accumulated-deviation": {"device.accumulated_deviation_sigma": 1e-6},
}


@pytest.fixture(scope="module")
def ideal_run() -> tuple[tuple[Tensor, Tensor], Result]:
    d = data(4, seed=6)
    return d, sim(d=d)


@pytest.mark.parametrize("effect", list(DEVICE_EFFECTS))
def test_device_effects_are_seeded(effect: str, ideal_run: tuple[tuple[Tensor, Tensor],
                                                                 Result]) -> None:
    d, ideal = ideal_run
    over = DEVICE_EFFECTS[effect]
    first = sim(d=d, overrides={**over, "device.seed": 1}, batch_size=2)
    again = sim(d=d, overrides={**over, "device.seed": 1}, batch_size=2)
    other = sim(d=d, overrides={**over, "device.seed": 2}, batch_size=2)
    assert first.outputs is not None and again.outputs is not None
    assert other.outputs is not None and ideal.outputs is not None
    assert torch.equal(first.outputs, again.outputs)
    assert first.to_json() == again.to_json()
    assert not torch.equal(first.outputs, other.outputs)
    assert not torch.equal(first.outputs, ideal.outputs)
    # The device does not change the work done.
    for a, b in zip(first.to_json()["layers"], ideal.to_json()["layers"], strict=True):
        assert a["events"] == b["events"]


@pytest.mark.parametrize("effect", list(TINY_SIGMA))
def test_tiny_device_effects_keep_the_ideal_accuracy(
        effect: str, ideal_run: tuple[tuple[Tensor, Tensor], Result]) -> None:
    d, ideal = ideal_run
    noisy = sim(d=d, overrides={**TINY_SIGMA[effect], "device.seed": 5})
    assert noisy.to_json()["accuracy"] == ideal.to_json()["accuracy"]
    assert noisy.outputs is not None and ideal.outputs is not None
    assert torch.equal(noisy.outputs, ideal.outputs)


@pytest.mark.parametrize("effect", ["variation-lognormal", "read-noise"])
def test_large_device_seed_is_accepted_or_refused_cleanly(effect: str) -> None:
    try:
        res = sim(d=data(1), overrides={**DEVICE_EFFECTS[effect], "device.seed": 2**53})
    except SparsexbarError:
        return  # refusing the value up front, naming it, would be fine too
    assert res.outputs is not None and bool(torch.isfinite(res.outputs).all())


def test_the_exact_shortcut_does_not_change_a_run() -> None:
    a = sim(options=EngineOptions(exact_shortcut=False))
    b = sim(options=EngineOptions())
    assert a.outputs is not None and b.outputs is not None
    assert torch.equal(a.outputs, b.outputs) and a.to_json() == b.to_json()


# ---- writing results --------------------------------------------------------------------------
def test_write_result_writes_json_and_csv_atomically(tmp_path: Path) -> None:
    out = sim(limit=5).to_json()
    target = tmp_path / "run"
    paths = write_result(target, out)
    assert sorted(p.name for p in paths) == ["layers.csv", "result.json"]
    assert sorted(p.name for p in target.iterdir()) == ["layers.csv", "result.json"]
    loaded = json.loads((target / "result.json").read_text())
    assert loaded == json.loads(json.dumps(out))
    with (target / "layers.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [lay["name"] for lay in out["layers"]]
    for row, lay in zip(rows, out["layers"], strict=True):
        assert int(row["rows"]) == lay["rows"] and int(row["arrays"]) == lay["arrays"]
        assert int(row["adc_conversions"]) == lay["events"]["adc_conversions"]
        # the layer's time, ADC bits and area components (the CSV had only totals)
        assert float(row["latency_ns_per_image"]) == lay["latency_ns_per_image"] > 0
        assert float(row["dense_latency_ns_per_image"]) == lay["dense_latency_ns_per_image"]
        assert int(row["adc_bits"]) == lay["adc_bits"] and row["time_bound"] == lay["time_bound"]
        parts = [float(v) for k, v in row.items() if k.startswith("area_") and k.endswith("_um2")
                 and k != "area_total_um2"]
        assert len(parts) >= 8
        assert sum(parts) == pytest.approx(float(row["area_total_um2"]), rel=1e-12)
        assert float(row["dense_energy_total_pj"]) == lay["dense_energy_pj"]["total"]
    # Overwriting and a prefix: still no temporary files left behind.
    write_result(target, out)
    write_result(target, out, prefix="dense_")
    assert sorted(p.name for p in target.iterdir()) == [
        "dense_layers.csv", "dense_result.json", "layers.csv", "result.json"]


def test_write_result_of_non_finite_values_is_standard_json(tmp_path: Path) -> None:
    out = sim(limit=2).to_json()
    out["vs_dense"]["speedup"] = float("inf")
    write_result(tmp_path, out)
    text = (tmp_path / "result.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


# ---- bad inputs -------------------------------------------------------------------------------
def test_bad_limit_and_batch_size_are_refused() -> None:
    with pytest.raises(SparsexbarError, match="limit"):
        sim(limit=0)
    with pytest.raises(SparsexbarError, match="limit"):
        sim(limit=-2)
    with pytest.raises(SparsexbarError, match="batch"):
        sim(batch_size=0)


def test_unknown_scheme_and_preset_are_refused() -> None:
    with pytest.raises(SparsexbarError, match="nope"):
        sim(scheme="nope")
    with pytest.raises(SparsexbarError, match="nope"):
        sim(hw="nope")
    with pytest.raises(SparsexbarError, match=r"ou\.rows"):
        sim(hw="isaac", overrides={"ou.rows": 999})


@pytest.mark.parametrize(("factory", "scheme"), [(nets.unsupported_net, "dense"),
                                               (nets.grouped_conv_net, "sre"),
                                               (nets.lstm_net, "dense")])
def test_unsupported_layers_are_refused(factory: Any, scheme: str) -> None:
    images, labels = nets.random_images(2, 1, 28), nets.random_labels(2)
    with pytest.raises(UnsupportedModelError) as info:
        simulate(factory(), (images, labels), hw=HW, scheme=scheme)
    assert "\n" not in str(info.value)


class _Probe(nn.Module):
    """conv -> ReLU -> (the variant's middle) -> 4x4 max pool -> fc, on 1x8x8 inputs."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2, return_indices=variant == "pool-indices")
        self.row = nn.Linear(8, 8)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.a(x))
        if self.variant == "shared":  # one conv called twice
            y = torch.relu(self.c(torch.relu(self.c(y))))
        elif self.variant == "dropout":  # F.dropout's default: training=True
            y = F.dropout(y, 0.5)
        elif self.variant == "row-linear":  # a Linear over the last dim of a 4-D tensor
            y = torch.relu(self.row(y))
        elif self.variant == "subtract":  # a - b: signed, though both terms are ReLU outputs
            y = torch.add(y, torch.relu(self.b(x)), alpha=-1)
        elif self.variant == "add-scaled":  # a + 0.5 b: both terms and alpha >= 0
            y = torch.add(y, torch.relu(self.b(x)), alpha=0.5)
        if self.variant == "pool-indices":
            pooled, _ = self.pool(y)
            return self.fc(pooled.flatten(1))
        y = self.c(y) if self.variant in ("subtract", "add-scaled") else y
        return self.fc(F.max_pool2d(y, 2).flatten(1))


@pytest.mark.parametrize(("variant", "fragments"), [
    # each call ran as the layer's one record with both calls' events (costs twice), and the
    # last call's input signedness was used for both
    ("shared", ["layer 'c'", "called 2 times", "shared weights"]),
    # ran as random masks: lossless schemes differed from dense, float from quantized
    ("dropout", ["dropout", "training=True", "nn.Dropout"]),
    # costed as one vector per image instead of 32; sre crashed on its shape
    ("row-linear", ["layer 'row'", "Linear on inputs of shape (4, 8, 8)", "flatten"]),
    ("pool-indices", ["layer 'pool'", "return_indices=True"]),  # an AttributeError traceback
])
def test_model_forms_the_simulator_cannot_map_are_refused(variant: str,
                                                          fragments: list[str]) -> None:
    images, labels = nets.random_images(2, 1, 8), nets.random_labels(2)
    with pytest.raises(UnsupportedModelError) as info:
        simulate(_Probe(variant), (images, labels), hw=HW)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_an_add_with_a_negative_alpha_is_signed() -> None:
    """torch.add(a, b, alpha=-1) of two ReLU outputs was taken as >= 0: the next conv's
    negative inputs were clamped to 0, silently. Now signed (and alpha 0.5 stays unsigned);
    either way the simulated outputs equal the integer reference bit for bit."""
    images = nets.random_images(4, 1, 8)
    for variant, signed in (("subtract", True), ("add-scaled", False)):
        net = nets.seeded_init(_Probe(variant), 2).eval()
        q = quantize_model(net, images, 8, 8)
        assert q.layer("c").input_signed is signed
        res = simulate(net, (images, nets.random_labels(4)), hw=preset("ideal-small"))
        assert res.outputs is not None
        assert torch.equal(res.outputs, q.run_reference(images))
        if signed:  # the float model and the integer reference agree closely
            gap = (q.run_float(images) - q.run_reference(images)).abs().max()
            assert float(gap) < 0.05 * float(q.run_float(images).abs().max())


def test_the_callers_module_keeps_its_mode() -> None:
    """simulate() set the caller's own module to eval mode (a training loop calling it
    between epochs went on training without dropout and with frozen BatchNorm statistics)."""
    net = nets.tiny_cnn(1, 10, 8, 4, seed=0).train()
    simulate(net, data(2), hw=HW)
    assert all(module.training for module in net.modules())


@pytest.mark.parametrize("device", ["meta", "tpu", "gpu", "cpu:x"])
def test_unknown_devices_are_refused(device: str) -> None:
    with pytest.raises(SparsexbarError, match="device"):
        sim(d=data(1), device=device)


def test_nan_weights_are_refused() -> None:
    images, labels = nets.random_images(2, 1, 28), nets.random_labels(2)
    with pytest.raises(UnsupportedModelError, match="NaN"):
        simulate(nets.nan_net(), (images, labels), hw=HW)


def test_nan_images_and_empty_data_are_refused() -> None:
    images, labels = data(3)
    images[1, 0, 2, 2] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        sim(d=(images, labels))
    with pytest.raises(DataError):
        sim(d=(images[:0], labels[:0]))


def test_model_factory_spec_is_resolved() -> None:
    images, labels = nets.random_images(3, 1, 28), nets.random_labels(3)
    res = simulate("tests.nets:tiny_fmnist_net", (images, labels), hw=HW)
    assert res.to_json()["model"] == "tests.nets:tiny_fmnist_net"
    direct = simulate(nets.tiny_fmnist_net(), (images, labels), hw=HW)
    assert res.outputs is not None and direct.outputs is not None
    assert torch.equal(res.outputs, direct.outputs)
    with pytest.raises(SparsexbarError, match="not_a_module"):
        simulate("tests.nets:not_a_module", (images, labels), hw=HW)
    with pytest.raises(SparsexbarError, match="no_such_factory"):
        simulate("tests.nets:no_such_factory", (images, labels), hw=HW)


@pytest.mark.parametrize("scheme", ["dense", "sre", "comprrae"])
def test_a_model_flattening_with_view_runs(scheme: str) -> None:
    """`x.view(n, -1)` after a conv (the engine hands on channels-last results, on which a
    view fails) gives the nn.Flatten model's outputs and events bit for bit."""
    images, labels = nets.random_images(3, 1, 28), nets.random_labels(3)
    viewed = simulate(nets.view_flatten_net(), (images, labels), hw=HW, scheme=scheme)
    flat = simulate(nets.tiny_fmnist_net(), (images, labels), hw=HW, scheme=scheme)
    assert viewed.outputs is not None and flat.outputs is not None
    assert torch.equal(viewed.outputs, flat.outputs)
    assert viewed.totals == flat.totals


def test_bad_api_arguments_are_refused_with_sparsexbar_errors() -> None:
    """What the CLI refuses, the Python API refuses too, as SparsexbarError naming it (before:
    AttributeError for a scheme that is not text, RuntimeError from the quantizer for
    calibration images of another shape or none, duplicate class names accepted)."""
    images, labels = nets.random_images(3, 1, 28), nets.random_labels(3)
    net = nets.tiny_fmnist_net()
    with pytest.raises(SparsexbarError, match="scheme must be a name"):
        simulate(net, (images, labels), hw=HW, scheme=3)  # type: ignore[arg-type]
    with pytest.raises(SparsexbarError, match="calibration holds no images"):
        simulate(net, (images, labels), hw=HW, calibration=images[:0])
    with pytest.raises(SparsexbarError, match=r"calibration images have shape \(2, 3, 28, 28\)"):
        simulate(net, (images, labels), hw=HW, calibration=torch.rand(2, 3, 28, 28))
    with pytest.raises(SparsexbarError, match="float tensor"):
        simulate(net, (images, labels), hw=HW, calibration=(images * 255).to(torch.uint8))
    with pytest.raises(SparsexbarError, match="classes names class 'a' twice"):
        simulate(net, (images, labels), hw=HW, classes=["a"] * 10)
    with pytest.raises(SparsexbarError, match="non-blank text"):  # a blank name was taken
        simulate(net, (images, labels), hw=HW, classes=["a", " ", *"cdefghij"])
    with pytest.raises(SparsexbarError, match="must be a list of class names, got str"):
        simulate(net, (images, labels), hw=HW, classes="abcdefghij")  # type: ignore[arg-type]
    res = simulate(net, (images, labels), hw=HW, calibration=images[:2])  # a good one runs
    assert res.num_images == 3


def test_a_factory_module_imports_its_neighbours(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`module:factory` from the current directory whose module imports a module beside it
    (`from helper import make`): found, as under `python -m` (before: 'no module named
    helper ... in the current directory'); sys.path and sys.meta_path are left as they were."""
    import sys

    (tmp_path / "sxb_helper_17.py").write_text(
        "from tests.nets import tiny_fmnist_net\n\ndef make():\n    return tiny_fmnist_net()\n")
    (tmp_path / "sxb_models_17.py").write_text(
        "from sxb_helper_17 import make\n\ndef net():\n    return make()\n")
    monkeypatch.chdir(tmp_path)
    path_before, finders_before = list(sys.path), list(sys.meta_path)
    images, labels = nets.random_images(2, 1, 28), nets.random_labels(2)
    try:
        res = simulate("sxb_models_17:net", (images, labels), hw=HW)
    finally:
        for name in ("sxb_models_17", "sxb_helper_17"):
            sys.modules.pop(name, None)
    assert sys.path == path_before and sys.meta_path == finders_before
    direct = simulate(nets.tiny_fmnist_net(), (images, labels), hw=HW)
    assert res.outputs is not None and direct.outputs is not None
    assert torch.equal(res.outputs, direct.outputs)


def test_bad_run_arguments_are_refused_before_any_work() -> None:
    """Wrong types and values of simulate()'s own arguments, EngineOptions and the config API:
    SparsexbarError naming them (before: AttributeError/KeyError mid-run or after it, NaN
    budgets failing mid-run, a baseline top-1 of NaN or 2.0 stored in the result)."""
    from sparsexbar.core.config import HardwareConfig
    from sparsexbar.core.engine import EngineOptions

    images, labels = nets.random_images(2, 1, 28), nets.random_labels(2)
    net = nets.tiny_fmnist_net()

    def run(**kwargs: Any) -> None:
        simulate(net, (images, labels), hw=HW, **kwargs)

    bad: list[tuple[dict[str, Any], str]] = [
        ({"overrides": ["a"]}, "overrides must map dotted config keys"),
        ({"overrides": {5: 1}}, "override keys are dotted config keys"),
        ({"options": {"threads": 1}}, "options must be an EngineOptions"),
        ({"qmodel": "x"}, "qmodel must be a QuantizedModel"),
        ({"progress": 5}, "progress must be a function"),
        ({"baseline_accuracy": {}}, "baseline_accuracy needs 'float_top1'"),
        ({"baseline_accuracy": {"float_top1": float("nan"), "quantized_top1": 0.5}},
         "'float_top1', a top-1 fraction in \\[0, 1\\], got nan"),
        ({"baseline_accuracy": {"float_top1": 0.5, "quantized_top1": 2.0}}, "quantized_top1"),
    ]
    for kwargs, message in bad:
        with pytest.raises(SparsexbarError, match=message):
            run(**kwargs)
    for kwargs, message in [({"memory_budget_mb": float("nan")}, "memory_budget_mb"),
                            ({"memory_budget_mb": 0}, "memory_budget_mb"),
                            ({"memory_budget_mb": "big"}, "memory_budget_mb"),
                            ({"threads": 0}, "threads"), ({"threads": 1.5}, "threads"),
                            ({"compiled_noise": "yes"}, "compiled_noise")]:
        with pytest.raises(SparsexbarError, match=message):
            EngineOptions(**kwargs)
    with pytest.raises(SparsexbarError, match="a mapping of sections"):
        HardwareConfig.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(SparsexbarError, match="a mapping of sections"):
        HardwareConfig.from_dict("isaac")  # type: ignore[arg-type]
    with pytest.raises(SparsexbarError, match="overrides must map"):
        HW.with_overrides(["a"])  # type: ignore[arg-type]
    good = {"float_top1": 0.5, "quantized_top1": 1}
    res = simulate(net, (images, labels), hw=HW, baseline_accuracy=good,
                   options=EngineOptions(threads=1))
    assert res.accuracy.float_top1 == 0.5 and res.accuracy.quantized_top1 == 1.0


def test_model_without_logits_output_is_refused_cleanly() -> None:
    images, labels = data(2)
    with pytest.raises(SparsexbarError):
        simulate(nets.single_conv(in_ch=1, out_ch=3), (images, labels), hw=HW)


def test_integer_runs_pool_2x2_like_max_pool2d() -> None:
    """The integer run's 2x2 stride-2 max pooling (strided maxima) equals F.max_pool2d bit for
    bit, odd sizes (floor mode) and negative values included; other pools are not taken."""
    from sparsexbar.core.frontend import _max_pool_2x2, _strided_2x2

    gen = torch.Generator().manual_seed(4)
    for shape in ((3, 5, 8, 8), (2, 3, 7, 9), (1, 1, 2, 3)):
        x = torch.randn(shape, generator=gen)
        assert _strided_2x2(nn.MaxPool2d(2), x)
        assert torch.equal(_max_pool_2x2(x), F.max_pool2d(x, 2))
    x = torch.randn((1, 2, 6, 6), generator=gen)
    for pool in (nn.MaxPool2d(3), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2, ceil_mode=True),
                 nn.MaxPool2d(2, padding=1), nn.AvgPool2d(2)):
        assert not _strided_2x2(pool, x)


@pytest.mark.parametrize(("scheme", "overrides"), [
    ("dense", {}),  # lossless, no clipping: the simulated logits stand for the reference
    ("sre", {}),
    ("dense", {"adc.bits": 3}),  # the ADC clips: the reference is run (exact shortcut)
    ("comprrae:alpha=0.5", {}),  # a lossy scheme: the reference is run
])
def test_quantized_top1_is_the_integer_reference_networks(scheme: str,
                                                          overrides: dict[str, Any]) -> None:
    """quantized_top1 is the top-1 of the integer-quantized network (run_reference, float64),
    whether simulate() reuses the simulated logits (provably equal) or runs it."""
    net = nets.randomize_bn(nets.tiny_cnn(1, 10, 8, 4, seed=3), seed=3)
    images, labels = data(40, seed=5)
    qmodel = quantize_model(net, images, 8, 8)
    want = int((qmodel.run_reference(images).argmax(dim=1) == labels).sum()) / 40
    res = simulate(net, (images, labels), hw="ideal-small", overrides=overrides, scheme=scheme,
                   batch_size=16)
    assert res.accuracy.quantized_top1 == want
