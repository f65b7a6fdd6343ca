"""One bench case's images per second on one and two threads, run by run: the table of
docs/benchmarks.md's noisy-case runs (issue 18, part 13), printed from result files of
`benchmarks/engine.py` (no figure typed by hand).

    B=docs/results/bench
    .venv/bin/python benchmarks/threads_pairs.py --case nonideal \\
        "pair 1, after=$B/noisy_after13_t1.json,$B/noisy_after13_t2.json" ...

Each run is LABEL=ONE_THREAD.json,TWO_THREADS.json (docs/benchmarks.md, part 13, has the
whole command).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def case_row(path: Path, key: str) -> dict[str, Any]:
    """The row of bench case `key` in a result file of benchmarks/engine.py."""
    rows = json.loads(path.read_text())
    found = [r for r in rows if r["key"] == key]
    if not found:
        raise SystemExit(f"{path}: no case '{key}'")
    return found[0]


def table(key: str, runs: list[tuple[str, Path, Path]]) -> str:
    """Markdown: per run, images per second and x plain PyTorch on one and two threads, and
    the two-thread gain."""
    first = case_row(runs[0][1], key)
    lines = [f"| run ({first['model']}, batch {first['batch_size']}, {key} case) | img/s 1 thread "
             "| x plain 1 thread | img/s 2 threads | x plain 2 threads | two / one |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, one_path, two_path in runs:
        one, two = case_row(one_path, key), case_row(two_path, key)
        lines.append(f"| {label} | {one['images_per_s']:.2f} | {one['ratio']:.1f} "
                     f"| {two['images_per_s']:.2f} | {two['ratio']:.1f} "
                     f"| {two['images_per_s'] / one['images_per_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--case", required=True, help="bench case key, e.g. nonideal")
    parser.add_argument("runs", nargs="+", metavar="LABEL=ONE.json,TWO.json")
    args = parser.parse_args()
    runs = []
    for spec in args.runs:
        label, sep, files = spec.partition("=")
        paths = files.split(",")
        if not sep or len(paths) != 2:
            parser.error(f"run '{spec}': give LABEL=ONE_THREAD.json,TWO_THREADS.json")
        runs.append((label, Path(paths[0]), Path(paths[1])))
    print(table(args.case, runs))


if __name__ == "__main__":
    main()
