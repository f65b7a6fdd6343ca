"""Engine benchmark: simulated images/s vs plain float32 PyTorch, as ratios, plus peak memory.

    .venv/bin/python benchmarks/engine.py --model vgg8 --batch-size 64
    .venv/bin/python benchmarks/engine.py --model vgg16 --batch-size 256
    .venv/bin/python benchmarks/engine.py --model vgg8-pattern --cases lossless,pattern,combined
    .venv/bin/python benchmarks/engine.py --model vgg16-fmnist-pattern --batch-size 256

Models: vgg8 / vgg8-pattern (the shipped VGG-8s, the demo's model), vgg16-fmnist /
vgg16-fmnist-pattern (the shipped VGG-16 workloads on the test images padded to 32x32), vgg16
(random weights, CIFAR-shaped random inputs). Targets (issue 18): noisy <= 40x plain PyTorch,
lossy <= 8x, every scheme <= 3x dense; peak RSS <= 4 GiB for VGG-16 at batch 256.
Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from sparsexbar.app.bench import BENCH_MODELS, CASES, run_benchmark
from sparsexbar.schemes.entry import BenchCase


def cli(cases: Mapping[str, BenchCase], description: str, model: str = "vgg8",
        batch_size: int = 64, repeats: int = 2, threads: int | None = None) -> None:
    """Parse the benchmark options (defaults as given) and run the chosen `cases`."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=model, choices=list(BENCH_MODELS))
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--cases", default=",".join(cases),
                    help=f"comma-separated subset of: {', '.join(cases)}")
    args = ap.parse_args()
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in cases]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(cases)}")
    run_benchmark(args.model, args.batch_size, args.repeats, threads=args.threads,
                  json_out=args.json, cases=tuple(cases[c] for c in names))


def main() -> None:
    cli(CASES, __doc__ or "")


if __name__ == "__main__":
    main()
