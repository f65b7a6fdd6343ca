"""Minor page faults and time per batch of one bench case in fresh processes, with glibc's
adaptive malloc thresholds (`default`) and after `keep_freed_memory()` (`kept`): whether a
process's per-call tensors reuse freed memory or fault on every first touch.

    .venv/bin/python benchmarks/allocator.py --case lossless --model vgg8-pattern \
        --processes 6 --json docs/results/bench/allocator9.json

Each process runs the case's batch (`--images`, `--threads`) `--batches` times after the
model's set-up; per batch it records the wall time and the process's minor page faults
(`getrusage`). The processes run one after another, alternating the two modes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from typing import Any

import torch

from sparsexbar.app.bench import CASES, _model_and_inputs, prepared_case
from sparsexbar.core.io import atomic_write_text
from sparsexbar.core.runtime import keep_freed_memory
from sparsexbar.simulate import LayerRecorder


def _process(case_key: str, model: str, images: int, batches: int, threads: int, kept: bool,
             queue: Any) -> None:
    """One fresh process: (seconds, minor faults) of every batch onto `queue`."""
    applied = keep_freed_memory() if kept else False
    torch.set_num_threads(threads)
    net, x = _model_and_inputs(model, images)
    qmodel, scheme, kernels, opts = prepared_case(CASES[case_key], net, x)
    runs = []
    with torch.no_grad(), LayerRecorder(scheme, kernels, opts, torch.device("cpu")) as rec:
        for _ in range(batches):  # batches: a handful
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            qmodel.run(x, rec)
            runs.append((time.perf_counter() - t0,
                         resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    queue.put({"kept": kept, "applied": applied, "seconds": [s for s, _ in runs],
               "minor_faults": [f for _, f in runs]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="lossless", choices=sorted(CASES))
    parser.add_argument("--model", default="vgg8-pattern")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--processes", type=int, default=6, help="per mode")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for i in range(2 * args.processes):  # alternating modes, one process at a time
        queue = ctx.Queue()
        proc = ctx.Process(target=_process, args=(args.case, args.model, args.images,
                                                  args.batches, args.threads, i % 2 == 1,
                                                  queue))
        proc.start()
        row = queue.get()
        proc.join()
        rows.append(row)
        last = row["seconds"][-4:]
        faults = row["minor_faults"][-4:]
        print(f"{'kept' if row['kept'] else 'default'}: last batches "
              f"{min(last) * 1e3:.0f}-{max(last) * 1e3:.0f} ms, minor faults "
              f"{min(faults)}-{max(faults)}")
    out = {"case": args.case, "model": args.model, "images": args.images,
           "batches": args.batches, "threads": args.threads, "processes": rows}
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
