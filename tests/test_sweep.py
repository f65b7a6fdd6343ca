"""Design-space sweeps (issue 9): grid expansion and point keys, the Parquet store and resume,
the local and Ray backends giving identical tables, failed points recorded, a sweep killed part
way and rerun completing with every point once, Pareto fronts and plots, bad sweep files."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import sparsexbar as sx
from sparsexbar.app.sweep import (
    RUN_INFO_COLUMNS,
    SweepFileError,
    comparable,
    done_keys,
    expand_points,
    load_results,
    load_sweep,
    pareto_front,
    results_dir,
    run_sweep,
    write_row,
)
from sparsexbar.app.sweep.run import _run_local
from sparsexbar.core.errors import SparsexbarWarning
from tests.test_cli_errors import assert_one_line_error, cli

ROOT = Path(__file__).resolve().parent.parent
TINY = "tests.nets:tiny_fmnist_net"

# 4 hardware points x 2 schemes = 8 points: 5 run, 3 fail. ou.rows=999 fails config validation
# (recorded by the driver); sre (joint mode) refuses a noisy device inside the worker.
SMALL_SWEEP: dict[str, Any] = {
    "name": "small",
    "model": TINY,
    "data": "default",
    "limit": 16,
    "hw": "ideal-small",
    "schemes": ["dense", "sre"],
    "grid": {"ou.rows": [4, 8]},
    "points": [{"device.read_noise_sigma": 0.05}, {"ou.rows": 999}],
}


def write_sweep(folder: Path, content: dict[str, Any], name: str = "sweep.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The small sweep run once on the local backend (2 spawn workers)."""
    base = tmp_path_factory.mktemp("local")
    path = write_sweep(base, SMALL_SWEEP)
    out = base / "out"
    report = run_sweep(path, out, backend="local", workers=2)
    return {"path": path, "out": out, "report": report, "table": load_results(out)}


# ---- grid expansion and keys -----------------------------------------------------------------
def test_points_are_models_x_schemes_x_grid_and_points(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {**SMALL_SWEEP, "grid": {"ou.rows": [4, 8], "adc.bits": [5, 6]},
                                  "set": {"ou.cols": 4}})
    points = expand_points(load_sweep(path))
    hw_points = [{"ou.cols": 4, "ou.rows": r, "adc.bits": b} for r in (4, 8) for b in (5, 6)]
    hw_points += [{"ou.cols": 4, "device.read_noise_sigma": 0.05}, {"ou.cols": 4, "ou.rows": 999}]
    assert [(p.scheme.name, p.overrides) for p in points] == [
        (s, h) for s in ("dense", "sre") for h in hw_points]
    assert len({p.key for p in points}) == len(points) == 12
    valid = [p for p in points if p.hardware is not None]
    assert all(p.hardware["ou"]["cols"] == 4 for p in valid)
    assert [p.parameters["adc.bits"] for p in valid[:4]] == [5, 6, 5, 6]
    # every swept key is a column of every point: the resolved value, or as written
    assert valid[4].parameters == {"ou.cols": 4, "ou.rows": 8, "adc.bits": 6,
                                   "device.read_noise_sigma": 0.05}
    invalid = [p for p in points if p.config_error is not None]
    assert len(invalid) == 2 and all(p.hardware is None for p in invalid)
    assert invalid[0].parameters == {"ou.cols": 4, "ou.rows": 999, "adc.bits": 6,
                                     "device.read_noise_sigma": 0.0}
    assert all("ou.rows=999 is larger than array.rows=64" in str(p.config_error)
               for p in invalid)


def test_key_is_the_resolved_point(tmp_path: Path) -> None:
    """Keys hash what decides a result: defaults spelled out, grid order or a preset's own
    value given again change nothing; any hardware, scheme, limit or model change does."""
    def keys(content: dict[str, Any]) -> list[str]:
        return [p.key for p in expand_points(load_sweep(write_sweep(tmp_path, content)))]

    plain = {"model": TINY, "hw": "ideal-small", "scheme": "sre", "points": [{"ou.rows": 4}]}
    same = keys(plain)
    assert keys({**plain, "scheme": {"name": "sre", "mode": "joint", "granularity": "bit"}}) \
        == same
    assert keys({**plain, "points": [{"ou.rows": 4, "ou.cols": 8}]}) == same  # preset value
    assert keys({**plain, "set": {"adc.bits": 6}}) == same  # ideal-small has 6-bit ADCs
    assert keys({**plain, "points": [{"ou.rows": 8}]}) != same
    assert keys({**plain, "scheme": {"name": "sre", "mode": "weight"}}) != same
    assert keys({**plain, "limit": 8}) != same
    assert keys({**plain, "model": "default"}) != same
    assert keys({**plain, "hw": "isaac", "points": [{"ou.rows": 4}]}) != same
    no_points = {k: v for k, v in plain.items() if k != "points"}
    grid_ab = keys(no_points | {"grid": {"ou.rows": [4, 8], "adc.bits": [5, 6]}})
    grid_ba = keys(no_points | {"grid": {"adc.bits": [5, 6], "ou.rows": [4, 8]}})
    assert sorted(grid_ab) == sorted(grid_ba) and len(set(grid_ab)) == 4
    # a point given twice (grid and points) runs once
    dup = keys(no_points | {"grid": {"ou.rows": [4, 8]}, "points": [{"ou.rows": 4}]})
    assert len(dup) == 2 and same[0] in dup


def test_example_sweeps_share_their_common_points() -> None:
    """The shipped examples parse; sweep_adc's dense auto-ADC points are sweep_ou's (same key)."""
    ou = expand_points(load_sweep(ROOT / "examples" / "sweep_ou.yaml"))
    adc = expand_points(load_sweep(ROOT / "examples" / "sweep_adc.yaml"))
    assert (len(ou), len(adc)) == (14, 15)
    assert sum(p.config_error is not None for p in ou) == 2
    shared = {p.key for p in ou} & {p.key for p in adc}
    assert {(p.parameters["adc.bits"], p.parameters["ou.rows"]) for p in adc
            if p.key in shared} == {("auto", 8), ("auto", 16), ("auto", 32)}


def test_checkpoint_weights_are_part_of_the_key(tmp_path: Path) -> None:
    """A checkpoint model is keyed by its files' content: retrained weights, new keys."""
    import torch

    from sparsexbar.training.checkpoint import save_checkpoint
    from sparsexbar.training.zoo import build_model

    content = {"model": "ckpt.safetensors", "hw": "ideal-small", "points": [{"ou.rows": 4}]}
    keys = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / "ckpt", build_model("lenet5"), {"architecture": "lenet5"})
        points = expand_points(load_sweep(write_sweep(tmp_path, content)))
        assert points[0].model_source == str((tmp_path / "ckpt.safetensors").resolve())
        keys.append(points[0].key)
    assert keys[0] != keys[1]


def test_numbers_with_an_exponent_in_a_sweep_file(tmp_path: Path) -> None:
    """`1e-3` in set, grid and points was text under YAML 1.1, and every point was refused
    ("must be a number, not text"); the same values written with a dot give the same keys.
    (A sweep file's overrides are read as --set's are: a quoted "1e-3" is the number too.)"""
    def points(text: str) -> list[Any]:
        path = tmp_path / "exp.yaml"
        path.write_text(f"model: {TINY}\nhw: ideal-small\nscheme: dense\n{text}")
        return expand_points(load_sweep(path))

    exp = points("set: {energy.leakage_mw: 1e-3}\ngrid: {energy.cell_read_pj: [1E-3, 2e-3]}\n"
                 "points: [{timing.read_ns: 5e1}]\n")
    assert [p.config_error for p in exp] == [None, None, None]
    assert [p.hardware["energy"]["leakage_mw"] for p in exp] == [0.001] * 3
    assert [p.hardware["energy"]["cell_read_pj"] for p in exp[:2]] == [0.001, 0.002]
    assert exp[2].hardware["timing"]["read_ns"] == 50.0
    dot = points("set: {energy.leakage_mw: 0.001}\ngrid: {energy.cell_read_pj: [0.001, 0.002]}"
                 "\npoints: [{timing.read_ns: 50.0}]\n")
    assert [p.key for p in exp] == [p.key for p in dot]
    with pytest.raises(SweepFileError, match=r"energy\.leakage_mw: must be a number, not text"):
        points("set: {energy.leakage_mw: 1e-3x}\n")


# ---- the local backend, failed points, the store ----------------------------------------------
def test_local_sweep_rows_match_simulate(local_sweep: dict[str, Any]) -> None:
    report, table = local_sweep["report"], local_sweep["table"]
    assert (report.total, report.to_run, report.skipped) == (8, 8, 0)
    assert (report.ok, report.failed, report.crashed) == (5, 3, [])
    rows = table.to_pylist()
    points = expand_points(load_sweep(local_sweep["path"]))
    assert sorted(r["key"] for r in rows) == sorted(p.key for p in points)
    assert done_keys(local_sweep["out"]) == {p.key for p in points}
    by_key = {r["key"]: r for r in rows}
    for point in points:
        row = by_key[point.key]
        assert row["model"] == TINY and row["scheme"] == point.scheme.name
        assert row["limit"] == 16 and row["hw"] == "ideal-small" and row["backend"] == "local"
        if point.hardware is None or (point.scheme.name == "sre" and
                                      "device.read_noise_sigma" in point.overrides):
            continue
        assert row["status"] == "ok" and row["error"] is None
        res = sx.simulate(TINY, "default", hw="ideal-small", scheme=point.scheme.name, limit=16,
                          overrides=point.overrides).to_json()
        assert row["top1"] == res["accuracy"]["top1"]
        assert row["quantized_top1"] == res["accuracy"]["quantized_top1"]
        assert row["ou_activations"] == res["totals"]["events"]["ou_activations"]
        assert row["adc_conversions"] == res["totals"]["events"]["adc_conversions"]
        assert row["cycles"] == res["totals"]["cycles"]
        assert row["energy_uj_per_image"] == res["totals"]["energy_pj"]["total"] / 16 * 1e-6
        assert row["speedup"] == res["vs_dense"]["speedup"]
        assert row["images_per_s"] == res["totals"]["images_per_s"]
        if "device.read_noise_sigma" not in point.overrides:  # ideal device, lossless ADC
            assert row["top1"] == row["quantized_top1"]
            assert row["clipping_layers"] == 0
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted((r["scheme"], r["ou.rows"], r["device.read_noise_sigma"]) for r in ok) == [
        ("dense", 4, 0.0), ("dense", 8, 0.0), ("dense", 8, 0.05), ("sre", 4, 0.0),
        ("sre", 8, 0.0)]
    # lossless schemes agree on accuracy; OU 4 rows needs more OU activations than 8
    ideal = [r for r in ok if r["device.read_noise_sigma"] == 0]
    acc = {(r["scheme"], r["ou.rows"]): r["top1"] for r in ideal}
    assert acc[("dense", 4)] == acc[("sre", 4)] == acc[("dense", 8)] == acc[("sre", 8)]
    ou = {(r["scheme"], r["ou.rows"]): r["ou_activations"] for r in ideal}
    assert ou[("dense", 4)] > ou[("dense", 8)]


def test_failed_points_are_recorded_with_their_error(local_sweep: dict[str, Any]) -> None:
    failed = [r for r in local_sweep["table"].to_pylist() if r["status"] == "failed"]
    assert len(failed) == 3
    by_reason = sorted(failed, key=lambda r: (r["ou.rows"] != 999, r["scheme"]))
    for row in by_reason[:2]:  # invalid config: recorded by the driver, never run
        assert row["ou.rows"] == 999 and row["worker"] == "driver"
        assert "ou.rows=999 is larger than array.rows=64" in row["error"]
        assert row["hardware_json"] is None
    noisy = by_reason[2]  # refused inside the worker
    assert noisy["scheme"] == "sre" and noisy["device.read_noise_sigma"] == 0.05
    assert "ideal device" in noisy["error"] and noisy["worker"] != "driver"
    for row in failed:
        assert row["top1"] is None and row["energy_uj_per_image"] is None
        assert row["result_json"] is None


def test_rerun_skips_finished_points(local_sweep: dict[str, Any]) -> None:
    out = local_sweep["out"]
    files = sorted(results_dir(out).glob("*.parquet"))
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    report = run_sweep(local_sweep["path"], out, backend="local", workers=2)
    assert (report.total, report.skipped, report.to_run, report.ok, report.failed) == (
        8, 8, 0, 0, 0)
    after = {f.name: (f.stat().st_mtime_ns, f.read_bytes())
             for f in sorted(results_dir(out).glob("*.parquet"))}
    assert after == before


def test_mixed_parameter_types_load_as_strings(local_sweep: dict[str, Any],
                                               tmp_path: Path) -> None:
    """A directory may gather several sweeps; a parameter that is a number in some rows and a
    string in others (a failed 'nine') reads as strings, nothing dropped."""
    out = tmp_path / "out"
    results_dir(out).mkdir(parents=True)
    for f in results_dir(local_sweep["out"]).glob("*.parquet"):
        (results_dir(out) / f.name).write_bytes(f.read_bytes())
    no_points = {k: v for k, v in SMALL_SWEEP.items() if k != "points"}
    bad = write_sweep(tmp_path, no_points | {"schemes": ["dense"], "grid": {"ou.rows": ["nine"]}},
                      "bad.yaml")
    report = run_sweep(bad, out)  # invalid points only: recorded without any worker
    assert (report.to_run, report.failed, report.ok) == (1, 1, 0)
    table = load_results(out)
    assert table.num_rows == 9
    assert sorted(v for v in table["ou.rows"].to_pylist() if v is not None) == [
        "4", "4", "8", "8", "8", "8", "999", "999", "nine"]
    row = [r for r in table.to_pylist() if r["ou.rows"] == "nine"][0]
    assert row["status"] == "failed" and "ou.rows" in row["error"]


def test_rows_of_a_sweep_that_did_not_vary_a_key_get_it_from_their_hardware(
        local_sweep: dict[str, Any], tmp_path: Path) -> None:
    """Rows written by a sweep whose only swept key is ou.rows, gathered with rows that also
    vary the read noise: load_results fills their read noise from their resolved hardware."""
    dropped = 0
    for row in local_sweep["table"].to_pylist():
        if row["device.read_noise_sigma"] == 0.0 and row["hardware_json"] is not None:
            del row["device.read_noise_sigma"]  # as a sweep over ou.rows alone writes it
            dropped += 1
        write_row(tmp_path, row)
    assert dropped == 4
    table = load_results(tmp_path)
    assert comparable(table).equals(comparable(local_sweep["table"]))


def test_a_filled_parameter_of_another_type_reads_as_strings(
        local_sweep: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The docs' two example sweeps in one directory: sweep_adc.yaml's rows hold adc.bits
    4, 5, 8 (numbers), sweep_ou.yaml's rows take adc.bits from their hardware, where it is
    'auto'. `plot` failed on them with pyarrow's traceback; the column reads as strings, and
    a failed point without hardware shows a blank cell (it showed 'None')."""
    numbered = 0
    for row in local_sweep["table"].to_pylist():
        if row["hardware_json"] is None:
            pass  # a point refused before its hardware resolved: no adc.bits at all
        elif numbered < 2:
            row["adc.bits"] = 4 + numbered  # the swept key, a number in this row's file
            numbered += 1
        else:  # a row of a sweep that did not vary adc.bits, whose hardware sizes it
            tree = json.loads(row["hardware_json"])
            tree["adc"]["bits"] = "auto"
            row["hardware_json"] = json.dumps(tree)
        write_row(tmp_path, row)
    table = load_results(tmp_path)
    with_hardware = sum(r["hardware_json"] is not None for r in local_sweep["table"].to_pylist())
    assert with_hardware >= 4
    assert sorted(v for v in table["adc.bits"].to_pylist() if v is not None) == [
        "4", "5", *["auto"] * (with_hardware - 2)]
    assert pa.types.is_string(table.schema.field("adc.bits").type)
    assert table["adc.bits"].null_count == table.num_rows - with_hardware > 0
    code, out, err = cli(capsys, "plot", str(tmp_path), "--out", str(tmp_path / "plots"))
    assert code == 0, err
    assert " auto " in out and "None" not in out


def _copied_rows(local_sweep: dict[str, Any], tmp_path: Path) -> tuple[Path, list[Path],
                                                                        list[str]]:
    """The small sweep's row files copied into tmp_path/out: (out, the original files, the
    names of the rows whose point ran)."""
    out = tmp_path / "out"
    results_dir(out).mkdir(parents=True)
    files = sorted(results_dir(local_sweep["out"]).glob("*.parquet"))
    for f in files:
        (results_dir(out) / f.name).write_bytes(f.read_bytes())
    ok = [f.name for f in files if pq.read_table(f)["status"][0].as_py() == "ok"]
    return out, files, ok


def test_a_corrupt_or_foreign_row_file_is_rerun(local_sweep: dict[str, Any],
                                                tmp_path: Path) -> None:
    """A row file damaged after it was written (or replaced by another Parquet file) does not
    count as done: the rerun runs that point again and writes its row; `plot` skips such a
    file with a warning line and keeps the rest."""
    out, files, ok = _copied_rows(local_sweep, tmp_path)
    corrupt, foreign = results_dir(out) / ok[0], results_dir(out) / ok[1]
    corrupt.write_bytes(b"PAR1" + os.urandom(64) + b"PAR1")
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    assert done_keys(out) == {f.stem for f in files} - {corrupt.stem, foreign.stem}
    with pytest.warns(SparsexbarWarning, match="skipped .*not a sweep row file"):
        assert load_results(out).num_rows == len(files) - 2
    report = run_sweep(local_sweep["path"], out, backend="local", workers=1)
    assert (report.skipped, report.to_run, report.ok) == (len(files) - 2, 2, 2)
    assert comparable(load_results(out)).equals(comparable(local_sweep["table"]))


def test_rows_of_another_format_or_version(local_sweep: dict[str, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A row whose fixed column has another type (a top-1 stored as text: `plot` failed on it
    with a traceback) is skipped with a warning; rows written by another sparsexbar version
    are kept and named in one warning (they were plotted silently)."""
    out, files, ok = _copied_rows(local_sweep, tmp_path)
    texty, old = results_dir(out) / ok[0], results_dir(out) / ok[1]
    t = pq.read_table(texty)
    pq.write_table(t.set_column(t.schema.get_field_index("top1"), "top1", pa.array(["high"])),
                   texty)
    t = pq.read_table(old)
    pq.write_table(t.set_column(t.schema.get_field_index("version"), "version",
                                pa.array(["0.0.1"])), old)
    with pytest.warns(SparsexbarWarning) as record:
        table = load_results(out)
    messages = [str(w.message) for w in record]
    assert table.num_rows == len(files) - 1
    assert any("skipped" in m and "column 'top1' is string" in m for m in messages), messages
    assert any("1 row(s)" in m and "sparsexbar 0.0.1" in m for m in messages), messages
    code, _, err = cli(capsys, "plot", str(out), "--out", str(tmp_path / "plots"))
    assert code == 0 and "Traceback" not in err


def _terminal_sigint() -> None:
    """In the child before exec: SIGINT at its default action and not blocked, as a shell
    starts a command. A child inherits an ignored SIGINT (and Python then installs no
    KeyboardInterrupt handler): in full `make test` runs this test's pytest process had
    SIGHUP, SIGINT and SIGQUIT ignored by the time it ran (/proc SigIgn 0x1001007; not so
    when test_sweep.py runs alone), so the driver never saw the Ctrl-C and ran on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_mask(pid: int, field: str) -> int:
    """A signal mask of process `pid` from /proc (SigBlk, SigIgn, SigCgt): bit s-1 is
    signal s."""
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _cmdline(pid: int) -> str:
    """The command line of process `pid` ('' once it is gone)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def _start_sweep(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """The CLI sweep in a session of its own, once its worker runs (the driver and the
    worker and multiprocessing's resource tracker in that session)."""
    # Points on the whole test split (tens of seconds each, minutes for the sweep): a driver
    # that waited for its running point, or for the sweep, would take far longer than the
    # tests' bounds.
    path = write_sweep(tmp_path, {"model": "default", "limit": 10000, "hw": "ideal-small",
                                  "grid": {"adc.bits": [5, 6], "ou.rows": [1, 2, 4, 8]}})
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparsexbar.app.cli", "sweep", str(path), "--out", str(out),
         "--workers", "1"], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, preexec_fn=_terminal_sigint)
    deadline = time.monotonic() + 120
    while len(_session_processes(proc.pid)) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    time.sleep(0.5)  # the worker past its start-up
    return proc, out


def test_an_interrupted_local_pool_leaves_no_thread(tmp_path: Path) -> None:
    """A local sweep left part way (what Ctrl-C does to the generator) ends its workers and
    joins the pool's manager thread before returning, so that thread cannot close the pool's
    wake-up pipe while the interpreter's exit hook writes to it (CI once printed "Exception
    ignored ... Bad file descriptor" after the one line of an interrupted sweep)."""
    spec = {k: v for k, v in SMALL_SWEEP.items() if k != "points"}
    spec |= {"limit": 4, "schemes": ["dense"], "grid": {"ou.rows": [4, 8, 16]}}
    points = [p for p in expand_points(load_sweep(write_sweep(tmp_path, spec)))
              if p.config_error is None]
    assert len(points) == 3

    before = set(threading.enumerate())

    def new_managers() -> list[threading.Thread]:
        """Pool manager threads started during this test and still alive."""
        return [t for t in threading.enumerate()
                if "ExecutorManager" in type(t).__name__ and t not in before]

    outcomes = _run_local(points, 1, None, "cpu")
    first = next(outcomes)
    assert first[2] is None and first[1]["status"] == "ok" and first[1]["num_images"] == 4
    assert len(new_managers()) == 1  # the pool runs the other two points
    outcomes.close()  # as a KeyboardInterrupt in the consumer does
    assert new_managers() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_driver_leaves_no_worker(tmp_path: Path) -> None:
    """SIGKILL of the sweep's driver alone: its pool worker (parent-death signal) and the
    resource tracker end with it."""
    proc, _ = _start_sweep(tmp_path)
    assert len(_session_processes(proc.pid)) >= 3
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_processes(proc.pid) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_ends_a_sweep_at_once_with_one_line(tmp_path: Path) -> None:
    """SIGINT to the sweep's process group (Ctrl-C in a terminal): the driver ends its worker
    at once and exits 130, one line on stderr, no partial file, no process left.

    Timed from the signal: the worker gone within 10 s, the driver's exit (interpreter
    teardown included) within 15 s, where one point takes tens of seconds. It takes under
    1 s here. The driver starts as from a shell (`_terminal_sigint`): started with SIGINT
    ignored, as it was in full suite runs, it never saw the signal and ran its points on
    (6-7 s, the whole sweep, when points took about 1 s; over 30 s with these)."""
    proc, out = _start_sweep(tmp_path)
    # the driver catches SIGINT (Python's KeyboardInterrupt handler), as from a terminal
    assert _signal_mask(proc.pid, "SigCgt") >> (signal.SIGINT - 1) & 1
    workers = {pid for pid in _session_processes(proc.pid) if "spawn_main" in _cmdline(pid)}
    assert workers  # the pool's worker runs (the resource tracker ends with the driver)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    worker_gone = None
    while proc.poll() is None and time.monotonic() - start < 30:
        if worker_gone is None and not workers & set(_session_processes(proc.pid)):
            worker_gone = time.monotonic() - start
        time.sleep(0.02)
    _, err = proc.communicate(timeout=30)
    exited = time.monotonic() - start
    if worker_gone is None:  # the driver ended before the poll saw its worker go
        worker_gone = exited
    assert worker_gone < 10 and exited < 15, (worker_gone, exited)
    assert proc.returncode == 130
    assert err.splitlines() == ["sparsexbar: interrupted; no file is half-written (each is "
                                "written whole or not at all; files written before the signal "
                                "stay)"]
    assert not list(out.rglob("*.tmp"))
    deadline = time.monotonic() + 10
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_processes(proc.pid) == []


# ---- Ray -------------------------------------------------------------------------------------
def test_ray_backend_gives_the_local_table(local_sweep: dict[str, Any], tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    try:
        out = tmp_path / "ray"
        report = run_sweep(local_sweep["path"], out, backend="ray", workers=2)
        assert ray.is_initialized()  # a connected instance is used, not shut down
        # A model the workers cannot load (no pre-check on Ray: the driver may not see the
        # workers' files): every runnable point crashes, none is recorded, a rerun retries.
        lost = write_sweep(tmp_path, {**SMALL_SWEEP, "model": "tests.nets:not_on_workers"},
                           "lost.yaml")
        crashed = run_sweep(lost, tmp_path / "lost", backend="ray", workers=2)
    finally:
        ray.shutdown()
    assert (crashed.ok, crashed.failed, len(crashed.crashed)) == (0, 2, 6)
    assert all("WorkerEnvironmentError" in m and "not_on_workers" in m
               for _, m in crashed.crashed)
    assert len(done_keys(tmp_path / "lost")) == 2  # only the invalid configs
    assert (report.ok, report.failed, report.crashed) == (5, 3, [])
    ray_table = load_results(out)
    local_table = local_sweep["table"]
    assert comparable(ray_table).equals(comparable(local_table))
    assert set(ray_table["backend"].to_pylist()) == {"ray"}
    assert not set(RUN_INFO_COLUMNS) & set(comparable(ray_table).column_names)


# ---- a sweep killed part way -----------------------------------------------------------------
def test_killed_sweep_resumes_with_every_point_once(tmp_path: Path) -> None:
    """The CLI sweep (1 worker, ~0.2 s a point; lossless ADCs, as a clipping ADC is far slower)
    is SIGKILLed with its pool after two points are written; the rerun runs only the rest and
    leaves every point exactly once."""
    path = write_sweep(tmp_path, {"model": "default", "limit": 32, "hw": "ideal-small",
                                  "grid": {"adc.bits": [5, 6], "ou.rows": [1, 2, 4, 8]}})
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparsexbar.app.cli", "sweep", str(path), "--out", str(out),
         "--workers", "1"], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(done_keys(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = sorted(results_dir(out).glob("*.parquet"))
    assert 2 <= len(finished) < 8, proc.stderr.read() if proc.stderr else ""
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in finished}
    for f in finished:  # only whole files
        assert pq.read_table(f).num_rows == 1
    report = run_sweep(path, out, backend="local", workers=2)
    assert (report.total, report.skipped, report.ok) == (8, len(finished), 8 - len(finished))
    for name, state in before.items():  # not recomputed, not rewritten
        f = results_dir(out) / name
        assert (f.stat().st_mtime_ns, f.read_bytes()) == state
    table = load_results(out)
    keys = table["key"].to_pylist()
    assert len(keys) == len(set(keys)) == 8
    assert set(keys) == {p.key for p in expand_points(load_sweep(path))}
    assert set(table["status"].to_pylist()) == {"ok"}
    assert sorted(os.listdir(results_dir(out))) == sorted(f"{k}.parquet" for k in keys)


# ---- Pareto fronts, plot, summary --------------------------------------------------------------
def test_pareto_front() -> None:
    cost = [1.0, 2.0, 2.0, 3.0, 0.5, 4.0, 1.0, float("inf"), 5.0]
    gain = [0.5, 0.9, 0.7, 0.9, 0.1, 0.95, 0.5, 1.0, float("nan")]
    # (1, .5) twice: equal points, both on; (2, .7) and (3, .9) dominated by (2, .9)
    assert pareto_front(cost, gain) == [True, True, False, False, True, True, True, False,
                                        False]
    assert pareto_front([], []) == []


def test_plot_command(local_sweep: dict[str, Any], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    code, out, err = cli(capsys, "plot", str(local_sweep["out"]), "--out", str(tmp_path))
    assert code == 0, err
    assert "pareto_energy_accuracy.png" in out and "failed" in out
    for name in ("pareto_energy_accuracy.png", "pareto_area_throughput.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (tmp_path / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    ok = [r for r in rows if r["status"] == "ok"]
    front = pareto_front([float(r["energy_uj_per_image"]) for r in ok],
                         [float(r["top1"]) for r in ok])
    assert [r["pareto_energy_accuracy"] == "True" for r in ok] == front
    front = pareto_front([float(r["area_mm2"]) for r in ok], [float(r["images_per_s"]) for r in ok])
    assert [r["pareto_area_throughput"] == "True" for r in ok] == front
    assert any(front)
    assert all(r["pareto_energy_accuracy"] == "False" for r in rows if r["status"] != "ok")


def test_sweep_cli_dry_run_lists_points(local_sweep: dict[str, Any],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "sweep", str(local_sweep["path"]), "--out",
                         str(local_sweep["out"]), "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 8 and all(" done " in line for line in lines)


# ---- bad input: one line, exit 2 ------------------------------------------------------------
BAD_FILES: list[tuple[Any, list[str]]] = [
    ({**SMALL_SWEEP, "bogus": 1}, ["unknown key 'bogus'"]),
    ({**SMALL_SWEEP, "grid": {}}, ["grid is empty"]),
    ({**SMALL_SWEEP, "grid": {"ou.rows": []}}, ["grid.ou.rows", "non-empty list"]),
    ({**SMALL_SWEEP, "grid": {"ou.rows": 4}}, ["grid.ou.rows", "list"]),
    ({**SMALL_SWEEP, "grid": {"ou.rows": [[4]]}}, ["grid.ou.rows", "single values"]),
    ({**SMALL_SWEEP, "grid": {"ou.rowz": [4]}}, ["unknown config key 'ou.rowz'"]),
    ({**SMALL_SWEEP, "grid": {"ou": [4]}}, ["'ou' is a section"]),
    ({**SMALL_SWEEP, "points": {"ou.rows": 4}}, ["points", "list"]),
    ({**SMALL_SWEEP, "points": [{}]}, ["points[0]", "non-empty mapping"]),
    ({**SMALL_SWEEP, "set": {"ou.rows": 999}}, ["base hardware", "ou.rows"]),
    ({**SMALL_SWEEP, "schemes": ["dense", "nope"]}, ["unknown scheme 'nope'"]),
    ({**SMALL_SWEEP, "schemes": [{"name": "sre", "speed": 2}]}, ["scheme 'sre'", "speed"]),
    ({**SMALL_SWEEP, "schemes": [{"name": "sre", "mode": "fast"}]}, ["sre mode", "fast"]),
    ({**SMALL_SWEEP, "schemes": []}, ["schemes is an empty list"]),
    ({**SMALL_SWEEP, "limit": -3}, ["limit", "-3"]),
    # beyond the rows' int64: the point ran, then storing its row overflowed (a traceback)
    ({**SMALL_SWEEP, "limit": 10**23}, ["limit", "2^63", str(10**23)]),
    ({**SMALL_SWEEP, "batch_size": 2**63}, ["batch_size", str(2**63)]),
    ({**SMALL_SWEEP, "batch_size": "big"}, ["batch_size"]),
    ({**SMALL_SWEEP, "hw": "nope"}, ["nope", "preset"]),
    ({**SMALL_SWEEP, "model": "lenet5"}, ["lenet5", "untrained"]),
    ({**SMALL_SWEEP, "models": [TINY]}, ["'model' or 'models'"]),
    ({k: v for k, v in SMALL_SWEEP.items() if k != "model"} | {"models": [3]}, ["models"]),
    (["not", "a", "mapping"], ["not a mapping"]),
    ({**SMALL_SWEEP, "input": {"scale": 0}}, ["input", "scale"]),
    ({**SMALL_SWEEP, "input": {"shift": 1}}, ["input", "shift"]),
    ({**SMALL_SWEEP, "input": "0..255"}, ["input", "mapping"]),
    ({**SMALL_SWEEP, "classes": "cat"}, ["classes", "list of class names"]),
    # refused only when a point ran before (the sweep file's own check took duplicates)
    ({**SMALL_SWEEP, "classes": ["cat", "dog", "cat"]}, ["classes", "names class 'cat' twice"]),
    ({**SMALL_SWEEP, "classes": ["cat"]}, ["classes", "at least 2 classes"]),
    ({**SMALL_SWEEP, "model": "tests.nets:raising_factory"}, ["raised"]),
    # the command line's option form: named, with the mapping form to use
    ({**SMALL_SWEEP, "schemes": ["comprrae:alpha=0.4"]},
     ["unknown scheme 'comprrae:alpha=0.4'", "{name: comprrae, alpha: 0.4}"]),
]


def test_input_spec_of_a_sweep_file(tmp_path: Path) -> None:
    """`input` (InputSpec fields) and `classes` reach every point and are part of its key;
    a sweep file without them keeps the keys it had."""
    plain = expand_points(load_sweep(write_sweep(tmp_path, SMALL_SWEEP, "a.yaml")))
    given = expand_points(load_sweep(write_sweep(
        tmp_path, {**SMALL_SWEEP, "input": {"scale": 1, "fit": "pad"}}, "b.yaml")))
    assert all(p.input == {"scale": 1, "fit": "pad"} for p in given)
    assert all(p.input is None for p in plain)
    assert not {p.key for p in plain} & {p.key for p in given}


@pytest.mark.parametrize("content, fragments", BAD_FILES)
def test_bad_sweep_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: Any,
                         fragments: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    code, _, err = cli(capsys, "sweep", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_a_bad_input_key_is_named_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(before: 'bad.yaml: input: bad.yaml: input: unknown key(s)')"""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**SMALL_SWEEP, "input": {"bogus": 1}}))
    code, _, err = cli(capsys, "sweep", str(path), "--out", str(tmp_path / "out"))
    line = assert_one_line_error(code, err, "bogus")
    assert line.count("input:") == 1 and line.count("bad.yaml") == 1, line


INPUTS_MISSING_HERE: list[tuple[dict[str, Any], list[str]]] = [
    ({"model": "tests.nets:no_such_factory"}, ["tests.nets:no_such_factory"]),
    ({"data": "no_such_folder"}, ["unknown data set", "no_such_folder"]),
    ({"device": "tpu"}, ["device", "tpu"]),
]


@pytest.mark.parametrize("change, fragments", INPUTS_MISSING_HERE)
def test_local_backend_checks_model_data_device_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any],
        fragments: list[str]) -> None:
    """On the local backend the workers are this machine: a model, data set or device it
    cannot load is bad input, refused before any point runs or anything is written."""
    path = write_sweep(tmp_path, {**SMALL_SWEEP, **change})
    code, _, err = cli(capsys, "sweep", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_cuda_without_cuda_is_refused(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    path = write_sweep(tmp_path, SMALL_SWEEP)
    code, _, err = cli(capsys, "sweep", str(path), "--out", str(tmp_path / "out"),
                       "--device", "cuda")
    assert_one_line_error(code, err, "cuda", "not available")


def test_bad_sweep_invocations(local_sweep: dict[str, Any], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    path, out = str(local_sweep["path"]), str(tmp_path / "out")
    (tmp_path / "broken.yaml").write_text("grid: [unclosed\n")
    cases = [
        (["sweep", str(tmp_path / "missing.yaml")], ["sweep file not found"]),
        (["sweep", str(tmp_path / "broken.yaml")], ["cannot parse sweep file"]),
        (["sweep", path, "--out", out, "--backend", "slurm"], ["--backend", "slurm"]),
        (["sweep", path, "--out", out, "--workers", "0"], ["--workers", "0"]),
        (["sweep", path, "--out", out, "--address", "auto"], ["--address", "--backend ray"]),
        (["plot", str(tmp_path / "nowhere")], ["sweep directory not found"]),
        (["plot", str(local_sweep["path"])], ["is a file; plot takes a sweep directory"]),
        (["plot", str(tmp_path)], ["no sweep results"]),
    ]
    # a folder whose only row file is unreadable: the error named the folder's pattern only
    # (the file's warning is dropped with a one-line error): it names the file and why
    only_bad = tmp_path / "only_bad"
    results_dir(only_bad).mkdir(parents=True)
    (results_dir(only_bad) / "x.parquet").write_text("not parquet")
    cases.append((["plot", str(only_bad)],
                  ["no readable sweep results", "1 file(s) skipped", "x.parquet",
                   "not a sweep row file"]))
    for args, fragments in cases:
        code, _, err = cli(capsys, *args)
        assert_one_line_error(code, err, *fragments)


def test_second_sweep_into_a_busy_directory_is_refused(local_sweep: dict[str, Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = local_sweep["out"]
    with (out / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = cli(capsys, "sweep", str(local_sweep["path"]), "--out", str(out))
        fcntl.flock(handle, fcntl.LOCK_UN)
    assert_one_line_error(code, err, "another sweep is writing to")
