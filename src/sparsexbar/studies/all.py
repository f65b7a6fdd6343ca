"""`sparsexbar reproduce all`: the four published comparisons in one report, our figure beside the
published one in every row, and the `combined` scheme's figure beside them (issue 8).

Each study runs as its own `reproduce` does (schemes/<name>/study.py; their JSON and
Markdown are written under `<out>/<study>/`), with modest defaults (a few minutes on one
core; every size is an option). This module only adds the combined runs, on the same model,
hardware, quantization and images as the study they sit in, and collects the headline rows:

- SRE (isaac, OU-structured pruning at each sparsity): speedup and energy saving against
  `dense`, the largest and the mean over the pruned sparsities, as published (Yang et al.).
  The combined scheme runs beside the three modes on every pruned model.
- Pattern (the shipped pattern-pruned VGG-8, `pattern-nvmsa`): weight sparsity, top-1 change,
  area efficiency (arrays), energy efficiency (RRAM + ADC + DAC), speedup.
- CompRRAE (isaac): conversions removed, top-1 change, energy efficiency, throughput, for
  early negative detection alone and with the per-layer alphas calibrated by the study; the
  combined scheme with END and with those alphas.
- Encoding (isaac): throughput, energy efficiency, area efficiency (throughput per total
  area) of the study's lossless and lossy combinations, and of the combined scheme.

Outputs: all_reproduce.json, all_reproduce.md, all_reproduce.html (self-contained: every
plot embedded as a data URI), all_reproduce.png.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.config import load_config
from ..core.frontend import quantize_model
from ..core.io import atomic_write_bytes, atomic_write_text
from ..core.runtime import pyplot
from ..result import Result
from ..schemes.combined import CombinedScheme
from ..schemes.comprrae.study import reproduce_comprrae
from ..schemes.encoding.study import reproduce_encoding
from ..schemes.entry import RunArgs, StudySpec
from ..schemes.options import count, numbers, switch
from ..schemes.pattern.study import reproduce_pattern
from ..schemes.sre.study import reproduce_sre
from ..simulate import simulate
from ..training.checkpoint import load_shipped_pattern_model
from ..training.data import load_dataset
from .setup import study_setup
from .writers import json_safe, png_bytes

Log = Callable[[str], None]


# The defaults, here only (the CLI's come from STUDY): modest, a few minutes on one core.
TEST_IMAGES, CALIBRATION_IMAGES, SPARSITIES = 200, 250, (0.0, 0.7)
TUNE_IMAGES, PATTERN_IMAGES = 1000, 50


def reproduce_all(out_dir: str | Path, model: Any = "default", hw: str = "isaac",
                  overrides: dict[str, Any] | None = None, test_images: int = TEST_IMAGES,
                  sre_sparsities: Sequence[float] = SPARSITIES,
                  sre_tune_images: int = TUNE_IMAGES, pattern_images: int = PATTERN_IMAGES,
                  pattern_top1_images: int | None = None,
                  calibration_images: int = CALIBRATION_IMAGES,
                  comprrae_curve: Sequence[float] = (0.4, 1.6), encoding_budget: float = 0.5,
                  encoding_sweep: Sequence[int] = (5,), deviation: bool = False,
                  batch_size: int = 250, device: str = "cpu",
                  progress: Log | None = None) -> dict[str, Any]:
    """Run every study and the combined rows; write the report files; return the report."""
    log = progress or (lambda _msg: None)
    out = Path(out_dir)
    start = time.perf_counter()
    times: dict[str, float] = {}

    log("== SRE (schemes/sre/study.py), with the combined scheme beside the three modes")
    t0 = time.perf_counter()
    sre = reproduce_sre(out / "sre", model, hw, overrides, sparsities=tuple(sre_sparsities),
                        test_images=test_images, tune_images=sre_tune_images,
                        batch_size=batch_size, progress=log, deviation=deviation,
                        deviation_images=min(64, test_images),
                        extra_schemes=[("combined", CombinedScheme())])
    times["sre"] = time.perf_counter() - t0

    log("== pattern (schemes/pattern/study.py) on the shipped pattern-pruned VGG-8, pattern-nvmsa")
    t0 = time.perf_counter()
    pattern = reproduce_pattern(out / "pattern", "default", "default", "pattern-nvmsa", None,
                                test_images=pattern_images, batch_size=min(batch_size, 100),
                                device=device, top1_images=pattern_top1_images, progress=log)
    pattern_combined = _pattern_combined(pattern_images, batch_size, device, log)
    times["pattern"] = time.perf_counter() - t0

    log("== CompRRAE (schemes/comprrae/study.py), then the combined scheme with END and its alphas")
    t0 = time.perf_counter()
    comp = reproduce_comprrae(out / "comprrae", model, hw, overrides, test_images,
                              calibration_images, curve=tuple(comprrae_curve),
                              batch_size=batch_size, device=device, progress=log)
    comp_combined = _comprrae_combined(comp, model, hw, overrides, test_images,
                                       calibration_images, batch_size, device, log)
    times["comprrae"] = time.perf_counter() - t0

    log("== encoding (schemes/encoding/study.py), then the combined scheme on its test split")
    t0 = time.perf_counter()
    enc = reproduce_encoding(out / "encoding", model, hw, overrides, test_images,
                             calibration_images, encoding_budget, sweep=tuple(encoding_sweep),
                             batch_size=batch_size, device=device, progress=log)
    enc_combined = _encoding_combined(model, hw, overrides, test_images, calibration_images,
                                      batch_size, device, log)
    times["encoding"] = time.perf_counter() - t0

    report = {
        "model": str(model) if not hasattr(model, "forward") else type(model).__name__,
        "hardware": hw,
        "settings": {"test_images": test_images, "sre_sparsities": list(sre_sparsities),
                     "sre_tune_images": sre_tune_images, "pattern_images": pattern_images,
                     "pattern_top1_images": pattern_top1_images,
                     "calibration_images": calibration_images,
                     "comprrae_curve": list(comprrae_curve),
                     "encoding_budget": encoding_budget, "encoding_sweep": list(encoding_sweep),
                     "deviation": deviation},
        "sections": [sre_section(sre), pattern_section(pattern, pattern_combined),
                     comprrae_section(comp, comp_combined), encoding_section(enc, enc_combined)],
        "studies": {"sre": "sre/sre_reproduce.json", "pattern": "pattern/pattern_reproduce.json",
                    "comprrae": "comprrae/comprrae_reproduce.json",
                    "encoding": "encoding/encoding_reproduce.json"},
        "time_s": {**times, "total": time.perf_counter() - start},
    }
    write_report(out, report)
    return report


# ---- the combined runs -----------------------------------------------------------------------
def _pattern_combined(images: int, batch_size: int, device: str, log: Log) -> dict[str, Any]:
    """The combined scheme on the pattern study's model, hardware, quantization and images."""
    net, _ = load_shipped_pattern_model()
    ds = load_dataset("fashion-mnist", "test")
    x, y = ds.to_float()[:images], ds.labels.long()[:images]
    config = load_config("pattern-nvmsa")
    qmodel = quantize_model(net, x[:256], config.numbers.weight_bits, config.numbers.input_bits)
    log(f"combined on {images} images (pattern-nvmsa)")
    res = simulate(net, (x, y), config, CombinedScheme(), batch_size=min(batch_size, 100),
                   device=device, qmodel=qmodel)
    return _summary(res)


def _comprrae_combined(comp: dict[str, Any], model: Any, hw: str,
                       overrides: dict[str, Any] | None, test_images: int,
                       calibration_images: int, batch_size: int, device: str,
                       log: Log) -> list[dict[str, Any]]:
    """The combined scheme with END only and with the study's calibrated alphas, on its test
    split and quantization (the first 256 of its calibration images)."""
    setup = study_setup(model, hw, overrides, test_images, calibration_images)
    alphas = comp["calibration"]["alphas"]
    rows = []
    for label, scheme in (("combined (END)", CombinedScheme()),
                          ("combined (END + calibrated alpha)", CombinedScheme(alpha=alphas))):
        log(f"{label} on {test_images} test images")
        res = simulate(setup.net, (setup.x_test, setup.y_test), setup.config, scheme,
                       batch_size=batch_size, device=device, qmodel=setup.qmodel)
        rows.append({"run": label, **_summary(res)})
    return rows


def _encoding_combined(model: Any, hw: str, overrides: dict[str, Any] | None,
                       test_images: int, calibration_images: int, batch_size: int, device: str,
                       log: Log) -> dict[str, Any]:
    """The combined scheme on the encoding study's test split and quantization."""
    setup = study_setup(model, hw, overrides, test_images, calibration_images)
    log(f"combined on {test_images} test images")
    res = simulate(setup.net, (setup.x_test, setup.y_test), setup.config, CombinedScheme(),
                   batch_size=batch_size, device=device, qmodel=setup.qmodel)
    out = _summary(res)
    # The encoding study's area efficiency: throughput per total area, relative to dense.
    out["area_throughput_efficiency"] = (res.vs_dense.speedup
                                         * res.dense_totals.area_um2["total"]
                                         / res.totals.area_um2["total"])
    return out


def _summary(res: Result) -> dict[str, Any]:
    """The figures of one run the sections quote (ratios against dense on the same run)."""
    vs = res.vs_dense
    dense_top1 = res.accuracy.quantized_top1
    return {
        "top1": res.accuracy.top1, "quantized_top1": dense_top1,
        "top1_change_points": 100 * (res.accuracy.top1 - dense_top1),
        "speedup": vs.speedup, "energy_efficiency": vs.energy_efficiency,
        "energy_saving": 1 - 1 / vs.energy_efficiency if vs.energy_efficiency else 0.0,
        "rram_adc_dac_energy_efficiency": vs.rram_adc_dac_energy_efficiency,
        "area_efficiency": vs.area_efficiency,
        "conversion_reduction": vs.computation_reduction["adc_conversions"],
        "ou_reduction": vs.computation_reduction["ou_activations"],
        "layouts": {name: c["layout"] for name, c in
                    res.scheme.parameters.get("layers", {}).items()},
    }


# ---- sections: rows of (metric, published, ours, combined) --------------------------------------
def _row(metric: str, published: str, ours: str, combined: str, note: str = "") -> dict[str, str]:
    return {"metric": metric, "published": published, "ours": ours, "combined": combined,
            "note": note}


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def sre_section(report: dict[str, Any]) -> dict[str, Any]:
    """Speedup and energy saving of joint (and combined), largest and mean over the pruned
    sparsities (the unpruned row too when no sparsity > 0 was run)."""
    rows = report["rows"]
    pruned = [r for r in rows if r["sparsity"] > 0] or rows
    pub = report["published"]

    def stats(mode: str, key: str) -> tuple[float, float]:
        vals = [r[key] for r in pruned if r["mode"] == mode]
        return max(vals), sum(vals) / len(vals)

    js, jm = stats("joint", "speedup")
    cs, cm = stats("combined", "speedup")
    je, jem = stats("joint", "energy_saving")
    ce, cem = stats("combined", "energy_saving")
    sparsities = ", ".join(f"{r['weight_sparsity']:.2f}" for r in pruned if r["mode"] == "joint")
    top1_j = [100 * (r["top1"] - r["dense_top1"]) for r in pruned if r["mode"] == "joint"]
    top1_c = [100 * (r["top1"] - r["dense_top1"]) for r in pruned if r["mode"] == "combined"]
    return {
        "study": "SRE (Yang et al., ISCA 2019)",
        "setting": f"{report['model']}, OU-structured pruning (weight sparsity {sparsities}), "
                   f"{report['test_images']} test images, {report['hardware']['name']}; "
                   "ours = sre joint mode",
        "rows": [
            _row("speedup vs dense (largest)", f"{pub['speedup_max']}x", _x(js), _x(cs)),
            _row("speedup vs dense (mean)", f"{pub['speedup_avg']}x", _x(jm), _x(cm)),
            _row("energy saving (largest)", _pct(pub["energy_saving_max"]), _pct(je),
                 _pct(ce)),
            _row("energy saving (mean)", _pct(pub["energy_saving_avg"]), _pct(jem), _pct(cem)),
            _row("top-1 change vs dense (points)", "0 (lossless)",
                 f"{max(top1_j, key=abs):+.2f}", f"{max(top1_c, key=abs):+.2f}"),
        ],
        "source": "sre/sre_reproduce.md",
    }


def pattern_section(report: dict[str, Any], combined: dict[str, Any]) -> dict[str, Any]:
    t = report["totals"]
    pub = report["published"]["rows"]

    def span(key: str, fmt: Callable[[float], str]) -> str:
        vals = [r[key] for r in pub]
        return f"{fmt(min(vals))} - {fmt(max(vals))}"

    change = t["top1_change_points"]
    return {
        "study": "Pattern mapping (Yu et al., arXiv 2010.06156), VGG16 CIFAR-10/100/ImageNet",
        "setting": f"{report['model']}, {report['data']}, {report['test_images']} simulated "
                   f"images, {report['hardware']['name']}; ours = pattern mapping",
        "rows": [
            _row("weight sparsity (3x3 convs)", span("sparsity", _pct),
                 _pct(t["sparsity_pattern_layers"]), "same weights"),
            _row("top-1 change of pruning (points)", span("top1_change", lambda v: f"{v:+.2f}"),
                 "-" if change is None else f"{change:+.2f}", "same weights",
                 "float, whole test split"),
            _row("simulated top-1 vs dense (points)", "-",
                 f"{100 * (t['sim_top1_pattern'] - t['sim_top1_dense']):+.2f}",
                 f"{100 * (combined['top1'] - t['sim_top1_dense']):+.2f}",
                 "same hardware and images; where the ADC can clip (pattern-nvmsa: OU 9 rows "
                 "x 4-bit cells x 4-bit DAC), each layout clips its own partial sums"),
            _row("area efficiency (arrays)", span("area_efficiency", _x),
                 _x(t["area_efficiency"]), _x(combined["area_efficiency"])),
            _row("energy efficiency (RRAM+ADC+DAC)",
                 span("rram_adc_dac_energy_efficiency", _x),
                 _x(t["rram_adc_dac_energy_efficiency"]),
                 _x(combined["rram_adc_dac_energy_efficiency"])),
            _row("energy efficiency (all components)", "-", _x(t["energy_efficiency"]),
                 _x(combined["energy_efficiency"])),
            _row("speedup", span("speedup", _x), _x(t["speedup"]), _x(combined["speedup"])),
        ],
        "combined_layouts": combined["layouts"],
        "source": "pattern/pattern_reproduce.md",
    }


def comprrae_section(report: dict[str, Any], combined: list[dict[str, Any]]) -> dict[str, Any]:
    pub = report["published"]
    end, cal = report["rows"][1], report["rows"][2]
    c_end, c_cal = combined
    return {
        "study": "CompRRAE (Chen et al., ASP-DAC 2019)",
        "setting": f"{report['model']}, {report['hardware']}, {report['test_images']} test "
                   f"images, alphas calibrated on {report['calibration']['images']} images "
                   f"(budget {report['calibration']['budget_points']} points); ours = END "
                   "only / END + calibrated alpha",
        "rows": [
            _row("computation (ADC conversions) removed",
                 f"~{_pct(pub['computation_reduction'])}",
                 f"{_pct(end['conversion_reduction'])} / {_pct(cal['conversion_reduction'])}",
                 f"{_pct(c_end['conversion_reduction'])} / "
                 f"{_pct(c_cal['conversion_reduction'])}"),
            _row("top-1 change (points)", f"> {pub['top1_change_points']:+.1f}",
                 f"{end['top1_change_points']:+.2f} / {cal['top1_change_points']:+.2f}",
                 f"{c_end['top1_change_points']:+.2f} / {c_cal['top1_change_points']:+.2f}"),
            _row("energy efficiency", f"> {pub['energy_efficiency']}x",
                 f"{_x(end['energy_efficiency'])} / {_x(cal['energy_efficiency'])}",
                 f"{_x(c_end['energy_efficiency'])} / {_x(c_cal['energy_efficiency'])}",
                 "published: over prior RRAM accelerators; ours: over dense"),
            _row("throughput", f"> {pub['throughput']}x",
                 f"{_x(end['throughput'])} / {_x(cal['throughput'])}",
                 f"{_x(c_end['speedup'])} / {_x(c_cal['speedup'])}"),
        ],
        "source": "comprrae/comprrae_reproduce.md",
    }


def encoding_section(report: dict[str, Any], combined: dict[str, Any]) -> dict[str, Any]:
    """Throughput, energy and area efficiency of encoding's lossless and lossy combinations
    (its own rows) and of the combined scheme, against the published 2x-4x."""
    pub = report["published"]
    rows = {r["run"]: r for r in report["rows"]}
    lossless = rows["combined, lossless"]
    lossy = next(r for r in report["rows"] if r["run"].startswith("combined, lossy"))

    def both(key: str) -> str:
        return f"{_x(lossless[key])} / {_x(lossy[key])}"

    span = f"{pub['throughput'][0]:g}x - {pub['throughput'][1]:g}x"
    return {
        "study": "Encoding + dynamic quantization (Chen et al., ASP-DAC 2018)",
        "setting": f"{report['model']}, {report['hardware']}, {report['test_images']} test "
                   f"images, ADC bits and precision calibrated on {report['calibration_images']}"
                   f" images (budget {report['budget_points']} points); ours = encoding's "
                   "lossless set / lossy set (calibrated precision and ADC bits)",
        "rows": [
            _row("throughput", span, both("throughput"), _x(combined["speedup"])),
            _row("energy efficiency", span, both("energy_efficiency"),
                 _x(combined["energy_efficiency"])),
            _row("area efficiency (throughput per area)", span, both("area_efficiency"),
                 _x(combined["area_throughput_efficiency"]),
                 "published: over state-of-the-art RRAM accelerators; ours: over dense"),
            _row("top-1 change (points)", "-",
                 f"{lossless['top1_change_points']:+.2f} / {lossy['top1_change_points']:+.2f}",
                 f"{combined['top1_change_points']:+.2f}"),
        ],
        "source": "encoding/encoding_reproduce.md",
    }


# ---- report files ---------------------------------------------------------------------------
def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Published comparisons, reproduced (model {report['model']}, "
             f"hardware {report['hardware']})", "",
             "Every row: the published figure, ours (the study's scheme), and the `combined` "
             "scheme on the same model, hardware and images. Ratios are against `dense` on "
             "the same run.", ""]
    for sec in report["sections"]:
        lines += [f"## {sec['study']}", "", sec["setting"], "",
                  "| metric | published | ours | combined | note |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for r in sec["rows"]:
            lines.append(f"| {r['metric']} | {r['published']} | {r['ours']} | {r['combined']} "
                         f"| {r['note']} |")
        lines += ["", f"Full study: `{sec['source']}`.", ""]
    ts = report["time_s"]
    lines.append("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in ts.items()) + ".")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any]) -> bytes:
    """Per study, the ratio metrics side by side: published (lower end of a range or the
    bound), ours, combined (log scale)."""
    labels: list[str] = []
    published: list[float] = []
    ours: list[float] = []
    combined: list[float] = []
    for sec in report["sections"]:
        for r in sec["rows"]:
            values = [_first_ratio(r[k]) for k in ("published", "ours", "combined")]
            ratios = [v for v in values if v is not None and v > 0]
            if len(ratios) == 3:
                labels.append(f"{sec['study'].split(' ')[0]}: {r['metric']}")
                published.append(ratios[0])
                ours.append(ratios[1])
                combined.append(ratios[2])
    fig, ax = pyplot().subplots(figsize=(9, 0.45 * max(len(labels), 1) + 1.5))
    ys = range(len(labels))
    h = 0.27
    ax.barh([y - h for y in ys], published, h, label="published", color="lightgray")
    ax.barh(list(ys), ours, h, label="ours (study's scheme)")
    ax.barh([y + h for y in ys], combined, h, label="combined")
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio against the baseline (x)")
    ax.set_title("Published vs reproduced vs combined")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def _first_ratio(text: str) -> float | None:
    """The first 'N.NNx' figure of a cell ('> 2.9x', '4.16x - 5.20x', '1.10x / 1.30x')."""
    for token in text.replace(">", " ").replace("~", " ").replace("/", " ").split():
        if token.endswith("x"):
            try:
                return float(token[:-1])
            except ValueError:
                continue
    return None


def write_report(out: Path, report: dict[str, Any]) -> list[Path]:
    """all_reproduce.json, .md, .png and a self-contained .html (plots as data URIs)."""
    png = _plot(report)
    paths = [out / "all_reproduce.json", out / "all_reproduce.md", out / "all_reproduce.png",
             out / "all_reproduce.html"]
    atomic_write_text(paths[0], json.dumps(json_safe(report), indent=2) + "\n")
    atomic_write_text(paths[1], report_markdown(report))
    atomic_write_bytes(paths[2], png)
    figures = [("all_reproduce.png", png)]
    tradeoff = out / "comprrae" / "comprrae_tradeoff.png"
    if tradeoff.is_file():
        figures.append(("comprrae/comprrae_tradeoff.png", tradeoff.read_bytes()))
    efficiency = out / "encoding" / "encoding_efficiency.png"
    if efficiency.is_file():
        figures.append(("encoding/encoding_efficiency.png", efficiency.read_bytes()))
    deviation = out / "sre" / "deviation_study.png"
    if deviation.is_file():
        figures.append(("sre/deviation_study.png", deviation.read_bytes()))
    atomic_write_text(paths[3], _html(report, figures))
    return paths


def _html(report: dict[str, Any], figures: list[tuple[str, bytes]]) -> str:
    parts = [f"<h1>Published comparisons, reproduced</h1><p>Model <b>"
             f"{html.escape(str(report['model']))}</b>, hardware <b>"
             f"{html.escape(str(report['hardware']))}</b>. Every row: the published figure, "
             "ours (the study's scheme) and the <code>combined</code> scheme on the same "
             "model, hardware and images; ratios against <code>dense</code> on the same "
             "run.</p>"]
    for sec in report["sections"]:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(r[k])}</td>" for k in
                             ("metric", "published", "ours", "combined", "note")) + "</tr>"
            for r in sec["rows"])
        parts.append(f"<h2>{html.escape(sec['study'])}</h2><p>{html.escape(sec['setting'])}"
                     "</p><table><tr><th>metric</th><th>published</th><th>ours</th>"
                     f"<th>combined</th><th>note</th></tr>{rows}</table>")
    for name, png in figures:
        parts.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
                     f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(name)}'
                     "</figcaption></figure>")
    settings = html.escape(json.dumps(report["settings"], indent=2))
    parts.append(f"<h2>Settings</h2><pre>{settings}</pre>")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sparsexbar: "
            "reproduce all</title><style>body{font-family:sans-serif;margin:2em}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
            "padding:3px 6px}img{max-width:100%}pre{background:#f6f6f6;padding:1em}</style>"
            "</head><body>" + "".join(parts) + "</body></html>\n")


def _reproduce(args: RunArgs, test_images: int, calibration_images: int, deviation: bool,
               sparsities: list[float], tune_images: int, pattern_images: int) -> str:
    report = reproduce_all(args.out, args.model, args.hw, dict(args.overrides),
                           test_images=test_images, sre_sparsities=sparsities,
                           sre_tune_images=tune_images, pattern_images=pattern_images,
                           calibration_images=calibration_images, deviation=deviation,
                           batch_size=args.batch_size, device=args.device,
                           progress=args.progress)
    out = args.out
    return (f"{report_markdown(report)}\nwrote {out}/all_reproduce.json, .md, .html, .png and "
            f"each study under {out}/sre, {out}/pattern, {out}/comprrae")


STUDY = StudySpec(
    name="all",
    help="Every published comparison in one report, our figure beside the published one and "
         "the combined scheme's beside both.",
    run=_reproduce,
    options=(
        count("test_images", TEST_IMAGES, "Images of the test half (0..4999) each study runs.",
              low=1, high=5000),
        count("calibration_images", CALIBRATION_IMAGES, "Images of the calibration half "
              "(5000..) for alphas, betas or bits.", low=1, high=5000),
        switch("deviation", False, "Also run SRE's accumulated-deviation study."),
        numbers("sparsities", ",".join(f"{s:g}" for s in SPARSITIES), "The SRE study's "
                "OU-structured sparsities, comma-separated.", low=0, high=1, high_open=True),
        count("tune_images", TUNE_IMAGES, "Fine-tuning images per SRE pruning step.", low=1),
        count("pattern_images", PATTERN_IMAGES, "Simulated images of the pattern study.",
              low=1),
    ),
)
