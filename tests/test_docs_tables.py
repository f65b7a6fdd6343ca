"""The reproduction tables of README.md and docs/reproduce.md are the generator's output on the
committed result file (no figure typed by hand), and the generator prints each row from its
numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sparsexbar.studies.docs_tables import (
    BEGIN,
    END,
    RESULT,
    SWEEP_MARKERS,
    SWEEP_RESULT,
    full_block,
    generated,
    main,
    readme_block,
    replace_block,
)
from sparsexbar.studies.headline import headline_row, verdict_cells
from sparsexbar.studies.sweep_table import summary_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_committed_docs_match_the_generator_on_the_committed_json() -> None:
    if not (ROOT / RESULT).is_file():
        pytest.skip(f"{RESULT} not committed yet")
    for path, text in generated(ROOT).items():
        assert path.read_text() == text, f"{path} is stale: run make docs"
    assert main(["--root", str(ROOT), "--check"]) == 0


def test_verdicts_of_bounds_and_ranges() -> None:
    """A lossless top-1 change against CompRRAE's "loss < 0.2%" meets it and has no direction
    (the paper's bound admits no change); "> 2.9x" gives both; a range is met inside its ends;
    a single figure has no "meets". The committed rows print so (recomputed, whatever the file
    stored)."""
    common = {"setting": "s", "baseline": "b", "model": "m", "test_images": 1}
    cases = [(("comprrae", "top1_change", 0.0), ("0.00", "-", "yes")),
             (("comprrae", "top1_change", -0.09), ("0.45", "-", "yes")),
             (("comprrae", "top1_change", -0.3), ("1.50", "-", "no")),
             # a gain against a loss bound: no ratio of opposite signs (it printed -0.05)
             (("comprrae", "top1_change", 0.01), ("-", "-", "yes")),
             (("comprrae", "energy_efficiency", 1.29), ("0.44", "yes", "no")),
             (("comprrae", "energy_efficiency", 3.0), ("1.03", "yes", "yes")),
             (("comprrae", "energy_efficiency", 0.9), ("0.31", "no", "no")),
             (("encoding", "throughput", 3.29), ("1.16", "yes", "yes")),
             (("encoding", "throughput", 4.0), ("1.41", "yes", "yes")),
             (("encoding", "area_efficiency", 1.88), ("0.66", "yes", "no")),
             (("sre", "speedup_max", 11.27), ("0.27", "yes", "-")),
             (("pattern", "top1_change", -0.22), ("2.44", "yes", "-"))]
    for (study, key, ours), cells in cases:
        row = headline_row(study, key, ours, **common)
        assert verdict_cells(row) == cells, (study, key, ours)
        assert row["same_direction"] is {"yes": True, "no": False, "-": None}[cells[1]]
        assert row["meets_published"] is {"yes": True, "no": False, "-": None}[cells[2]]
    if (ROOT / RESULT).is_file():
        report = json.loads((ROOT / RESULT).read_text())
        for sec in report["sections"]:
            for r in sec["rows"]:
                fresh = headline_row(r["study"], r["key"], r["ours_value"], **common)
                assert verdict_cells(r) == verdict_cells(fresh)
                if (r["study"], r["key"]) == ("comprrae", "top1_change"):
                    assert verdict_cells(r)[1:] == ("-", "yes")


def _report() -> dict[str, object]:
    common = {"setting": "sre joint, bit", "baseline": "dense on isaac", "model": "m",
              "test_images": 7, "top1": 0.9, "accuracy_images": 10000, "accuracy_how": "exact"}
    ours = headline_row("sre", "speedup_max", 21.15, **common)
    ours["role"] = "ours"
    comb = headline_row("sre", "speedup_max", 30.0, **common)
    comb.update(role="combined", primary=False)
    return {"model": "m", "pattern_model": "p",
            "settings": {"test_images": 7, "accuracy_images": 10000},
            "time_s": {"total": 12.0},
            "sections": [{"study": "sre", "title": "SRE", "baseline": "dense on isaac",
                          "rows": [ours, comb]}]}


def test_generator_prints_rows_from_their_numbers(tmp_path: Path) -> None:
    report = _report()
    block = readme_block(report)
    assert "| SRE | speedup (largest) | 21.15x | up to 42.3x | 0.50 | yes |" in block
    assert "30.00x" not in block  # combined rows only in the full table
    assert "30.00x" in full_block(report)
    # the models' widths: recorded ones shown; a result without them is the half-width set's
    assert "at half width" in block
    assert "at width 1," in readme_block({**report, "model_widths": {"a": 1.0, "b": 1.0}})
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / RESULT).write_text(json.dumps(report))
    (tmp_path / "README.md").write_text(f"intro\n{BEGIN}\nold\n{END}\nrest\n")
    (tmp_path / "docs" / "reproduce.md").write_text(f"{BEGIN}{END}\n")
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert readme == f"intro\n{BEGIN}\n{block}{END}\nrest\n"
    with pytest.raises(ValueError, match="exactly one"):
        replace_block("no markers", "x", "README.md")


def test_sweeps_page_table_is_the_committed_summary_csv() -> None:
    """docs/sweeps.md's measured table: one row per point that ran, each cell the committed
    summary.csv's value (energy to 4 significant digits, top-1 in %), the failed points
    named with their error, and the fronts listing the points flagged in the CSV."""
    with (ROOT / SWEEP_RESULT).open(newline="") as f:
        rows = list(csv.DictReader(f))
    page = (ROOT / "docs" / "sweeps.md").read_text()
    block = page.split(SWEEP_MARKERS[0], 1)[1].split(SWEEP_MARKERS[1], 1)[0]
    assert block.strip() == summary_markdown(rows).strip()
    table = [line.split(" | ") for line in block.splitlines() if line.startswith("| dense")
             or line.startswith("| sre")]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(table) == len(ok) >= 20
    for cells, r in zip(table, ok, strict=True):
        assert cells[1:4] == [r["adc.bits"], r["ou.cols"], r["ou.rows"]]
        assert float(cells[6]) == pytest.approx(float(r["energy_uj_per_image"]), rel=5e-4)
        assert float(cells[5]) == pytest.approx(100 * float(r["top1"]), abs=5e-3)
        assert int(cells[4]) == int(float(r["clipping_layers"]))
    for r in rows:
        if r["status"] != "ok":
            assert r["error"] in block
    front = [r for r in ok if r["pareto_energy_accuracy"] == "True"]
    line = next(x for x in block.splitlines() if x.startswith("On the energy/accuracy front"))
    assert line.count("ou.rows=") == len(front) >= 1
