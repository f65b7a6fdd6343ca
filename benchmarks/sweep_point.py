"""One sweep point timed as a user runs it: the whole `simulate()` call (calibration, mapping,
accuracies, cost) on the shipped VGG-8's first test images, for docs/sweeps.md's planning note.

    .venv/bin/python benchmarks/sweep_point.py --scheme sre --set adc.bits=4 --set ou.rows=32 \
        --images 16 --json docs/results/bench/sweep_point_sre_adc4_ou32.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sparsexbar.app.cli import parse_overrides
from sparsexbar.core.io import atomic_write_text
from sparsexbar.simulate import simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scheme", default="sre")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE hardware override")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the row to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)  # as `sparsexbar run --set` reads them
    start = time.perf_counter()
    result = simulate("default", "default", hw="isaac", scheme=args.scheme, overrides=overrides,
                      limit=args.images, batch_size=args.images)
    row = {"scheme": args.scheme, "overrides": overrides, "images": args.images,
           "threads": args.threads, "wall_s": time.perf_counter() - start,
           "top1": result.accuracy.top1,
           "clipping_layers": sum(1 for lay in result.layers if lay.adc_can_clip)}
    print(json.dumps(row))
    if args.json:
        atomic_write_text(args.json, json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
