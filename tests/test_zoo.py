"""Zoo models (build for Fashion-MNIST and CIFAR shapes, forward shapes, fx-traceability,
allowed layer types, width scaling, registry errors) and checkpoints (round trip, float16,
mismatch and corruption errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import fx, nn

from sparsexbar.core.errors import CheckpointError, SparsexbarError
from sparsexbar.training.checkpoint import default_file_mode, load_checkpoint, save_checkpoint
from sparsexbar.training.zoo import MODELS, build_model

ALLOWED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.ReLU6,
           nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout)
SHAPES = [(1, 28, 10), (3, 32, 100)]  # (in_channels, input_size, num_classes)
# Narrow versions of the big nets keep the forward passes fast.
WIDTH = {"vgg8": 0.25, "vgg11": 0.125, "vgg16": 0.125, "resnet20": 0.5, "resnet18": 0.125,
         "lenet5": 1.0, "mobilenetv2": 0.25}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("channels", "size", "classes"), SHAPES)
def test_builds_forwards_and_traces(name: str, channels: int, size: int, classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, num_classes=classes, input_size=size,
                        width=WIDTH[name]).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, classes)
    assert torch.isfinite(y).all()
    gm = fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), y, rtol=0, atol=0)
    leaves = [m for m in model.modules() if not list(m.children())]
    assert leaves, name
    for m in leaves:
        assert isinstance(m, ALLOWED), f"{name}: {type(m).__name__}"
        if isinstance(m, nn.Conv2d):  # depthwise (groups = channels) in MobileNetV2 only
            assert m.groups == 1 or (name == "mobilenetv2" and m.groups == m.in_channels)
        if isinstance(m, nn.ReLU):
            assert not m.inplace
    # Traced graph: only module calls, residual adds and flatten-free plumbing.
    ops = {n.op for n in gm.graph.nodes}
    assert ops <= {"placeholder", "call_module", "call_function", "output"}
    funcs = {n.target.__name__ for n in gm.graph.nodes if n.op == "call_function"}
    assert funcs <= {"add"}, funcs


def test_vgg8_layout_matches_neurosim_spirit() -> None:
    model = build_model("vgg8", in_channels=1, num_classes=10, input_size=28, width=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(128 * 3 * 3, 256),
                                                                       (256, 10)]
    full = build_model("vgg8", in_channels=3, num_classes=10, input_size=32)
    assert [m.out_features for m in full.modules() if isinstance(m, nn.Linear)] == [1024, 10]
    assert [m.in_features for m in full.modules() if isinstance(m, nn.Linear)][0] == 512 * 16


def test_resnet_depths_and_residual_adds() -> None:
    for name, convs_expected, adds in (("resnet20", 19 + 2, 9), ("resnet18", 17 + 3, 8)):
        model = build_model(name, in_channels=3, num_classes=10, input_size=32)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == convs_expected, name  # 3x3 convs + 1x1 shortcuts
        gm = fx.symbolic_trace(model)
        assert sum(n.op == "call_function" for n in gm.graph.nodes) == adds, name
    r20 = build_model("resnet20")
    assert sum(p.numel() for p in r20.parameters()) == pytest.approx(0.27e6, rel=0.05)


def test_lenet5_classic_sizes() -> None:
    model = build_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]


def test_mobilenetv2_blocks_strides_and_depthwise_layers() -> None:
    """CIFAR-style MobileNetV2: stride-1 stem, blocks capped per stage (2: 12 blocks, 4: the
    paper's 17), three stride-2 stages (32 -> 4), depthwise 3x3 convs, residual adds where the
    shape is kept, a 1280 x width head."""
    for blocks, count in ((2, 12), (4, 17)):
        model = build_model("mobilenetv2", in_channels=1, num_classes=10, input_size=32,
                            width=0.5, blocks=blocks)
        assert len(model.blocks) == count
    model = build_model("mobilenetv2", in_channels=1, num_classes=10, input_size=32, width=0.5)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 12 and all(m.groups == m.in_channels == m.out_channels
                                        and m.kernel_size == (3, 3) for m in depthwise)
    assert [m.stride[0] for m in depthwise] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 1]
    assert sum(b.residual for b in model.blocks) == 5
    assert model.fc.in_features == 640
    feats = model.head(model.blocks(model.stem(torch.rand(1, 1, 32, 32))))
    assert feats.shape == (1, 640, 4, 4)


def test_registry_errors() -> None:
    with pytest.raises(SparsexbarError, match="unknown model 'alexnet'.*vgg8"):
        build_model("alexnet")
    with pytest.raises(SparsexbarError, match="bad arguments for model 'vgg8'"):
        build_model("vgg8", depth=3)
    with pytest.raises(SparsexbarError, match="input_size"):
        build_model("vgg8", input_size=2)
    with pytest.raises(SparsexbarError, match="width"):
        build_model("resnet20", width=0)


# ---- checkpoints ------------------------------------------------------------------------------
def _trained_like(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics so eval outputs depend on them."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    return model.eval()


def _small_vgg() -> nn.Module:
    torch.manual_seed(0)
    return _trained_like(build_model("vgg8", in_channels=1, num_classes=10, input_size=28,
                                     width=0.125))


META = {"architecture": "vgg8",
        "arch_kwargs": {"in_channels": 1, "num_classes": 10, "input_size": 28, "width": 0.125},
        "dataset": "fashion-mnist", "accuracy": {"float_top1": 0.5}, "train": {"epochs": 1}}


def test_checkpoint_round_trip_exact(tmp_path: Path) -> None:
    model = _small_vgg()
    x = torch.rand(4, 1, 28, 28)
    weights, meta_path = save_checkpoint(tmp_path / "m", model, META)
    assert weights == tmp_path / "m.safetensors" and meta_path == tmp_path / "m.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    assert all(p.stat().st_mode & 0o777 == default_file_mode() for p in tmp_path.iterdir())
    doc = json.loads(meta_path.read_text())
    assert doc["format_version"] == 1 and doc["normalization"] == "none, inputs in [0,1]"
    with torch.no_grad():
        ref = model(x)
        for spec in (tmp_path / "m", weights, meta_path, str(weights)):
            loaded, meta = load_checkpoint(spec)
            assert not loaded.training and meta["arch_kwargs"] == META["arch_kwargs"]
            assert torch.equal(loaded(x), ref)
    # A directory as destination: the stem is the architecture name.
    weights2, _ = save_checkpoint(tmp_path, model, META)
    assert weights2 == tmp_path / "vgg8.safetensors"


def test_checkpoint_half_is_smaller_and_close(tmp_path: Path) -> None:
    model = _small_vgg()
    w32, _ = save_checkpoint(tmp_path / "f32", model, META)
    w16, _ = save_checkpoint(tmp_path / "f16.safetensors", model, META, half=True)
    assert w16.stat().st_size < 0.6 * w32.stat().st_size
    loaded, meta = load_checkpoint(w16)
    assert meta["dtype"] == "float16"
    sd = loaded.state_dict()
    assert all(t.dtype == torch.float32 for t in sd.values() if t.is_floating_point())
    w = model.state_dict()["features.0.weight"]
    assert torch.equal(sd["features.0.weight"], w.half().float())
    assert torch.equal(sd["features.1.running_var"], model.state_dict()["features.1.running_var"])
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-2, atol=1e-2)


def test_checkpoint_mismatch_names_tensor(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m", _small_vgg(), META)
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["arch_kwargs"]["width"] = 0.25
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"'features.0.weight' has shape \(16, 1, 3, 3\), "
                                              r"model expects \(32, 1, 3, 3\)"):
        load_checkpoint(tmp_path / "m")
    doc["architecture"] = "resnet20"
    doc["arch_kwargs"] = {"in_channels": 1}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="'conv1.weight' missing"):
        load_checkpoint(tmp_path / "m")
    doc["architecture"] = "alexnet"
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="cannot build model: unknown model 'alexnet'"):
        load_checkpoint(tmp_path / "m")


def test_checkpoint_unexpected_tensor(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _small_vgg()
    save_checkpoint(tmp_path / "m", model, META)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected tensor 'extra.weight'"):
        load_checkpoint(tmp_path / "m.json")


def test_checkpoint_missing_or_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    save_checkpoint(tmp_path / "m", _small_vgg(), META)
    (tmp_path / "m.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint weights .*m\.safetensors"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"weights .*m\.safetensors do not exist"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint metadata .*m\.json"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps({**META, "format_version": 7}))
    with pytest.raises(CheckpointError, match="format_version 7"):
        load_checkpoint(tmp_path / "m")
    with pytest.raises(CheckpointError, match="architecture"):
        save_checkpoint(tmp_path / "x", _small_vgg(), {"dataset": "none"})


# ---- the shipped model -----------------------------------------------------------------------
def test_shipped_model_loads_and_matches_recorded_accuracy() -> None:
    from sparsexbar.training.checkpoint import load_shipped_model, shipped_model_path
    from sparsexbar.training.data import load_dataset
    from sparsexbar.training.train import evaluate

    path = shipped_model_path()
    assert path.is_file() and path.stat().st_size < 2_000_000
    model, meta = load_shipped_model()
    assert meta["architecture"] == "vgg8" and meta["dataset"] == "fashion-mnist"
    assert meta["arch_kwargs"] == {"in_channels": 1, "num_classes": 10, "input_size": 28,
                                   "width": 0.25}
    assert meta["accuracy"]["test_images"] == 10000 and meta["accuracy"]["float_top1"] >= 0.92
    first1000 = load_dataset("fashion-mnist", "test").subset(0, 1000)
    top1 = evaluate(model, first1000, batch_size=500)
    assert abs(top1 - meta["accuracy"]["float_top1_first1000"]) <= 0.01
    assert top1 >= 0.9


# ---- the shipped MobileNetV2 (mobilenetv2-fmnist) ----------------------------------------------
def test_shipped_mobilenet_loads_and_matches_recorded_accuracy() -> None:
    """The shipped MobileNetV2: its metadata says what it is (width 0.5, Fashion-MNIST padded
    to 32x32, float16 weights) and its float top-1 on the first 1000 test images, fitted to
    32x32 the way it was trained, is the recorded one. Skipped only while the asset is absent
    (scripts/ship_mobilenet.py puts it in place)."""
    from sparsexbar.training.checkpoint import load_shipped_mobilenet, shipped_mobilenet_path
    from sparsexbar.training.data import load_dataset
    from sparsexbar.training.inputs import spec_from_meta
    from sparsexbar.training.models import load_model
    from sparsexbar.training.train import evaluate

    path = shipped_mobilenet_path()
    if not path.is_file():
        pytest.skip(f"{path.name} is not shipped yet")
    assert path.stat().st_size < 2_000_000
    model, meta = load_shipped_mobilenet()
    assert meta["architecture"] == "mobilenetv2" and meta["dataset"] == "fashion-mnist"
    assert meta["arch_kwargs"] == {"in_channels": 1, "num_classes": 10, "input_size": 32,
                                   "width": 0.5}
    assert meta["dtype"] == "float16"
    assert meta["accuracy"]["test_images"] == 10000
    assert sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules()) == 12
    spec = spec_from_meta(meta, model)
    assert (spec.channels, spec.size, spec.fit) == (1, 32, "pad")
    loaded = load_model("mobilenetv2-fmnist")
    assert loaded.name == "mobilenetv2-fmnist" and loaded.meta == meta
    first1000 = load_dataset("fashion-mnist", "test").subset(0, 1000).fitted(1, 32, "pad")
    top1 = evaluate(loaded.net, first1000, batch_size=500)
    assert abs(top1 - meta["accuracy"]["float_top1_first1000"]) <= 0.01
    assert top1 >= 0.8


def test_a_missing_shipped_mobilenet_is_one_line_with_exit_2(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sparsexbar.training import checkpoint, shipped
    from tests.test_cli_errors import assert_one_line_error, cli

    # an installation without the file: both places that look for shipped files see none
    monkeypatch.setattr(checkpoint, "ASSETS_DIR", tmp_path)
    monkeypatch.setattr(shipped, "ASSETS_DIR", tmp_path)
    code, _, err = cli(capsys, "run", "--model", "mobilenetv2-fmnist", "--data", "default",
                       "--limit", "2", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "mobilenetv2-fmnist", "missing from the installation")
