"""The `--json` and `--table` options shared by the benchmark scripts whose docs/benchmarks.md
tables are printed from their committed result files (`linear_floor.py`,
`batched_products.py`, `noisy_head.py`): run and print the table (and write the rows
atomically with `--json`), or print the table of a stored result file and run nothing
(`--table`); `best_seconds`, their timer, and `repeats_and_threads_main`, the whole command
line of the scripts that take only `--repeats` and `--threads`."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparsexbar.core.io import atomic_write_text
from sparsexbar.core.runtime import torch_threads

Rows = list[dict[str, Any]]


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add `--json FILE` and `--table JSON` to a script's parser."""
    parser.add_argument("--json", default=None, help="write the rows here (atomically)")
    parser.add_argument("--table", default=None, metavar="JSON",
                        help="print the table of a result file written before; run nothing")


def run_or_show(args: argparse.Namespace, measure: Callable[[], Rows],
                markdown: Callable[[Rows], str]) -> None:
    """With `--table`, print the stored file's table; else measure, print the table and
    write the rows to `--json` if given."""
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return
    rows = measure()
    print(markdown(rows))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(rows, indent=1) + "\n")


def best_seconds(call: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls (warm up before where the first call differs)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def repeats_and_threads_main(doc: str | None, measure: Callable[[int], Rows],
                             markdown: Callable[[Rows], str]) -> None:
    """A script's command line: `--repeats` (default 20) and `--threads` (default 1) plus the
    options above; `measure(repeats)` runs on that many torch threads."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    add_options(parser)
    args = parser.parse_args()

    def run() -> Rows:
        with torch_threads(args.threads):
            return measure(args.repeats)

    run_or_show(args, run, markdown)
