"""`sparsexbar demo` on the whole 10k split, before and after: wall and CPU time per run and
per scheme, from the run's `/usr/bin/time -v` log and the demo's progress lines, with the
demo's comparison.csv (accuracy and event counts must not change with speed work).

    /usr/bin/time -v .venv/bin/sparsexbar demo --out OUT > LOG 2>&1
    .venv/bin/python benchmarks/demo_time.py record LOG OUT/comparison.csv --json demo.json
    .venv/bin/python benchmarks/demo_time.py table before.json after.json

`record` writes one JSON file (commit it: docs/results/bench/); `table` prints the Markdown
table of docs/benchmarks.md from two of them. Figures come from the files only.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

from sparsexbar.core.io import atomic_write_text

_PROGRESS = re.compile(r"^\s*(\S+)\s+\S*━+\S*\s+(\d+)/(\d+)\s+(\d+):(\d\d):(\d\d)\s*$")
_COUNTS = ("top1", "float_top1", "quantized_top1", "ou_activations", "adc_conversions")


def _seconds(text: str) -> float:
    """'h:mm:ss' or 'm:ss.ss' (GNU time's elapsed) -> seconds."""
    parts = [float(p) for p in text.strip().split(":")]
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return total


def record(log: Path, comparison: Path) -> dict[str, Any]:
    """The run's times (whole run; per scheme from its finished progress bar) and the
    comparison rows' accuracies and event counts."""
    text = log.read_text()
    fields: dict[str, str] = {}
    schemes: dict[str, float] = {}
    for line in text.splitlines():
        if ":" in line and line.startswith("\t"):  # /usr/bin/time -v: "\tkey: value"
            key, _, value = line.strip().rpartition(": ")
            fields[key] = value
        elif (m := _PROGRESS.match(line)) and m.group(2) == m.group(3):  # a finished bar
            schemes[m.group(1)] = int(m.group(4)) * 3600 + int(m.group(5)) * 60 + int(m.group(6))
    with comparison.open() as f:
        rows = {r["scheme"]: {k: r[k] for k in _COUNTS} for r in csv.DictReader(f)}
    return {
        "command": fields.get("Command being timed", "").strip('"'),
        "wall_s": _seconds(fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"]),
        "user_s": float(fields["User time (seconds)"]),
        "system_s": float(fields["System time (seconds)"]),
        "cpu_share": fields.get("Percent of CPU this job got", ""),
        "peak_rss_mib": int(fields["Maximum resident set size (kbytes)"]) / 1024,
        "scheme_wall_s": schemes,
        "results": rows,
    }


def table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Markdown: per scheme wall time before/after, the whole run's wall and CPU time, and
    whether every scheme's accuracies and event counts are the same."""
    lines = ["| | before | after | after / before |", "| --- | ---: | ---: | ---: |"]
    for name, t in after["scheme_wall_s"].items():
        b = before["scheme_wall_s"].get(name)
        ratio = f"{t / b:.2f}" if b else "-"
        lines.append(f"| {name} (wall, progress bar) | {b if b is not None else '-'} s "
                     f"| {t:.0f} s | {ratio} |")
    for key, label in (("wall_s", "whole run, wall"), ("user_s", "whole run, user CPU"),
                       ("system_s", "whole run, system CPU")):
        lines.append(f"| {label} | {before[key]:.0f} s | {after[key]:.0f} s "
                     f"| {after[key] / before[key]:.2f} |")
    cpu_b, cpu_a = before["user_s"] + before["system_s"], after["user_s"] + after["system_s"]
    lines.append(f"| whole run, CPU (user + system) | {cpu_b:.0f} s | {cpu_a:.0f} s "
                 f"| {cpu_a / cpu_b:.2f} |")
    lines.append(f"| share of the CPU the run got | {before['cpu_share']} | {after['cpu_share']} "
                 "| |")
    lines.append(f"| peak RSS | {before['peak_rss_mib']:.0f} MiB | {after['peak_rss_mib']:.0f} MiB "
                 "| |")
    same = [s for s in after["results"] if before["results"].get(s) == after["results"][s]]
    differ = [s for s in after["results"] if s not in same]
    lines.append(f"| accuracies and OU/ADC counts equal | | {', '.join(same) or 'none'} "
                 f"| {'differ: ' + ', '.join(differ) if differ else 'all equal'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("log", type=Path)
    rec.add_argument("comparison", type=Path)
    rec.add_argument("--json", type=Path, required=True)
    tab = sub.add_parser("table")
    tab.add_argument("before", type=Path)
    tab.add_argument("after", type=Path)
    args = ap.parse_args()
    if args.verb == "record":
        atomic_write_text(args.json, json.dumps(record(args.log, args.comparison), indent=1))
    else:
        print(table(json.loads(args.before.read_text()), json.loads(args.after.read_text())),
              end="")


if __name__ == "__main__":
    main()
