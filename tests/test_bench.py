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


def test_ctrl_c_during_a_case_gives_one_line_and_leaves_no_process(tmp_path: Path) -> None:
    """SIGINT to the command's process group (Ctrl-C) while a case's process runs: exit 130,
    the one line, no KeyboardInterrupt traceback from the case's process (it starts with
    SIGINT ignored and is ended by the command), and no process left."""
    import os
    import signal
    import time

    from tests.test_sweep import ROOT, _cmdline, _session_processes, _terminal_sigint

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparsexbar.app.cli", "bench", "--cases", "nonideal",
         "--repeats", "5", "--batch-size", "64"], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        preexec_fn=_terminal_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            "spawn_main" in _cmdline(pid) for pid in _session_processes(proc.pid)):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    time.sleep(2.0)  # the case's process past its imports, into the case
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["sparsexbar: interrupted; no file is half-written (each is "
                                "written whole or not at all; files written before the signal "
                                "stay)"]
    deadline = time.monotonic() + 10
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_processes(proc.pid) == []
