"""Issue 17 beyond exit code 2 (test_cli_fuzz.py has those): what is made to work, with the
values it gives. Image data fitted to the model (size, grey <-> RGB, zero padding for 28 -> 32
models), the model's input scale and normalization (CLI, API, checkpoint metadata), image
folders' classes mapped to the model's, warnings (near chance, class counts, untrained zoo
models), `compare` running what can run, stale files removed, a scheme's overridden settings
in the table, `--root`, result file modes, corrupt sweep rows skipped by `plot`."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from sparsexbar import simulate
from sparsexbar.core.errors import SparsexbarError, SparsexbarNote, SparsexbarWarning
from sparsexbar.simulate import resolve_inputs
from sparsexbar.training import zoo
from sparsexbar.training.checkpoint import load_shipped_model, save_checkpoint
from sparsexbar.training.data import FASHION_MNIST_CLASSES, fashion_mnist
from sparsexbar.training.inputs import InputSpec, parse_normalize, parse_scale
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli

TINY = "tests.nets:tiny_fmnist_net"
PIXELS = "tests.nets:default_on_pixels"


def _fmnist(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = fashion_mnist("test").subset(0, n)
    return ds.images, ds.labels


def _write_folder(root: Path, n: int, classes: dict[int, str], rgb_size: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n Fashion-MNIST test images of `classes` as PNGs in root/<name>/; returns
    those images (uint8) and labels in the folder's file order (class by sorted name)."""
    from PIL import Image

    images, labels = _fmnist(n)
    kept = [(i, int(labels[i])) for i in range(n) if int(labels[i]) in classes]
    for i, label in kept:
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(images[i, 0].numpy(), "L")
        if rgb_size is not None:
            img = img.convert("RGB").resize((rgb_size, rgb_size))
        img.save(folder / f"{i:04d}.png")
    order = sorted(kept, key=lambda t: (classes[t[1]], t[0]))
    idx = torch.tensor([i for i, _ in order])
    return images[idx], labels[idx]


# ---- image folders: fitted to the model, classes mapped ---------------------------------------
def test_grey_png_folder_with_the_default_model_gives_the_embedded_images_top1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """28x28 grey PNGs of three Fashion-MNIST classes, folders named after the classes (some
    missing): read as 1x28x28, labels mapped by name to the model's outputs, so the top-1 is
    that of the same images given as tensors (it was 20% when folders were relabelled 0..2)."""
    classes = {1: "Trouser", 7: "Sneaker", 8: "Bag"}
    images, labels = _write_folder(tmp_path / "folder", 120, classes)
    code, _, err = cli(capsys, "run", "--data", str(tmp_path / "folder"), "--out",
                       str(tmp_path / "out"))
    assert code == 0, err
    assert err == ""  # nothing fitted, nothing to warn about
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    ref = simulate("default", (images, labels)).to_json()
    assert res["num_images"] == len(labels) == ref["num_images"]
    assert res["accuracy"] == ref["accuracy"] and res["accuracy"]["float_top1"] > 0.9
    assert res["input"]["shape"] == [1, 28, 28] and res["input"]["fitted"] is None
    assert res["input"]["labels"] == "folder names -> the model's class names"


def test_rgb_folder_of_another_size_is_fitted_with_a_note(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = {0: "0", 1: "1", 9: "9"}  # folders named by output index
    _write_folder(tmp_path / "folder", 60, classes, rgb_size=40)
    code, _, err = cli(capsys, "run", "--data", str(tmp_path / "folder"), "--out",
                       str(tmp_path / "out"))
    assert code == 0, err
    assert err.splitlines() == ["sparsexbar: note: images of 'folder' fitted to the model's "
                                "input 1x28x28: RGB -> grey, 40x40 -> 28x28 (bilinear resize)"]
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["input"]["data_shape"] == [3, 40, 40] and res["input"]["shape"] == [1, 28, 28]
    assert res["input"]["labels"] == "folder numbers -> output indices"
    assert res["accuracy"]["float_top1"] > 0.8


def test_folder_classes_that_the_model_lacks_are_refused(tmp_path: Path) -> None:
    _write_folder(tmp_path / "folder", 40, {1: "Trouser", 7: "sneakers!"})
    with pytest.raises(SparsexbarError, match="'sneakers!' .* not one of the model's classes"):
        simulate("default", str(tmp_path / "folder"))
    # given the model's classes (in output order), the folder's names map
    names = list(FASHION_MNIST_CLASSES)
    names[7] = "sneakers!"
    res = simulate("default", str(tmp_path / "folder"), classes=names)
    assert res.accuracy.float_top1 >= 0.8


def test_checkpoint_of_a_32x32_model_gets_fashion_mnist_zero_padded(tmp_path: Path) -> None:
    """A 1x32x32 checkpoint trained on Fashion-MNIST padded 28 -> 32 (the vgg16-fmnist
    models): the embedded 28x28 images reach it zero-padded, not resized, with a note."""
    net = zoo.build_model("lenet5", in_channels=1, num_classes=10, input_size=32)
    save_checkpoint(tmp_path / "m", net, {
        "architecture": "lenet5", "dataset": "fashion-mnist",
        "arch_kwargs": {"in_channels": 1, "num_classes": 10, "input_size": 32},
        "input_fit": {"from": 28, "to": 32, "how": "pad"}})
    with pytest.warns(SparsexbarNote, match="28x28 -> 32x32 \\(zero padding\\)"):
        loaded, batches = resolve_inputs(str(tmp_path / "m.safetensors"), "default", limit=5)
    images, _ = _fmnist(5)
    assert batches.images.shape == (5, 1, 32, 32)
    assert torch.equal(batches.images[:, :, 2:30, 2:30], images.float() / 255)
    assert batches.images[:, :, :2].abs().sum() == 0 and batches.images[:, :, :, 30:].sum() == 0
    assert batches.input is not None and batches.input.fitted == "28x28 -> 32x32 (zero padding)"
    assert loaded.name == "m"  # the checkpoint file's stem (its architecture: lenet5)



def test_a_checkpoint_run_is_named_after_its_file(tmp_path: Path) -> None:
    """Two checkpoints of one architecture (a dense one and its pruned copy) are told apart in
    results: the result's model is the file's stem (a dotted one whole), as for ONNX and
    torch.save files; before, both read 'lenet5'. The stem alone loads it too (before:
    'unknown model'), and a zoo name stays the zoo's beside files of that stem."""
    from sparsexbar.training.models import load_model

    net = zoo.build_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    meta = {"architecture": "lenet5", "dataset": "fashion-mnist",
            "arch_kwargs": {"in_channels": 1, "num_classes": 10, "input_size": 28}}
    for stem in ("base", "base.v2-pruned"):
        save_checkpoint(tmp_path / stem, net, meta)
        for spec in (f"{stem}.safetensors", f"{stem}.json", stem):  # the stem itself too
            assert load_model(str(tmp_path / spec)).name == stem
    res = simulate(str(tmp_path / "base.v2-pruned.json"), "default", limit=2)
    assert res.model == "base.v2-pruned" and res.to_json()["model"] == "base.v2-pruned"
    save_checkpoint(tmp_path / "lenet5", net, meta)
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        with pytest.warns(SparsexbarWarning, match="untrained"):
            assert not load_model("lenet5").trained
        assert load_model("lenet5.json").trained
    finally:
        os.chdir(cwd)

# ---- the model's input scale and normalization --------------------------------------------------
def test_a_model_on_0_255_needs_its_input_scale(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A model trained on pixel values 0..255 (tests.nets.default_on_pixels): with the default
    scale (inputs in [0, 1]) its float top-1 is near chance and a warning says so; with
    --input-scale 1 it gives the shipped model's results exactly."""
    common = ["run", "--model", PIXELS, "--limit", "40"]
    code, _, err = cli(capsys, *common, "--out", str(tmp_path / "a"))
    assert code == 0
    assert len(err.splitlines()) == 1 and "warning: the float model scores" in err
    assert "near chance" in err and "--input-scale" in err
    code, _, err = cli(capsys, *common, "--input-scale", "1", "--out", str(tmp_path / "b"))
    assert code == 0 and err == ""
    got = json.loads((tmp_path / "b" / "result.json").read_text())
    ref = simulate("default", "default", limit=40).to_json()
    assert got["accuracy"]["float_top1"] == ref["accuracy"]["float_top1"] > 0.8
    assert got["input"]["scale"] == 1.0
    # the Python API and checkpoint metadata say the same
    api = simulate(nets.default_on_pixels(), "default", limit=40,
                   input_spec=InputSpec(scale=1.0))
    assert api.accuracy.float_top1 == ref["accuracy"]["float_top1"]
    net, meta = load_shipped_model()
    pixels = nets.default_on_pixels()
    save_checkpoint(tmp_path / "ckpt", pixels, {**meta, "input": {"scale": 1}})
    from_meta = simulate(str(tmp_path / "ckpt.safetensors"), "default", limit=40)
    assert from_meta.accuracy.float_top1 == ref["accuracy"]["float_top1"]
    assert from_meta.to_json()["input"]["scale"] == 1


def test_normalization_is_applied_per_channel() -> None:
    images, labels = _fmnist(4)
    rgb = images.expand(-1, 3, -1, -1).contiguous()
    spec = InputSpec(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    _, batches = resolve_inputs(nets.tiny_cnn(3, 10, 28, 2), (rgb, labels), input_spec=spec)
    x = rgb.float() / 255
    want = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    assert torch.allclose(batches.images, want)
    assert parse_normalize("0.5,0.25") == ((0.5,), (0.25,))
    assert parse_normalize("0.4,0.5,0.6/0.2,0.2,0.3") == ((0.4, 0.5, 0.6), (0.2, 0.2, 0.3))
    assert parse_scale("1/255") == 1 / 255 and parse_scale("1") == 1.0
    # a scale or normalization given for float images is refused, not ignored
    with pytest.raises(SparsexbarError, match="float images"):
        resolve_inputs(nets.tiny_fmnist_net(), (images.float() / 255, labels),
                       input_spec={"scale": 1.0})


def test_uint8_and_channels_last_tensors() -> None:
    """uint8 tensors are pixels (scaled by the spec); NHWC arrays are turned around (a note)."""
    images, labels = _fmnist(6)
    nhwc = images.permute(0, 2, 3, 1).numpy()
    with pytest.warns(SparsexbarNote, match="channels-last"):
        _, batches = resolve_inputs(nets.tiny_fmnist_net(), (nhwc, labels.numpy()))
    assert torch.equal(batches.images, images.float() / 255)
    # one RGB image without its batch dimension, with one label: a hint, not 3 gray images
    with pytest.raises(SparsexbarError, match=r"one \(C, H, W\) image needs a batch dim"):
        resolve_inputs(nets.tiny_cnn(in_ch=3, size=8), (torch.rand(3, 8, 8), torch.tensor([1])))


# ---- warnings ---------------------------------------------------------------------------------
def test_untrained_zoo_models_and_other_class_counts_are_warned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "run", "--model", "lenet5", "--limit", "2", "--out",
                       str(tmp_path / "a"))
    assert code == 0
    assert err.startswith("sparsexbar: warning: model 'lenet5' is the zoo architecture with "
                          "untrained (random) weights")
    assert len(err.splitlines()) == 1
    code, _, err = cli(capsys, "run", "--model", "tests.nets:five_class_net", "--limit", "2",
                       "--out", str(tmp_path / "b"))
    assert code == 0
    assert err.splitlines() == ["sparsexbar: warning: data set 'fashion-mnist' has labels up "
                                "to 9 but the model has 5 outputs: images of the classes it "
                                "lacks count as wrong"]
    with pytest.warns(SparsexbarWarning, match="near chance"):
        simulate(nets.tiny_fmnist_net(), "default", limit=20)


# ---- compare ------------------------------------------------------------------------------------
def test_compare_runs_what_can_run_on_a_noisy_device(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """sre (joint) refuses a noisy device: dense and sre:mode=weight still run and are
    written, failed.json and the table say why sre did not, the command exits 2."""
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "compare", "--model", TINY, "--limit", "4", "--schemes",
                            "dense,sre,sre:mode=weight", "--set",
                            "device.read_noise_sigma=0.05", "--out", str(out))
    line = assert_one_line_error(code, err, "1 of 3 schemes did not run", "sre:mode=weight")
    assert str(out) in line
    failed = json.loads((out / "failed.json").read_text())
    assert failed.keys() == {"sre"}
    assert "give the scheme as sre:mode=weight" in failed["sre"]  # the spelling that ran
    assert (out / "dense_result.json").is_file() and (out / "sre_mode-weight_result.json").is_file()
    assert not (out / "sre_result.json").exists()
    assert len((out / "comparison.csv").read_text().splitlines()) == 3  # header + 2 schemes
    assert "sre did not run" in (out / "report.html").read_text()
    assert "did not run" in stdout


def test_compare_into_a_used_directory_keeps_one_run(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    common = ["compare", "--model", TINY, "--limit", "3", "--out", str(out)]
    assert cli(capsys, *common, "--schemes", "dense,sre,pattern")[0] == 0
    (out / "notes.txt").write_text("mine")
    # a user's files named like a scheme's, of no scheme the earlier comparison ran: kept (they
    # were removed as stale)
    (out / "baseline_result.json").write_text("{}")
    (out / "my_layers.csv").write_text("x\n")
    code, stdout, _ = cli(capsys, *common, "--schemes", "dense")
    assert code == 0
    assert "removed 4 files of an earlier comparison" in stdout
    assert sorted(p.name for p in out.glob("*_result.json")) == [
        "baseline_result.json", "dense_result.json"]
    assert sorted(p.name for p in out.glob("*_layers.csv")) == ["dense_layers.csv",
                                                               "my_layers.csv"]
    assert (out / "notes.txt").read_text() == "mine"
    # the same comparison again: nothing is named as removed (its own files are rewritten)
    code, stdout, _ = cli(capsys, *common, "--schemes", "dense")
    assert code == 0 and "earlier comparison" not in stdout
    assert len((out / "comparison.csv").read_text().splitlines()) == 2


def test_a_scheme_that_overrides_a_setting_says_so(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """encoding's default follows adc.bits (3 here); `adc=lossless` picks its own bits, and the
    table says so (no silent 'encoding 0.95 beside dense 0.65')."""
    out = tmp_path / "out"
    code, stdout, _ = cli(capsys, "compare", "--model", TINY, "--limit", "3", "--schemes",
                          "dense,encoding,encoding:adc=lossless", "--set", "adc.bits=3",
                          "--out", str(out))
    assert code == 0
    follows = json.loads((out / "encoding_result.json").read_text())
    assert "overrides" not in follows["scheme"]
    assert {lay["adc_bits"] for lay in follows["layers"]} == {3}
    lossless = json.loads((out / "encoding_adc-lossless_result.json").read_text())["scheme"]
    bits = lossless["overrides"]["adc.bits"]
    assert bits.endswith("per layer, not 3 (adc=lossless, the fewest exact bits; "
                         "encoding (adc=auto) follows adc.bits)")
    assert "overrides" not in json.loads((out / "dense_result.json").read_text())["scheme"]
    text = " ".join(stdout.split())
    assert "encoding:adc=lossless *" in text and f"* encoding:adc=lossless: adc.bits {bits}" in text


# ---- named data sets need their folder: --root ---------------------------------------------------
def test_cifar10_from_its_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_data import _write_cifar10

    _write_cifar10(tmp_path / "cifar")
    code, _, err = cli(capsys, "run", "--model", "tests.nets:rgb32_net", "--data", "cifar10",
                       "--root", str(tmp_path / "cifar"), "--out", str(tmp_path / "out"))
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["dataset"] == "cifar10" and res["num_images"] == 4
    assert res["input"]["shape"] == [3, 32, 32]


# ---- files ----------------------------------------------------------------------------------
def test_results_are_written_with_normal_file_modes(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0o022)
    try:
        code, _, _ = cli(capsys, "run", "--model", TINY, "--limit", "2", "--out",
                         str(tmp_path / "out"))
    finally:
        os.umask(old)
    assert code == 0
    for name in ("result.json", "layers.csv"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o644


def test_nothing_unpickles_with_torch_load() -> None:
    """Every torch.load in the package, benchmarks and scripts passes weights_only=True (no
    arbitrary code from a file); checkpoints are safetensors."""
    import ast

    root = Path(__file__).resolve().parent.parent
    calls = []
    for folder in ("src", "benchmarks", "scripts"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                    safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                               and k.value.value is True for k in node.keywords)
                    calls.append((str(path.relative_to(root)), safe))
    assert calls and all(safe for _, safe in calls), calls


# ---- config types --------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "text"), [
    ("ou.rows", "true"), ("adc.bits", "yes"), ("adc.step", "on"), ("timing.read_ns", "true"),
    ("cell.slices", "false"), ("ou.rows", "9.5"), ("device.seed", "1.5"), ("name", "yes")])
def test_config_fields_refuse_booleans_and_fractions(key: str, text: str) -> None:
    """`--set` values are YAML scalars: yes/true/on would have become 1 for a number field
    (ou.rows=true ran with 1-row OUs); now refused naming the key, for every field."""
    from sparsexbar.core.config import ConfigError, preset

    with pytest.raises(ConfigError, match=f"{key}: must be"):
        preset("isaac").with_overrides({key: yaml.safe_load(text)})
    assert preset("isaac").with_overrides({"ou.rows": 9.0}).ou.rows == 9


def test_a_config_node_added_later_is_strict_too() -> None:
    from pydantic import ValidationError

    from sparsexbar.core.config import _Node

    class Later(_Node):
        bits: int = 1
        enabled: bool = False
        rate: float | None = None

    with pytest.raises(ValidationError, match="not a boolean"):
        Later(bits=True)
    with pytest.raises(ValidationError, match="not a boolean"):
        Later(rate=True)
    with pytest.raises(ValidationError, match="whole number"):
        Later(bits=2.5)
    assert Later(enabled=True, bits=3, rate=0.5) == Later(enabled=True, bits=3.0, rate=0.5)


def test_sigterm_ends_a_command_with_one_line_and_no_temporary_file(tmp_path: Path) -> None:
    """SIGTERM (kill, a batch system's limit) while a run writes its results: exit 143, one
    line, no `.NAME.tmp` left (it exited silently with -15 and could leave them)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparsexbar.app.cli", "compare", "--limit", "2000",
         "--schemes", "dense,sre", "--out", str(out)], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (proc.stdout and proc.stdout.read(1)):
        assert proc.poll() is None  # the first progress bar: past the imports, running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.splitlines() == ["sparsexbar: terminated (SIGTERM); no file is half-written "
                                "(each is written whole or not at all; files written before "
                                "the signal stay)"]
    assert not list(tmp_path.rglob("*.tmp"))


# ---- calibrate takes its data as run does ------------------------------------------------------
def test_calibration_maps_an_image_folders_labels_and_fits_its_images(tmp_path: Path) -> None:
    """An RGB 40x40 folder named by class: calibrate's images are fitted to the model (1x28x28)
    and its labels mapped by name (they were the folder indices, and the images 3x40x40)."""
    from sparsexbar.studies.setup import calibration_setup

    images, labels = _write_folder(tmp_path / "folder", 40, {1: "Trouser", 7: "Sneaker",
                                                               8: "Bag"}, rgb_size=40)
    _, _, x, y = calibration_setup("default", str(tmp_path / "folder"), "isaac", None, 8)
    assert x.shape == (8, 1, 28, 28)
    assert y.tolist() == labels[:8].tolist()


def test_calibration_takes_a_named_data_sets_root_and_pads_for_the_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`calibrate --data fashion-mnist --root DIR` on a 32x32 model: the train split's images
    of DIR, zero-padded 28 -> 32 (it failed inside the model); --root with the default data is
    refused."""
    from sparsexbar.studies.setup import calibration_setup
    from tests.test_data import _write_idx

    images, labels = _fmnist(6)
    _write_idx(tmp_path / "fm", images[:, 0].numpy(), labels.numpy().astype("uint8"), gz=False,
               prefix="train")
    net = zoo.build_model("lenet5", in_channels=1, num_classes=10, input_size=32, width=0.25)
    save_checkpoint(tmp_path / "net32", net, {"architecture": "lenet5", "arch_kwargs": {
        "in_channels": 1, "num_classes": 10, "input_size": 32, "width": 0.25},
        "dataset": "fashion-mnist"})
    _, _, x, y = calibration_setup(str(tmp_path / "net32"), "fashion-mnist", "isaac", None, 4,
                                   root=tmp_path / "fm")
    assert x.shape == (4, 1, 32, 32) and y.tolist() == labels[:4].tolist()
    assert torch.equal(x[:, :, 2:30, 2:30], images[:4].float() / 255)
    assert float(x[:, :, :2].abs().sum()) == 0.0
    code, _, err = cli(capsys, "calibrate", "comprrae", "--data", "default", "--root",
                       str(tmp_path / "fm"), "--out", str(tmp_path / "c.json"))
    assert_one_line_error(code, err, "--root", "named data set")


def test_calibrate_cli_takes_cifar10_with_its_root(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_data import _write_cifar10

    _write_cifar10(tmp_path / "cifar")
    out = tmp_path / "cal.json"
    code, stdout, err = cli(capsys, "calibrate", "comprrae", "--data", "cifar10", "--root",
                            str(tmp_path / "cifar"), "--images", "4", "--candidates", "0",
                            "--out", str(out))
    assert code == 0, err
    assert "RGB -> grey" in err and "are not the classes of 'cifar10'" in err
    assert "on 4 calibration images" in stdout and out.is_file()


# ---- tensors, Datasets and DataLoaders -------------------------------------------------------
def test_float_images_outside_0_1_are_warned_naming_their_range() -> None:
    images, labels = _fmnist(8)
    for x, span in ((images.float(), "0..255"), (images.float() / 255 - 1, "-1..0")):
        with pytest.warns(SparsexbarWarning, match=f"spanning {span}.*divide 0..255 values"):
            resolve_inputs("default", (x, labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, batches = resolve_inputs("default", (images.float() / 255, labels))
    assert torch.equal(batches.images, images.float() / 255)


def test_a_stray_huge_label_does_not_size_a_zoo_models_classifier() -> None:
    images, labels = _fmnist(4)
    labels = labels.clone()
    labels[0] = 10**5
    with pytest.raises(SparsexbarError, match="class indices below 32768, got 100000"):
        resolve_inputs("lenet5", (images, labels))
    # a data set's declared classes size it; a label beyond them is warned about
    ds = fashion_mnist("test").subset(0, 4)
    ds.labels[0] = 200
    with pytest.warns(SparsexbarWarning, match="labels up to 200 but the model has 10 outputs"):
        loaded, _ = resolve_inputs("lenet5", ds)
    assert loaded.net(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


class _Items(torch.utils.data.Dataset):
    """Four items made by `make(i)`."""

    def __init__(self, make: Any) -> None:
        self.make = make

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> Any:
        return self.make(i)


def test_datasets_torch_cannot_batch_are_one_line_errors() -> None:
    from PIL import Image

    cases = [
        (_Items(lambda i: (Image.new("L", (28, 28)), 1)), r"PIL images.*PILToTensor\(\)"),
        (_Items(lambda i: (torch.zeros(1, 28 + i, 28), 1)), "images of differing sizes"),
        (torch.utils.data.DataLoader(_Items(lambda i: (torch.zeros(1, 28 + i, 28), 1)),
                                     batch_size=4), "images of differing sizes"),
        (torch.utils.data.DataLoader(_Items(lambda i: (torch.zeros(1, 28, 28), 1)),
                                     batch_size=None), r"single \(unbatched\) items"),
        (_Items(lambda i: (torch.zeros(1, 28, 28), 1, 2)), "pairs, got 3 items"),
    ]
    for data, message in cases:
        with pytest.raises(SparsexbarError, match=message):
            resolve_inputs("default", data)


def test_meta_and_sparse_tensors_are_refused() -> None:
    images, labels = _fmnist(4)
    with pytest.raises(SparsexbarError, match="images are meta tensors"):
        resolve_inputs("default", (images.to("meta"), labels))
    with pytest.raises(SparsexbarError, match=r"images are torch.sparse_coo tensors.*to_dense"):
        resolve_inputs("default", (images.float().to_sparse(), labels))


def test_a_shuffling_dataloader_gets_a_note_and_nan_names_its_image() -> None:
    images, labels = _fmnist(8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                         batch_size=4, shuffle=True)
    with pytest.warns(SparsexbarNote, match="DataLoader shuffles.*random state"):
        resolve_inputs("default", loader)
    x = images.float() / 255
    x[5, 0, 3, 3] = float("nan")
    with pytest.raises(SparsexbarError, match=r"NaN or Inf \(image 5;"):
        resolve_inputs("default", (x, labels))
