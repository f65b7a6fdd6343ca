"""One-off check: CPU and wall time of `simulate()` (comprrae on the demo's model) with the
process's default intra-op threads, for 250 and 1,000 images; run it on an idle machine and
beside a busy process to see what oversubscribed OpenMP threads cost.

    .venv/bin/python benchmarks/threads_check.py
"""

from __future__ import annotations

import argparse
import time

import torch

from sparsexbar.simulate import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--images", default="250,1000",
                        help="comma-separated image counts, one run each")
    args = parser.parse_args()
    for n in (int(v) for v in args.images.split(",")):
        cpu, wall = time.process_time(), time.perf_counter()
        simulate("vgg8-fmnist-pattern", "default", hw="isaac", scheme="comprrae", limit=n,
                 batch_size=250)
        print(n, "cpu", round(time.process_time() - cpu, 1), "wall",
              round(time.perf_counter() - wall, 1), "threads", torch.get_num_threads(),
              flush=True)


if __name__ == "__main__":
    main()
