"""The benchmark harness (not timed here): each case runs in its own subprocess, measures both
sides, and a lossless case is checked against the integer reference in that run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sparsexbar.app.bench import CASES, run_benchmark


def test_benchmark_rows_on_the_demo_model(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    rows = run_benchmark(model="vgg8-pattern", batch_size=2, repeats=1, threads=1,
                         cases=(CASES["lossless"], CASES["pattern"], CASES["lossy"]),
                         json_out=str(out))
    assert [r["scheme"] for r in rows] == ["dense", "pattern", "dense"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(rows))
    for r in rows:
        assert r["batch_size"] == 2 and r["threads"] == 1 and r["model"] == "vgg8-pattern"
        assert r["plain_s"] > 0 and r["sim_s"] > 0
        assert r["ratio"] == r["sim_s"] / r["plain_s"]
        assert r["images_per_s"] == 2 / r["sim_s"] and r["peak_rss_mib"] > 0
    # Lossless cases equal the integer reference; the clipping case has no such check.
    assert [r["equals_reference"] for r in rows] == [True, True, None]


def test_benchmark_runs_the_shipped_vgg16_workload() -> None:
    """The shipped VGG-16 (32x32, padded test images) as a benchmark model: its rows, with the
    lossless cases equal to the integer reference."""
    rows = run_benchmark(model="vgg16-fmnist", batch_size=1, repeats=1, threads=1,
                         cases=(CASES["lossless"], CASES["sre"]))
    assert [r["model"] for r in rows] == ["vgg16-fmnist"] * 2
    assert [r["equals_reference"] for r in rows] == [True, True]


@pytest.mark.parametrize("script", sorted(
    p.name for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
    if '__name__ == "__main__"' in p.read_text()))  # scripts, not their shared modules
def test_every_benchmark_script_starts(script: str) -> None:
    """Every shipped benchmark script imports and parses its arguments (`--help`): a script
    left behind by an interface change fails here, not in a reader's hands."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), "--help"],
                          capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
