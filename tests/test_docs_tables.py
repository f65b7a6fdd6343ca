"""The reproduction tables of README.md and docs/reproduce.md are the generator's output on the
committed result file (no figure typed by hand), and the generator prints each row from its
numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsexbar.studies.docs_tables import (
    BEGIN,
    END,
    RESULT,
    full_block,
    generated,
    main,
    readme_block,
    replace_block,
)
from sparsexbar.studies.headline import headline_row

ROOT = Path(__file__).resolve().parents[1]


def test_committed_docs_match_the_generator_on_the_committed_json() -> None:
    if not (ROOT / RESULT).is_file():
        pytest.skip(f"{RESULT} not committed yet")
    for path, text in generated(ROOT).items():
        assert path.read_text() == text, f"{path} is stale: run make docs"
    assert main(["--root", str(ROOT), "--check"]) == 0


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
