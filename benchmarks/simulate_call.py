"""The whole `simulate()` call against the engine alone on the same images, in one process.

    .venv/bin/python benchmarks/simulate_call.py --model vgg8-fmnist --images 64 --threads 1
    .venv/bin/python benchmarks/simulate_call.py --model vgg16-fmnist --schemes dense,sre

engine: quantization (calibration on the same images), mapping, kernels and the simulated
forward pass (`QuantizedModel.run` through the scheme, event counting included); simulate():
everything a user's call does on top (loading the model and data, fitting the images, the float
and integer-reference accuracies, cost model, result records). Best of `--repeats` each, CPU
time of this process (a shared machine's waiting for a core is not counted) and wall time.
Target (issue 18): simulate() within 1.5x of the engine at batch 64.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from sparsexbar.core.config import load_config
from sparsexbar.core.engine import EngineOptions
from sparsexbar.core.frontend import quantize_model
from sparsexbar.core.io import atomic_write_text
from sparsexbar.core.runtime import keep_freed_memory, torch_threads
from sparsexbar.schemes import get_scheme
from sparsexbar.simulate import LayerRecorder, resolve_inputs, simulate


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best wall s, best CPU s) of `repeats` calls after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def measure(model: str, scheme: str, images: int, repeats: int) -> dict[str, float]:
    keep_freed_memory()  # what simulate() sets first, for the engine-only runs too
    loaded, batches = resolve_inputs(model, "default", images, None, None, None)
    net, x = loaded.net.eval(), batches.images
    hw = load_config("isaac")

    def engine() -> None:
        qmodel = quantize_model(net, x, hw.numbers.weight_bits, hw.numbers.input_bits)
        sch = get_scheme(scheme)
        kernels = {q.name: sch.kernel(sch.map_layer(q, hw), torch.device("cpu"))
                   for q in qmodel.layers}
        with torch.no_grad(), LayerRecorder(sch, kernels, EngineOptions(),
                                            torch.device("cpu")) as rec:
            qmodel.run(x, rec)

    def whole() -> None:
        simulate(model, "default", hw="isaac", scheme=scheme, limit=images, batch_size=images,
                 calibration_images=images)

    e_wall, e_cpu = _best(engine, repeats)
    s_wall, s_cpu = _best(whole, repeats)
    return {"engine_s": e_wall, "engine_cpu_s": e_cpu, "simulate_s": s_wall,
            "simulate_cpu_s": s_cpu, "ratio": s_wall / e_wall, "cpu_ratio": s_cpu / e_cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="vgg8-fmnist")
    ap.add_argument("--schemes", default="dense,sre,pattern,comprrae,encoding,combined")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    rows = []
    table = Table(title=f"simulate() vs engine: {args.model}, {args.images} images, "
                        f"{args.threads} thread(s)")
    for col in ("scheme", "engine s", "simulate() s", "x engine", "x engine (CPU)"):
        table.add_column(col, justify="left" if col == "scheme" else "right")
    with torch_threads(args.threads):
        for scheme in (s.strip() for s in args.schemes.split(",") if s.strip()):
            r = measure(args.model, scheme, args.images, args.repeats)
            rows.append({"model": args.model, "scheme": scheme, "images": args.images,
                         "threads": args.threads, **r})
            table.add_row(scheme, f"{r['engine_s']:.3f}", f"{r['simulate_s']:.3f}",
                          f"{r['ratio']:.2f}", f"{r['cpu_ratio']:.2f}")
    Console().print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
