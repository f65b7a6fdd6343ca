"""`sparsexbar reproduce encoding`: every encoding technique alone and combined against
`dense` on the test split of the embedded Fashion-MNIST file (studies.setup), ADC bits and
dynamic precision calibrated on its calibration split, beside the published 2x-4x."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig, load_config
from ...core.engine import EngineOptions
from ...core.frontend import QuantizedModel
from ...core.runtime import pyplot
from ...result import Result
from ...simulate import simulate
from ...studies.headline import accuracy_note, headline_markdown, headline_row, vs_baseline
from ...studies.published import as_json
from ...studies.setup import (
    FMNIST_TEST_IMAGES,
    accuracy_images_option,
    calibration_images_option,
    exact_predictions,
    study_setup,
    test_images_option,
    test_scope,
)
from ...studies.writers import save_png, write_json, write_text
from ..entry import RunArgs, StudySpec
from ..options import number, switch
from .calibration import (
    Progress,
    _Executor,
    _mapped,
    calibrate_adc_bits,
    calibrate_precision,
    reference_top1,
)
from .kernel import EncodingKernel
from .scheme import EncodingScheme

TEST_IMAGES, CALIBRATION_IMAGES, BUDGET = 100, 200, 0.5  # defaults, here only
PUBLISHED = as_json("encoding")  # studies.published holds the figures and their source
BASELINE_HW = "isaac"  # the ISAAC-class design the paper compares with (ADCs sized to need)
LOSSLESS_SET, LOSSY_SET = "combined, lossless", "combined, lossy (calibrated precision and ADC)"


def _row(label: str, technique: str, res: Result, base: Result, outputs_equal: bool,
         lossless: bool, top1: float, exact: float, accuracy_images: int) -> dict[str, Any]:
    """One run's figures against the separate baseline run `base` (the ISAAC-class design on
    the same images); `top1` on the whole split, its change against the exact network."""
    vb = vs_baseline(res, base)
    tot, dtot = res.totals, base.totals
    area_ratio = dtot.area_um2["total"] / tot.area_um2["total"]
    ev, dev = tot.events, dtot.events
    return {
        "run": label,
        "technique": technique,
        "lossless": lossless,
        "outputs_equal_dense": outputs_equal,
        "top1": top1,
        "top1_change_points": 100 * (top1 - exact),
        "accuracy_images": accuracy_images,
        "simulated_top1": res.accuracy.top1,
        "adc_bits": [lay.adc_bits for lay in res.layers],
        "throughput": vb["speedup"],
        "energy_efficiency": vb["energy_efficiency"],
        # Throughput per unit of total area (the published metric), relative to the baseline.
        "area_efficiency": vb["area_efficiency"],
        "area_ratio": area_ratio,
        "adc_energy_ratio": dtot.energy_pj["adc"] / max(tot.energy_pj["adc"], 1e-30),
        "conversion_reduction": vb["conversion_reduction"],
        "cycles_saved": 1 - tot.cycles / dtot.cycles,
        "partial_products": ev.adc_conversions,
        "dense_partial_products": dev.adc_conversions,
        "lut_bits_area_um2": tot.area_um2["lut"],
        "comparisons": ev.comparisons,
        "extra_digital_ops": ev.digital_ops - dev.digital_ops,
        "vs_dense_same_hardware": {"throughput": res.vs_dense.speedup,
                                   "energy_efficiency": res.vs_dense.energy_efficiency},
    }


def whole_split_top1(qmodel: QuantizedModel, config: HardwareConfig, scheme: EncodingScheme,
                     images: Tensor, labels: Tensor, batch_size: int,
                     device: str = "cpu") -> tuple[float, Tensor]:
    """(top-1, classes) of an encoding setting on `images` through its kernels' values (the
    calibration's path: what the simulated run computes, without counting events)."""
    dev = torch.device(device)
    kernels: dict[str, EncodingKernel] = {}
    for name, m in _mapped(scheme, qmodel, config).items():
        k = scheme.kernel(m, dev)
        assert isinstance(k, EncodingKernel)
        kernels[name] = k
    run = _Executor(scheme, kernels, EngineOptions())
    preds = []
    for j, a in enumerate(range(0, len(labels), batch_size)):  # batches of images
        run.batch = j
        preds.append(qmodel.run(images[a : a + batch_size].to(dev), run).argmax(dim=1).cpu())
    got = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return float((got == labels).sum()) / max(len(labels), 1), got


def reproduce_encoding(out_dir: str | Path, model: Any = "vgg16-fmnist",
                       hw: str | HardwareConfig = "isaac",
                       overrides: dict[str, Any] | None = None,
                       test_images: int = TEST_IMAGES,
                       calibration_images: int = CALIBRATION_IMAGES,
                       budget_points: float = BUDGET,
                       sweep: tuple[int, ...] = (), batch_size: int = 250,
                       device: str = "cpu", progress: Progress | None = None,
                       accuracy_images: int = FMNIST_TEST_IMAGES,
                       techniques: bool = True) -> dict[str, Any]:
    """Encoding's lossless and lossy sets (and, with `techniques`, every technique alone)
    against the ISAAC-class baseline (`dense` on `isaac`, ADCs sized to need, a separate run
    on the same images); ADC bits and dynamic precision calibrated on the calibration split
    (precision within half the budget, then ADC bits within the whole budget, both against
    the exact network); top-1 on the whole test split; plus a sweep of uniform dynamic
    precisions (`sweep`). Writes JSON, markdown and a plot under `out_dir`."""
    say = progress or (lambda _msg: None)
    setup = study_setup(model, hw, overrides, test_images, calibration_images, accuracy_images)
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
    cal_adc = None
    if techniques:
        say(f"calibrating per-layer ADC bits without encodings (budget {budget_points:g} "
            "points)")
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
    say(f"exact top-1 on {len(setup.y_all)} test images")
    exact = setup.exact_top1()
    exact_first = exact_predictions(qmodel, setup.x_all)[:test_images]
    base_config = load_config(BASELINE_HW, {"numbers.input_bits": config.numbers.input_bits})
    say(f"running the baseline, dense on {BASELINE_HW}, on {len(y_test)} test images")
    base = simulate(net, data, base_config, "dense", batch_size=batch_size, device=device,
                    qmodel=qmodel).named(model=model_name)
    variants: list[tuple[str, str, EncodingScheme]] = []
    if techniques:
        assert cal_adc is not None
        variants += [
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
        ]
    variants += [
        (LOSSLESS_SET, "combined", encoded),
        (LOSSY_SET, "combined",
         combined_lossy.variant(adc="calibrated", adc_bits=cal_comb.adc_bits)),
    ]
    variants += [(f"uniform dynamic precision {p}", "precision sweep",
                  none.variant(skip_zero_planes=True, precision=p)) for p in sweep]
    n_all = len(setup.y_all)
    base_equal = bool(base.outputs is not None
                      and torch.equal(base.outputs.argmax(dim=1).cpu(), exact_first.cpu()))
    rows = [_row(f"baseline: dense on {BASELINE_HW}", "baseline", base, base, True, True,
                 exact, exact, n_all)]
    for label, technique, scheme in variants:
        say(f"running {label} on {len(y_test)} test images")
        res = simulate(net, data, config, scheme, batch_size=batch_size, device=device,
                       qmodel=qmodel, baseline_accuracy=base.accuracy)
        assert res.outputs is not None and base.outputs is not None
        equal = bool(torch.equal(res.outputs, base.outputs))
        if scheme.lossless:
            top1 = exact
        else:
            say(f"top-1 of {label} on {n_all} test images")
            top1, preds = whole_split_top1(qmodel, config, scheme, setup.x_all, setup.y_all,
                                           batch_size, device)
            equal_path = bool(torch.equal(res.outputs.argmax(dim=1).cpu(),
                                          preds[:test_images]))
        row = _row(label, technique, res, base, equal, scheme.lossless, top1, exact, n_all)
        if not scheme.lossless:
            row["classes_equal_values_path"] = equal_path
        rows.append(row)
    report = {
        **setup.description(), "study": "encoding",
        "calibration_images": len(y_cal), "budget_points": budget_points,
        "reference_top1_calibration": ref_cal, "exact_top1": exact,
        "baseline_classes_equal_exact": base_equal,
        "baseline": f"dense on {BASELINE_HW} (ISAAC-class, ADC bits sized to need: "
                    f"{','.join(str(lay.adc_bits) for lay in base.layers)}), same weights and "
                    "images",
        "precision_calibration": {"precision": precision, "top1": p_top1,
                                  "budget_points": budget_points / 2, "trials": p_trials},
        "adc_calibration": cal_adc.to_json() if cal_adc is not None else None,
        "combined_calibration": cal_comb.to_json(),
        "dense_top1": exact, "rows": rows, "published": PUBLISHED,
    }
    report["headline"] = headline_rows(report)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "encoding_reproduce.json", report, newline=False)
    write_text(out / "encoding_reproduce.md", reproduce_markdown(report))
    _plot(report, out / "encoding_efficiency.png")
    return report


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Throughput, energy and area efficiency of the lossless and the lossy set against the
    ISAAC-class baseline; `primary`: the lossy set (the paper's design quantizes
    dynamically)."""
    by = {r["run"]: r for r in report["rows"]}
    out: list[dict[str, Any]] = []
    for label in (LOSSLESS_SET, LOSSY_SET):
        r = by[label]
        scope = test_scope(r["accuracy_images"])
        how = (f"lossless: the integer-quantized network's top-1 on {scope}"
               if r["lossless"] else "lossy: the setting's own values (calibrated on the "
               f"train split) on {scope}")
        common = {"setting": f"encoding {label}", "baseline": report["baseline"],
                  "model": report["model"], "test_images": report["test_images"],
                  "top1": r["top1"], "accuracy_images": r["accuracy_images"],
                  "accuracy_how": how,
                  "note": f"top-1 change {r['top1_change_points']:+.2f} pt"}
        for key in ("throughput", "energy_efficiency", "area_efficiency"):
            row = headline_row("encoding", key, r[key], **common)
            row["primary"] = label == LOSSY_SET
            out.append(row)
    return out


def reproduce_markdown(report: dict[str, Any]) -> str:
    """The headline rows, then every run against the ISAAC-class baseline."""
    adc = report["adc_calibration"]
    lines = [
        f"Encoding on {report['model']}, hardware `{report['hardware']}`, energy and time on "
        f"{report['test_images']} simulated test images, top-1 on {report['accuracy_images']} "
        f"({report['test_split']}); ADC bits and dynamic precision calibrated on "
        f"{report['calibration_images']} images ({report['calibration_split']}), budget "
        f"{report['budget_points']} points; baseline: {report['baseline']}.",
        "", headline_markdown(report["headline"]), accuracy_note(report["headline"]),
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
    lines += [
        "",
        "exact: outputs equal the baseline's bit for bit (torch.equal). Throughput: baseline "
        "latency / latency (busiest array per layer). Energy efficiency: baseline energy / "
        "energy (all components). Area efficiency: throughput per total area (arrays, ADCs, "
        "DACs, shift-add, LUTs, comparators, buffer) relative to the baseline.",
        "",
        f"Calibrated dynamic precision (chunks per layer): "
        f"`{report['precision_calibration']['precision']}`; ADC bits (ADC only): "
        f"`{adc['adc_bits'] if adc else '-'}`; (combined): "
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
    lo, hi = report["published"]["throughput"]["low"], report["published"]["throughput"]["high"]
    ax.axhspan(lo, hi, color="grey", alpha=0.2, label=f"published {lo:g}x-{hi:g}x")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["run"] for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("vs the ISAAC-class baseline (x)")
    ax.set_title(f"Encoding + dynamic quantization: {report['model']}, {report['hardware']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def _reproduce(args: RunArgs, test_images: int, calibration_images: int,
               accuracy_images: int, budget: float, techniques: bool) -> str:
    report = reproduce_encoding(args.out, args.model, args.hw, dict(args.overrides),
                                test_images, calibration_images, budget,
                                batch_size=args.batch_size, device=args.device,
                                progress=args.progress, accuracy_images=accuracy_images,
                                techniques=techniques)
    return (f"{reproduce_markdown(report)}\nwrote {args.out}/encoding_reproduce.json, "
            "encoding_reproduce.md, encoding_efficiency.png")


STUDY = StudySpec(
    name="encoding",
    help="Encoding: its lossless and lossy sets (and every technique alone) against an "
         "ISAAC-class design (isaac, ADCs sized to need), ADC bits and dynamic precision "
         "calibrated on the train split, beside the published 2x-4x.",
    run=_reproduce,
    defaults={"model": "vgg16-fmnist"},
    options=(
        test_images_option(TEST_IMAGES),
        calibration_images_option(CALIBRATION_IMAGES, "the bits and precision are picked on"),
        accuracy_images_option(),
        number("budget", BUDGET, "Top-1 loss allowed, points.", low=0, high=100, unit="points"),
        switch("techniques", True, "Also run every technique alone (the ablation)."),
    ),
)
