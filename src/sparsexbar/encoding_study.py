"""Encoding studies (issue 7): per-layer ADC resolution and dynamic precision calibrated for an
accuracy budget, and `sparsexbar reproduce encoding`.

Splits (Fashion-MNIST, the embedded 10k test file, as in `comprrae_study`): images [0, 5000)
are the test split, images [5000, 10000) the calibration split; bits and precision are never
picked on the images they are judged on.

ADC calibration is greedy, layer by layer in execution order: for each layer, from its
lossless resolution downwards, the smallest bits whose top-1 on the calibration images stays
within `budget_points` of the reference (the exact integer network unless given), the bits
chosen for earlier layers held; the first resolution that misses the budget ends the layer's
search. Each trial runs the network bit-accurately: the trial layer converts its (encoded)
partial sums at the trial resolution, the layers already chosen return their cached
accumulators, the later ones run at their lossless resolution (exact). Every trial records how
many conversions clipped: the partial sums the calibration split actually produces decide.

Dynamic precision calibration: the smallest number of chunks P (the same in every layer) whose
top-1 on the calibration images stays within its budget of the reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .core.config import HardwareConfig
from .core.engine import EngineOptions
from .core.frontend import QuantizedModel, QuantLayer, accuracy
from .schemes.encoding import EncodingKernel, EncodingMappedLayer, EncodingScheme

Progress = Callable[[str], None]


@dataclass
class AdcCalibration:
    """Chosen per-layer ADC bits and the measurements behind them (top-1 as fractions)."""

    adc_bits: dict[str, int]
    lossless_bits: dict[str, int]
    reference_top1: float
    lossless_top1: float
    top1: float
    budget_points: float
    images: int
    scheme: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"adc_bits": self.adc_bits, "lossless_bits": self.lossless_bits,
                "reference_top1": self.reference_top1, "lossless_top1": self.lossless_top1,
                "top1": self.top1, "budget_points": self.budget_points, "images": self.images,
                "scheme": self.scheme, "trials": self.trials}


class _Executor:
    """Runs each crossbar layer through its encoding kernel (values only); the layers in
    `frozen` keep their accumulator per batch once computed."""

    def __init__(self, scheme: EncodingScheme, kernels: dict[str, EncodingKernel],
                 options: EngineOptions) -> None:
        self.scheme = scheme
        self.kernels = kernels
        self.options = options
        self.frozen: set[str] = set()
        self.cache: dict[tuple[str, int], Tensor] = {}
        self.batch = 0
        self.clipped: dict[str, int] = {}  # per layer, since the last `_top1`

    def __call__(self, layer: QuantLayer, x_int: Tensor) -> Tensor:
        key = (layer.name, self.batch)
        if key in self.cache:
            return self.cache[key].to(torch.float64)
        kernel = self.kernels[layer.name]
        count = not kernel.enc_mapped.exact_linear()  # clipped conversions of lossy layers
        acc, tally = self.scheme.execute(kernel, x_int, self.options, count=count,
                                         count_clipped=count)
        if tally is not None:
            self.clipped[layer.name] = self.clipped.get(layer.name, 0) + tally.clipped
        if layer.name in self.frozen:
            small = bool(acc.abs().max() < 2**31) if acc.numel() else True
            self.cache[key] = acc.to(torch.int32) if small else acc.clone()
        return acc


def _top1(qmodel: QuantizedModel, run: _Executor, images: Tensor, labels: Tensor,
          batch_size: int) -> float:
    correct = 0
    run.clipped = {}
    for j, a in enumerate(range(0, len(labels), batch_size)):
        run.batch = j
        logits = qmodel.run(images[a : a + batch_size], run)
        correct += accuracy(logits, labels[a : a + batch_size].to(logits.device))
    return correct / max(len(labels), 1)


def reference_top1(qmodel: QuantizedModel, images: Tensor, labels: Tensor,
                   batch_size: int = 250) -> float:
    """Top-1 (fraction) of the exact integer-quantized network."""
    correct = 0
    for a in range(0, len(labels), batch_size):
        logits = qmodel.run_reference(images[a : a + batch_size])
        correct += accuracy(logits, labels[a : a + batch_size].to(logits.device))
    return correct / max(len(labels), 1)


def _mapped(scheme: EncodingScheme, qmodel: QuantizedModel,
            hw: HardwareConfig) -> dict[str, EncodingMappedLayer]:
    out: dict[str, EncodingMappedLayer] = {}
    for q in qmodel.layers:
        m = scheme.map_layer(q, hw)
        assert isinstance(m, EncodingMappedLayer)
        out[q.name] = m
    return out


def with_bits(mapped: EncodingMappedLayer, bits: int) -> EncodingMappedLayer:
    """The same mapped layer converting at `bits`."""
    return replace(mapped, layer_bits=bits, _cache={})


def calibrate_adc_bits(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor,
                       labels: Tensor, scheme: EncodingScheme | None = None,
                       budget_points: float = 0.5, min_bits: int = 3,
                       reference: float | None = None, batch_size: int = 250,
                       device: str | torch.device = "cpu",
                       options: EngineOptions | None = None,
                       progress: Progress | None = None) -> AdcCalibration:
    """Greedy per-layer ADC bits within `budget_points` (accuracy points) of `reference`
    (default: the exact integer network's top-1 on these images)."""
    if budget_points < 0:
        raise ValueError(f"budget must be >= 0 points, got {budget_points}")
    say = progress or (lambda _msg: None)
    dev = torch.device(device)
    qmodel.to(dev)
    images, labels = images.to(dev), labels.to(dev)
    base = (scheme or EncodingScheme()).variant(adc="lossless")
    opts = options or EngineOptions()
    mapped = _mapped(base, qmodel, hw)
    lossless = {name: m.layer_bits for name, m in mapped.items()}
    kernel_cache: dict[tuple[str, int], EncodingKernel] = {}

    def kernel(name: str, bits: int) -> EncodingKernel:
        if (name, bits) not in kernel_cache:
            k = base.kernel(with_bits(mapped[name], bits), dev)
            assert isinstance(k, EncodingKernel)
            kernel_cache[(name, bits)] = k
        return kernel_cache[(name, bits)]

    ref = reference_top1(qmodel, images, labels, batch_size) if reference is None else reference
    chosen = dict(lossless)
    run = _Executor(base, {n: kernel(n, b) for n, b in chosen.items()}, opts)
    start = _top1(qmodel, run, images, labels, batch_size)
    current = start
    floor = ref - budget_points / 100 - 1e-12
    say(f"reference top-1 {100 * ref:.2f}%, lossless ADC {100 * start:.2f}% on {len(labels)} "
        f"calibration images; budget {budget_points} points")
    trials: list[dict[str, Any]] = []
    for name in mapped:  # layers in execution order
        for bits in range(lossless[name] - 1, min_bits - 1, -1):
            run.kernels[name] = kernel(name, bits)
            top1 = _top1(qmodel, run, images, labels, batch_size)
            clipped = run.clipped.get(name, 0)
            trials.append({"layer": name, "bits": bits, "top1": top1,
                           "clipped_conversions": clipped})
            say(f"{name}: {bits}-bit ADC -> top-1 {100 * top1:.2f}% "
                f"({clipped} conversions clipped)")
            if top1 < floor:
                break
            chosen[name], current = bits, top1
        run.kernels[name] = kernel(name, chosen[name])
        run.frozen.add(name)
    return AdcCalibration(chosen, lossless, ref, start, current, budget_points, len(labels),
                          base.variant(adc="calibrated", adc_bits=chosen).parameters(), trials)


def calibrate_precision(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor,
                        labels: Tensor, scheme: EncodingScheme | None = None,
                        budget_points: float = 0.25, reference: float | None = None,
                        batch_size: int = 250, device: str | torch.device = "cpu",
                        options: EngineOptions | None = None,
                        progress: Progress | None = None) -> tuple[dict[str, int | None],
                                                                   float,
                                                                   list[dict[str, Any]]]:
    """Greedy per-layer dynamic precision (chunks) within `budget_points` of `reference`,
    lossless ADC, layers in execution order, from cycles-1 downwards until a precision misses
    the budget (None: the layer keeps every chunk). Returns (precision per layer, top-1 on
    these images with it, trials)."""
    say = progress or (lambda _msg: None)
    dev = torch.device(device)
    qmodel.to(dev)
    images, labels = images.to(dev), labels.to(dev)
    opts = options or EngineOptions()
    base = (scheme or EncodingScheme()).variant(adc="lossless", precision=None)
    ref = reference_top1(qmodel, images, labels, batch_size) if reference is None else reference
    floor = ref - budget_points / 100 - 1e-12
    kernels: dict[str, EncodingKernel] = {}
    for name, m in _mapped(base, qmodel, hw).items():
        k = base.kernel(m, dev)
        assert isinstance(k, EncodingKernel)
        kernels[name] = k
    run = _Executor(base, kernels, opts)
    chosen: dict[str, int | None] = dict.fromkeys(kernels)
    current = _top1(qmodel, run, images, labels, batch_size)
    trials: list[dict[str, Any]] = []
    for name, kernel in kernels.items():  # layers in execution order
        for p in range(hw.cycles - 1, 0, -1):
            kernel.precision = p
            top1 = _top1(qmodel, run, images, labels, batch_size)
            trials.append({"layer": name, "precision": p, "top1": top1})
            say(f"{name}: dynamic precision {p} of {hw.cycles} chunks -> top-1 "
                f"{100 * top1:.2f}% (reference {100 * ref:.2f}%)")
            if top1 < floor:
                break
            chosen[name], current = p, top1
        kernel.precision = chosen[name]
        run.frozen.add(name)
    return chosen, current, trials


# ---- reproduction ----------------------------------------------------------------------------
PUBLISHED = {
    "throughput": (2.0, 4.0),
    "energy_efficiency": (2.0, 4.0),
    "area_efficiency": (2.0, 4.0),
    "source": "Chen et al., ASP-DAC 2018: throughput, energy efficiency and area efficiency "
              "2x-4x better than state-of-the-art RRAM accelerators (ISAAC-like baselines)",
}


def _row(label: str, technique: str, res: dict[str, Any], dense: dict[str, Any],
         outputs_equal: bool, lossless: bool) -> dict[str, Any]:
    vs = res["vs_dense"]
    tot, dtot = res["totals"], res["dense_totals"]
    area_ratio = dtot["area_um2"]["total"] / tot["area_um2"]["total"]
    ev, dev = tot["events"], dtot["events"]
    return {
        "run": label,
        "technique": technique,
        "lossless": lossless,
        "outputs_equal_dense": outputs_equal,
        "top1": res["accuracy"]["top1"],
        "top1_change_points": 100 * (res["accuracy"]["top1"] - dense["accuracy"]["top1"]),
        "adc_bits": [lay["adc_bits"] for lay in res["layers"]],
        "throughput": vs["speedup"],
        "energy_efficiency": vs["energy_efficiency"],
        # Throughput per unit of total area (the published metric), relative to dense.
        "area_efficiency": vs["speedup"] * area_ratio,
        "area_ratio": area_ratio,
        "adc_energy_ratio": dtot["energy_pj"]["adc"] / max(tot["energy_pj"]["adc"], 1e-30),
        "conversion_reduction": vs["computation_reduction"]["adc_conversions"],
        "cycles_saved": 1 - tot["cycles"] / dtot["cycles"],
        "partial_products": ev["adc_conversions"],
        "dense_partial_products": dev["adc_conversions"],
        "lut_bits_area_um2": tot["area_um2"]["lut"],
        "comparisons": ev["comparisons"],
        "extra_digital_ops": ev["digital_ops"] - dev["digital_ops"],
    }


def reproduce_encoding(out_dir: str | Path, model: Any = "default",
                       hw: str | HardwareConfig = "isaac",
                       overrides: dict[str, Any] | None = None, test_images: int = 500,
                       calibration_images: int = 200, budget_points: float = 0.5,
                       sweep: tuple[int, ...] = (4, 5, 6), batch_size: int = 250,
                       device: str = "cpu", progress: Progress | None = None) -> dict[str, Any]:
    """Every technique alone and combined vs `dense` on the Fashion-MNIST test half; ADC bits
    and dynamic precision calibrated on the calibration half (precision within half the
    budget, then ADC bits within the whole budget, both against the exact network), plus a
    sweep of uniform dynamic precisions. Writes JSON, markdown and a plot under `out_dir`."""
    from .comprrae_study import study_setup
    from .core.io import atomic_write_text
    from .simulate import simulate

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
    dense_res = simulate(net, data, config, "dense", batch_size=batch_size, device=device,
                         qmodel=qmodel)
    dense = dense_res.to_json()
    dense["model"] = model_name
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
                       qmodel=qmodel, baseline_accuracy=dense["accuracy"])
        assert res.outputs is not None and dense_res.outputs is not None
        equal = bool(torch.equal(res.outputs, dense_res.outputs))
        rows.append(_row(label, technique, res.to_json(), dense, equal, scheme.lossless))
    report = {
        **setup.description(),
        "calibration_images": len(y_cal), "budget_points": budget_points,
        "reference_top1_calibration": ref_cal,
        "precision_calibration": {"precision": precision, "top1": p_top1,
                                  "budget_points": budget_points / 2, "trials": p_trials},
        "adc_calibration": cal_adc.to_json(), "combined_calibration": cal_comb.to_json(),
        "dense_top1": dense["accuracy"]["top1"], "rows": rows, "published": PUBLISHED,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "encoding_reproduce.json", json.dumps(report, indent=2))
    atomic_write_text(out / "encoding_reproduce.md", reproduce_markdown(report))
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"][1:]
    metrics = (("throughput", "throughput"), ("energy_efficiency", "energy eff."),
               ("area_efficiency", "area eff."))
    fig, ax = plt.subplots(figsize=(9, 4.5))
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_scheme(spec: str) -> EncodingScheme:
    """An EncodingScheme from `encoding` or `encoding:key=value:...` (CLI)."""
    from .schemes import get_scheme

    sch = get_scheme(spec)
    if not isinstance(sch, EncodingScheme):
        from .core.errors import SparsexbarError

        raise SparsexbarError(f"--scheme must be an encoding scheme spec, got '{spec}'")
    return sch


__all__ = ["AdcCalibration", "calibrate_adc_bits", "calibrate_precision",
           "reproduce_encoding", "reproduce_markdown", "with_bits"]
