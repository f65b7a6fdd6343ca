"""`reproduce sre` (schemes/sre/study.py) on a small LeNet-5: every mode and sparsity gives the
dense top-1 (SRE is lossless here), a row per (sparsity, mode), and the files are written."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sparsexbar.schemes.sre.study import MODES, reproduce_sre
from sparsexbar.training.zoo import build_model


def test_reproduce_sre_small(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model("lenet5", in_channels=1, num_classes=10, input_size=28, width=0.5)
    report = reproduce_sre(tmp_path, net, "isaac", sparsities=(0.0, 0.6), test_images=16,
                           tune_images=32, epochs=1, batch_size=16)
    rows = report["rows"]
    assert [(r["sparsity"], r["mode"]) for r in rows] == [
        (s, m) for s in (0.0, 0.6) for m in MODES]
    for r in rows:
        assert r["top1"] == r["dense_top1"]
        assert r["speedup"] >= 1.0 and r["energy_saving"] <= 1.0
    by = {(r["sparsity"], r["mode"]): r for r in rows}
    assert by[(0.0, "weight")]["speedup"] == 1.0  # nothing pruned: no row dropped
    assert by[(0.6, "weight")]["weight_sparsity"] >= 0.55
    assert by[(0.6, "weight")]["speedup"] > 1.0
    assert by[(0.6, "joint")]["speedup"] >= by[(0.6, "activation")]["speedup"]
    assert json.loads((tmp_path / "sre_reproduce.json").read_text())["rows"] == rows
    assert "published" in (tmp_path / "sre_reproduce.md").read_text()
