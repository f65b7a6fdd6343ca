"""A finished sweep: Pareto fronts, the summary table and CSV, and the plots."""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from ...core.io import atomic_write_bytes, atomic_write_text
from ..plotting import pareto
from .spec import canonical_json
from .store import load_results


def pareto_front(cost: Sequence[float], gain: Sequence[float]) -> list[bool]:
    """Which points no other point dominates (lower or equal cost and higher or equal gain,
    one of them strictly). Non-finite values are never on the front."""
    n = len(cost)
    order = sorted((i for i in range(n) if math.isfinite(cost[i]) and math.isfinite(gain[i])),
                   key=lambda i: (cost[i], -gain[i]))
    front = [False] * n
    best = -math.inf
    for _, group in itertools.groupby(order, key=lambda i: cost[i]):
        members = list(group)
        top = gain[members[0]]  # the group is sorted by gain, highest first
        if top > best:
            for i in members:
                front[i] = gain[i] == top
            best = top
    return front


PARETO_PLOTS = {
    # file: (x column, x label, x scale, y column, y label, y scale): x minimized, y maximized
    "pareto_energy_accuracy.png": ("energy_uj_per_image", "energy per image (uJ)", 1.0,
                                   "top1", "top-1 accuracy (%)", 100.0),
    "pareto_area_throughput.png": ("area_mm2", "area (mm2)", 1.0,
                                   "images_per_s", "throughput (images/s)", 1.0),
}


def varying_parameters(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns of the points (model, scheme, dotted keys...) whose value differs across rows."""
    names = ["model", "data", "limit", "scheme", "scheme_params", "hw"] + sorted(
        {k for r in rows for k in r if "." in k})
    return [n for n in names if len({canonical_json(r.get(n)) for r in rows}) > 1]


def _sort_value(value: Any) -> tuple[int, Any]:
    """Order mixed values: nulls, then numbers by value, then text."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, float(value))
    return (2, value if isinstance(value, str) else canonical_json(value))


def _label(row: Mapping[str, Any], names: Sequence[str]) -> str:
    parts = []
    for n in names:
        if n == "scheme_params":
            continue
        value = row.get(n)
        parts.append(str(value) if n in ("model", "scheme", "data", "hw") else f"{n}={value}")
    return " ".join(parts)


def summarize(out_dir: str | Path, plot_dir: str | Path | None = None) -> dict[str, Any]:
    """Read a sweep directory; write the Pareto PNGs and summary.csv into `plot_dir` (default
    the sweep directory). Returns the rows (with Pareto flags), varying parameters and paths."""
    table = load_results(out_dir)
    rows = table.to_pylist()
    for r in rows:
        r.pop("result_json", None)
    ok = [r for r in rows if r["status"] == "ok"]
    params = varying_parameters(rows)
    for r in rows:
        r["pareto_energy_accuracy"] = False
        r["pareto_area_throughput"] = False
    for name, (xcol, _, _, ycol, _, _) in PARETO_PLOTS.items():
        flag = name.removesuffix(".png")
        front = pareto_front([float(r[xcol]) for r in ok], [float(r[ycol]) for r in ok])
        for r, on in zip(ok, front, strict=True):
            r[flag] = on
    rows.sort(key=lambda r: tuple(_sort_value(r.get(n)) for n in [*params, "key"]))
    target = Path(plot_dir) if plot_dir is not None else Path(out_dir)
    paths: list[Path] = []
    if ok:
        for name, spec in PARETO_PLOTS.items():
            png = pareto([r for r in rows if r["status"] == "ok"],
                         lambda r: _label(r, params), *spec, flag=name.removesuffix(".png"))
            atomic_write_bytes(target / name, png)
            paths.append(target / name)
    columns = [c for c in rows[0] if c != "hardware_json"] + ["hardware_json"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(target / "summary.csv", buf.getvalue())
    paths.append(target / "summary.csv")
    return {"rows": rows, "parameters": params, "paths": paths}


def summary_table(summary: Mapping[str, Any], title: str) -> Any:
    """A rich Table of `summarize()`'s rows: varying parameters, status, headline numbers and
    which Pareto fronts each point is on (E: energy/accuracy, A: area/throughput). Failed
    points' errors are too long for a cell: `failures()` lists them."""
    params = [p for p in summary["parameters"] if p != "scheme_params"]
    table = Table(title=title)
    table.add_column("key", overflow="fold")
    for p in params:
        table.add_column(p, overflow="fold")
    for col in ("status", "top-1 %", "energy/img uJ", "img/s", "area mm2", "speedup",
                "energy eff.", "front"):
        table.add_column(col, justify="right", overflow="fold")
    for r in summary["rows"]:
        # a parameter a point lacks (a failed point has no resolved hardware) is blank
        values = ["" if r.get(p) is None else str(r.get(p)) for p in params]
        if r["status"] != "ok":
            error = str(r.get("error") or "")
            table.add_row(r["key"][:10], *values, "failed", "", "", "", "", "", "",
                          "see below" if error else "")
            continue
        front = ("E" if r["pareto_energy_accuracy"] else "") + (
            "A" if r["pareto_area_throughput"] else "")
        table.add_row(r["key"][:10], *values, "ok", f"{100 * r['top1']:.2f}",
                      f"{r['energy_uj_per_image']:.4g}", f"{r['images_per_s']:,.0f}",
                      f"{r['area_mm2']:.4g}", f"{r['speedup']:.2f}x",
                      f"{r['energy_efficiency']:.2f}x", front)
    return table


def failures(summary: Mapping[str, Any]) -> list[str]:
    """One line per failed point: short key, model, scheme, error."""
    return [f"{r['key'][:10]} {r['model']} {r['scheme']}: {r['error']}"
            for r in summary["rows"] if r["status"] != "ok"]
