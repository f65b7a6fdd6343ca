"""`sparsexbar demo --limit 256` on the embedded data and the shipped pattern-pruned model writes
every output: every scheme, the combination last, all on the same model and images."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest

from sparsexbar.app.cli import main
from sparsexbar.schemes import demo_schemes, scheme_names


def test_demo_limit_256_writes_all_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    out = tmp_path / "demo"
    try:
        main(["demo", "--limit", "256", "--out", str(out)])
    except SystemExit as exc:  # success returns normally; anything else is a failure
        pytest.fail(f"demo exited with {exc.code}: {capsys.readouterr().err}")
    printed = capsys.readouterr().out
    assert sorted(demo_schemes()) == sorted(scheme_names()) and demo_schemes()[-1] == "combined"
    for name in demo_schemes():
        result = json.loads((out / f"{name}_result.json").read_text())
        assert result["num_images"] == 256
        assert result["scheme"]["name"] == name
        # the shipped model by its name (its architecture, 'vgg8', is also the dense model's)
        assert result["model"] == "vgg8-fmnist-pattern"
        rows = list(csv.DictReader((out / f"{name}_layers.csv").open()))
        assert [r["name"] for r in rows] == [lay["name"] for lay in result["layers"]]
        assert name in printed
    assert "vgg8-fmnist-pattern on fashion-mnist (256 images)" in printed
    dense = json.loads((out / "dense_result.json").read_text())
    acc = dense["accuracy"]
    # isaac's ADC cannot clip on any layer: the simulation is the integer-quantized network.
    assert not any(lay["adc_can_clip"] for lay in dense["layers"])
    assert acc["top1"] == acc["quantized_top1"]
    assert acc["top1"] >= 0.85 and abs(acc["float_top1"] - acc["top1"]) <= 0.02
    comparison = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["scheme"] for r in comparison] == demo_schemes()
    combined = json.loads((out / "combined_result.json").read_text())
    # Lossless: the combination's top-1 is dense's, with fewer events than any single scheme
    # here (per layer: every crossbar event of the best single one).
    assert combined["accuracy"]["top1"] == acc["top1"]
    singles = [json.loads((out / f"{n}_result.json").read_text()) for n in demo_schemes()[:-1]]
    for key in ("adc_conversions", "ou_activations"):
        assert combined["totals"]["events"][key] <= min(r["totals"]["events"][key]
                                                        for r in singles), key
    assert combined["totals"]["energy_pj"]["total"] <= min(
        r["totals"]["energy_pj"]["total"] for r in singles)
    choices = combined["scheme"]["parameters"]["layers"]
    assert list(choices) == [lay["name"] for lay in combined["layers"]]
    plots = ("energy_by_component.png", "per_layer_work.png", "accuracy_vs_energy.png")
    for png in plots:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(plots) and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "http://" not in html and "https://" not in html  # opens offline
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind
