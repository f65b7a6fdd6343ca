"""Running a sweep: every point not yet in the store, on a local process pool or as Ray
tasks; the driver writes the rows either way, so both give the same table."""

from __future__ import annotations

import ctypes
import fcntl
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ... import __version__
from ...core.config import HardwareConfig
from ...core.errors import SparsexbarError, SparsexbarWarning, require_choice
from ...core.io import atomic_write_text
from ...core.runtime import torch_threads
from ...schemes import SCHEMES, Scheme
from ...simulate import CALIBRATION_IMAGES, calibration_read_limit, resolve_inputs, simulate
from .spec import SweepPoint, SweepSpec, expand_points, load_sweep
from .store import done_keys, failed_row, result_row, results_dir, write_row

BACKENDS = ("local", "ray")


class WorkerEnvironmentError(RuntimeError):
    """A worker cannot run a point for reasons of its own machine (no CUDA, the model or data
    files missing there): a crash, not a failed row, so a rerun retries the point."""


def check_device(device: str) -> None:
    """Refuse a device this machine cannot use (SparsexbarError)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise SparsexbarError(f"unsupported device '{device}' (cpu or cuda)") from None
    if kind not in ("cpu", "cuda"):
        raise SparsexbarError(f"unsupported device '{device}' (cpu or cuda)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SparsexbarError(f"device '{device}' requested but CUDA is not available here")


def load_inputs(point: SweepPoint) -> tuple[Any, Any]:
    """The point's model (nn.Module) and data (simulate.Batches, made for the model: its input
    spec, the sweep file's `input` and `classes`), as simulate() resolves them."""
    loaded, batches = resolve_inputs(point.model_source, point.data_source,
                                     calibration_read_limit(point.limit, CALIBRATION_IMAGES),
                                     point.input, point.classes)
    return loaded.net, batches  # simulate() calibrates on them and runs the first `limit`


def run_point(point: SweepPoint) -> dict[str, Any]:
    """Run one point (in a worker): simulate() and its row.

    A user error of the point itself (its hardware, its scheme, a model the simulator cannot
    map: any SparsexbarError from simulate) gives a failed row. Not being able to load the
    model or data or use the device here raises WorkerEnvironmentError, and anything else
    propagates too: crashes, reported by the driver and not recorded.
    """
    with torch_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", SparsexbarWarning)  # the row holds the numbers
        return _run_point(point)


def _run_point(point: SweepPoint) -> dict[str, Any]:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    start = time.perf_counter()
    if point.config_error is not None or point.hardware is None:
        return failed_row(point, point.config_error or "invalid hardware", 0.0, worker)
    try:
        check_device(point.device)
        net, batches = load_inputs(point)
    except SparsexbarError as exc:
        raise WorkerEnvironmentError(f"on {worker}: {exc}") from None
    try:
        factory: Callable[..., Scheme] = SCHEMES[point.scheme.name].scheme
        result = simulate(net, batches, hw=HardwareConfig.from_dict(point.hardware),
                          scheme=factory(**point.scheme.arguments), limit=point.limit,
                          batch_size=point.batch_size, device=point.device,
                          calibration_images=CALIBRATION_IMAGES)
    except SparsexbarError as exc:
        return failed_row(point, str(exc), time.perf_counter() - start, worker)
    return result_row(point, result.named(model=point.model), time.perf_counter() - start,
                      worker)


@dataclass
class SweepReport:
    """What a sweep did: points in the sweep, skipped (already in the store), run now."""

    out_dir: Path
    total: int = 0
    skipped: int = 0
    to_run: int = 0
    ok: int = 0
    failed: int = 0
    crashed: list[tuple[str, str]] = field(default_factory=list)  # (key, message)
    wall_s: float = 0.0

    @property
    def done(self) -> int:
        """Points of this run finished so far (written or crashed)."""
        return self.ok + self.failed + len(self.crashed)


ProgressFn = Callable[[SweepReport, dict[str, Any] | None], None]


def run_sweep(spec: SweepSpec | str | Path, out_dir: str | Path, backend: str = "local",
              workers: int | None = None, address: str | None = None,
              device: str | None = None, progress: ProgressFn | None = None) -> SweepReport:
    """Run every point of `spec` not yet in `out_dir`; write each row as it completes.

    `backend`: 'local' (a spawn process pool of `workers` processes, default the CPU count) or
    'ray' (Ray tasks: the connected Ray instance if `ray.init()` was called, else `address`,
    else a new local instance; `workers` caps the tasks in flight). `device` overrides the
    file's. `progress(report, row)` is called once before the first point (row None) and after
    each finished one. Only one sweep may write into a directory at a time (a lock file).
    """
    require_choice("--backend", backend, BACKENDS)
    if workers is not None and workers <= 0:
        raise SparsexbarError(f"--workers must be positive, got {workers}")
    if address is not None and backend != "ray":
        raise SparsexbarError("--address needs --backend ray")
    sweep = spec if isinstance(spec, SweepSpec) else load_sweep(spec)
    if device is not None:
        sweep.device = device
    out = Path(out_dir)
    started = time.perf_counter()
    points = expand_points(sweep)
    if backend == "local":  # before anything is written: bad input leaves no directory
        _check_inputs_here([p for p in points if p.config_error is None
                            and p.key not in done_keys(out)], sweep.device)
    with _DirectoryLock(out):
        for stale in results_dir(out).glob(".*.tmp"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        if sweep.path.is_file():  # a record of the last sweep file run into this directory
            atomic_write_text(out / "sweep.yaml", sweep.path.read_text())
        done = done_keys(out)
        todo = [p for p in points if p.key not in done]
        report = SweepReport(out, total=len(points), skipped=len(points) - len(todo),
                             to_run=len(todo))
        if progress is not None:
            progress(report, None)
        runnable = []
        for point in todo:  # invalid configs are recorded at once, no worker needed
            if point.config_error is not None:
                _record(out, report, failed_row(point, point.config_error), backend, progress)
            else:
                runnable.append(point)
        if runnable:
            runner = _run_local if backend == "local" else _run_ray
            for point, row, crash in runner(runnable, workers, address, sweep.device):
                if crash is not None:
                    report.crashed.append((point.key, crash))
                    if progress is not None:
                        progress(report, None)
                elif row.get("version") != __version__:
                    report.crashed.append((point.key, f"worker runs sparsexbar "
                                           f"{row.get('version')}, the driver {__version__}"))
                else:
                    _record(out, report, row, backend, progress)
    report.wall_s = time.perf_counter() - started
    return report


def _check_inputs_here(points: list[SweepPoint], device: str) -> None:
    """Local backend: the workers are this machine, so a device, model or data set that cannot
    be loaded here is bad input (one line, exit 2), found before any point runs."""
    if not points:
        return
    check_device(device)
    seen: set[tuple[str, str]] = set()
    for point in points:
        if (point.model_source, point.data_source) not in seen:
            seen.add((point.model_source, point.data_source))
            load_inputs(point)


def _record(out: Path, report: SweepReport, row: dict[str, Any], backend: str,
            progress: ProgressFn | None) -> None:
    row["backend"] = backend
    write_row(out, row)
    if row["status"] == "ok":
        report.ok += 1
    else:
        report.failed += 1
    if progress is not None:
        progress(report, row)


Outcome = tuple[SweepPoint, dict[str, Any], str | None]  # (point, row, crash message or None)


def _crash_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def _run_local(points: list[SweepPoint], workers: int | None, address: str | None,
               device: str) -> Iterator[Outcome]:
    """A spawn process pool; yields outcomes as they complete. Its workers ignore Ctrl-C and
    die with the driver (`_worker_init`); an interrupted driver (Ctrl-C, an exception) ends
    them at once instead of waiting for the points they run."""
    count = min(workers or os.cpu_count() or 1, len(points))
    pool = ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    finished_all = False
    try:
        # The workers start in submit(): with SIGINT blocked there, they inherit the blocked
        # mask (kept across exec), so a Ctrl-C while one is still starting up (before its
        # initializer ignores SIGINT) cannot print a traceback from it; the driver gets a
        # SIGINT that arrived meanwhile when the mask is restored, and ends them.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pending: dict[Future[dict[str, Any]], SweepPoint] = {
                pool.submit(run_point, p): p for p in points}
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                point = pending.pop(fut)
                try:
                    outcome: Outcome = (point, fut.result(), None)
                except Exception as exc:  # a crash or a dead worker: retried by a rerun
                    outcome = (point, {}, _crash_message(exc))
                yield outcome
        finished_all = True
    finally:  # interrupted: drop queued points, end the running ones
        manager = getattr(pool, "_executor_manager_thread", None)  # CPython's pool
        if not finished_all:
            _end_workers(pool)
        pool.shutdown(wait=finished_all, cancel_futures=True)
        if manager is not None:
            # Its end closes the pool's wake-up pipe. Left running, it can do so while the
            # interpreter's exit hook writes to that pipe (CPython 3.11 checks, then writes,
            # unlocked): "Exception ignored ... Bad file descriptor" and a traceback after our
            # one line. Its workers are gone, so it ends at once.
            manager.join(timeout=5.0)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker_init(driver: int) -> None:
    """Set up a pool worker: Ctrl-C (SIGINT to the terminal's process group) is the driver's
    to handle, and the worker dies with the driver, even a SIGKILLed one: Linux's parent-death
    signal, else a thread that watches the parent. Checked once after, as the driver may have
    died before."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:
        threading.Thread(target=_watch_parent, args=(driver,), daemon=True,
                         name="sparsexbar-parent-watch").start()
    if os.getppid() != driver:
        os._exit(1)


def _watch_parent(driver: int) -> None:
    while os.getppid() == driver:
        time.sleep(0.5)
    os._exit(1)


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's worker processes and reap them (SIGKILL after 2 s)."""
    procs = list(dict(getattr(pool, "_processes", None) or {}).values())  # CPython's pool
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 2.0
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


def _run_ray(points: list[SweepPoint], workers: int | None, address: str | None,
             device: str) -> Iterator[Outcome]:
    """Ray tasks (one CPU each, and one GPU each when `device` is cuda); at most `workers` in
    flight when given."""
    try:
        import ray  # optional (sparsexbar[ray]): imported only for this backend
    except ImportError:
        raise SparsexbarError("the ray backend needs Ray: pip install 'sparsexbar[ray]' "
                              "(or pip install ray)") from None
    started_here = False
    if not ray.is_initialized():
        try:
            if address is not None:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SparsexbarError(f"cannot start or join Ray ({address or 'local'}): "
                                  f"{' '.join(str(exc).split())}") from None
        started_here = True
    try:
        gpus = 1 if device.startswith("cuda") else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus)(run_point)
        limit = workers or len(points)
        queue = list(points)
        in_flight: dict[Any, SweepPoint] = {}
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                point = queue.pop(0)
                in_flight[task.remote(point)] = point
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                point = in_flight.pop(ref)
                try:
                    outcome: Outcome = (point, ray.get(ref), None)
                except Exception as exc:  # RayTaskError, WorkerCrashedError, ...
                    outcome = (point, {}, _crash_message(exc))
                yield outcome
    finally:
        if started_here:
            ray.shutdown()


class _DirectoryLock:
    """An exclusive flock on `<dir>/.lock`: a second sweep into the same directory is refused."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.handle: Any = None

    def __enter__(self) -> _DirectoryLock:
        results_dir(self.out).mkdir(parents=True, exist_ok=True)
        self.handle = (self.out / ".lock").open("a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise SparsexbarError(f"another sweep is writing to {self.out} (lock "
                                  f"{self.out / '.lock'} is held)") from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
