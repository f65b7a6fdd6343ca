"""Engine benchmark: images/s of simulated schemes against plain float32 PyTorch inference.

Each case runs in its own subprocess so its peak RSS is its own. Ratios are taken against plain
PyTorch inference of the same model on the same inputs measured in the same process, so machine
load affects both sides alike. The timed region is the simulated forward pass of every batch
(engine, digital periphery and event counting); quantization/calibration and mapping, done once
per model, are reported separately as set-up time.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import signal
import threading
import time
from dataclasses import asdict
from queue import Empty
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from ..core.config import load_config
from ..core.engine import EngineOptions, LayerKernel
from ..core.errors import SparsexbarError
from ..core.frontend import QuantizedModel, quantize_model
from ..core.io import atomic_write_text
from ..core.runtime import keep_freed_memory, torch_threads
from ..schemes import BenchCase, Scheme, bench_cases, get_scheme
from ..simulate import LayerRecorder
from ..studies.setup import model_input_size
from ..training import zoo
from ..training.data import fashion_mnist
from ..training.shipped import load_shipped

# The cases come from the scheme registry: each scheme's entry declares its own.
CASES: dict[str, BenchCase] = bench_cases()
DEFAULT_CASES = tuple(CASES.values())
# vgg8 / vgg8-pattern: the shipped VGG-8s (28x28); vgg16-fmnist / vgg16-fmnist-pattern: the
# shipped VGG-16 workloads (32x32, the test images padded); vgg16: random weights (shape only).
BENCH_MODELS = ("vgg8", "vgg8-pattern", "vgg16-fmnist", "vgg16-fmnist-pattern", "vgg16")
SHIPPED_BENCH = {"vgg8": "vgg8-fmnist", "vgg8-pattern": "vgg8-fmnist-pattern",
                 "vgg16-fmnist": "vgg16-fmnist", "vgg16-fmnist-pattern": "vgg16-fmnist-pattern"}
FMNIST_TEST_IMAGES = 10000  # the embedded Fashion-MNIST test split the vgg8 cases run on


def _model_and_inputs(model: str, batch_size: int) -> tuple[torch.nn.Module, torch.Tensor]:
    if model in SHIPPED_BENCH:
        net, meta = load_shipped(SHIPPED_BENCH[model])
        # Real images (the embedded Fashion-MNIST test split, first batch_size, fitted to the
        # model's recorded input: the VGG-16s pad to 32x32): the input sparsity and value
        # distribution decide how many groups can clip.
        test = fashion_mnist("test")
        if batch_size > len(test):
            raise ValueError(f"batch size {batch_size} exceeds the {len(test)} test images")
        x = test.subset(0, batch_size).fitted(1, model_input_size(meta)).to_float()
    elif model == "vgg16":
        # No CIFAR here: random weights and uniform random inputs (shape only).
        gen = torch.Generator().manual_seed(0)
        net = zoo.build_model("vgg16", in_channels=3, num_classes=10, input_size=32)
        x = torch.rand((batch_size, 3, 32, 32), generator=gen)
    else:
        raise ValueError(f"unknown benchmark model {model}")
    return net.eval(), x


def check_bench_args(model: str, batch_size: int, repeats: int) -> None:
    """Refuse, before any case starts, what the cases would fail on (SparsexbarError)."""
    if model not in BENCH_MODELS:
        raise SparsexbarError(f"--model must be one of {', '.join(BENCH_MODELS)}, got '{model}'")
    if batch_size < 1:
        raise SparsexbarError(f"--batch-size must be positive, got {batch_size}")
    if repeats < 1:
        raise SparsexbarError(f"--repeats must be positive, got {repeats}")
    if model != "vgg16" and batch_size > FMNIST_TEST_IMAGES:
        raise SparsexbarError(f"--batch-size {batch_size} exceeds the {FMNIST_TEST_IMAGES} "
                              f"test images the {model} benchmark runs on")


def _run_case(case: BenchCase, model: str, batch_size: int, repeats: int, threads: int,
              queue: Any) -> None:
    """One case in its own process, on `threads` intra-op threads; its row onto `queue`."""
    with torch_threads(threads):
        queue.put(_measure(case, model, batch_size, repeats, threads))


def prepared_case(case: BenchCase, net: torch.nn.Module, x: torch.Tensor
                  ) -> tuple[QuantizedModel, Scheme, dict[str, LayerKernel], EngineOptions]:
    """A bench case set up on the CPU for inputs x: the model quantized on them, the
    case's scheme, every layer mapped to its kernel, and the engine options."""
    hw = load_config("isaac", dict(case.overrides))
    qmodel = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
    scheme = get_scheme(case.scheme)
    kernels = {q.name: scheme.kernel(scheme.map_layer(q, hw), torch.device("cpu"))
               for q in qmodel.layers}
    return qmodel, scheme, kernels, EngineOptions(exact_shortcut=case.exact_shortcut)


def _measure(case: BenchCase, model: str, batch_size: int, repeats: int,
             threads: int) -> dict[str, Any]:
    keep_freed_memory()  # as `simulate()` runs (core/runtime.py)
    net, x = _model_and_inputs(model, batch_size)
    t0 = time.perf_counter()
    qmodel, scheme, kernels, opts = prepared_case(case, net, x)
    setup_s = time.perf_counter() - t0
    with torch.no_grad():
        net(x)  # warm-up
        plain_runs = [_timed(lambda: net(x)) for _ in range(max(repeats, 3))]
        with LayerRecorder(scheme, kernels, opts, torch.device("cpu")) as rec:
            sim_runs = [_timed(lambda: qmodel.run(x, rec)) for _ in range(repeats)]
            # Correctness guard: a lossless case must equal the integer reference exactly.
            exact = None
            if not any(k.mapped.adc_can_clip() for k in kernels.values()):
                exact = bool(torch.equal(qmodel.run(x, rec), qmodel.run_reference(x)))
        plain, sim = min(w for w, _ in plain_runs), min(w for w, _ in sim_runs)
        # CPU time of this process: on a shared machine, waiting for a core is not counted.
        plain_cpu, sim_cpu = min(c for _, c in plain_runs), min(c for _, c in sim_runs)
    return {
        **asdict(case), "model": model, "batch_size": batch_size, "threads": threads,
        "plain_s": plain, "sim_s": sim, "ratio": sim / plain, "setup_s": setup_s,
        "plain_cpu_s": plain_cpu, "sim_cpu_s": sim_cpu, "cpu_ratio": sim_cpu / plain_cpu,
        "images_per_s": batch_size / sim, "plain_images_per_s": batch_size / plain,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "equals_reference": exact,
    }


def _timed(fn: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _start_deaf_to_ctrl_c(proc: Any) -> None:
    """Start a case's process with SIGINT ignored (inherited through the spawn): a Ctrl-C
    reaches the whole process group, and the child printed its own KeyboardInterrupt
    traceback beside the command's one line; the command ends the child itself."""
    if threading.current_thread() is not threading.main_thread():
        proc.start()  # signal handlers can only be set in the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def _result_of(proc: Any, queue: Any, case: BenchCase) -> dict[str, Any]:
    """The row a case's subprocess puts on the queue; an error if it dies without one."""
    while True:
        try:
            row: dict[str, Any] = queue.get(timeout=1.0)
            return row
        except Empty:
            if not proc.is_alive() and queue.empty():
                raise RuntimeError(f"benchmark case '{case.label}' ended without a result "
                                   f"(exit code {proc.exitcode})") from None


def run_benchmark(model: str = "vgg8", batch_size: int = 64, repeats: int = 2,
                  cases: tuple[BenchCase, ...] = DEFAULT_CASES, threads: int | None = None,
                  console: Console | None = None, json_out: str | None = None
                  ) -> list[dict[str, Any]]:
    """Run every case in a fresh subprocess; print a table; return the rows."""
    check_bench_args(model, batch_size, repeats)
    console = console or Console()
    threads = threads or torch.get_num_threads()
    ctx = mp.get_context("spawn")
    rows = []
    for case in cases:
        queue = ctx.Queue()
        proc = ctx.Process(target=_run_case,
                           args=(case, model, batch_size, repeats, threads, queue))
        _start_deaf_to_ctrl_c(proc)
        try:
            row = _result_of(proc, queue, case)
        except BaseException:  # Ctrl-C (or a failure) here: the case's process goes too
            proc.terminate()
            proc.join()
            raise
        proc.join()
        rows.append(row)
        console.print(f"{case.label}: {row['ratio']:.2f}x plain PyTorch "
                      f"({row['cpu_ratio']:.2f}x in CPU time), "
                      f"{row['images_per_s']:.1f} img/s, peak RSS {row['peak_rss_mib']:.0f} MiB")
    table = Table(title=f"engine benchmark: {model}, batch {batch_size}, {threads} threads")
    for col in ("case", "plain img/s", "sim img/s", "x plain", "x plain (CPU)", "peak RSS MiB",
                "set-up s", "== reference"):
        table.add_column(col, justify="left" if col == "case" else "right", overflow="fold")
    for r in rows:
        table.add_row(r["label"], f"{r['plain_images_per_s']:.1f}", f"{r['images_per_s']:.1f}",
                      f"{r['ratio']:.2f}", f"{r['cpu_ratio']:.2f}", f"{r['peak_rss_mib']:.0f}",
                      f"{r['setup_s']:.2f}",
                      {None: "n/a (lossy)", True: "yes", False: "NO"}[r["equals_reference"]])
    console.print(table)
    if json_out:
        atomic_write_text(json_out, json.dumps(rows, indent=2))
    return rows
