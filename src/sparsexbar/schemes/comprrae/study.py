"""`sparsexbar reproduce comprrae`: dense vs early negative detection (per-output and (bit,
slice) bounds) vs calibrated alphas and betas vs uniform sweeps on the test split of the
embedded Fashion-MNIST file (studies.setup), beside the published figures; where early
negative detection stops (the profile)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.engine import exact_accumulate
from ...core.frontend import QuantizedModel, QuantLayer
from ...core.runtime import pyplot
from ...result import Result
from ...simulate import simulate
from ...studies.setup import study_setup
from ...studies.writers import save_png, write_json, write_text
from ..entry import RunArgs, StudySpec
from ..options import count, number
from .calibration import (
    DEFAULT_BETAS,
    DEFAULT_CANDIDATES,
    calibrate_comprrae,
    measure_remaining_mean,
)
from .kernel import CompKernel
from .scheme import CompRRAEScheme


def stop_profile(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor,
                 batch_size: int = 50, device: str | torch.device = "cpu",
                 slack_images: int = 50) -> list[dict[str, Any]]:
    """Per layer followed by ReLU, on `images` (exact network, so END's own inputs):

    - `negative`: outputs whose exact value is negative (ReLU 0): END's ceiling in outputs;
      `ceiling`: the conversions END would remove if every one stopped after the first cycle;
    - `end_stop`: fraction of outputs stopped by END after cycle 1..T-1 (per-output bounds),
      `end_removed` / `slice_removed`: conversions removed with per-output / (bit, slice)
      bounds;
    - `slack`: median of (y_max - final) / max(|final|, 1) over the negative outputs after
      each cycle but the last (first `slack_images` images): how far the bound is from
      firing;
    - `first_one`: fraction of inputs whose most significant 1 arrives in cycle 0..T-1
      (`zero`: inputs that are 0).
    """
    dev = torch.device(device)
    qmodel.to(dev)
    cycles, dac = hw.cycles, hw.dac.bits
    schemes = {"output": CompRRAEScheme(), "slice": CompRRAEScheme(bounds="slice")}
    kernels: dict[str, dict[str, CompKernel]] = {}
    for q in qmodel.layers:
        if q.followed_by_relu:
            kernels[q.name] = {}
            for key, sch in schemes.items():
                k = sch.kernel(sch.map_layer(q, hw), dev)
                assert isinstance(k, CompKernel)
                kernels[q.name][key] = k
    stats: dict[str, dict[str, Any]] = {}
    seen = 0

    def record(layer: QuantLayer, x_int: Tensor) -> Tensor:
        if layer.name not in kernels:
            return exact_accumulate(layer, x_int)
        st = stats.setdefault(layer.name, {
            "outputs": 0, "negative": 0.0, "stops": torch.zeros(cycles + 1, dtype=torch.float64),
            "end_left": 0.0, "slice_left": 0.0, "zero": 0.0,
            "first": torch.zeros(cycles, dtype=torch.float64), "inputs": 0, "slack": []})
        k_out, k_slice = kernels[layer.name]["output"], kernels[layer.name]["slice"]
        value, executed = schemes["output"].terminate(k_out, x_int)
        _, executed_slice = schemes["slice"].terminate(k_slice, x_int)
        final = exact_accumulate(layer, x_int)
        negative = layer.dequantize(final) < 0
        st["outputs"] += final.numel()
        st["negative"] += float(negative.sum())
        st["stops"] += torch.bincount(executed.flatten().long().cpu(),
                                      minlength=cycles + 1).double()
        st["end_left"] += float(executed.double().sum())
        st["slice_left"] += float(executed_slice.double().sum())
        mag = x_int.abs().to(torch.int64)
        st["inputs"] += mag.numel()
        st["zero"] += float((mag == 0).sum())
        for t in range(cycles):  # input cycles: a handful
            low, high = 2 ** ((cycles - 1 - t) * dac), 2 ** ((cycles - t) * dac)
            st["first"][t] += float(((mag >= low) & (mag < high)).sum())
        if seen < slack_images:
            for step, _, _, y_max in schemes["output"].trace(k_out, x_int):
                if step < cycles - 1:
                    rel = ((y_max - final) / final.abs().clamp(min=1))[negative]
                    st["slack"].append((step, rel.float().cpu()))
        return value

    for a in range(0, len(images), batch_size):  # batches of images
        qmodel.run(images[a : a + batch_size].to(dev), record)
        seen += len(images[a : a + batch_size])
    rows = []
    for name, st in stats.items():
        out = max(st["outputs"], 1)
        slack = []
        for t in range(cycles - 1):  # input cycles: a handful
            parts = [v for s, v in st["slack"] if s == t]
            values = torch.cat(parts) if parts else torch.zeros(0)
            slack.append(float(values.median()) if values.numel() else float("nan"))
        hist = (st["stops"] / out).tolist()
        steps_slice = cycles * kernels[name]["slice"].steps_per_cycle
        rows.append({
            "layer": name, "outputs": st["outputs"], "negative": st["negative"] / out,
            "ceiling": st["negative"] / out * (cycles - 1) / cycles,
            "end_stop": hist[1:cycles], "end_removed": 1 - st["end_left"] / (out * cycles),
            "slice_removed": 1 - st["slice_left"] / (out * steps_slice),
            "slack": slack, "zero": st["zero"] / max(st["inputs"], 1),
            "first_one": (st["first"] / max(st["inputs"], 1)).tolist(),
        })
    return rows


def profile_markdown(rows: list[dict[str, Any]]) -> str:
    """The stop profile as markdown tables."""
    if not rows:
        return ""
    cycles = len(rows[0]["first_one"])
    lines = [
        "| layer | negative at end | END ceiling | removed by END | with (bit, slice) bounds | "
        + " | ".join(f"stop after {t}" for t in range(1, cycles)) + " |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in range(1, cycles))
        + " |",
    ]
    for r in rows:
        lines.append(f"| {r['layer']} | {100 * r['negative']:.1f}% | {100 * r['ceiling']:.1f}% "
                     f"| {100 * r['end_removed']:.1f}% | {100 * r['slice_removed']:.1f}% | "
                     + " | ".join(f"{100 * v:.1f}%" for v in r["end_stop"]) + " |")
    lines += [
        "",
        "| layer | zero inputs | " + " | ".join(f"first 1 in cycle {t}" for t in range(cycles))
        + " | " + " | ".join(f"slack after {t}" for t in range(1, cycles)) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in range(2 * cycles - 1)) + " |",
    ]
    for r in rows:
        lines.append(f"| {r['layer']} | {100 * r['zero']:.1f}% | "
                     + " | ".join(f"{100 * v:.1f}%" for v in r["first_one"]) + " | "
                     + " | ".join(f"{v:.1f}" for v in r["slack"]) + " |")
    return "\n".join(lines) + "\n"


# ---- reproduction ----------------------------------------------------------------------------
PUBLISHED = {
    "computation_reduction": 0.70,
    "top1_change_points": -0.2,
    "energy_efficiency": 2.9,
    "throughput": 2.8,
    "source": "Chen et al., CompRRAE, ASP-DAC 2019 (arXiv 1906.03180): about 70% of "
              "computations removed, accuracy loss < 0.2%, energy efficiency > 2.9x, "
              "throughput > 2.8x over prior RRAM accelerators",
}
DEFAULT_CURVE = (0.4, 1.6, 6.4)
TEST_IMAGES, CALIBRATION_IMAGES, BUDGET = 1000, 1000, 0.2  # defaults, here only
DEFAULT_BETA_CURVE = (0.5, 0.25, 0.125, 0.0625, 0.03125)


def _row(label: str, res: Result, dense: Result) -> dict[str, Any]:
    vs = res.vs_dense
    params = res.scheme.parameters
    return {
        "run": label,
        "alpha": params.get("alpha"),
        "beta": params.get("beta"),
        "bounds": params.get("bounds"),
        "top1": res.accuracy.top1,
        "top1_change_points": 100 * (res.accuracy.top1 - dense.accuracy.top1),
        "conversion_reduction": vs.computation_reduction["adc_conversions"],
        "ou_activation_reduction": vs.computation_reduction["ou_activations"],
        "energy_efficiency": vs.energy_efficiency,
        "throughput": vs.speedup,
        "throughput_pipelined": res.totals.images_per_s_pipelined
        / dense.totals.images_per_s_pipelined,
        "area_ratio": res.totals.area_um2["total"] / dense.totals.area_um2["total"],
    }


def reproduce_comprrae(out_dir: str | Path, model: Any = "default",
                       hw: str | HardwareConfig = "isaac",
                       overrides: dict[str, Any] | None = None,
                       test_images: int = TEST_IMAGES,
                       calibration_images: int = CALIBRATION_IMAGES,
                       budget_points: float = BUDGET,
                       candidates: Sequence[float] = DEFAULT_CANDIDATES,
                       curve: Sequence[float] = DEFAULT_CURVE, batch_size: int = 250,
                       device: str = "cpu",
                       progress: Callable[[str], None] | None = None,
                       betas: Sequence[float] = DEFAULT_BETAS,
                       beta_curve: Sequence[float] = DEFAULT_BETA_CURVE,
                       profile_images: int = 100) -> dict[str, Any]:
    """Dense vs END (per-output and (bit, slice) bounds) vs calibrated alphas vs calibrated
    predictive betas (and both) vs uniform alpha and beta sweeps, on the Fashion-MNIST test
    half; parameters picked on the calibration half. Writes JSON, markdown and a PNG plot."""
    say = progress or (lambda _msg: None)
    setup = study_setup(model, hw, overrides, test_images, calibration_images)
    config, net, model_name, qmodel = setup.config, setup.net, setup.model_name, setup.qmodel
    x_cal, y_cal, x_test, y_test = setup.x_cal, setup.y_cal, setup.x_test, setup.y_test
    out = Path(out_dir)
    data = (x_test, y_test)

    def run(scheme: Any, label: str) -> Result:
        say(f"running {label} on {len(y_test)} test images")
        res = simulate(net, data, config, scheme, batch_size=batch_size, device=device,
                       qmodel=qmodel)
        return res.named(model=model_name)

    dense = run("dense", "dense")
    end = run(CompRRAEScheme(), "comprrae, early negative detection only")
    end_slice = run(CompRRAEScheme(bounds="slice"), "comprrae END, (bit, slice) bounds")
    say(f"calibrating alphas on {len(y_cal)} calibration images, budget {budget_points} points")
    cal = calibrate_comprrae(qmodel, config, x_cal, y_cal, budget_points, "alpha", candidates,
                             batch_size=batch_size, device=device, progress=say)
    adaptive = run(cal.scheme(), "comprrae, calibrated alphas")
    say("measuring the remaining-bit means on the calibration images")
    lambdas = measure_remaining_mean(qmodel, config, x_cal, batch_size)
    say(f"calibrating betas on {len(y_cal)} calibration images, budget {budget_points} points")
    cal_beta = calibrate_comprrae(qmodel, config, x_cal, y_cal, budget_points, "beta", betas,
                                  batch_size=batch_size, device=device, progress=say,
                                  remaining_mean=lambdas)
    predictive = run(cal_beta.scheme(), "comprrae, calibrated betas")
    say("calibrating betas with (bit, slice) bounds")
    cal_slice = calibrate_comprrae(qmodel, config, x_cal, y_cal, budget_points, "beta", betas,
                                   batch_size=batch_size, device=device, progress=say,
                                   bounds="slice", remaining_mean=lambdas)
    predictive_slice = run(cal_slice.scheme(bounds="slice"),
                           "comprrae, calibrated betas, (bit, slice) bounds")
    label = f"{budget_points} pt budget"
    rows = [_row("dense", dense, dense), _row("END only (exact)", end, dense),
            _row("END, (bit, slice) bounds (exact)", end_slice, dense),
            _row(f"END + calibrated alpha ({label})", adaptive, dense),
            _row(f"predictive, calibrated beta ({label})", predictive, dense),
            _row(f"predictive, calibrated beta, (bit, slice) bounds ({label})",
                 predictive_slice, dense)]
    sweep = [_row(f"uniform alpha {a:g}", run(CompRRAEScheme(alpha=a), f"alpha {a:g}"), dense)
             for a in curve]
    beta_sweep = [_row(f"uniform beta {b:g}",
                       run(CompRRAEScheme(beta=b, remaining_mean=lambdas), f"beta {b:g}"), dense)
                  for b in beta_curve]
    say(f"profiling where END stops on {min(profile_images, len(y_test))} test images")
    profile = stop_profile(qmodel, config, x_test[:profile_images], device=device)
    report = {
        **setup.description(), "input_bits": config.numbers.input_bits,
        "outputs_equal_dense_with_end": end.accuracy.top1 == dense.accuracy.top1,
        "calibration": cal.to_json(), "beta_calibration": cal_beta.to_json(),
        "beta_calibration_slice": cal_slice.to_json(),
        "remaining_mean": lambdas, "rows": rows, "curve": sweep, "beta_curve": beta_sweep,
        "profile": profile, "published": PUBLISHED,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "comprrae_reproduce.json", report, newline=False)
    write_text(out / "comprrae_reproduce.md", reproduce_markdown(report))
    _plot(report, out / "comprrae_tradeoff.png")
    return report


def _fmt_params(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in values.items() if v is not None) or "none"


def reproduce_markdown(report: dict[str, Any]) -> str:
    """The reproduction table, beside the published figures, and the stop profile."""
    cal = report["calibration"]
    lines = [
        f"CompRRAE on {report['model']}, hardware `{report['hardware']}`, "
        f"{report['test_images']} test images ({report['test_split']}); parameters "
        f"calibrated on {cal['images']} images ({report['calibration_split']}), at most "
        f"{cal['budget_points']} points of calibration images changing class.",
        "",
        "| run | top-1 % | change (points) | fewer conversions | fewer OU activations | "
        "energy eff. | throughput |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"] + report["curve"] + report.get("beta_curve", []):
        lines.append(
            f"| {r['run']} | {100 * r['top1']:.2f} | {r['top1_change_points']:+.2f} | "
            f"{100 * r['conversion_reduction']:.1f}% | {100 * r['ou_activation_reduction']:.1f}% "
            f"| {r['energy_efficiency']:.2f}x | {r['throughput']:.2f}x |")
    p = report["published"]
    lines.append(f"| published (CompRRAE) | | > {p['top1_change_points']:+.1f} | "
                 f"~{100 * p['computation_reduction']:.0f}% | | > {p['energy_efficiency']}x | "
                 f"> {p['throughput']}x |")
    lines += ["", f"Calibrated alphas: {_fmt_params(cal['alphas'])} (calibration: "
              f"{100 * cal['top1']:.2f}% vs exact {100 * cal['exact_top1']:.2f}%, "
              f"{cal['flips']} images changed class)."]
    for key, what in (("beta_calibration", "Calibrated betas"),
                      ("beta_calibration_slice", "Calibrated betas, (bit, slice) bounds")):
        got = report.get(key)
        if got is not None:
            lines.append(f"{what}: {_fmt_params(got['betas'])} (calibration: "
                         f"{100 * got['top1']:.2f}% vs exact {100 * got['exact_top1']:.2f}%, "
                         f"{got['flips']} images changed class).")
    if report.get("profile"):
        lines += ["", "Where early negative detection stops (per-output bounds unless said):",
                  "", profile_markdown(report["profile"])]
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6.5, 4.2))
    for key, label, param in (("curve", "uniform alpha", "alpha"),
                              ("beta_curve", "uniform beta (predictive)", "beta")):
        curve = report.get(key) or []
        if not curve:
            continue
        ax.plot([r["top1_change_points"] for r in curve],
                [100 * r["conversion_reduction"] for r in curve], "o-", label=label)
        for r in curve:
            ax.annotate(f"{r[param]:g}", (r["top1_change_points"],
                                          100 * r["conversion_reduction"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    marks = {"END only (exact)": "s", "END, (bit, slice) bounds (exact)": "D",
             "END + calibrated": "P", "predictive, calibrated beta (": "*",
             "predictive, calibrated beta, (bit": "X"}
    for r in report["rows"][1:]:
        marker = next((m for k, m in marks.items() if r["run"].startswith(k)), "o")
        ax.plot([r["top1_change_points"]], [100 * r["conversion_reduction"]], marker,
                ms=11 if marker in "*X" else 7, label=r["run"])
    pub = report["published"]
    ax.plot([pub["top1_change_points"]], [100 * pub["computation_reduction"]], "kx", ms=10,
            label="published (~70%, < 0.2 pt)")
    ax.set_xlabel("top-1 change vs dense (points)")
    ax.set_ylabel("ADC conversions removed (%)")
    ax.set_title(f"CompRRAE trade-off: {report['model']}, {report.get('input_bits', 8)}-bit "
                 "inputs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def _reproduce(args: RunArgs, test_images: int, calibration_images: int,
               budget: float) -> str:
    report = reproduce_comprrae(args.out, args.model, args.hw, dict(args.overrides),
                                test_images, calibration_images, budget,
                                batch_size=args.batch_size, device=args.device,
                                progress=args.progress)
    return (f"{reproduce_markdown(report)}\nwrote {args.out}/comprrae_reproduce.json, "
            "comprrae_reproduce.md, comprrae_tradeoff.png")


STUDY = StudySpec(
    name="comprrae",
    help="CompRRAE: early negative detection, its (bit, slice) bounds, calibrated alphas and "
         "betas and uniform sweeps against dense, beside the published figures; where "
         "early negative detection stops.",
    run=_reproduce,
    options=(
        count("test_images", TEST_IMAGES, "Images of the test half (0..4999) to run.",
              low=1, high=5000),
        count("calibration_images", CALIBRATION_IMAGES, "Images of the calibration half "
              "(5000..) the alphas and betas are picked on.", low=1, high=5000),
        number("budget", BUDGET, "Top-1 loss allowed, points.", low=0, unit="points"),
    ),
)
