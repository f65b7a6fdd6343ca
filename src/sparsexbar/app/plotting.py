"""The figures of `compare`/`demo` (energy by component, per-layer work done and skipped,
accuracy against energy) and of `plot` (a sweep's Pareto fronts), as PNG bytes. Drawn
through `core.runtime.pyplot()`, which selects matplotlib's Agg backend once."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.cost import ENERGY_COMPONENTS
from ..core.runtime import pyplot
from ..studies.writers import png_bytes


def energy_by_component(results: Sequence[dict[str, Any]], labels: Sequence[str]) -> bytes:
    """Energy per image of each run by component: stacked (left, linear: what dominates) and
    component by component on a log scale (right: every unit the cost model charges, however
    small, e.g. a scheme's zero detectors beside its ADCs)."""
    plt = pyplot()
    fig, (stack, each) = plt.subplots(1, 2, figsize=(13, 4.6),
                                      gridspec_kw={"width_ratios": [1, 1.6]})
    names = list(labels)
    present = [c for c in ENERGY_COMPONENTS
               if any(r["totals"]["energy_pj"].get(c, 0.0) for r in results)]
    colors = plt.get_cmap("tab20").colors
    color = {c: colors[i % len(colors)] for i, c in enumerate(ENERGY_COMPONENTS)}
    bottom = [0.0] * len(results)
    for comp in present:
        vals = [r["totals"]["energy_pj"].get(comp, 0.0) / r["num_images"] * 1e-6
                for r in results]
        stack.bar(names, vals, bottom=bottom, label=comp, color=color[comp])
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    stack.set_ylabel("energy per image (uJ)")
    stack.set_title("Energy by component (stacked)")
    stack.tick_params(axis="x", labelrotation=30)
    width = 0.8 / max(len(results), 1)
    for j, (r, name) in enumerate(zip(results, names, strict=True)):
        vals = [r["totals"]["energy_pj"].get(c, 0.0) / r["num_images"] * 1e-6 for c in present]
        xs = [i + (j - (len(results) - 1) / 2) * width for i in range(len(present))]
        each.bar(xs, [v if v > 0 else float("nan") for v in vals], width, label=name)
    each.set_xticks(range(len(present)), present, rotation=45, ha="right")
    each.set_yscale("log")
    each.set_ylabel("energy per image (uJ, log)")
    each.set_title("Each component, per scheme")
    if present:  # every component zero (all energies set to 0): no bar, no legend
        each.legend(fontsize=7, ncol=2)
        stack.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return png_bytes(fig)


def per_layer_work(results: Sequence[dict[str, Any]], labels: Sequence[str]) -> bytes:
    """Per layer: ADC conversions done per image (log scale, dense as reference) and the share
    of dense's conversions and OU activations each scheme skipped."""
    fig, (done_ax, skip_ax) = pyplot().subplots(2, 1, figsize=(8, 6.5), sharex=True)
    layers = [lay["name"] for lay in results[0]["layers"]]
    width = 0.8 / (len(results) + 1)
    xs = range(len(layers))
    dense = [lay["dense_events"]["adc_conversions"] / results[0]["num_images"]
             for lay in results[0]["layers"]]
    done_ax.bar([x - 0.4 + width / 2 for x in xs], dense, width, label="dense (reference)",
                color="lightgray")
    skip_width = 0.8 / max(len(results), 1)
    for i, res in enumerate(results):
        vals = [lay["events"]["adc_conversions"] / res["num_images"] for lay in res["layers"]]
        done_ax.bar([x - 0.4 + width * (i + 1.5) for x in xs], vals, width,
                    label=labels[i])
        skipped = [100 * (1 - _share(lay["events"]["adc_conversions"],
                                     lay["dense_events"]["adc_conversions"]))
                   for lay in res["layers"]]
        skip_ax.bar([x - 0.4 + skip_width * (i + 0.5) for x in xs], skipped, skip_width,
                    label=labels[i], color=f"C{i}")
    done_ax.set_ylabel("ADC conversions per image")
    done_ax.set_yscale("log")
    done_ax.set_title("Per-layer work done (vs dense)")
    done_ax.legend(fontsize=8)
    skip_ax.axhline(0, color="black", linewidth=0.5)
    skip_ax.set_ylabel("conversions skipped (% of dense)")
    skip_ax.set_title("Per-layer work skipped")
    skip_ax.set_xticks(list(xs), layers, rotation=45, ha="right", fontsize=8)
    return png_bytes(fig)


def _share(done: float, dense: float) -> float:
    """done / dense, 1 when dense did nothing (nothing to skip)."""
    return done / dense if dense else 1.0


def accuracy_vs_energy(results: Sequence[dict[str, Any]], labels: Sequence[str]) -> bytes:
    """Top-1 against energy per image, one labelled point per scheme."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    energies = [r["totals"]["energy_pj"]["total"] / r["num_images"] * 1e-6 for r in results]
    rank = {i: r for r, i in enumerate(sorted(range(len(results)), key=lambda i: energies[i]))}
    for i, (res, energy_uj) in enumerate(zip(results, energies, strict=True)):
        top1 = 100 * res["accuracy"]["top1"]
        ax.scatter([energy_uj], [top1], color=f"C{i}", s=40, zorder=3)
        # Neighbours in energy get labels at different heights: lossless schemes share one
        # accuracy, so their points lie on one line.
        ax.annotate(labels[i], (energy_uj, top1), textcoords="offset points",
                    xytext=(4, 5 + 11 * (rank[i] % 3)), fontsize=8, color=f"C{i}")
    ax.margins(x=0.12)
    positive = [e for e in energies if e > 0]
    if positive and max(positive) > 10 * min(positive):  # spans a decade: log scale
        ax.set_xscale("log")
    ax.set_xlabel("energy per image (uJ)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Accuracy vs energy")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def pareto_title(rows: Sequence[Mapping[str, Any]], xcol: str, ycol: str, what: str,
                 on_front: int) -> str:
    """A Pareto plot's title: the points drawn (finite in both columns; those that are not,
    an infinite throughput say, are counted apart: the title said 6 points and 4 were drawn)
    and how many are on the front."""
    drawn = sum(math.isfinite(r[xcol]) and math.isfinite(r[ycol]) for r in rows)
    off = f" ({len(rows) - drawn} not drawn: infinite or undefined)" if drawn < len(rows) else ""
    return f"{what}: {drawn} points{off}, {on_front} on the front"


def pareto(rows: list[dict[str, Any]], labels: Callable[[dict[str, Any]], str], xcol: str,
           xlabel: str, xscale: float, ycol: str, ylabel: str, yscale: float,
           flag: str) -> bytes:
    """A sweep's points, cost `xcol` (lower is better) against gain `ycol` (higher is
    better), marked by model and coloured by scheme, the Pareto front (`flag`) stepped and
    its first 20 points labelled by `labels(row)`."""
    fig, ax = pyplot().subplots(figsize=(7.5, 5))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["scheme"]), []).append(r)
    markers = "osD^v<>PX*"
    models = sorted({m for m, _ in groups})
    for (model, scheme), members in sorted(groups.items()):
        shown = [r for r in members if math.isfinite(r[xcol]) and math.isfinite(r[ycol])]
        xs = [r[xcol] * xscale for r in shown]
        ys = [r[ycol] * yscale for r in shown]
        label = scheme if len(models) == 1 else f"{scheme} / {model}"
        ax.scatter(xs, ys, marker=markers[models.index(model) % len(markers)], alpha=0.6,
                   label=label)
    front = sorted((r for r in rows if r[flag]), key=lambda r: r[xcol])
    if front:
        ax.step([r[xcol] * xscale for r in front], [r[ycol] * yscale for r in front],
                where="post", color="black", linewidth=1, label="Pareto front")
        ax.scatter([r[xcol] * xscale for r in front], [r[ycol] * yscale for r in front],
                   facecolors="none", edgecolors="black", s=90, linewidths=1.2)
    xs_all = [r[xcol] * xscale for r in rows if math.isfinite(r[xcol]) and r[xcol] > 0]
    log_x = bool(xs_all) and max(xs_all) > 20 * min(xs_all)
    if log_x:
        _log_ticks(ax)
    if front and xs_all:
        scale = math.log10 if log_x else float
        low, high = scale(min(xs_all)), scale(max(xs_all))
        for r in front[:20]:
            x = r[xcol] * xscale
            right = high > low and x > 0 and (scale(x) - low) / (high - low) > 0.6
            ax.annotate(labels(r), (x, r[ycol] * yscale), fontsize=6,
                        xytext=(-4 if right else 4, -9), textcoords="offset points",
                        ha="right" if right else "left")
    ax.set_xlabel(f"{xlabel} (lower is better)")
    ax.set_ylabel(f"{ylabel} (higher is better)")
    ax.set_title(pareto_title(rows, xcol, ycol, f"{ylabel} vs {xlabel}", len(front)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def _log_ticks(ax: Any) -> None:
    """A log x axis ticked at 1, 2, 5 x 10^k with plain labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # after pyplot()

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
