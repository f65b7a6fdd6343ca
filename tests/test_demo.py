"""`sparsexbar demo --limit 256` on the embedded data and the shipped model writes every output."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest

from sparsexbar.cli import main
from sparsexbar.schemes import scheme_names


def test_demo_limit_256_writes_all_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    out = tmp_path / "demo"
    try:
        main(["demo", "--limit", "256", "--out", str(out)])
    except SystemExit as exc:  # success returns normally; anything else is a failure
        pytest.fail(f"demo exited with {exc.code}: {capsys.readouterr().err}")
    printed = capsys.readouterr().out
    for name in scheme_names():
        result = json.loads((out / f"{name}_result.json").read_text())
        assert result["num_images"] == 256
        assert result["scheme"]["name"] == name
        rows = list(csv.DictReader((out / f"{name}_layers.csv").open()))
        assert [r["name"] for r in rows] == [lay["name"] for lay in result["layers"]]
        assert name in printed
    dense = json.loads((out / "dense_result.json").read_text())
    acc = dense["accuracy"]
    # isaac's ADC cannot clip on any layer: the simulation is the integer-quantized network.
    assert not any(lay["adc_can_clip"] for lay in dense["layers"])
    assert acc["top1"] == acc["quantized_top1"]
    assert acc["top1"] >= 0.85 and abs(acc["float_top1"] - acc["top1"]) <= 0.02
    comparison = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["scheme"] for r in comparison] == scheme_names()
    plots = ("energy_by_component.png", "per_layer_work.png", "accuracy_vs_energy.png")
    for png in plots:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(plots) and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "http://" not in html and "https://" not in html  # opens offline
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind
