"""`sparsexbar reproduce encoding`: every encoding technique alone and combined against
`dense` on the test split of the embedded Fashion-MNIST file (studies.setup), ADC bits and
dynamic precision calibrated on its calibration split, beside the published 2x-4x."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...core.config import HardwareConfig
from ...core.runtime import pyplot
from ...result import Result
from ...simulate import simulate
from ...studies.setup import study_setup
from ...studies.writers import save_png, write_json, write_text
from ..entry import RunArgs, StudySpec
from ..options import count, number
from .calibration import Progress, calibrate_adc_bits, calibrate_precision, reference_top1
from .scheme import EncodingScheme

TEST_IMAGES, CALIBRATION_IMAGES, BUDGET = 500, 200, 0.5  # defaults, here only
PUBLISHED = {
    "throughput": (2.0, 4.0),
    "energy_efficiency": (2.0, 4.0),
    "area_efficiency": (2.0, 4.0),
    "source": "Chen et al., ASP-DAC 2018: throughput, energy efficiency and area efficiency "
              "2x-4x better than state-of-the-art RRAM accelerators (ISAAC-like baselines)",
}


def _row(label: str, technique: str, res: Result, dense: Result, outputs_equal: bool,
         lossless: bool) -> dict[str, Any]:
    vs = res.vs_dense
    tot, dtot = res.totals, res.dense_totals
    area_ratio = dtot.area_um2["total"] / tot.area_um2["total"]
    ev, dev = tot.events, dtot.events
    return {
        "run": label,
        "technique": technique,
        "lossless": lossless,
        "outputs_equal_dense": outputs_equal,
        "top1": res.accuracy.top1,
        "top1_change_points": 100 * (res.accuracy.top1 - dense.accuracy.top1),
        "adc_bits": [lay.adc_bits for lay in res.layers],
        "throughput": vs.speedup,
        "energy_efficiency": vs.energy_efficiency,
        # Throughput per unit of total area (the published metric), relative to dense.
        "area_efficiency": vs.speedup * area_ratio,
        "area_ratio": area_ratio,
        "adc_energy_ratio": dtot.energy_pj["adc"] / max(tot.energy_pj["adc"], 1e-30),
        "conversion_reduction": vs.computation_reduction["adc_conversions"],
        "cycles_saved": 1 - tot.cycles / dtot.cycles,
        "partial_products": ev.adc_conversions,
        "dense_partial_products": dev.adc_conversions,
        "lut_bits_area_um2": tot.area_um2["lut"],
        "comparisons": ev.comparisons,
        "extra_digital_ops": ev.digital_ops - dev.digital_ops,
    }


def reproduce_encoding(out_dir: str | Path, model: Any = "default",
                       hw: str | HardwareConfig = "isaac",
                       overrides: dict[str, Any] | None = None,
                       test_images: int = TEST_IMAGES,
                       calibration_images: int = CALIBRATION_IMAGES,
                       budget_points: float = BUDGET,
                       sweep: tuple[int, ...] = (4, 5, 6), batch_size: int = 250,
                       device: str = "cpu", progress: Progress | None = None) -> dict[str, Any]:
    """Every technique alone and combined vs `dense` on the Fashion-MNIST test half; ADC bits
    and dynamic precision calibrated on the calibration half (precision within half the
    budget, then ADC bits within the whole budget, both against the exact network), plus a
    sweep of uniform dynamic precisions. Writes JSON, markdown and a plot under `out_dir`."""
    say = progress or (lambda _msg: None)
    setup = study_setup(model, hw, overrides, test_images, calibration_images)
    config, net, model_name, qmodel = setup.config, setup.net, setup.model_name, setup.qmodel
    x_cal, y_cal, x_test, y_test = setup.x_cal, setup.y_cal, setup.x_test, setup.y_test
    out = Path(out_dir)
    ref_cal = reference_top1(qmodel, x_cal, y_cal, batch_size)
    none = EncodingScheme("none", "none", "fixed", skip_zero_planes=False)
    encoded = EncodingScheme("bus-invert", "complement", "lossless", skip_zero_planes=True)

    say(f"calibrating per-layer dynamic precision on {len(y_cal)} calibration images "
        f"(budget {budget_points / 2:g} points)")
    precision, p_top1, p_trials = calibrate_precision(
        qmodel, config, x_cal, y_cal, none, budget_points / 2, ref_cal, batch_size, device,
        progress=say)
    say(f"calibrating per-layer ADC bits without encodings (budget {budget_points:g} points)")
    cal_adc = calibrate_adc_bits(qmodel, config, x_cal, y_cal, none, budget_points,
                                 reference=ref_cal, batch_size=batch_size, device=device,
                                 progress=say)
    combined_lossy = encoded.variant(precision=precision)
    say("calibrating per-layer ADC bits of the combined scheme (encodings, zero-plane "
        "skipping, calibrated precision)")
    cal_comb = calibrate_adc_bits(qmodel, config, x_cal, y_cal, combined_lossy, budget_points,
                                  reference=ref_cal, batch_size=batch_size, device=device,
                                  progress=say)
    data = (x_test, y_test)
    say(f"running dense on {len(y_test)} test images")
    dense = simulate(net, data, config, "dense", batch_size=batch_size, device=device,
                     qmodel=qmodel).named(model=model_name)
    variants: list[tuple[str, str, EncodingScheme]] = [
        ("ADC bits per layer, lossless", "adc", none.variant(adc="lossless")),
        (f"ADC bits per layer, calibrated ({budget_points:g} pt)", "adc",
         none.variant(adc="calibrated", adc_bits=cal_adc.adc_bits)),
        ("input bus-invert + lossless ADC", "input encoding",
         none.variant(input_encoding="bus-invert", adc="lossless")),
        ("weight complement + lossless ADC", "weight encoding",
         none.variant(weight_encoding="complement", adc="lossless")),
        ("both encodings + lossless ADC", "encodings",
         none.variant(input_encoding="bus-invert", weight_encoding="complement",
                      adc="lossless")),
        ("skip zero planes", "dynamic", none.variant(skip_zero_planes=True)),
        (f"dynamic precision, calibrated ({budget_points / 2:g} pt)", "dynamic",
         none.variant(precision=precision)),
        ("combined, lossless", "combined", encoded),
        ("combined, lossy (calibrated precision and ADC)", "combined",
         combined_lossy.variant(adc="calibrated", adc_bits=cal_comb.adc_bits)),
    ]
    variants += [(f"uniform dynamic precision {p}", "precision sweep",
                  none.variant(skip_zero_planes=True, precision=p)) for p in sweep]
    rows = [_row("dense", "baseline", dense, dense, True, True)]
    for label, technique, scheme in variants:
        say(f"running {label} on {len(y_test)} test images")
        res = simulate(net, data, config, scheme, batch_size=batch_size, device=device,
                       qmodel=qmodel, baseline_accuracy=dense.accuracy)
        assert res.outputs is not None and dense.outputs is not None
        equal = bool(torch.equal(res.outputs, dense.outputs))
        rows.append(_row(label, technique, res, dense, equal, scheme.lossless))
    report = {
        **setup.description(),
        "calibration_images": len(y_cal), "budget_points": budget_points,
        "reference_top1_calibration": ref_cal,
        "precision_calibration": {"precision": precision, "top1": p_top1,
                                  "budget_points": budget_points / 2, "trials": p_trials},
        "adc_calibration": cal_adc.to_json(), "combined_calibration": cal_comb.to_json(),
        "dense_top1": dense.accuracy.top1, "rows": rows, "published": PUBLISHED,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "encoding_reproduce.json", report, newline=False)
    write_text(out / "encoding_reproduce.md", reproduce_markdown(report))
    _plot(report, out / "encoding_efficiency.png")
    return report


def reproduce_markdown(report: dict[str, Any]) -> str:
    """The reproduction table, beside the published 2x-4x."""
    lines = [
        f"Encoding on {report['model']}, hardware `{report['hardware']}`, "
        f"{report['test_images']} test images ({report['test_split']}); ADC bits and dynamic "
        f"precision calibrated on {report['calibration_images']} images "
        f"({report['calibration_split']}), budget {report['budget_points']} points.",
        "",
        "| run | exact | top-1 % | change (points) | ADC bits per layer | throughput | "
        "energy eff. | area eff. | fewer conversions |",
        "| --- | :-: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        exact = "yes" if r["outputs_equal_dense"] else "no"
        bits = ",".join(str(b) for b in r["adc_bits"])
        lines.append(
            f"| {r['run']} | {exact} | {100 * r['top1']:.2f} | {r['top1_change_points']:+.2f} "
            f"| {bits} | {r['throughput']:.2f}x | {r['energy_efficiency']:.2f}x | "
            f"{r['area_efficiency']:.2f}x | {100 * r['conversion_reduction']:.1f}% |")
    pub = report["published"]
    lo, hi = pub["throughput"]
    lines.append(f"| published (ASP-DAC 2018) | | | | | {lo:g}x-{hi:g}x | {lo:g}x-{hi:g}x | "
                 f"{lo:g}x-{hi:g}x | |")
    lines += [
        "",
        "exact: outputs equal `dense` bit for bit (torch.equal). Throughput: dense cycles / "
        "cycles (busiest array). Energy efficiency: dense energy / energy (all components). "
        "Area efficiency: throughput per total area (arrays, ADCs, DACs, shift-add, LUTs, "
        "comparators, buffer) relative to dense.",
        "",
        f"Calibrated dynamic precision (chunks per layer): "
        f"`{report['precision_calibration']['precision']}`; ADC bits (ADC only): "
        f"`{report['adc_calibration']['adc_bits']}`; (combined): "
        f"`{report['combined_calibration']['adc_bits']}`.",
        "",
    ]
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    rows = report["rows"][1:]
    metrics = (("throughput", "throughput"), ("energy_efficiency", "energy eff."),
               ("area_efficiency", "area eff."))
    fig, ax = pyplot().subplots(figsize=(9, 4.5))
    width = 0.27
    xs = range(len(rows))
    for j, (key, label) in enumerate(metrics):
        ax.bar([x + (j - 1) * width for x in xs], [r[key] for r in rows], width, label=label)
    lo, hi = report["published"]["throughput"]
    ax.axhspan(lo, hi, color="grey", alpha=0.2, label=f"published {lo:g}x-{hi:g}x")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["run"] for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("vs dense (x)")
    ax.set_title(f"Encoding + dynamic quantization: {report['model']}, {report['hardware']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def _reproduce(args: RunArgs, test_images: int, calibration_images: int,
               budget: float) -> str:
    report = reproduce_encoding(args.out, args.model, args.hw, dict(args.overrides),
                                test_images, calibration_images, budget,
                                batch_size=args.batch_size, device=args.device,
                                progress=args.progress)
    return (f"{reproduce_markdown(report)}\nwrote {args.out}/encoding_reproduce.json, "
            "encoding_reproduce.md, encoding_efficiency.png")


STUDY = StudySpec(
    name="encoding",
    help="Encoding: every technique alone and combined against dense, ADC bits and dynamic "
         "precision calibrated on the calibration half, beside the published 2x-4x.",
    run=_reproduce,
    options=(
        count("test_images", TEST_IMAGES, "Images of the test half (0..4999) to run.",
              low=1, high=5000),
        count("calibration_images", CALIBRATION_IMAGES, "Images of the calibration half "
              "(5000..) the bits and precision are picked on.", low=1, high=5000),
        number("budget", BUDGET, "Top-1 loss allowed, points.", low=0, unit="points"),
    ),
)
