"""Report: terminal tables (rich), result.json, layers.csv, comparison CSV, PNG plots, report.html.

Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..core.config import dotted, preset, preset_names
from ..core.cost import AREA_COMPONENTS, ENERGY_COMPONENTS
from ..core.events import Events
from ..core.io import atomic_write_bytes, atomic_write_text
from ..studies.writers import json_safe
from .plotting import accuracy_vs_energy, energy_by_component, per_layer_work

# the layer's shape and mapping, its time (per image), events, energy and area, each beside
# dense's where the result has it
LAYER_INFO = ("name", "kind", "rows", "cols", "out_channels", "input_signed", "arrays",
              "dense_arrays", "adc_bits", "dense_adc_bits", "adc_can_clip", "cycles",
              "dense_cycles", "latency_ns_per_image", "dense_latency_ns_per_image",
              "time_bound")
LAYER_COLUMNS = [*LAYER_INFO, *Events.names(), *(f"dense_{n}" for n in Events.names()),
                 *(f"energy_{c}_pj" for c in ENERGY_COMPONENTS), "energy_total_pj",
                 "dense_energy_total_pj", *(f"area_{c}_um2" for c in AREA_COMPONENTS),
                 "area_total_um2", "dense_area_total_um2"]


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def result_json_text(result: dict[str, Any]) -> str:
    return json.dumps(json_safe(result), indent=2, default=_json_default)


def layer_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for lay in result["layers"]:
        row = {k: lay.get(k) for k in LAYER_INFO}
        row.update(lay["events"])
        row.update({f"dense_{k}": v for k, v in lay["dense_events"].items()})
        row.update({f"energy_{c}_pj": lay["energy_pj"][c] for c in ENERGY_COMPONENTS})
        row["energy_total_pj"] = lay["energy_pj"]["total"]
        row["dense_energy_total_pj"] = lay["dense_energy_pj"]["total"]
        row.update({f"area_{c}_um2": lay["area_um2"][c] for c in AREA_COMPONENTS})
        row["area_total_um2"] = lay["area_um2"]["total"]
        row["dense_area_total_um2"] = lay["dense_area_um2"]["total"]
        rows.append(row)
    return rows


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_result(out_dir: str | Path, result: dict[str, Any], prefix: str = "") -> list[Path]:
    """Write `<prefix>result.json` and `<prefix>layers.csv` into out_dir; return the paths."""
    out = Path(out_dir)
    paths = [out / f"{prefix}result.json", out / f"{prefix}layers.csv"]
    atomic_write_text(paths[0], result_json_text(result))
    atomic_write_text(paths[1], _csv_text(layer_rows(result), LAYER_COLUMNS))
    return paths


# ---- terminal tables ------------------------------------------------------------------------
def _si(value: float, unit: str) -> str:
    """Three significant digits with an SI prefix, trailing zeros kept ("39.0 uJ" beside
    "19.6 uJ": they read as the same precision)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}"
    prefixes = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"),
                (1e-6, "u"), (1e-9, "n"), (1e-12, "p")]
    rounded = float(f"{value:.3g}")  # the prefix of the figure shown: 999.6 u -> 1.00 m
    scale, prefix = next(((s, p) for s, p in prefixes if abs(rounded) >= s), prefixes[-1])
    digits = f"{rounded / scale:#.3g}"
    if "e" in digits:  # beyond the largest prefix
        return f"{value:.3g} {unit}"
    return f"{digits.rstrip('.')} {prefix}{unit}"


def layer_table(result: dict[str, Any]) -> Table:
    t = Table(title=f"{result['model']} on {result['dataset']} - scheme {result['scheme']['name']}"
              f" - {hardware_label(result['hardware'])} ({result['num_images']} images)")
    # events, cycles and energy are the run's totals over its images (the title says how
    # many); the summary table below gives energy and latency per image
    for col in ("layer", "rows x cols", "arrays", "OU act.", "ADC conv.", "cycles",
                "energy (all img)", "clip?"):
        t.add_column(col, justify="right" if col not in ("layer",) else "left", overflow="fold")
    for lay in result["layers"]:
        ev = lay["events"]
        t.add_row(lay["name"], f"{lay['rows']} x {lay['cols']}", str(lay["arrays"]),
                  f"{ev['ou_activations']:,}", f"{ev['adc_conversions']:,}", f"{lay['cycles']:,}",
                  _si(lay["energy_pj"]["total"] * 1e-12, "J"),
                  "yes" if lay["adc_can_clip"] else "no")
    return t


def scheme_label(result: dict[str, Any]) -> str:
    """The scheme as the user named it in a comparison (`scheme.label`: the canonical name
    plus its options, e.g. comprrae:alpha=0.4), else its canonical name."""
    scheme = result["scheme"]
    return str(scheme.get("label") or scheme["name"])


def file_label(label: str) -> str:
    """A scheme label made safe as a file-name prefix (':' -> '_', '=' -> '-')."""
    safe = label.replace(":", "_").replace("=", "-")
    return "".join(ch if ch.isalnum() or ch in "._+-" else "_" for ch in safe)


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one run that the side-by-side table and the comparison CSV show."""
    tot, vs = result["totals"], result["vs_dense"]
    n = result["num_images"]
    return {
        "scheme": scheme_label(result),
        "top1": result["accuracy"]["top1"],
        "float_top1": result["accuracy"]["float_top1"],
        "quantized_top1": result["accuracy"]["quantized_top1"],
        "ou_activations": tot["events"]["ou_activations"],
        "adc_conversions": tot["events"]["adc_conversions"],
        "energy_uj_per_image": tot["energy_pj"]["total"] / n * 1e-6,
        "latency_us": tot["latency_s"] * 1e6,
        "images_per_s": tot["images_per_s"],
        "images_per_s_pipelined": tot["images_per_s_pipelined"],
        "arrays": tot["arrays"],
        "area_mm2": tot["area_um2"]["total"] * 1e-6,
        "speedup": vs["speedup"],
        "energy_efficiency": vs["energy_efficiency"],
        "area_efficiency": vs["area_efficiency"],
        "adc_reduction": vs["computation_reduction"]["adc_conversions"],
        "ou_reduction": vs["computation_reduction"]["ou_activations"],
    }


def hardware_label(hardware: Mapping[str, Any]) -> str:
    """The hardware's name, followed by the settings that differ from the preset of that
    name ('isaac with ou.rows=9, ou.cols=8'): an overridden preset keeps its name."""
    name = str(hardware.get("name", "custom"))
    if name not in preset_names():
        return name
    base, got = dotted(preset(name).to_dict()), dotted(hardware)
    changed = [f"{key}={value}" for key, value in got.items()
               if key != "name" and key in base and value != base[key]]
    return f"{name} with {', '.join(changed)}" if changed else name


def overrides_text(result: dict[str, Any]) -> str:
    """The config settings a run's scheme did not follow, in words ('' when none):
    'adc.bits 4..6 per layer, not 3 (...)'."""
    overrides = result["scheme"].get("overrides") or {}
    return "; ".join(f"{key} {value}" for key, value in overrides.items())


def comparison_table(results: Sequence[dict[str, Any]],
                     failed: Mapping[str, str] | None = None) -> Table:
    """One row per scheme; a scheme that did not follow a config setting is marked (*) and
    the caption says which and what it used; a scheme that did not run has a row saying so."""
    first = results[0]
    t = Table(title=f"{first['model']} on {first['dataset']} ({first['num_images']} images), "
              f"hardware {hardware_label(first['hardware'])}")
    cols = ["scheme", "top-1 %", "OU act.", "ADC conv.", "energy/img", "latency/img", "img/s",
            "area", "speedup", "energy eff.", "arrays eff."]
    for c in cols:
        t.add_column(c, justify="left" if c == "scheme" else "right", overflow="fold")
    notes: list[str] = []
    for res in results:
        r = summary_row(res)
        text = overrides_text(res)
        mark = " " + "*" * (len(notes) + 1) if text else ""
        if text:
            notes.append(f"{'*' * (len(notes) + 1)} {r['scheme']}: {text}")
        t.add_row(r["scheme"] + mark, f"{100 * r['top1']:.2f}", f"{r['ou_activations']:,}",
                  f"{r['adc_conversions']:,}", _si(r["energy_uj_per_image"] * 1e-6, "J"),
                  _si(r["latency_us"] * 1e-6, "s"), f"{r['images_per_s']:,.0f}",
                  f"{r['area_mm2']:.3f} mm2", f"{r['speedup']:.2f}x",
                  f"{r['energy_efficiency']:.2f}x", f"{r['area_efficiency']:.2f}x")
    for label, why in (failed or {}).items():
        t.add_row(label, "did not run", *["-"] * (len(cols) - 2))
        notes.append(f"{label} did not run: {why}")
    if notes:
        t.caption = "\n".join(notes)
        t.caption_justify = "left"
    return t


def print_tables(results: Sequence[dict[str, Any]], console: Console | None = None,
                 per_layer: bool = True, failed: Mapping[str, str] | None = None) -> None:
    console = console or Console()
    if per_layer:
        for res in results:
            console.print(layer_table(res))
    console.print(comparison_table(results, failed))
    acc = results[0]["accuracy"]
    console.print(f"float top-1 {100 * acc['float_top1']:.2f}%, integer-quantized top-1 "
                  f"{100 * acc['quantized_top1']:.2f}%")


# ---- comparison outputs: CSV, plots, HTML --------------------------------------------------
PLOT_FILES = ("energy_by_component.png", "per_layer_work.png", "accuracy_vs_energy.png")
COMPARISON_FILES = ("comparison.csv", *PLOT_FILES, "report.html")  # what write_comparison writes


def write_comparison(out_dir: str | Path, results: Sequence[dict[str, Any]],
                     failed: Mapping[str, str] | None = None) -> list[Path]:
    """comparison.csv, the PNG plots and a self-contained report.html; return the paths.
    `failed`: the schemes that did not run and why (named in the report)."""
    out = Path(out_dir)
    rows = [summary_row(r) for r in results]
    paths = [out / "comparison.csv"]
    atomic_write_text(paths[0], _csv_text(rows, list(rows[0])))
    labels = [scheme_label(r) for r in results]
    plots = dict(zip(PLOT_FILES, (energy_by_component(results, labels),
                                  per_layer_work(results, labels),
                                  accuracy_vs_energy(results, labels)), strict=True))
    for name, png in plots.items():
        atomic_write_bytes(out / name, png)
        paths.append(out / name)
    paths.append(out / "report.html")
    atomic_write_text(paths[-1], _html(results, rows, plots, failed or {}))
    return paths


def _percent(v: float) -> str:
    return f"{100 * v:.2f}"


def _times(v: float) -> str:
    return f"{v:.2f}x"


# The summary table of report.html: comparison.csv's columns, with headers and units.
HTML_COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("scheme", "scheme", str),
    ("top1", "top-1 %", _percent),
    ("quantized_top1", "integer-quantized top-1 %", _percent),
    ("ou_activations", "OU activations", lambda v: f"{v:,}"),
    ("adc_conversions", "ADC conversions", lambda v: f"{v:,}"),
    ("ou_reduction", "OU activations skipped %", _percent),
    ("adc_reduction", "conversions skipped %", _percent),
    ("energy_uj_per_image", "energy / image (uJ)", lambda v: f"{v:.4g}"),
    ("latency_us", "latency (us)", lambda v: f"{v:,.1f}"),
    ("images_per_s", "images/s", lambda v: f"{v:,.1f}"),
    ("images_per_s_pipelined", "images/s pipelined", lambda v: f"{v:,.1f}"),
    ("arrays", "arrays", lambda v: f"{v:,}"),
    ("area_mm2", "area (mm2)", lambda v: f"{v:.4f}"),
    ("speedup", "speedup vs dense", _times),
    ("energy_efficiency", "energy eff. vs dense", _times),
    ("area_efficiency", "arrays eff. vs dense", _times),
]
PLOT_CAPTIONS = {
    "energy_by_component.png": "Energy per image by component, per scheme",
    "per_layer_work.png": "Per-layer ADC conversions done, and skipped as % of dense's",
    "accuracy_vs_energy.png": "Top-1 accuracy against energy per image",
}


def _html(results: Sequence[dict[str, Any]], rows: list[dict[str, Any]],
          plots: dict[str, bytes], failed: Mapping[str, str]) -> str:
    first = results[0]
    notes = [f"{scheme_label(r)}: {overrides_text(r)}" for r in results if overrides_text(r)]
    notes += [f"{label} did not run: {why}" for label, why in failed.items()]
    notes_html = ("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                  + "</ul>") if notes else ""
    columns = [(key, header, form) for key, header, form in HTML_COLUMNS if key in rows[0]]
    head = "".join(f"<th>{html.escape(header)}</th>" for _, header, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(form(r[key]))}</td>" for key, _, form in columns)
        + "</tr>" for r in rows
    )
    imgs = "".join(
        f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>'
        f'{html.escape(PLOT_CAPTIONS.get(n, n))} ({html.escape(n)})</figcaption></figure>'
        for n, png in plots.items()
    )
    config = html.escape(json.dumps(first["hardware"], indent=2))
    schemes = html.escape(json.dumps({scheme_label(r): r["scheme"]["parameters"]
                                      for r in results}, indent=2))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sparsexbar report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}img{{max-width:100%}}
pre{{background:#f6f6f6;padding:1em;font-size:12px}}</style></head><body>
<h1>sparsexbar report</h1>
<p>Model <b>{html.escape(str(first['model']))}</b> on <b>{html.escape(str(first['dataset']))}</b>,
{first['num_images']} images, hardware <b>{html.escape(first['hardware']['name'])}</b>,
float top-1 {_percent(first['accuracy']['float_top1'])}%, sparsexbar
{html.escape(first['version'])}.</p>
<h2>Summary</h2><table><tr>{head}</tr>{body}</table>
{notes_html}
<h2>Plots</h2>{imgs}
<h2>Schemes and their parameters</h2><pre>{schemes}</pre>
<h2>Hardware configuration used</h2><pre>{config}</pre>
<p id="render-check">images not checked (scripts disabled)</p>
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var shown = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }});
  document.getElementById("render-check").textContent =
    "images shown: " + shown.length + " of " + imgs.length;
}});
</script>
</body></html>
"""
