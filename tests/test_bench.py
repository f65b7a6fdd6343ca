"""The benchmark harness (not timed here): each case runs in its own subprocess, measures both
sides, and a lossless case is checked against the integer reference in that run."""

from __future__ import annotations

import json
import os
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


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py")
                 if '__name__ == "__main__"' in p.read_text())  # not their shared modules

# Runs every script as `__main__` with `--help` in one interpreter (one torch import, not
# one per script; the benchmarks folder on PYTHONPATH, as it is first on a script's path)
# and prints {script: [exit code, stdout, last of stderr]} as JSON.
HELP_DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
folder, names = sys.argv[1], sys.argv[2:]
done = {}
for name in names:
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [name, "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(f"{folder}/{name}", run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc(file=err)
            code = 1
    done[name] = [code, out.getvalue(), err.getvalue()[-2000:]]
print(json.dumps(done))
"""


@pytest.fixture(scope="module")
def script_help() -> dict[str, list]:
    root = BENCHMARKS.parent
    path = os.pathsep.join(p for p in (str(BENCHMARKS), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", HELP_DRIVER, str(BENCHMARKS), *SCRIPTS],
                          capture_output=True, text=True, cwd=root, timeout=300,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_starts(script: str, script_help: dict[str, list]) -> None:
    """Every shipped benchmark script imports and parses its arguments (`--help`, run as
    `__main__`): a script left behind by an interface change fails here, not in a reader's
    hands."""
    code, out, err = script_help[script]
    assert code == 0, err
    assert "usage" in out.lower()


def test_ctrl_c_during_a_case_gives_one_line_and_leaves_no_process(tmp_path: Path) -> None:
    """SIGINT to the command's process group (Ctrl-C) while a case's process runs: exit 130,
    the one line, no KeyboardInterrupt traceback from the case's process (it starts with
    SIGINT ignored and is ended by the command), and no process left."""
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
