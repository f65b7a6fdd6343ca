"""`reproduce pattern` (schemes/pattern/study.py) on a small VGG-8: pattern-pruned here, one row per
crossbar layer, the headline ratios consistent with the per-layer figures, lossless on a
non-clipping ADC (simulated top-1 equal), the published rows beside ours, files written; and
the CLI verb with a checkpoint, plus its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsexbar.schemes.pattern.study import PUBLISHED, reproduce_pattern
from sparsexbar.training.checkpoint import save_checkpoint
from sparsexbar.training.zoo import build_model
from tests.test_cli_errors import assert_one_line_error, cli

KWARGS = {"in_channels": 1, "num_classes": 10, "input_size": 28, "width": 0.125}


def test_reproduce_pattern_small(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model("vgg8", **KWARGS).eval()
    report = reproduce_pattern(tmp_path, net, "default", "pattern-nvmsa", {"adc.bits": 12},
                               test_images=6, k=4, max_patterns=5, sparsity=0.8, steps=1,
                               epochs=0, batch_size=3, top1_images=500)
    t = report["totals"]
    layers = report["layers"]
    assert [r["layer"] for r in layers][-2:] == ["classifier.0", "classifier.3"]
    assert [r["mapping"] for r in layers][-2:] == ["dense (not a 3x3 conv)"] * 2
    conv = [r for r in layers if "patterns" in r]
    assert len(conv) == 6 and t["patterns_per_layer"] == [r["patterns"] for r in conv]
    assert all(1 <= p <= 5 for p in t["patterns_per_layer"])
    assert t["sparsity_pattern_layers"] >= 0.79 > t["sparsity_overall"]
    assert t["pattern_mapped_layers"] >= 4
    assert t["sim_top1_dense"] == t["sim_top1_pattern"]  # 12-bit ADC: lossless
    assert t["arrays"] == sum(r["arrays"] for r in layers) <= t["dense_arrays"]
    assert t["area_efficiency"] == pytest.approx(t["dense_arrays"] / t["arrays"])
    assert t["cell_area_efficiency_conv"] > 2.0  # 4 of 9 weights kept, fewer kernels stored
    assert t["speedup"] > 1.0 and t["rram_adc_dac_energy_efficiency"] > 1.0
    # Input skipping only removes work: the mapping alone gains less.
    assert 0 < t["static_ou_reduction"] <= t["ou_reduction"]
    assert 1 <= t["static_speedup"] <= t["speedup"]
    assert 1 < t["static_rram_adc_dac_energy_efficiency"] <= t["rram_adc_dac_energy_efficiency"]
    assert t["top1_change_points"] == pytest.approx(100 * (t["top1_pruned"] - t["top1_base"]))
    assert t["top1_images"] == 500 and report["test_images"] == 6
    saved = json.loads((tmp_path / "pattern_reproduce.json").read_text())
    assert saved["totals"] == t and saved["published"] == PUBLISHED
    text = (tmp_path / "pattern_reproduce.md").read_text()
    assert text.count("| published: VGG16 |") == 3 and "| ours: " in text


def test_reproduce_pattern_cli_checkpoint(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(1)
    src = tmp_path / "vgg8"
    save_checkpoint(src, build_model("vgg8", **KWARGS),
                    {"architecture": "vgg8", "arch_kwargs": KWARGS, "dataset": "fashion-mnist"})
    code, out, err = cli(capsys, "reproduce", "pattern", "--model", str(src), "--test-images",
                         "4", "--epochs", "0", "--max-patterns", "3", "--accuracy-images",
                         "200", "--out", str(tmp_path / "rep"))
    assert code == 0, err
    assert "| published: VGG16 | CIFAR-10 |" in out
    report = json.loads((tmp_path / "rep" / "pattern_reproduce.json").read_text())
    assert report["hardware"]["name"] == "pattern-nvmsa" and report["test_images"] == 4
    assert max(report["totals"]["patterns_per_layer"]) <= 3
    assert report["totals"]["top1_images"] == 200  # --accuracy-images


@pytest.mark.parametrize(("args", "fragments"), [
    (["reproduce", "pattern", "--test-images", "0"], ["--test-images"]),
    (["reproduce", "pattern", "--k", "12"], ["--k"]),
    (["reproduce", "pattern", "--epochs", "-1"], ["--epochs"]),
    (["reproduce", "pattern", "--accuracy-images", "0"], ["--accuracy-images"]),
    (["reproduce", "nope"], ["nope", "pattern"]),
])
def test_reproduce_pattern_bad_input(capsys: pytest.CaptureFixture[str], args: list[str],
                                     fragments: list[str]) -> None:
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)
