"""The `--json` and `--table` options shared by the benchmark scripts whose docs/benchmarks.md
tables are printed from their committed result files (`linear_floor.py`,
`batched_products.py`): run and print the table (and write the rows atomically with
`--json`), or print the table of a stored result file and run nothing (`--table`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparsexbar.core.io import atomic_write_text

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
