"""`reproduce sre` (schemes/sre/study.py) on a small LeNet-5 pruned here: every mode and
granularity gives the exact network's classes (SRE is lossless), a row per (sparsity, mode,
granularity), headline rows from those rows (largest and mean over the pruned models), files
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsexbar.schemes.sre.study import reproduce_sre
from sparsexbar.studies.published import figure
from sparsexbar.training.zoo import build_model


def test_reproduce_sre_small(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model("lenet5", in_channels=1, num_classes=10, input_size=28, width=0.5)
    report = reproduce_sre(tmp_path, net, "isaac", sparsities=(0.0, 0.5, 0.7), test_images=16,
                           accuracy_images=64, tune_images=32, epochs=1, batch_size=16,
                           deviation=False)
    rows = report["rows"]
    runs = [("weight", "-"), ("activation", "bit"), ("activation", "word"), ("joint", "bit"),
            ("joint", "word")]
    assert [(r["sparsity"], r["mode"], r["granularity"]) for r in rows] == [
        (s, m, g) for s in (0.0, 0.5, 0.7) for m, g in runs]
    for r in rows:
        assert r["simulated_classes_equal_exact"]
        assert r["accuracy_images"] == 64 and r["test_images"] == 16
        assert r["speedup"] >= 1.0 and r["energy_saving"] <= 1.0
    by = {(r["sparsity"], r["mode"], r["granularity"]): r for r in rows}
    assert by[(0.0, "weight", "-")]["speedup"] == 1.0  # nothing pruned: no row dropped
    assert by[(0.7, "weight", "-")]["weight_sparsity"] >= 0.65
    assert by[(0.7, "weight", "-")]["speedup"] > 1.0
    assert by[(0.7, "joint", "bit")]["speedup"] >= by[(0.7, "joint", "word")]["speedup"]
    # Headline: joint at bit granularity, largest and mean over the pruned models (0.5, 0.7)
    joint = [by[(s, "joint", "bit")]["speedup"] for s in (0.5, 0.7)]
    saving = [by[(s, "joint", "bit")]["energy_saving"] for s in (0.5, 0.7)]
    head = {h["key"]: h for h in report["headline"]}
    assert head["speedup_max"]["ours_value"] == max(joint)
    assert head["speedup_mean"]["ours_value"] == pytest.approx(sum(joint) / 2)
    assert head["energy_saving_max"]["ours_value"] == max(saving)
    assert head["energy_saving_mean"]["ours_value"] == pytest.approx(sum(saving) / 2)
    assert joint[0] != joint[1]  # the mean is not one sparsity's figure
    for h in report["headline"]:
        pub = figure("sre", h["key"])
        assert h["published_value"] == pub.value
        assert h["ratio"] == pytest.approx(h["ours_value"] / pub.value)
        assert h["same_direction"] is (h["ours_value"] > pub.neutral)
        assert h["baseline"].startswith("dense on isaac") and h["test_images"] == 16
    saved = json.loads((tmp_path / "sre_reproduce.json").read_text())
    assert saved["rows"] == rows and saved["headline"] == report["headline"]
    assert "up to 42.3x" in (tmp_path / "sre_reproduce.md").read_text()


def test_shipped_pruned_variants_are_the_studys_models() -> None:
    """`vgg16-fmnist` resolves to its installed -sreXX variants (nothing pruned here)."""
    from sparsexbar.schemes.sre.study import pruned_models
    from sparsexbar.training.shipped import find_shipped

    names = [f"vgg16-fmnist-sre{p}" for p in (50, 70, 90)]
    installed = [n for n in names if (m := find_shipped(n)) is not None and m.path.is_file()]
    parent = find_shipped("vgg16-fmnist")
    if not installed or parent is None or not parent.path.is_file():
        pytest.skip("the VGG-16 models are not installed")
    said: list[str] = []
    _, name, _, variants = pruned_models("vgg16-fmnist", (0.5, 0.7, 0.9), 8, 0, 0.01, "isaac",
                                         said.append)
    assert name == "vgg16-fmnist"
    assert [n for _, _, n in variants] == installed
    assert len(said) == len(names) - len(installed)


def test_a_model_with_grouped_convs_is_refused_before_pruning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`reproduce sre --model mobilenetv2-fmnist` pruned and fine-tuned three variants (~34 s
    at the smallest settings) before the first sre run refused its depthwise convs: refused
    first, naming the layer."""
    from sparsexbar.core.errors import UnsupportedModelError
    from sparsexbar.schemes.sre import study

    def no_pruning(*_: object, **__: object) -> None:
        raise AssertionError("pruned before the grouped convolution was refused")

    monkeypatch.setattr(study, "prune_model", no_pruning)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, padding=1, groups=2), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 28 * 28, 10))
    with pytest.raises(UnsupportedModelError, match="layer '2' of Sequential has groups=2"):
        study.pruned_models(net, (0.5,), 8, 0, 0.01, "isaac", lambda _: None)
