"""The whole simulate() call of a short run, calibrated on its own images or on the data's
first 256 (the default since 2026-12-07: a run of --limit N quantizes as the whole split).

    .venv/bin/python benchmarks/calibration_cost.py \
        --json docs/results/bench/calibration256_limit64.json

Best of `--repeats` wall times, one thread, after one warm-up call per setting.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import torch

import sparsexbar as sx
from sparsexbar.core.io import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="vgg8-fmnist-pattern")
    ap.add_argument("--schemes", default="dense,sre,combined")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    best: dict[str, float] = {}
    for scheme in args.schemes.split(","):
        for images in (args.limit, 256):
            def call(s: str = scheme, n: int = images) -> float:
                start = time.perf_counter()
                sx.simulate(args.model, "default", scheme=s, limit=args.limit,
                            batch_size=args.limit, calibration_images=n)
                return time.perf_counter() - start
            call()
            best[f"{scheme} calibration {images}"] = min(call() for _ in range(args.repeats))
            print(f"{scheme:>10}  calibration on {images:>4} images: "
                  f"{best[f'{scheme} calibration {images}']:.3f} s", flush=True)
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
        atomic_write_text(args.json, json.dumps({
            "command": "benchmarks/calibration_cost.py", "model": args.model,
            "limit": args.limit, "batch_size": args.limit, "threads": 1,
            "repeats": args.repeats, "best_wall_s": best, "commit": commit,
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")


if __name__ == "__main__":
    main()
