"""Shipped models: the int8 / sparse checkpoint form (exact integers, zeros kept), the names
users type, `sparsexbar models`, and every shipped model against its recorded figures:
accuracy on the first 1,000 test images, and for the pruned ones the sparsity and pattern sets
counted from the weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sparsexbar.core.errors import CheckpointError, SparsexbarError
from sparsexbar.core.frontend import quantize_model
from sparsexbar.studies.shipped_models import current_doc, shipped_markdown
from sparsexbar.training import zoo
from sparsexbar.training.checkpoint import (
    load_checkpoint,
    quantize_int8,
    round_model_weights,
    save_checkpoint,
)
from sparsexbar.training.data import fashion_mnist
from sparsexbar.training.models import load_model
from sparsexbar.training.prune import crossbar_layers, mask_codes, pattern_layers
from sparsexbar.training.shipped import (
    SHIPPED,
    find_shipped,
    load_shipped,
    model_width,
    shipped_names,
)
from sparsexbar.training.train import evaluate
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli


def _pruned_vgg(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = zoo.build_model("vgg8", in_channels=1, num_classes=10, input_size=12, width=0.125)
    nets.randomize_bn(net, seed)
    with torch.no_grad():  # half the first conv's weights and a third of the rest zero
        for i, (_, w) in enumerate(crossbar_layers(net)):
            keep = torch.rand(w.shape, generator=torch.Generator().manual_seed(i)) > (
                0.5 if i == 0 else 0.1 + 0.2 * (i % 2))
            w.mul_(keep)
    return net.eval()


def test_int8_checkpoint_keeps_the_integers_and_the_zeros(tmp_path: Path) -> None:
    net = _pruned_vgg()
    saved, json_path = save_checkpoint(tmp_path / "m", net, {"architecture": "vgg8",
                                       "arch_kwargs": {"in_channels": 1, "input_size": 12,
                                                       "width": 0.125}}, weights="int8")
    meta = json.loads(json_path.read_text())
    assert meta["dtype"] == "int8"
    forms = {name: info["form"] for name, info in meta["packed"].items()}
    names = [name for name, _ in crossbar_layers(net)]
    assert sorted(forms) == sorted(f"{n}.weight" for n in names)
    assert {"dense", "sparse"} <= set(forms.values())  # 10% zero: dense; 30%, 50%: sparse
    loaded, _ = load_checkpoint(saved)
    rounded = _pruned_vgg()
    round_model_weights(rounded, "int8")
    original = dict(crossbar_layers(net))
    stored = {}
    for (name, a), (_, b) in zip(crossbar_layers(loaded), crossbar_layers(rounded),
                                 strict=True):
        assert torch.equal(a, b), name  # exactly what the file holds
        assert torch.equal(a == 0, original[name] == 0), name  # zeros and nonzeros kept
        stored[name] = quantize_int8(original[name])[0]
        assert torch.equal(quantize_int8(a)[0], stored[name]), name  # a fixed point
    # the simulator's 8-bit integers (after BN folding) are the file's
    x = nets.random_images(4, 1, 12, seed=3)
    for layer in quantize_model(loaded, x, 8, 8).layers:
        assert torch.equal(layer.weight_int, stored[layer.name].to(torch.int64)), layer.name
    # the file is compact: int8 values, the sparse ones without their zeros
    floats = sum(w.numel() for _, w in crossbar_layers(net)) * 4
    assert saved.stat().st_size < floats / 3


def test_malformed_int8_checkpoint_is_refused(tmp_path: Path) -> None:
    net = _pruned_vgg(1)
    meta = {"architecture": "vgg8", "arch_kwargs": {"in_channels": 1, "input_size": 12,
                                                    "width": 0.125}}
    _, json_path = save_checkpoint(tmp_path / "m", net, meta, weights="int8")
    doc = json.loads(json_path.read_text())
    name = next(n for n, info in doc["packed"].items() if info["form"] == "sparse")
    doc["packed"][name]["shape"][0] += 1
    json_path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(json_path)
    del doc["packed"]
    json_path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="packed"):
        load_checkpoint(json_path)


def test_shipped_names_resolve() -> None:
    assert "vgg8-fmnist" in shipped_names() and "vgg8-fmnist-pattern" in shipped_names()
    assert find_shipped("default") == find_shipped("vgg8-fmnist")
    loaded = load_model("vgg8-fmnist-pattern")
    assert loaded.name == "vgg8-fmnist-pattern" and loaded.meta is not None
    with pytest.raises(SparsexbarError, match="nope"):
        load_shipped("nope")


def test_models_command_lists_every_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "models", "--markdown")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in lines[2:]] == shipped_names()
    assert "simulated %" in lines[0]
    code, _, err = cli(capsys, "models", "--measure", "vgg99")
    assert_one_line_error(code, err, "vgg99")


@pytest.mark.parametrize("name", shipped_names())
def test_shipped_model_matches_its_recorded_figures(name: str) -> None:
    """Loads; float top-1 on the first 1,000 test images within 1 pt of the recorded one;
    the pruned ones: weight zeros per layer and pattern sets counted from the weights equal
    the recorded ones."""
    net, meta = load_shipped(name)
    acc = meta["accuracy"]
    ds = fashion_mnist("test").subset(0, 1000)
    kwargs = meta.get("arch_kwargs", {})
    if kwargs.get("input_size", 28) != 28:
        ds = ds.fitted(int(kwargs.get("in_channels", 1)), int(kwargs["input_size"]))
    first = evaluate(net, ds)
    recorded = acc.get("float_top1_first_1000", acc["float_top1"])
    assert abs(first - recorded) <= 0.01, (first, recorded)
    pruning = meta.get("pruning")
    if not pruning or "table" not in pruning:
        return
    rows = {row["layer"]: row for row in pruning["table"]}
    for layer, w in crossbar_layers(net):
        assert int((w == 0).sum()) == rows[layer]["zeros"], layer
    if pruning["method"] == "pattern":
        for layer, w in pattern_layers(net):
            codes = mask_codes(w != 0)
            used = sorted(int(c) for c in codes[codes != 0].unique())
            assert len(used) == rows[layer]["patterns_used"], layer
            if "patterns_used_codes" in rows[layer]:
                assert used == rows[layer]["patterns_used_codes"], layer


VGG16_NAMES = ["vgg16-fmnist", "vgg16-fmnist-sre50", "vgg16-fmnist-sre70", "vgg16-fmnist-sre90",
               "vgg16-fmnist-pattern"]


VGG16_BARS = {"vgg16-fmnist-sre50": 0.010, "vgg16-fmnist-sre70": 0.010,
              "vgg16-fmnist-sre90": 0.010, "vgg16-fmnist-pattern": 0.005}


def test_vgg16_workload_meets_the_accuracy_bars() -> None:
    """The workload issue's bars, on the whole test split (the files' metadata, written by
    train/prune): dense >= 93% float and its 8-bit network within 0.5 pt; OU-structured
    variants within 1.0 pt of dense, the pattern variant within 0.5 pt; each pruned one's
    recorded parent accuracy is the shipped dense model's."""
    _, dense = load_shipped("vgg16-fmnist")
    for name in VGG16_NAMES:  # the papers' network: full width (64-512 channels)
        assert load_shipped(name)[1]["arch_kwargs"]["width"] == 1, name
    base = dense["accuracy"]
    assert base["test_images"] == 10000
    assert base["float_top1"] >= 0.93
    assert abs(base["quantized_top1"] - base["float_top1"]) <= 0.005
    for name, bar in VGG16_BARS.items():
        _, meta = load_shipped(name)
        acc = meta["accuracy"]
        assert acc["test_images"] == 10000, name
        assert base["float_top1"] - acc["float_top1"] <= bar + 1e-9, name
        if name != "vgg16-fmnist-sre90":  # pruned from sre70, whose own figure it records
            assert meta["pruning"]["top1_before"] == base["float_top1"], name
        assert meta["pruning"]["tune_images"] in (None, 60000), name  # the whole train split


@pytest.mark.parametrize("name", [n for n in ("vgg16-fmnist", "vgg16-fmnist-pattern")
                                  if n in shipped_names()])
def test_vgg16_models_run_on_the_embedded_data(name: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`sparsexbar run --model NAME` on the embedded 28x28 Fashion-MNIST: the tool pads the
    images to the model's 32x32 and says so; 15 crossbar layers; the lossless dense run's
    top-1 is the integer-quantized network's. The dense parent and the pattern-pruned net
    (the SRE-pruned ones share the parent's architecture and metadata layout; their weights
    are checked above, ~9 s a run here)."""
    code, _, err = cli(capsys, "run", "--model", name, "--limit", "4", "--batch-size", "4",
                       "--out", str(tmp_path))
    assert code == 0, err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["model"] == name and result["num_images"] == 4
    assert result["input"]["shape"] == [1, 32, 32] and result["input"]["data_shape"] == [1, 28, 28]
    assert "zero padding" in result["input"]["fitted"] and "32x32" in err
    assert len(result["layers"]) == 15
    assert result["accuracy"]["top1"] == result["accuracy"]["quantized_top1"]
    _, meta = load_shipped(name)
    assert meta["arch_kwargs"]["input_size"] == 32


def test_model_width_reads_the_metadata(tmp_path: Path) -> None:
    """A shipped name or a checkpoint path: the width its metadata records; anything else
    (a module spec, a file without our metadata, a module object): None."""
    assert model_width("vgg8-fmnist") == 0.25
    assert model_width(find_shipped("vgg8-fmnist-pattern").path) == 0.25  # type: ignore[union-attr]
    assert model_width("tests.nets:tiny_fmnist_net") is None
    (tmp_path / "net.json").write_text("{not json")
    assert model_width(tmp_path / "net.safetensors") is None
    assert model_width(nn.Linear(2, 2)) is None


def test_every_registered_model_has_a_description() -> None:
    assert len({m.name for m in SHIPPED}) == len(SHIPPED)
    assert all(m.description for m in SHIPPED)


def test_docs_models_table_is_current() -> None:
    """docs/models.md's table of shipped models is `sparsexbar models --markdown`'s output."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    begin, end = "<!-- models-table -->\n", "<!-- /models-table -->"
    block = doc[doc.index(begin) + len(begin):doc.index(end)]
    assert block == shipped_markdown()
    assert current_doc(doc) == doc  # the model cards too
