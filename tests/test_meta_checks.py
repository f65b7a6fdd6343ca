"""Files a run reads beside the model are checked against it, never silently ignored: a comprrae
calibration file made for another model (unknown, missing or non-ReLU layer names, an empty
table, an unknown estimator, a beta estimator without betas) and a checkpoint's malformed
metadata ("classes", "input", "input_fit", "dtype") give one line naming the file and the
problem, before any layer runs; the real files still run. Per-layer settings given in Python
(comprrae's alpha/beta/remaining_mean, combined's alpha, encoding's ADC bits and precision) may
not name layers the model lacks either."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsexbar.core.config import preset
from sparsexbar.core.errors import CheckpointError, SparsexbarError
from sparsexbar.core.frontend import quantize_model
from sparsexbar.schemes import get_scheme
from sparsexbar.schemes.combined import CombinedScheme
from sparsexbar.schemes.comprrae import CompRRAEScheme
from sparsexbar.schemes.comprrae.calibration import calibrate_comprrae
from sparsexbar.schemes.encoding import EncodingScheme
from sparsexbar.simulate import simulate
from sparsexbar.training import zoo
from sparsexbar.training.assets import ASSETS_DIR
from sparsexbar.training.checkpoint import load_checkpoint, read_meta, save_checkpoint
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli

HW = "ideal-small"
TINY = "tests.nets:tiny_fmnist_net"  # layers conv1, conv2 (followed by ReLU), fc


def _data(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return nets.random_images(n, size=28, seed=5), nets.random_labels(n, seed=5)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """What `sparsexbar calibrate comprrae` writes (`Calibration.to_json`) for the tiny net,
    with the alpha and the beta estimator, from 4 images and 2 candidates each."""
    x, y = _data(4)
    hw = preset(HW)
    q = quantize_model(nets.tiny_fmnist_net(), x, hw.numbers.weight_bits, hw.numbers.input_bits)
    alpha = calibrate_comprrae(q, hw, x, y, 100.0, "alpha", (0.4, 0.2))
    beta = calibrate_comprrae(q, hw, x, y, 100.0, "beta", (0.5, 0.25))
    return {"alpha": json.loads(json.dumps(alpha.to_json())),
            "beta": json.loads(json.dumps(beta.to_json()))}


def _write(tmp_path: Path, doc: dict[str, Any], name: str = "cal.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


# ---- comprrae calibration files ----------------------------------------------------------------
def _unknown(doc: dict[str, Any]) -> None:
    doc["alphas"] = {"nope": 0.4}


def _extra(doc: dict[str, Any]) -> None:
    doc["alphas"]["features.9"] = 0.2  # every layer of the model, and one of another


def _not_relu(doc: dict[str, Any]) -> None:
    doc["alphas"]["fc"] = 0.2  # the classifier: no ReLU, comprrae checks none of its outputs


def _missing(doc: dict[str, Any]) -> None:
    del doc["alphas"]["conv2"]


def _empty(doc: dict[str, Any]) -> None:
    doc["alphas"] = {}


def _empty_no_estimator(doc: dict[str, Any]) -> None:
    doc.clear()
    doc["alphas"] = {}


def _bad_estimator(doc: dict[str, Any]) -> None:
    doc["estimator"] = "nope"


def _beta_empty(doc: dict[str, Any]) -> None:
    doc["estimator"] = "beta"  # an alpha file's betas are {}


def _beta_missing(doc: dict[str, Any]) -> None:
    doc["estimator"] = "beta"
    del doc["betas"]


def _bad_value(doc: dict[str, Any]) -> None:
    doc["alphas"]["conv1"] = "x"


def _beta_unknown(doc: dict[str, Any]) -> None:
    doc["betas"]["nope"] = doc["betas"].pop("conv2")


def _lambda_unknown(doc: dict[str, Any]) -> None:
    doc["remaining_mean"]["nope"] = doc["remaining_mean"].pop("conv1")


CAL_CASES = [  # (id, estimator of the real file, change, fragments of the one-line error)
    ("unknown-layer", "alpha", _unknown,
     ["has no layer 'nope'", "calibrated for another model", "conv1, conv2"]),
    ("extra-layer", "alpha", _extra, ["has no layer 'features.9'", "another model"]),
    ("layer-without-relu", "alpha", _not_relu, ["'fc'", "not followed by relu"]),
    ("missing-layer", "alpha", _missing,
     ["'alphas' has no entry for layer 'conv2'", "another model"]),
    ("empty-alphas", "alpha", _empty, ["estimator 'alpha'", "empty 'alphas'"]),
    ("empty-alphas-no-estimator", "alpha", _empty_no_estimator, ["'alphas' is empty"]),
    ("unknown-estimator", "alpha", _bad_estimator, ["unknown estimator 'nope'", "alpha, beta"]),
    ("beta-without-betas", "alpha", _beta_empty, ["estimator 'beta'", "empty 'betas'"]),
    ("beta-no-betas-table", "alpha", _beta_missing, ["estimator 'beta'", "no 'betas'"]),
    ("bad-alpha-value", "alpha", _bad_value, ["alphas['conv1']", ">= 0", "'x'"]),
    ("beta-unknown-layer", "beta", _beta_unknown, ["'betas'", "has no layer 'nope'"]),
    ("remaining-mean-unknown-layer", "beta", _lambda_unknown,
     ["'remaining_mean'", "has no layer 'nope'"]),
]


@pytest.mark.parametrize(("estimator", "change", "fragments"),
                         [c[1:] for c in CAL_CASES], ids=[c[0] for c in CAL_CASES])
def test_bad_calibration_file_is_refused_before_any_layer_runs(
        calibrated: dict[str, dict[str, Any]], tmp_path: Path, estimator: str, change: Any,
        fragments: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    doc = json.loads(json.dumps(calibrated[estimator]))
    change(doc)
    path = _write(tmp_path, doc)

    def no_run(*_: Any) -> Any:
        raise AssertionError("a layer ran before the calibration file was checked")

    monkeypatch.setattr(CompRRAEScheme, "run_layer", no_run)
    with pytest.raises(SparsexbarError) as info:
        simulate(nets.tiny_fmnist_net(), _data(), HW, f"comprrae:calibration={path}")
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert str(path) in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)


def test_real_calibration_files_run_and_reach_the_result(
        calibrated: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """The real files of the same model run; their per-layer values are the result's."""
    data = _data()
    for estimator in ("alpha", "beta"):
        saved = calibrated[estimator]
        path = _write(tmp_path, saved, f"{estimator}.json")
        scheme = get_scheme(f"comprrae:calibration={path}")
        res = simulate(nets.tiny_fmnist_net(), data, HW, scheme).to_json()
        params = res["scheme"]["parameters"]
        assert set(saved["alphas"]) == {"conv1", "conv2"}
        assert params["alpha"] == saved["alphas"] and params["beta"] == saved["betas"]
        assert params["remaining_mean"] == saved["remaining_mean"]
        # the same scheme object runs the model again (its layer record starts over), and
        # refuses another model
        again = simulate(nets.tiny_fmnist_net(), data, HW, scheme).to_json()
        assert again["layers"] == res["layers"]
        other = (nets.random_images(2, channels=2, size=8), data[1])
        with pytest.raises(SparsexbarError, match=r"has no layer 'conv1'.*: stem, tail$"):
            simulate(nets.residual_net(), other, HW, scheme)
    # alpha 0.4 on every ReLU layer: two comparisons per check there (one without alpha)
    doc = {**calibrated["alpha"], "alphas": {"conv1": 0.4, "conv2": 0.4}}
    res = simulate(nets.tiny_fmnist_net(), data, HW,
                   f"comprrae:calibration={_write(tmp_path, doc)}").to_json()
    events = {layer["name"]: layer["events"] for layer in res["layers"]}
    for name in ("conv1", "conv2"):
        assert events[name]["comparisons"] == 2 * events[name]["lut_reads"] > 0


def test_file_values_replaced_beside_it_are_not_checked(
        calibrated: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """alpha given beside a file replaces the file's alphas: those are not used, so an
    alpha file of another model with alpha=0.4 beside it runs (its other tables are empty)."""
    path = _write(tmp_path, {**calibrated["alpha"], "alphas": {"nope": 0.4}})
    res = simulate(nets.tiny_fmnist_net(), _data(), HW,
                   f"comprrae:calibration={path}:alpha=0.4").to_json()
    assert res["scheme"]["parameters"]["alpha"] == 0.4


def test_check_model_takes_every_layer_at_once(
        calibrated: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """`Scheme.check_model` sees the model's crossbar layers together before any is mapped
    (simulate calls it; a caller mapping layers itself calls it first): a good file passes,
    a bad one is refused; a model of one layer without ReLU has no comprrae layer."""
    x, _ = _data()
    hw = preset(HW)
    q = quantize_model(nets.tiny_fmnist_net(), x, hw.numbers.weight_bits, hw.numbers.input_bits)
    good = _write(tmp_path, calibrated["alpha"], "good.json")
    bad = _write(tmp_path, {**calibrated["alpha"], "alphas": {
        **calibrated["alpha"]["alphas"], "nope": 0.4}}, "bad.json")
    get_scheme(f"comprrae:calibration={good}").check_model(q.layers)
    with pytest.raises(SparsexbarError, match="has no layer 'nope'"):
        get_scheme(f"comprrae:calibration={bad}").check_model(q.layers)
    get_scheme("comprrae").check_model(q.layers)  # no file: any model
    one_layer = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()
    with pytest.raises(SparsexbarError, match=r"has no layer 'conv1'.*: none$"):
        simulate(one_layer, _data(), HW, f"comprrae:calibration={good}")


@pytest.mark.parametrize(("given", "fragments"), [
    ({"alpha": {"conv_1": 0.4}}, ["comprrae: 'alpha' names layer 'conv_1'", "misspelt",
                                  "conv1, conv2"]),
    ({"beta": {"conv1": 0.5, "fc": 0.5}}, ["'beta' names layer 'fc'", "not followed by relu"]),
    ({"beta": 0.5, "remaining_mean": {"nope": [0.1] * 7}},
     ["'remaining_mean' names layer 'nope'"]),
])
def test_per_layer_values_in_python_name_the_models_layers(
        given: dict[str, Any], fragments: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-layer mappings given in Python were not checked: a misspelt layer name fell back
    to exact (None) there, silently. Refused before any layer runs; leaving a layer out stays
    allowed (exact there)."""
    def no_run(*_: Any) -> Any:
        raise AssertionError("a layer ran before the per-layer values were checked")

    monkeypatch.setattr(CompRRAEScheme, "run_layer", no_run)
    with pytest.raises(SparsexbarError) as info:
        simulate(nets.tiny_fmnist_net(), _data(), HW, CompRRAEScheme(**given))
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)


def test_per_layer_values_in_python_of_the_models_layers_run() -> None:
    """The model's own names run: every layer listed equals the scalar, bit for bit; a layer
    left out is exact there (one comparison per check, two with an alpha)."""
    data = _data()
    scalar = simulate(nets.tiny_fmnist_net(), data, HW, CompRRAEScheme(alpha=0.4))
    listed = simulate(nets.tiny_fmnist_net(), data, HW,
                      CompRRAEScheme(alpha={"conv1": 0.4, "conv2": 0.4}))
    assert scalar.outputs is not None and listed.outputs is not None
    assert torch.equal(scalar.outputs, listed.outputs)
    partial = simulate(nets.tiny_fmnist_net(), data, HW, CompRRAEScheme(alpha={"conv2": 0.4}))
    events = {layer["name"]: layer["events"] for layer in partial.to_json()["layers"]}
    assert events["conv1"]["comparisons"] == events["conv1"]["lut_reads"] > 0  # exact there
    assert events["conv2"]["comparisons"] == 2 * events["conv2"]["lut_reads"] > 0


def _encoding_bits_file(tmp_path: Path) -> Path:
    """An encoding ADC-bits file of another model: the tiny net's layers and one more."""
    return _write(tmp_path, {"adc_bits": {"conv1": 6, "conv2": 6, "fc": 6, "features.0": 6}},
                  "bits.json")


@pytest.mark.parametrize(("scheme", "fragments"), [
    (lambda _: EncodingScheme(precision={"conv1": 2, "conv_2": 2}),
     ["encoding precision names layer 'conv_2'", "misspelt", "conv1, conv2, fc"]),
    (lambda _: EncodingScheme(adc="calibrated",
                              adc_bits={"conv1": 6, "conv2": 6, "fc": 6, "fc2": 6}),
     ["encoding adc_bits names layer 'fc2'"]),
    (lambda tmp: get_scheme(f"encoding:adc=calibrated:adc_bits={_encoding_bits_file(tmp)}"),
     ["encoding adc_bits file", "bits.json", "names layer 'features.0'", "another model"]),
    (lambda _: CombinedScheme(alpha={"conv1": 0.4, "nope": 0.4}),
     ["comprrae: 'alpha' names layer 'nope'"]),
])
def test_per_layer_settings_of_encoding_and_combined_name_the_models_layers(
        tmp_path: Path, scheme: Any, fragments: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """encoding's per-layer ADC bits and precisions and combined's per-layer alpha named
    layers the model lacks without a word (a layer missing from the bits was refused, an
    extra one not): refused before any layer is mapped."""
    made = scheme(tmp_path)

    def no_map(*_: Any) -> Any:
        raise AssertionError("a layer was mapped before the per-layer settings were checked")

    monkeypatch.setattr(type(made), "map_layer", no_map)
    with pytest.raises(SparsexbarError) as info:
        simulate(nets.tiny_fmnist_net(), _data(), HW, made)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)


def test_cli_refuses_a_calibration_file_of_another_model(
        calibrated: dict[str, dict[str, Any]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {**calibrated["alpha"], "alphas": {"nope": 0.4}})
    common = ["run", "--model", TINY, "--limit", "2", "--hw", HW]
    code, _, err = cli(capsys, *common, "--scheme", f"comprrae:calibration={path}",
                       "--out", str(tmp_path / "bad"))
    assert_one_line_error(code, err, str(path), "has no layer 'nope'",
                          "calibrated for another model")
    assert not (tmp_path / "bad" / "result.json").exists()
    good = _write(tmp_path, calibrated["alpha"], "good.json")
    code, _, err = cli(capsys, *common, "--scheme", f"comprrae:calibration={good}",
                       "--out", str(tmp_path / "good"))
    assert code == 0, err
    res = json.loads((tmp_path / "good" / "result.json").read_text())
    assert res["scheme"]["parameters"]["alpha"] == calibrated["alpha"]["alphas"]


# ---- checkpoint metadata -------------------------------------------------------------------------
def _checkpoint(tmp_path: Path) -> Path:
    """A LeNet-5 checkpoint (10 outputs) with the metadata `sparsexbar train` writes."""
    net = zoo.build_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    meta = {"architecture": "lenet5", "dataset": "fashion-mnist",
            "arch_kwargs": {"in_channels": 1, "num_classes": 10, "input_size": 28},
            "classes": [f"c{i}" for i in range(10)],
            "input": {"channels": 1, "size": 28, "fit": "auto", "scale": 1 / 255,
                      "mean": [0.0], "std": [1.0]}}
    _, json_path = save_checkpoint(tmp_path / "net", net, meta)
    return json_path


META_CASES = [  # (id, field, value, fragments of the error)
    ("classes-not-a-list", "classes", "abc", ["'classes'", "list of class names"]),
    ("classes-wrong-count", "classes", ["a", "b"], ["'classes' names 2 classes", "10 outputs"]),
    ("classes-not-strings", "classes", list(range(10)), ["'classes'", "non-blank text", "0"]),
    ("classes-blank", "classes", ["a", " ", *"cdefghij"], ["'classes'", "non-blank text"]),
    ("classes-null", "classes", None, ["'classes'", "null"]),
    ("classes-empty", "classes", [], ["'classes'"]),
    ("classes-twice", "classes", ["a"] * 10, ["'classes'", "names class 'a' twice"]),
    ("input-a-list", "input", [1], ["'input' must be an object", "[1]"]),
    ("input-null", "input", None, ["'input' must be an object", "null"]),
    ("input-bad-channels", "input", {"channels": "x"}, ["'input'", "channels"]),
    ("input-unknown-key", "input", {"foo": 1}, ["'input'", "unknown key", "foo"]),
    ("input-bad-fit", "input", {"fit": "zoom"}, ["'input'", "fit", "zoom"]),
    ("dtype-unknown", "dtype", "int4", ["'dtype'", "int4", "float32, float16, int8"]),
    ("input-fit-bad-how", "input_fit", {"how": "zoom"}, ["'input_fit'", "zoom"]),
    # prune read str(5) = '5' as the data set to fine-tune on, and a list as its text
    ("dataset-a-number", "dataset", 5, ["'dataset'", "name of the data set", "got 5"]),
    ("dataset-blank", "dataset", " ", ["'dataset'", "or null"]),
    ("dataset-a-list", "dataset", ["fashion-mnist"], ["'dataset'", "[\"fashion-mnist\"]"]),
]


@pytest.mark.parametrize(("field", "value", "fragments"), [c[1:] for c in META_CASES],
                         ids=[c[0] for c in META_CASES])
def test_bad_checkpoint_metadata_is_refused(tmp_path: Path, field: str, value: Any,
                                            fragments: list[str]) -> None:
    json_path = _checkpoint(tmp_path)
    doc = json.loads(json_path.read_text())
    doc[field] = value
    json_path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(json_path.with_suffix(".safetensors"))
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert str(json_path) in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    if field == "dtype":
        return  # written from the weights' format, whatever the metadata says
    # nor is such metadata written
    with pytest.raises(CheckpointError, match=f"'{field}'"):
        save_checkpoint(tmp_path / "again", zoo.build_model("lenet5"),
                        {**doc, "architecture": "lenet5"})
    assert not (tmp_path / "again.json").exists()


@pytest.mark.parametrize("field", ["classes", "input", "input_fit", "dtype", "dataset"])
def test_a_missing_optional_field_still_loads_and_runs(tmp_path: Path, field: str) -> None:
    json_path = _checkpoint(tmp_path)
    doc = json.loads(json_path.read_text())
    doc.pop(field, None)
    json_path.write_text(json.dumps(doc))
    _, meta = load_checkpoint(json_path)
    assert field not in meta
    res = simulate(str(json_path), _data(), HW, "dense")
    assert res.num_images == 2


def test_shipped_metadata_passes_the_checks() -> None:
    stems = sorted(p.stem for p in ASSETS_DIR.glob("*.json")
                   if (ASSETS_DIR / f"{p.stem}.safetensors").is_file())
    assert stems
    for stem in stems:
        meta = read_meta(ASSETS_DIR / f"{stem}.json")
        assert "classes" not in meta or len(meta["classes"]) == 10, stem


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("classes", "abc", "'classes'"), ("classes", ["a", "b"], "'classes' names 2 classes"),
    ("input", None, "'input'"), ("dtype", "int4", "'dtype'")])
def test_cli_refuses_bad_checkpoint_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             field: str, value: Any, fragment: str) -> None:
    json_path = _checkpoint(tmp_path)
    doc = json.loads(json_path.read_text())
    doc[field] = value
    json_path.write_text(json.dumps(doc))
    code, _, err = cli(capsys, "run", "--model", str(json_path.with_suffix(".safetensors")),
                       "--limit", "2", "--hw", HW, "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, str(json_path), fragment)
