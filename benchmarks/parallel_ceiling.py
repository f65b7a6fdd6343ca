"""How much two cores can give one bench case on this machine: the same images run (a) in one
process on one thread, (b) split in halves between two processes on one thread each, started
together, and (c) in one process on two threads (the engine's image tasks). (b) shares
nothing but the machine (caches, memory bandwidth), so b / a bounds what any threading of
the engine can reach here.

    .venv/bin/python benchmarks/parallel_ceiling.py --case nonideal --images 32 \
        --json docs/results/bench/noisy9_ceiling.json

Images per second of the timed run (after one warm-up batch of 2 images) in each setting;
the gains are images/s over (a)'s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from typing import Any

import torch

from sparsexbar.app.bench import CASES, _model_and_inputs, prepared_case
from sparsexbar.core.io import atomic_write_text
from sparsexbar.core.runtime import keep_freed_memory
from sparsexbar.simulate import LayerRecorder


def _run(case_key: str, model: str, first: int, count: int, threads: int,
         start: Any, queue: Any) -> None:
    """Images first .. first+count-1 of the case's inputs on `threads` threads; waits for
    `start` (None: no wait) before the timed run; puts (seconds, images)."""
    keep_freed_memory()
    torch.set_num_threads(threads)
    net, x = _model_and_inputs(model, first + count)
    x = x[first:]
    qmodel, scheme, kernels, opts = prepared_case(CASES[case_key], net, x)
    with torch.no_grad(), LayerRecorder(scheme, kernels, opts, torch.device("cpu")) as rec:
        qmodel.run(x[:2], rec)  # warm-up
        if start is not None:
            start.wait()
        t0 = time.perf_counter()
        qmodel.run(x, rec)
        queue.put((time.perf_counter() - t0, count))


def _setting(case: str, model: str, images: int, processes: int, threads: int) -> float:
    """Images per second of `images` split over `processes` processes started together
    (their longest run counts)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start = ctx.Barrier(processes) if processes > 1 else None
    share = images // processes
    procs = [ctx.Process(target=_run, args=(case, model, i * share, share, threads, start,
                                            queue)) for i in range(processes)]
    for p in procs:
        p.start()
    runs = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return share * processes / max(s for s, _ in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="nonideal", choices=sorted(CASES))
    parser.add_argument("--model", default="vgg8")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.images < 2 or args.images % 2:
        parser.error("--images must be an even number of at least 2")
    one = _setting(args.case, args.model, args.images, 1, 1)
    two_processes = _setting(args.case, args.model, args.images, 2, 1)
    two_threads = _setting(args.case, args.model, args.images, 1, 2)
    row = {"case": args.case, "model": args.model, "images": args.images,
           "one_thread_images_per_s": one, "two_processes_images_per_s": two_processes,
           "two_threads_images_per_s": two_threads,
           "two_processes_gain": two_processes / one, "two_threads_gain": two_threads / one}
    for key, value in row.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        atomic_write_text(args.json, json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
