"""Before/after table of `benchmarks/engine.py --json` (or `simulate_call.py --json`) rows, as
Markdown (docs/benchmarks.md).

    .venv/bin/python benchmarks/compare.py docs/results/bench/vgg8p_before_t1.json \
        docs/results/bench/vgg8p_after_t1.json

Per case: x plain PyTorch (wall and CPU time) before and after, x dense (the `dense` case of
the same file with the same overrides, else `lossless`: every scheme against dense on the same
model, settings and run, a clipping setting against dense in it; also in CPU
time, which a shared machine's waiting for a core does not inflate), peak RSS, and
whether the lossless cases equal the integer reference. Figures come from the files only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(path.read_text())
    return {r["key"]: r for r in rows}


def _dense_of(rows: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The dense row a case is compared with: `dense` with the same overrides (a scheme in a
    clipping setting against dense in that setting), else the `lossless` case."""
    row = rows[name]
    for other in rows.values():
        if (other["scheme"] == "dense" and other["overrides"] == row["overrides"]
                and other.get("exact_shortcut", True)):
            return other
    return rows.get("lossless")


def _x_dense(rows: dict[str, dict[str, Any]], name: str, key: str = "sim_s") -> str:
    dense = _dense_of(rows, name) if name in rows else None
    if dense is None:
        return "-"
    return f"{rows[name][key] / dense[key]:.2f}"


def table(before: Path | None, after: Path, names: tuple[str, str] = ("before", "after")) -> str:
    """Markdown rows: one per case of `after` (with `before`'s figures where it has it);
    `names`: the two columns' headings (e.g. "1 thread", "2 threads")."""
    new = _rows(after)
    old = _rows(before) if before is not None else {}
    first = next(iter(new.values()))
    head = (f"{first['model']}, batch {first['batch_size']}, {first['threads']} thread"
            f"{'s' if first['threads'] > 1 else ''}")
    b_, a_ = names
    lines = [f"| case ({head}) | x plain {b_} | x plain {a_} | x plain (CPU) {a_} "
             f"| x dense {b_} | x dense {a_} | x dense (CPU) {b_} | x dense (CPU) {a_} "
             f"| img/s {b_} | img/s {a_} | peak RSS {a_} | == reference |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| --- |"]
    for name, r in new.items():
        b = old.get(name)
        ref = {None: "n/a (lossy)", True: "yes", False: "NO"}[r["equals_reference"]]
        lines.append(
            f"| {r['label']} | {'-' if b is None else format(b['ratio'], '.2f')} "
            f"| {r['ratio']:.2f} | {r['cpu_ratio']:.2f} "
            f"| {_x_dense(old, name) if b is not None else '-'} | {_x_dense(new, name)} "
            f"| {_x_dense(old, name, 'sim_cpu_s') if b is not None else '-'} "
            f"| {_x_dense(new, name, 'sim_cpu_s')} "
            f"| {'-' if b is None else format(b['images_per_s'], '.1f')} "
            f"| {r['images_per_s']:.1f} | {r['peak_rss_mib']:.0f} MiB | {ref} |")
    return "\n".join(lines) + "\n"


def simulate_table(before: Path | None, after: Path) -> str:
    """The same for `benchmarks/simulate_call.py --json` rows: simulate() against the engine."""
    new = json.loads(after.read_text())
    old = {r["scheme"]: r for r in json.loads(before.read_text())} if before else {}
    lines = ["| scheme | engine s before | simulate() s before | x engine before "
             "| x engine (CPU) before | engine s after | simulate() s after | x engine after "
             "| x engine (CPU) after |", "| --- |" + " ---: |" * 8]
    for r in new:
        b = old.get(r["scheme"])
        was = ("- | - | - | -" if b is None else f"{b['engine_s']:.3f} | {b['simulate_s']:.3f} "
               f"| {b['ratio']:.2f} | {b['cpu_ratio']:.2f}")
        lines.append(f"| {r['scheme']} | {was} | {r['engine_s']:.3f} | {r['simulate_s']:.3f} "
                     f"| {r['ratio']:.2f} | {r['cpu_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="[before.json] after.json")
    ap.add_argument("--names", nargs=2, default=("before", "after"), metavar=("BEFORE", "AFTER"),
                    help="headings of the two runs (default: before after)")
    args = ap.parse_args()
    if len(args.files) > 2:
        ap.error("give one or two files: [before.json] after.json")
    before, after = (None, args.files[0]) if len(args.files) == 1 else args.files
    rows = json.loads(after.read_text())
    if rows and "engine_s" in rows[0]:
        print(simulate_table(before, after), end="")
    else:
        print(table(before, after, tuple(args.names)), end="")


if __name__ == "__main__":
    main()
