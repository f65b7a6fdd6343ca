"""`sparsexbar reproduce all` (issue 8): the studies' own outputs plus one report (JSON,
Markdown, self-contained HTML, PNG) with our figure beside the published one in every row and
the combined scheme's figure beside it; the combined rows are real runs on the studies'
models and images (tiny sizes here)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from sparsexbar.studies.all import reproduce_all
from sparsexbar.training.checkpoint import shipped_model_path, shipped_pattern_model_path
from tests.test_cli_errors import assert_one_line_error, cli


@pytest.fixture(scope="module")
def all_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (shipped_model_path().is_file() and shipped_pattern_model_path().is_file()):
        pytest.skip("shipped checkpoints not built")
    out = tmp_path_factory.mktemp("all")
    reproduce_all(out, test_images=16, sre_sparsities=(0.5,), sre_tune_images=32,
                  pattern_images=2, pattern_top1_images=200, calibration_images=16,
                  comprrae_curve=(0.4,), encoding_sweep=(), batch_size=16)
    return out


def test_report_rows_have_published_ours_and_combined(all_dir: Path) -> None:
    report = json.loads((all_dir / "all_reproduce.json").read_text())
    studies = [s["study"].split(" ")[0] for s in report["sections"]]
    assert studies == ["SRE", "Pattern", "CompRRAE", "Encoding"]
    for sec in report["sections"]:
        assert sec["rows"]
        for row in sec["rows"]:
            assert row["published"] and row["ours"] and row["combined"], row
    # The combined rows come from the studies' runs: the SRE study ran it beside its modes.
    sre = json.loads((all_dir / "sre" / "sre_reproduce.json").read_text())
    modes = [r["mode"] for r in sre["rows"]]
    assert modes == ["weight", "activation", "joint", "combined"]
    joint, combined = sre["rows"][2], sre["rows"][3]
    assert combined["top1"] == joint["top1"] == joint["dense_top1"]  # lossless on isaac
    assert combined["speedup"] >= joint["speedup"] * 0.999
    sre_rows = {r["metric"]: r for r in report["sections"][0]["rows"]}
    assert sre_rows["speedup vs dense (largest)"]["combined"] == f"{combined['speedup']:.2f}x"
    comp = json.loads((all_dir / "comprrae" / "comprrae_reproduce.json").read_text())
    assert comp["rows"][1]["run"].startswith("END")
    for name in ("sre/sre_reproduce.md", "pattern/pattern_reproduce.md",
                 "comprrae/comprrae_reproduce.md", "comprrae/comprrae_tradeoff.png",
                 "encoding/encoding_reproduce.md"):
        assert (all_dir / name).is_file(), name


def test_report_files_markdown_and_self_contained_html(all_dir: Path) -> None:
    md = (all_dir / "all_reproduce.md").read_text()
    assert md.count("| metric | published | ours | combined |") == 4
    html = (all_dir / "all_reproduce.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 3  # the summary plot, the CompRRAE and encoding plots
    assert base64.b64decode(images[0]) == (all_dir / "all_reproduce.png").read_bytes()
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "http://" not in html and "https://" not in html
    assert not list(all_dir.glob(".*.tmp"))


@pytest.mark.parametrize(("args", "fragments"), [
    (["reproduce", "all", "--sparsities", "0,x"], ["--sparsities", "numbers"]),
    (["reproduce", "all", "--sparsities", "1.5"], ["--sparsities", "[0, 1)"]),
    (["reproduce", "all", "--test-images", "0"], ["--test-images"]),
    (["reproduce", "all", "--pattern-images", "0"], ["--pattern-images"]),
    (["reproduce", "nope"], ["unknown study", "all"]),
])
def test_cli_bad_reproduce_all_arguments(capsys: pytest.CaptureFixture[str], args: list[str],
                                         fragments: list[str]) -> None:
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)
