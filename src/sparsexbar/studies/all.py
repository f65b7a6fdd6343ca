"""`sparsexbar reproduce all`: the four published comparisons in one report, on the papers'
workload (the shipped VGG-16 models), each against the paper's own baseline, with the
`combined` scheme's rows on the same workload beside them (issues 8 and 19).

Each study runs as its own `reproduce` does (schemes/<name>/study.py; their JSON and Markdown
are written under `<out>/<study>/`); this module adds the combined runs, on the same model,
hardware, quantization and images as the study they sit in, and collects the headline rows
(studies.headline: numbers, not text) of every study:

- SRE (`isaac`): speedup and energy saving, largest and mean over the pruned models
  (vgg16-fmnist-sre50/70/90), joint mode at bit granularity, against `dense` (the OU-based
  design exploiting no sparsity, same OU); combined beside it on every pruned model.
- Pattern (`pattern-nvmsa`, vgg16-fmnist-pattern): sparsity, patterns, top-1 change, array
  area efficiency, RRAM+ADC+DAC energy efficiency, speedup, against the straightforward
  mapping of the same pruned weights.
- CompRRAE (`isaac`, vgg16-fmnist): END alone, END + calibrated alpha, the calibrated
  predictor, at 8- and 16-bit inputs, against the ISAAC-class baseline (`dense` on `isaac`,
  ADCs sized to need); combined with END and with the calibrated alphas.
- Encoding (`isaac`, vgg16-fmnist): its lossless and lossy sets against the same baseline;
  combined beside them.

Outputs: all_reproduce.json (`rows`: every row, with `study` and `role` ours/combined),
all_reproduce.md, all_reproduce.html (self-contained: plots embedded as data URIs),
all_reproduce.png; the wall time in `time_s`.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.config import load_config
from ..core.frontend import quantize_model
from ..core.io import atomic_write_bytes, atomic_write_text
from ..core.runtime import pyplot
from ..result import Result
from ..schemes.combined import CombinedScheme
from ..schemes.comprrae.study import BASELINE_HW, reproduce_comprrae
from ..schemes.encoding.study import reproduce_encoding
from ..schemes.entry import RunArgs, StudySpec
from ..schemes.options import count, numbers, switch, text
from ..schemes.pattern.study import reproduce_pattern
from ..schemes.sre.study import headline_rows as sre_headline_rows
from ..schemes.sre.study import reproduce_sre
from ..simulate import simulate
from ..training.models import load_model
from ..training.shipped import find_shipped, model_width
from .headline import (
    HEADLINE_COLUMNS,
    accuracy_note,
    fmt_value,
    headline_markdown,
    headline_row,
    verdict_cells,
    vs_baseline,
)
from .setup import (
    FMNIST_TEST_IMAGES,
    QUANTIZATION_IMAGES,
    StudySetup,
    accuracy_images_option,
    calibration_images_option,
    exact_predictions,
    fmnist_split,
    model_input_size,
    study_setup,
    test_images_option,
    test_scope,
)
from .writers import json_safe, png_bytes

Log = Callable[[str], None]

# The defaults, here only (the CLI's come from STUDY).
MODEL, PATTERN_MODEL = "vgg16-fmnist", "vgg16-fmnist-pattern"
TEST_IMAGES, CALIBRATION_IMAGES, SPARSITIES = 100, 200, (0.5, 0.7, 0.9)
TUNE_IMAGES = 1000
# CompRRAE's candidates here (the study's own default has six alphas and five betas): every
# candidate is a pass over the calibration images per layer, the bulk of the report's time.
COMPRRAE_CANDIDATES, COMPRRAE_BETAS = (0.1, 0.4, 1.6), (0.25, 0.0625)
STUDIES = ("sre", "pattern", "comprrae", "encoding")
TITLES = {"sre": "SRE (Yang et al., ISCA 2019)",
          "pattern": "Pattern mapping (Yu et al., arXiv 2010.06156), VGG16 CIFAR-10 row",
          "comprrae": "CompRRAE (Chen et al., ASP-DAC 2019)",
          "encoding": "Encoding + dynamic quantization (Chen et al., ASP-DAC 2018)"}


def reproduce_all(out_dir: str | Path, model: Any = MODEL, hw: str = "isaac",
                  overrides: dict[str, Any] | None = None, test_images: int = TEST_IMAGES,
                  sre_sparsities: Sequence[float] = SPARSITIES,
                  sre_tune_images: int = TUNE_IMAGES, pattern_model: Any = PATTERN_MODEL,
                  pattern_images: int | None = None,
                  calibration_images: int = CALIBRATION_IMAGES,
                  accuracy_images: int = FMNIST_TEST_IMAGES,
                  input_bits: Sequence[int] = (8, 16),
                  comprrae_candidates: Sequence[float] | None = COMPRRAE_CANDIDATES,
                  comprrae_betas: Sequence[float] | None = COMPRRAE_BETAS,
                  encoding_budget: float = 0.5, encoding_techniques: bool = False,
                  deviation: bool = False, batch_size: int = 250, device: str = "cpu",
                  progress: Log | None = None) -> dict[str, Any]:
    """Run every study and the combined rows; write the report files; return the report."""
    log = progress or (lambda _msg: None)
    out = Path(out_dir)
    start = time.perf_counter()
    times: dict[str, float] = {}
    pattern_images = test_images if pattern_images is None else pattern_images
    sections: list[dict[str, Any]] = []

    log("== SRE (schemes/sre/study.py), with the combined scheme beside the modes")
    t0 = time.perf_counter()
    sre = reproduce_sre(out / "sre", model, hw, overrides, sparsities=tuple(sre_sparsities),
                        test_images=test_images, accuracy_images=accuracy_images,
                        tune_images=sre_tune_images, batch_size=batch_size, progress=log,
                        deviation=deviation, deviation_images=min(64, test_images),
                        extra_schemes=[("combined", CombinedScheme())], device=device)
    sections.append(_section("sre", sre, _roles(sre["headline"], "ours")
                             + _roles(sre_headline_rows(sre, "combined"), "combined")))
    times["sre"] = time.perf_counter() - t0

    log("== pattern (schemes/pattern/study.py), then the combined scheme on its weights")
    t0 = time.perf_counter()
    pattern = reproduce_pattern(out / "pattern", pattern_model, "default", "pattern-nvmsa",
                                None, test_images=pattern_images,
                                batch_size=min(batch_size, 100), device=device,
                                top1_images=accuracy_images, progress=log)
    sections.append(_section("pattern", pattern, _roles(pattern["headline"], "ours")
                             + _pattern_combined(pattern, pattern_model, pattern_images,
                                                 batch_size, device, log)))
    times["pattern"] = time.perf_counter() - t0

    log("== CompRRAE (schemes/comprrae/study.py), then the combined scheme with END and alphas")
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if comprrae_candidates is not None:
        extra["candidates"] = tuple(comprrae_candidates)
    if comprrae_betas is not None:
        extra["betas"] = tuple(comprrae_betas)
    comp = reproduce_comprrae(out / "comprrae", model, hw, overrides, test_images,
                              calibration_images, batch_size=batch_size, device=device,
                              progress=log, accuracy_images=accuracy_images,
                              input_bits=tuple(input_bits), **extra)
    sections.append(_section("comprrae", comp, _roles(comp["headline"], "ours")
                             + _comprrae_combined(comp, model, hw, overrides, test_images,
                                                  calibration_images, accuracy_images,
                                                  batch_size, device, log)))
    times["comprrae"] = time.perf_counter() - t0

    log("== encoding (schemes/encoding/study.py), then the combined scheme on its test split")
    t0 = time.perf_counter()
    enc = reproduce_encoding(out / "encoding", model, hw, overrides, test_images,
                             calibration_images, encoding_budget, batch_size=batch_size,
                             device=device, progress=log, accuracy_images=accuracy_images,
                             techniques=encoding_techniques)
    sections.append(_section("encoding", enc, _roles(enc["headline"], "ours")
                             + _encoding_combined(enc, model, hw, overrides, test_images,
                                                  calibration_images, accuracy_images,
                                                  batch_size, device, log)))
    times["encoding"] = time.perf_counter() - t0

    report = {
        "model": _name(model), "pattern_model": _name(pattern_model), "hardware": hw,
        "model_widths": {_name(m): model_width(m) for m in (model, pattern_model)},
        "settings": {"test_images": test_images, "pattern_images": pattern_images,
                     "accuracy_images": accuracy_images, "sre_sparsities": list(sre_sparsities),
                     "sre_tune_images": sre_tune_images,
                     "calibration_images": calibration_images, "input_bits": list(input_bits),
                     "encoding_budget": encoding_budget,
                     "encoding_techniques": encoding_techniques, "deviation": deviation,
                     "comprrae_candidates": list(comprrae_candidates or []),
                     "comprrae_betas": list(comprrae_betas or []),
                     "torch_threads": torch.get_num_threads()},
        "sections": sections,
        "rows": [r for sec in sections for r in sec["rows"]],
        "studies": {name: f"{name}/{name}_reproduce.json" for name in STUDIES},
        "time_s": {**times, "total": time.perf_counter() - start},
    }
    write_report(out, report)
    return report


def _name(model: Any) -> str:
    return type(model).__name__ if isinstance(model, torch.nn.Module) else str(model)


def _roles(rows: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """The rows with their `role` (ours: the study's scheme; combined) set."""
    for r in rows:
        r["role"] = role
        if role != "ours":
            r["primary"] = False
    return rows


def _section(study: str, report: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"study": study, "title": TITLES[study], "baseline": report["baseline"],
            "rows": rows, "source": f"{study}/{study}_reproduce.md"}


# ---- the combined runs -----------------------------------------------------------------------
def _lossless_accuracy(res: Result, setup_like: tuple[Any, Any, Any]) -> dict[str, Any]:
    """Top-1 of a lossless run: the exact network's on the whole split, after checking the
    run's classes equal the exact network's on its images."""
    qmodel, x_all, y_all = setup_like
    preds = exact_predictions(qmodel, x_all)
    assert res.outputs is not None
    n = len(res.outputs)
    if not torch.equal(res.outputs.argmax(dim=1).cpu(), preds[:n].cpu()):
        return {"top1": res.accuracy.top1, "accuracy_images": n,
                "accuracy_how": "simulated on the run's images (its classes differ from the "
                                "exact network's)"}
    return {"top1": float((preds == y_all).sum()) / max(len(y_all), 1),
            "accuracy_images": len(y_all),
            "accuracy_how": "lossless: the integer-quantized network's top-1 on "
                            f"{test_scope(len(y_all))} (the run's classes on its images "
                            "checked equal)"}


def _pattern_combined(pattern: dict[str, Any], pattern_model: Any, images: int,
                      batch_size: int, device: str, log: Log) -> list[dict[str, Any]]:
    """The combined scheme on the pattern study's pruned weights, hardware and images; its
    hardware figures against the straightforward mapping on the same run."""
    loaded = load_model(pattern_model)
    size = model_input_size(loaded.meta)
    x_all, y_all = fmnist_split("test", max(images, pattern["accuracy_images"]), size)
    x, y = x_all[:images], y_all[:images]
    x_all, y_all = x_all[:pattern["accuracy_images"]], y_all[:pattern["accuracy_images"]]
    config = load_config("pattern-nvmsa")
    x_q, _ = fmnist_split("calibration", QUANTIZATION_IMAGES, size)
    qmodel = quantize_model(loaded.net, x_q, config.numbers.weight_bits,
                            config.numbers.input_bits)
    log(f"combined on {images} images (pattern-nvmsa)")
    res = simulate(loaded.net, (x, y), config, CombinedScheme(), batch_size=min(batch_size, 100),
                   device=device, qmodel=qmodel)
    vs = res.vs_dense
    common = {"setting": "combined (per-layer best layout + runtime techniques)",
              "baseline": pattern["baseline"], "model": pattern["model"], "test_images": images,
              **_lossless_accuracy(res, (qmodel, x_all, y_all))}
    return _roles([
        headline_row("pattern", "area_efficiency", vs.area_efficiency, **common),
        headline_row("pattern", "energy_efficiency", vs.rram_adc_dac_energy_efficiency,
                     **common),
        headline_row("pattern", "speedup", vs.speedup, **common),
    ], "combined")


def _baseline_run(setup: StudySetup, bits: int, batch_size: int, device: str) -> Result:
    """The ISAAC-class baseline (dense on `isaac`, ADCs sized to need) on a study's images."""
    return simulate(setup.net, (setup.x_test, setup.y_test),
                    load_config(BASELINE_HW, {"numbers.input_bits": bits}), "dense",
                    batch_size=batch_size, device=device, qmodel=setup.qmodel)


def _comprrae_combined(comp: dict[str, Any], model: Any, hw: str,
                       overrides: dict[str, Any] | None, test_images: int,
                       calibration_images: int, accuracy_images: int, batch_size: int,
                       device: str, log: Log) -> list[dict[str, Any]]:
    """The combined scheme with END only and with the study's calibrated alphas (first input
    width), against the ISAAC-class baseline on the same images and quantization."""
    width = comp["widths"][0]
    bits = width["input_bits"]
    setup = study_setup(model, hw, {**(overrides or {}), "numbers.input_bits": bits},
                        test_images, calibration_images, accuracy_images)
    base = _baseline_run(setup, bits, batch_size, device)
    rows: list[dict[str, Any]] = []
    for label, scheme in (("combined (END)", CombinedScheme()),
                          ("combined (END + calibrated alpha)",
                           CombinedScheme(alpha=width["calibration"]["alphas"]))):
        log(f"{label} on {test_images} test images")
        res = simulate(setup.net, (setup.x_test, setup.y_test), setup.config, scheme,
                       batch_size=batch_size, device=device, qmodel=setup.qmodel)
        vb = vs_baseline(res, base)
        acc: dict[str, Any] = (_lossless_accuracy(res, (setup.qmodel, setup.x_all, setup.y_all))
               if scheme.lossless else
               {"top1": res.accuracy.top1, "accuracy_images": len(setup.y_test),
                "accuracy_how": "lossy combined: simulated top-1 on the run's images"})
        exact_n = setup.exact_top1() if acc["accuracy_images"] == len(setup.y_all) else float(
            (exact_predictions(setup.qmodel, setup.x_all)[:test_images] == setup.y_test)
            .double().mean())
        common = {"setting": f"{label}, {bits}-bit inputs", "baseline": width["baseline"],
                  "model": width["model"], "test_images": test_images, **acc}
        top1 = float(acc["top1"])
        rows += [
            headline_row("comprrae", "computation_reduction", vb["conversion_reduction"],
                         **common),
            headline_row("comprrae", "top1_change", 100 * (top1 - exact_n), **common),
            headline_row("comprrae", "energy_efficiency", vb["energy_efficiency"], **common),
            headline_row("comprrae", "throughput", vb["speedup"], **common),
        ]
    return _roles(rows, "combined")


def _encoding_combined(enc: dict[str, Any], model: Any, hw: str,
                       overrides: dict[str, Any] | None, test_images: int,
                       calibration_images: int, accuracy_images: int, batch_size: int,
                       device: str, log: Log) -> list[dict[str, Any]]:
    """The combined scheme on the encoding study's images and quantization, against the
    ISAAC-class baseline."""
    setup = study_setup(model, hw, overrides, test_images, calibration_images, accuracy_images)
    base = _baseline_run(setup, setup.config.numbers.input_bits, batch_size, device)
    log(f"combined on {test_images} test images")
    res = simulate(setup.net, (setup.x_test, setup.y_test), setup.config, CombinedScheme(),
                   batch_size=batch_size, device=device, qmodel=setup.qmodel)
    vb = vs_baseline(res, base)
    common = {"setting": "combined (lossless)", "baseline": enc["baseline"],
              "model": enc["model"], "test_images": test_images,
              **_lossless_accuracy(res, (setup.qmodel, setup.x_all, setup.y_all))}
    return _roles([
        headline_row("encoding", "throughput", vb["speedup"], **common),
        headline_row("encoding", "energy_efficiency", vb["energy_efficiency"], **common),
        headline_row("encoding", "area_efficiency", vb["area_efficiency"], **common),
    ], "combined")


# ---- report files ---------------------------------------------------------------------------
def report_markdown(report: dict[str, Any]) -> str:
    """Every section's rows (ours, then combined), printed from their numbers."""
    st = report["settings"]
    lines = [f"# Published comparisons, reproduced (models {report['model']}, "
             f"{report['pattern_model']})", "",
             "Every row: our figure, the published one, their ratio and whether they point "
             "the same way, against the paper's own baseline (named in the row); `combined` "
             f"rows: the combined scheme on the same workload. Energy, time and events on "
             f"{st['test_images']} simulated test images (pattern: {st['pattern_images']}); "
             f"top-1 on {st['accuracy_images']} test images unless the row says otherwise.", ""]
    for sec in report["sections"]:
        lines += [f"## {sec['title']}", "", f"Baseline: {sec['baseline']}.", "",
                  headline_markdown(sec["rows"]), accuracy_note(sec["rows"]),
                  f"Full study: `{sec['source']}`.", ""]
    ts = report["time_s"]
    lines.append("Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in ts.items()) + ".")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any]) -> bytes:
    """The ratio rows (x units) side by side: published, ours (log scale); combined rows
    hatched."""
    rows = [r for r in report["rows"] if r["unit"] == "x" and r["ours_value"]
            and r["ours_value"] > 0]
    labels = [f"{r['study']}: {r['metric']} ({r['setting'][:40]})" for r in rows]
    fig, ax = pyplot().subplots(figsize=(10, 0.32 * max(len(labels), 1) + 1.5))
    ys = range(len(labels))
    h = 0.4
    ax.barh([y - h / 2 for y in ys], [r["published_value"] for r in rows], h,
            label="published", color="lightgray")
    ax.barh([y + h / 2 for y in ys], [r["ours_value"] for r in rows], h, label="ours",
            color=["tab:orange" if r["role"] == "combined" else "tab:blue" for r in rows])
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("ratio against the paper's baseline (x); orange: combined")
    ax.set_title("Published vs reproduced")
    ax.legend(fontsize=8)
    return png_bytes(fig)


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
    parts = [f"<h1>Published comparisons, reproduced</h1><p>Models <b>"
             f"{html.escape(str(report['model']))}</b>, <b>"
             f"{html.escape(str(report['pattern_model']))}</b>. Every row: our figure, the "
             "published one, their ratio, against the paper's own baseline (named in the "
             "row); <code>combined</code> rows: the combined scheme on the same workload. "
             f"Wall time {report['time_s']['total']:.0f} s.</p>"]
    for sec in report["sections"]:
        cells = []
        for r in sec["rows"]:
            ratio, direction, meets = verdict_cells(r)
            values = (r["metric"], fmt_value(r["ours_value"], r["unit"]), r["published_text"],
                      ratio, direction, meets, r["setting"],
                      "-" if r["top1"] is None else
                      f"{100 * r['top1']:.2f}% ({r['accuracy_images']})",
                      r["baseline"], r["model"], str(r["test_images"]))
            cells.append("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in values)
                         + "</tr>")
        head = "".join(f"<th>{html.escape(c)}</th>" for c in HEADLINE_COLUMNS)
        parts.append(f"<h2>{html.escape(sec['title'])}</h2><p>Baseline: "
                     f"{html.escape(sec['baseline'])}</p><table><tr>{head}</tr>"
                     f"{''.join(cells)}</table>")
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


def _reproduce(args: RunArgs, test_images: int, calibration_images: int,
               accuracy_images: int, deviation: bool, sparsities: list[float],
               tune_images: int, pattern_images: int, pattern_model: str) -> str:
    model = MODEL if args.model == "default" else args.model
    # Bad names refused before any work: unknown ones first, then missing shipped files.
    for spec in sorted((model, pattern_model), key=lambda m: find_shipped(m) is not None):
        load_model(spec)
    report = reproduce_all(args.out, model, args.hw, dict(args.overrides),
                           test_images=test_images, pattern_model=pattern_model,
                           sre_sparsities=sparsities, sre_tune_images=tune_images,
                           pattern_images=pattern_images,
                           calibration_images=calibration_images,
                           accuracy_images=accuracy_images, deviation=deviation,
                           batch_size=args.batch_size, device=args.device,
                           progress=args.progress)
    out = args.out
    return (f"{report_markdown(report)}\nwrote {out}/all_reproduce.json, .md, .html, .png and "
            f"each study under {out}/sre, {out}/pattern, {out}/comprrae, {out}/encoding")


STUDY = StudySpec(
    name="all",
    help="Every published comparison in one report on the VGG-16 workloads, each against its "
         "paper's baseline, our figure beside the published one and the combined scheme's "
         "rows beside them.",
    run=_reproduce,
    defaults={"model": MODEL},
    options=(
        test_images_option(TEST_IMAGES),
        calibration_images_option(CALIBRATION_IMAGES, "for alphas, betas or bits"),
        accuracy_images_option(),
        switch("deviation", False, "Also run SRE's accumulated-deviation study."),
        numbers("sparsities", ",".join(f"{s:g}" for s in SPARSITIES), "The SRE study's "
                "OU-structured sparsities (the shipped NAME-sreXX models where there are), "
                "comma-separated.", low=0, high=1, high_open=True),
        count("tune_images", TUNE_IMAGES, "Fine-tuning images per SRE pruning step (models "
              "pruned here only).", low=1),
        count("pattern_images", TEST_IMAGES, "Simulated images of the pattern study.", low=1,
              high=FMNIST_TEST_IMAGES),
        text("pattern_model", PATTERN_MODEL, "The pattern study's pattern-pruned model (a "
             "shipped name or a checkpoint)."),
    ),
)
