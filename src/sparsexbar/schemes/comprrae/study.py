"""`sparsexbar reproduce comprrae`: dense vs early negative detection (per-output and (bit,
slice) bounds) vs calibrated alphas and betas vs uniform sweeps on the test split of the
embedded Fashion-MNIST file (studies.setup), beside the published figures; where early
negative detection stops (the profile)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig, load_config
from ...core.engine import exact_accumulate
from ...core.frontend import QuantizedModel, QuantLayer
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
from ...studies.top1 import predict
from ...studies.writers import save_png, uniform_rows, write_json, write_text
from ..entry import RunArgs, StudySpec
from ..options import number
from .calibration import (
    DEFAULT_BETAS,
    DEFAULT_CANDIDATES,
    _Executor,
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
PUBLISHED = as_json("comprrae")  # studies.published holds the figures and their source
BASELINE_HW = "isaac"  # the ISAAC-class design the paper compares with (ADCs sized to need)
TEST_IMAGES, CALIBRATION_IMAGES, BUDGET = 200, 500, 0.2  # defaults, here only
INPUT_BITS = (8, 16)
DEFAULT_CURVE: tuple[float, ...] = ()
DEFAULT_BETA_CURVE: tuple[float, ...] = ()
SETTINGS = ("END alone", "END + calibrated alpha", "calibrated predictor (beta)")


def _row(label: str, res: Result, dense: Result, base: Result | None = None,
         top1: float | None = None, exact: float | None = None,
         accuracy_images: int | None = None) -> dict[str, Any]:
    """One run's figures: against `dense` on the same run (`vs_dense`), and against the
    separate baseline run `base` (the ISAAC-class design) where given; top-1 on the whole
    split (`top1`, change against the exact network `exact`) where given, else the run's."""
    vs = res.vs_dense
    params = res.scheme.parameters
    t1 = res.accuracy.top1 if top1 is None else top1
    ref = dense.accuracy.top1 if exact is None else exact
    row = {
        "run": label,
        "alpha": params.get("alpha"),
        "beta": params.get("beta"),
        "bounds": params.get("bounds"),
        "top1": t1,
        "top1_change_points": 100 * (t1 - ref),
        "accuracy_images": accuracy_images if top1 is not None else len(res.outputs)
        if res.outputs is not None else None,
        "simulated_top1": res.accuracy.top1,
        "conversion_reduction": vs.computation_reduction["adc_conversions"],
        "ou_activation_reduction": vs.computation_reduction["ou_activations"],
        "energy_efficiency": vs.energy_efficiency,
        "throughput": vs.speedup,
        "throughput_pipelined": res.totals.images_per_s_pipelined
        / dense.totals.images_per_s_pipelined,
        "area_ratio": res.totals.area_um2["total"] / dense.totals.area_um2["total"],
    }
    if base is not None:
        vb = vs_baseline(res, base)
        row.update({f"baseline_{k}": v for k, v in vb.items()})
    return row


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def whole_split_top1(qmodel: QuantizedModel, config: HardwareConfig, scheme: CompRRAEScheme,
                     images: Tensor, labels: Tensor, batch_size: int,
                     device: str = "cpu") -> tuple[float, Tensor]:
    """(top-1, classes) of a lossy CompRRAE setting on `images`: every layer followed by
    ReLU runs the scheme's termination (its values: what the simulated run computes), the
    others the exact integer layer (`calibration._Executor`, the calibration's path)."""
    dev = torch.device(device)
    kernels: dict[str, CompKernel] = {}
    for q in qmodel.layers:
        if q.followed_by_relu:
            k = scheme.kernel(scheme.map_layer(q, config), dev)
            assert isinstance(k, CompKernel)
            kernels[q.name] = k
    preds = predict(qmodel, _Executor(scheme, kernels), images.to(dev), batch_size).cpu()
    return float((preds == labels).sum()) / max(len(labels), 1), preds


def reproduce_comprrae(out_dir: str | Path, model: Any = "vgg16-fmnist",
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
                       profile_images: int = 0,
                       accuracy_images: int = FMNIST_TEST_IMAGES,
                       input_bits: Sequence[int] = INPUT_BITS,
                       slice_bounds: bool = False) -> dict[str, Any]:
    """For each input width in `input_bits`: END alone, END + calibrated alphas and the
    calibrated predictor (betas), against the ISAAC-class baseline (`dense` on `isaac`, ADC
    bits sized to need, same inputs) and against `dense` on the study's hardware; parameters
    picked on the calibration split, top-1 on the whole test split. Optional extras: uniform
    alpha / beta sweeps (`curve`, `beta_curve`), (bit, slice) bounds (`slice_bounds`), where
    END stops (`profile_images` > 0). Writes JSON, markdown and a PNG plot."""
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    sections: list[dict[str, Any]] = []
    for bits in input_bits:  # 8 and 16
        sections.append(_one_width(
            bits, model, hw, overrides, test_images, calibration_images, budget_points,
            candidates, curve, batch_size, device, say, betas, beta_curve,
            profile_images if bits == input_bits[0] else 0, accuracy_images, slice_bounds))
    first = sections[0]
    report = {key: first[key] for key in (
        "model", "hardware", "test_images", "accuracy_images", "test_split",
        "calibration_split", "input_bits", "outputs_equal_dense_with_end", "calibration",
        "beta_calibration", "remaining_mean", "rows", "curve", "beta_curve", "profile",
        "baseline")}
    report.update({"study": "comprrae", "published": PUBLISHED, "widths": sections,
                   "budget_points": budget_points})
    report["headline"] = headline_rows(report)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "comprrae_reproduce.json", report, newline=False)
    write_text(out / "comprrae_reproduce.md", reproduce_markdown(report))
    _plot(report, out / "comprrae_tradeoff.png")
    return report


def _one_width(bits: int, model: Any, hw: Any, overrides: dict[str, Any] | None,
               test_images: int, calibration_images: int, budget_points: float,
               candidates: Sequence[float], curve: Sequence[float], batch_size: int,
               device: str, say: Callable[[str], None], betas: Sequence[float],
               beta_curve: Sequence[float], profile_images: int, accuracy_images: int,
               slice_bounds: bool) -> dict[str, Any]:
    """The study at one input width (see `reproduce_comprrae`)."""
    ov = {**(overrides or {}), "numbers.input_bits": bits}
    setup = study_setup(model, hw, ov, test_images, calibration_images, accuracy_images)
    config, net, model_name, qmodel = setup.config, setup.net, setup.model_name, setup.qmodel
    x_cal, y_cal, x_test, y_test = setup.x_cal, setup.y_cal, setup.x_test, setup.y_test
    data = (x_test, y_test)
    base_config = load_config(BASELINE_HW, {"numbers.input_bits": bits})

    def run(scheme: Any, label: str, cfg: HardwareConfig = config) -> Result:
        say(f"{bits}-bit inputs: {label} on {len(y_test)} test images")
        res = simulate(net, data, cfg, scheme, batch_size=batch_size, device=device,
                       qmodel=qmodel)
        return res.named(model=model_name)

    say(f"{bits}-bit inputs: exact top-1 on {len(setup.y_all)} test images")
    exact = setup.exact_top1()
    exact_first = exact_predictions(qmodel, setup.x_all)[:test_images]
    base = run("dense", f"baseline: dense on {BASELINE_HW}", base_config)
    dense = run("dense", "dense") if config != base_config else base
    end = run(CompRRAEScheme(), "END alone")
    say(f"calibrating alphas on {len(y_cal)} calibration images, budget {budget_points} points")
    cal = calibrate_comprrae(qmodel, config, x_cal, y_cal, budget_points, "alpha", candidates,
                             batch_size=batch_size, device=device, progress=say)
    say("measuring the remaining-bit means on the calibration images")
    lambdas = measure_remaining_mean(qmodel, config, x_cal, batch_size)
    say(f"calibrating betas on {len(y_cal)} calibration images, budget {budget_points} points")
    cal_beta = calibrate_comprrae(qmodel, config, x_cal, y_cal, budget_points, "beta", betas,
                                  batch_size=batch_size, device=device, progress=say,
                                  remaining_mean=lambdas)
    n_all = len(setup.y_all)
    rows = [_row("dense", dense, dense, base, exact, exact, n_all)]
    end_equal = bool(end.outputs is not None
                     and torch.equal(end.outputs.argmax(dim=1).cpu(), exact_first.cpu()))
    rows.append({**_row(SETTINGS[0], end, dense, base, exact, exact, n_all),
                 "lossless": True, "classes_equal_exact": end_equal})
    for label, calib in ((SETTINGS[1], cal), (SETTINGS[2], cal_beta)):
        scheme = calib.scheme()
        res = run(scheme, label)
        say(f"{bits}-bit inputs: top-1 of {label} on {n_all} test images")
        t1, preds = whole_split_top1(qmodel, config, scheme, setup.x_all, setup.y_all,
                                     batch_size, device)
        same = bool(res.outputs is not None and torch.equal(
            res.outputs.argmax(dim=1).cpu(), preds[:test_images]))
        rows.append({**_row(label, res, dense, base, t1, exact, n_all), "lossless": False,
                     "classes_equal_values_path": same,
                     "in_budget_calibration": calib.flips <= math.floor(
                         budget_points / 100 * calib.images + 1e-9)})
    if slice_bounds:
        cal_slice = calibrate_comprrae(qmodel, config, x_cal, y_cal, budget_points, "beta",
                                       betas, batch_size=batch_size, device=device,
                                       progress=say, bounds="slice", remaining_mean=lambdas)
        rows.append(_row("END, (bit, slice) bounds", run(CompRRAEScheme(bounds="slice"),
                                                         "END, (bit, slice) bounds"), dense,
                         base))
        rows.append(_row("calibrated predictor (beta), (bit, slice) bounds",
                         run(cal_slice.scheme(bounds="slice"), "predictor, slice bounds"),
                         dense, base))
    sweep = [_row(f"uniform alpha {a:g}", run(CompRRAEScheme(alpha=a), f"alpha {a:g}"), dense,
                  base) for a in curve]
    beta_sweep = [_row(f"uniform beta {b:g}",
                       run(CompRRAEScheme(beta=b, remaining_mean=lambdas), f"beta {b:g}"),
                       dense, base) for b in beta_curve]
    profile = []
    if profile_images > 0:
        say(f"profiling where END stops on {min(profile_images, len(y_test))} test images")
        profile = stop_profile(qmodel, config, x_test[:profile_images], device=device)
    return {
        **setup.description(), "input_bits": bits, "exact_top1": exact,
        "outputs_equal_dense_with_end": end_equal,
        "baseline": f"dense on {BASELINE_HW} (ISAAC-class, ADC bits sized to need: "
                    f"{','.join(str(lay.adc_bits) for lay in base.layers)}), {bits}-bit inputs, "
                    "same weights and images",
        "calibration": cal.to_json(), "beta_calibration": cal_beta.to_json(),
        "remaining_mean": lambdas, "rows": uniform_rows(rows), "curve": sweep,
        "beta_curve": beta_sweep,
        "profile": profile,
    }


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The published figures against each setting at each input width, vs the ISAAC-class
    baseline; `primary`: the best in-budget setting (most conversions removed) at the first
    width, the one the README shows."""
    out: list[dict[str, Any]] = []
    for w, width in enumerate(report["widths"]):
        settings = [r for r in width["rows"] if r["run"] in SETTINGS]
        # lossless settings have no calibration budget (None, or no key in older files)
        allowed = [r for r in settings if r.get("in_budget_calibration") is not False]
        best = max(allowed, key=lambda r: r["conversion_reduction"])
        for r in settings:
            scope = test_scope(r["accuracy_images"])
            how = (f"lossless: the integer-quantized network's top-1 on {scope}"
                   if r.get("lossless") else
                   f"lossy: the setting's own values (calibrated on the train split) on {scope}")
            common = {"setting": f"{r['run']}, {width['input_bits']}-bit inputs",
                      "baseline": width["baseline"], "model": width["model"],
                      "test_images": width["test_images"], "top1": r["top1"],
                      "accuracy_images": r["accuracy_images"], "accuracy_how": how}
            rows = [
                headline_row("comprrae", "computation_reduction",
                             r["baseline_conversion_reduction"], **common),
                headline_row("comprrae", "top1_change", r["top1_change_points"], **common),
                headline_row("comprrae", "energy_efficiency", r["baseline_energy_efficiency"],
                             **common),
                headline_row("comprrae", "throughput", r["baseline_speedup"], **common),
            ]
            for h in rows:
                h["primary"] = w == 0 and r is best
                h["input_bits"] = width["input_bits"]
            out += rows
    return out


def _fmt_params(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in values.items() if v is not None) or "none"


def reproduce_markdown(report: dict[str, Any]) -> str:
    """The headline rows, then per input width every run's figures, the calibrated values
    and (if measured) where END stops."""
    lines = [
        f"CompRRAE on {report['model']}, hardware `{report['hardware']}`, energy and time on "
        f"{report['test_images']} simulated test images, top-1 on {report['accuracy_images']} "
        f"({report['test_split']}); parameters calibrated on {report['calibration_split']}, at "
        f"most {report['budget_points']} points of calibration images changing class.", "",
        headline_markdown(report["headline"]), accuracy_note(report["headline"])]
    for width in report["widths"]:
        lines += [
            f"{width['input_bits']}-bit inputs; baseline: {width['baseline']}. Exact network "
            f"top-1 {100 * width['exact_top1']:.2f}%.", "",
            "| run | top-1 % | change (points) | fewer conversions | fewer OU activations | "
            "energy eff. vs baseline | throughput vs baseline | energy eff. vs dense | "
            "throughput vs dense |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in width["rows"] + width["curve"] + width.get("beta_curve", []):
            lines.append(
                f"| {r['run']} | {100 * r['top1']:.2f} | {r['top1_change_points']:+.2f} | "
                f"{100 * r['conversion_reduction']:.1f}% "
                f"| {100 * r['ou_activation_reduction']:.1f}% "
                f"| {_or_nan(r.get('baseline_energy_efficiency')):.2f}x "
                f"| {_or_nan(r.get('baseline_speedup')):.2f}x "
                f"| {r['energy_efficiency']:.2f}x | {r['throughput']:.2f}x |")
        cal = width["calibration"]
        lines += ["", f"Calibrated alphas: {_fmt_params(cal['alphas'])} (calibration: "
                  f"{100 * cal['top1']:.2f}% vs exact {100 * cal['exact_top1']:.2f}%, "
                  f"{cal['flips']} images changed class)."]
        got = width.get("beta_calibration")
        if got is not None:
            lines.append(f"Calibrated betas: {_fmt_params(got['betas'])} (calibration: "
                         f"{100 * got['top1']:.2f}% vs exact {100 * got['exact_top1']:.2f}%, "
                         f"{got['flips']} images changed class).")
        lines.append("")
        if width.get("profile"):
            lines += ["Where early negative detection stops (per-output bounds unless said):",
                      "", profile_markdown(width["profile"])]
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
    marks = {SETTINGS[0]: "s", "END, (bit, slice) bounds": "D", SETTINGS[1]: "P",
             SETTINGS[2]: "*", "calibrated predictor (beta), (bit": "X"}
    for r in report["rows"][1:]:
        marker = next((m for k, m in marks.items() if r["run"].startswith(k)), "o")
        ax.plot([r["top1_change_points"]], [100 * r["conversion_reduction"]], marker,
                ms=11 if marker in "*X" else 7, label=r["run"])
    pub = report["published"]
    ax.plot([pub["top1_change"]["value"]], [100 * pub["computation_reduction"]["value"]], "kx",
            ms=10, label=f"published ({pub['computation_reduction']['text']}, "
                         f"{pub['top1_change']['text']})")
    ax.set_xlabel("top-1 change vs dense (points)")
    ax.set_ylabel("ADC conversions removed (%)")
    ax.set_title(f"CompRRAE trade-off: {report['model']}, {report.get('input_bits', 8)}-bit "
                 "inputs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def _reproduce(args: RunArgs, test_images: int, calibration_images: int,
               accuracy_images: int, budget: float) -> str:
    report = reproduce_comprrae(args.out, args.model, args.hw, dict(args.overrides),
                                test_images, calibration_images, budget,
                                batch_size=args.batch_size, device=args.device,
                                progress=args.progress, accuracy_images=accuracy_images)
    return (f"{reproduce_markdown(report)}\nwrote {args.out}/comprrae_reproduce.json, "
            "comprrae_reproduce.md, comprrae_tradeoff.png")


STUDY = StudySpec(
    name="comprrae",
    help="CompRRAE: END alone, END + calibrated alphas and the calibrated predictor, on 8- and "
         "16-bit inputs, against an ISAAC-class design (isaac, ADCs sized to need), beside "
         "the published figures.",
    run=_reproduce,
    defaults={"model": "vgg16-fmnist"},
    options=(
        test_images_option(TEST_IMAGES),
        calibration_images_option(CALIBRATION_IMAGES, "the alphas and betas are picked on"),
        accuracy_images_option(),
        number("budget", BUDGET, "Top-1 loss allowed, points.", low=0, high=100, unit="points"),
    ),
)
