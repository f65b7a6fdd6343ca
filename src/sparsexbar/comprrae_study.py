"""CompRRAE studies (issue 6): per-layer calibration of the lossy estimators for an accuracy
budget, where early negative detection stops (the profile), and the reproduction table.

Splits (Fashion-MNIST, the embedded 10k test file): images [0, 5000) are the test split of the
studies, images [5000, 10000) the calibration split, so parameters are never picked on the
images they are judged on. Other data: the caller passes both splits.

Calibration (`calibrate_comprrae`) picks, per layer followed by ReLU, one value of a lossy
estimator's parameter: `alpha` (adaptive termination) or `beta` (predictive negative
detection, with the remaining-bit means measured on the calibration images). Criterion
`flips` (default): the calibration images whose top-1 class differs from the exact network's
(END alone = the quantized network) may number at most budget points x images / 100. A flip
costs at most one correct answer, so the calibration top-1 loss stays within the budget with
a margin, and the count is paired (same images, same reference), far less noisy than a
difference of two accuracies. (`top1`: the top-1 drop itself, as the first version did.)

1. Profile: each layer alone, the others exact, every candidate from the mildest on (stops at
   the first over the budget): its flips and the conversions it removes in that layer.
2. Allocation: from all-exact, repeatedly take the (layer, candidate) upgrade with the most
   conversions removed per flip added that keeps the summed flips within the budget.
3. Check: the chosen combination run together; while it flips more than the budget, the last
   upgrade is undone. Layers without a parameter run the exact integer convolution (their
   values are END's, equal to dense bit for bit), so a trial costs one pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .core.config import HardwareConfig
from .core.engine import exact_accumulate
from .core.frontend import QuantizedModel, QuantLayer, accuracy
from .schemes.comprrae import CompKernel, CompRRAEScheme, RemainingMean

FMNIST_TEST_SPLIT = (0, 5000)
FMNIST_CALIBRATION_SPLIT = (5000, 10000)
DEFAULT_CANDIDATES = (3.2, 1.6, 0.8, 0.4, 0.2, 0.1)
DEFAULT_BETAS = (0.5, 0.25, 0.125, 0.0625, 0.03125)
ESTIMATORS = ("alpha", "beta")
CRITERIA = ("flips", "top1")


@dataclass
class Calibration:
    """Chosen parameters and the measurements behind them (top-1 as fractions).

    `alphas` / `betas`: per layer (None: that estimator off); `remaining_mean`: the lambdas
    the betas were chosen with; `flips`: calibration images whose top-1 class the chosen
    combination changes against the exact network."""

    alphas: dict[str, float | None]
    exact_top1: float
    top1: float
    budget_points: float
    images: int
    trials: list[dict[str, Any]] = field(default_factory=list)
    betas: dict[str, float | None] = field(default_factory=dict)
    remaining_mean: dict[str, list[float]] = field(default_factory=dict)
    estimator: str = "alpha"
    criterion: str = "flips"
    flips: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "criterion": self.criterion,
                "alphas": self.alphas, "betas": self.betas,
                "remaining_mean": self.remaining_mean, "exact_top1": self.exact_top1,
                "top1": self.top1, "flips": self.flips, "budget_points": self.budget_points,
                "images": self.images, "trials": self.trials}

    def scheme(self, bounds: str = "output", estimate: str = "midpoint") -> CompRRAEScheme:
        """The comprrae scheme with these parameters."""
        return CompRRAEScheme(alpha=dict(self.alphas), bounds=bounds, estimate=estimate,
                              beta=dict(self.betas) or None,
                              remaining_mean=self.remaining_mean or None)


def fmnist_split(which: str, images: int | None = None) -> tuple[Tensor, Tensor]:
    """(float images, labels) of the 'test' or 'calibration' half of the embedded split."""
    from .training.data import fashion_mnist

    a, b = FMNIST_TEST_SPLIT if which == "test" else FMNIST_CALIBRATION_SPLIT
    if images is not None:
        b = min(b, a + images)
    ds = fashion_mnist("test").subset(a, b)
    return ds.to_float(), ds.labels.long()


@dataclass
class StudySetup:
    """What every published-study reproduction starts from: the hardware, the model and its
    integer quantization (calibrated on the first 256 calibration images), and both halves."""

    config: HardwareConfig
    net: torch.nn.Module
    model_name: str
    qmodel: QuantizedModel
    x_test: Tensor
    y_test: Tensor
    x_cal: Tensor
    y_cal: Tensor

    def description(self) -> dict[str, Any]:
        """The report fields every study shares: model, hardware and both splits."""
        return {
            "model": self.model_name, "hardware": self.config.name,
            "test_images": len(self.y_test),
            "test_split": f"embedded Fashion-MNIST test file, images 0..{len(self.y_test) - 1}",
            "calibration_split": f"images 5000..{5000 + len(self.y_cal) - 1} of the same file",
        }


def study_setup(model: Any, hw: str | HardwareConfig, overrides: dict[str, Any] | None,
                test_images: int, calibration_images: int) -> StudySetup:
    """Load the hardware and model, take both halves of the embedded split, quantize."""
    from .core.config import load_config
    from .core.frontend import quantize_model
    from .simulate import resolve_model

    config = load_config(hw, overrides)
    x_cal, y_cal = fmnist_split("calibration", calibration_images)
    x_test, y_test = fmnist_split("test", test_images)
    net, model_name = resolve_model(model, 1, 10, 28)
    qmodel = quantize_model(net, x_cal[:256], config.numbers.weight_bits,
                            config.numbers.input_bits)
    return StudySetup(config, net, model_name, qmodel, x_test, y_test, x_cal, y_cal)


def measure_remaining_mean(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor,
                           batch_size: int = 250) -> dict[str, list[float]]:
    """lambda_t per layer followed by ReLU: the mean over its (signed) inputs of the bits fed
    after MSB-first cycle t, x mod 2^shift_t, as a fraction of their largest value R_t
    (0 for the last cycle), on `images` run through the exact network."""
    cycles, dac = hw.cycles, hw.dac.bits
    shifts = [(cycles - 1 - t) * dac for t in range(cycles)]
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def record(layer: QuantLayer, x_int: Tensor) -> Tensor:
        if layer.followed_by_relu:
            mag = x_int.abs().to(torch.int64)
            sign = torch.sign(x_int).to(torch.float64)
            low = torch.stack([((mag & (2**s - 1)).to(torch.float64) * sign).sum()
                               for s in shifts])  # input cycles: a handful
            sums[layer.name] = sums.get(layer.name, torch.zeros_like(low)) + low
            counts[layer.name] = counts.get(layer.name, 0) + x_int.numel()
        return exact_accumulate(layer, x_int)

    device = next((q.weight_int.device for q in qmodel.layers), torch.device("cpu"))
    for a in range(0, len(images), batch_size):  # batches of images
        qmodel.run(images[a : a + batch_size].to(device), record)
    out = {}
    for name, total in sums.items():
        mean = (total / max(counts[name], 1)).tolist()
        out[name] = [m / (2**s - 1) if s else 0.0 for m, s in zip(mean, shifts, strict=True)]
    return out


class _Executor:
    """Crossbar layers with a lossy parameter run CompRRAE's termination; the others run
    exactly. Records, per layer, the conversions its termination removed."""

    def __init__(self, scheme: CompRRAEScheme, kernels: dict[str, CompKernel]) -> None:
        self.scheme = scheme
        self.kernels = kernels
        self.removed: dict[str, float] = {}

    def __call__(self, layer: QuantLayer, x_int: Tensor) -> Tensor:
        kernel = self.kernels.get(layer.name)
        if kernel is None or (kernel.alpha is None and kernel.beta is None):
            return exact_accumulate(layer, x_int)
        out, executed = self.scheme.terminate(kernel, x_int)
        hw = kernel.mapped.hw
        per_step = (layer.passes * kernel.row_groups_total * hw.polarities * hw.slices
                    // kernel.steps_per_cycle)
        skipped = float((kernel.steps - executed.to(torch.float64)).sum()) * per_step
        self.removed[layer.name] = self.removed.get(layer.name, 0.0) + skipped
        return out


_AlphaExecutor = _Executor  # the first version's name


def _predict(qmodel: QuantizedModel, run: _Executor, images: Tensor,
             batch_size: int) -> Tensor:
    """Top-1 class of every image."""
    preds = [qmodel.run(images[a : a + batch_size], run).argmax(dim=1)
             for a in range(0, len(images), batch_size)]  # batches of images
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def _set(kernels: dict[str, CompKernel], alphas: dict[str, float | None],
         betas: dict[str, float | None]) -> None:
    for name, kernel in kernels.items():
        kernel.alpha = alphas.get(name)
        kernel.beta = betas.get(name)


def top1_with_alphas(qmodel: QuantizedModel, kernels: dict[str, CompKernel],
                     alphas: dict[str, float | None], images: Tensor, labels: Tensor,
                     batch_size: int = 250, scheme: CompRRAEScheme | None = None,
                     betas: dict[str, float | None] | None = None) -> float:
    """Top-1 (fraction) of the network with the given per-layer alphas (and betas)."""
    _set(kernels, alphas, betas or {})
    run = _Executor(scheme or CompRRAEScheme(), kernels)
    correct = 0
    for a in range(0, len(labels), batch_size):
        logits = qmodel.run(images[a : a + batch_size], run)
        correct += accuracy(logits, labels[a : a + batch_size].to(logits.device))
    return correct / max(len(labels), 1)


def calibrate_comprrae(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor,
                       labels: Tensor, budget_points: float = 0.2, estimator: str = "alpha",
                       candidates: Sequence[float] | None = None, criterion: str = "flips",
                       batch_size: int = 250, device: str | torch.device = "cpu",
                       progress: Callable[[str], None] | None = None,
                       bounds: str = "output",
                       fixed_betas: dict[str, float | None] | None = None,
                       remaining_mean: RemainingMean = None) -> Calibration:
    """Per-layer alphas or betas within `budget_points` on the calibration images (module
    docstring). `fixed_betas` (with their `remaining_mean`) stay on while alphas are chosen;
    betas use `remaining_mean` or measure it on `images`."""
    if budget_points < 0:
        raise ValueError(f"budget must be >= 0 points, got {budget_points}")
    if estimator not in ESTIMATORS or criterion not in CRITERIA:
        raise ValueError(f"estimator {estimator!r} / criterion {criterion!r} unknown")
    say = progress or (lambda _msg: None)
    dev = torch.device(device)
    qmodel.to(dev)
    images, labels = images.to(dev), labels.to(dev)
    n = len(labels)
    if estimator == "beta" and remaining_mean is None:
        remaining_mean = measure_remaining_mean(qmodel, hw, images, batch_size)
    lambdas = {k: list(v) for k, v in (remaining_mean or {}).items()}
    values = sorted(candidates if candidates is not None
                    else DEFAULT_CANDIDATES if estimator == "alpha" else DEFAULT_BETAS,
                    reverse=estimator == "beta")  # mildest first
    scheme = CompRRAEScheme(estimate="midpoint", bounds=bounds, remaining_mean=lambdas or None)
    kernels: dict[str, CompKernel] = {}
    for q in qmodel.layers:
        if q.followed_by_relu:
            kernel = scheme.kernel(scheme.map_layer(q, hw), dev)
            assert isinstance(kernel, CompKernel)
            kernels[q.name] = kernel
    base_betas = dict(fixed_betas or {})

    def trial(params: dict[str, float | None]) -> tuple[Tensor, _Executor]:
        alphas = params if estimator == "alpha" else {}
        betas = {**base_betas, **params} if estimator == "beta" else base_betas
        _set(kernels, alphas, betas)
        run = _Executor(scheme, kernels)
        return _predict(qmodel, run, images, batch_size), run

    reference, base_run = trial({})
    exact_correct = int((reference == labels).sum())
    allowed = math.floor(budget_points / 100 * n + 1e-9)

    def cost(preds: Tensor) -> int:
        if criterion == "flips":
            return int((preds != reference).sum())
        return max(0, exact_correct - int((preds == labels).sum()))

    trials: list[dict[str, Any]] = []
    options: dict[str, list[tuple[float, int, float]]] = {}  # layer: (value, cost, removed)
    for name in kernels:  # 1. each layer alone, mildest candidate first
        base_removed = base_run.removed.get(name, 0.0)
        options[name] = []
        for value in values:
            preds, run = trial({name: float(value)})
            c = cost(preds)
            removed = run.removed.get(name, 0.0) - base_removed
            trials.append({"layer": name, estimator: float(value), "cost": c,
                           "top1": float((preds == labels).sum()) / max(n, 1),
                           "removed_conversions": removed})
            say(f"{name}: {estimator} {value:g} -> {criterion} {c} (allowed {allowed}), "
                f"{removed:.3g} conversions removed")
            if c > allowed:
                break  # more aggressive candidates cost more
            options[name].append((float(value), c, removed))
    chosen: dict[str, float | None] = dict.fromkeys(kernels)
    spent: dict[str, tuple[int, float]] = {name: (0, 0.0) for name in kernels}
    history: list[tuple[str, float | None]] = []
    while True:  # 2. best removed-per-cost upgrade within the budget
        total = sum(c for c, _ in spent.values())
        best: tuple[float, str, tuple[float, int, float]] | None = None
        for name, opts in options.items():
            c0, r0 = spent[name]
            for opt in opts:
                value, c, removed = opt
                if removed <= r0 or total - c0 + c > allowed:
                    continue
                score = (removed - r0) / max(c - c0, 0.5)
                if best is None or score > best[0]:
                    best = (score, name, opt)
        if best is None:
            break
        _, name, (value, c, removed) = best
        history.append((name, chosen[name]))
        chosen[name] = value
        spent[name] = (c, removed)
    while True:  # 3. the combination together; undo the last upgrades while over budget
        preds, _ = trial({k: v for k, v in chosen.items() if v is not None})
        combined = cost(preds)
        trials.append({"layer": "all", estimator: dict(chosen), "cost": combined,
                       "top1": float((preds == labels).sum()) / max(n, 1)})
        say(f"combination {chosen}: {criterion} {combined} (allowed {allowed})")
        if combined <= allowed or not history:
            break
        name, previous = history.pop()
        chosen[name] = previous
    top1 = float((preds == labels).sum()) / max(n, 1)
    flips = int((preds != reference).sum())
    betas = {**base_betas, **chosen} if estimator == "beta" else base_betas
    alphas = chosen if estimator == "alpha" else dict.fromkeys(kernels)
    return Calibration(alphas, exact_correct / max(n, 1), top1, budget_points, n, trials,
                       betas=betas, remaining_mean=lambdas if betas else {},
                       estimator=estimator, criterion=criterion, flips=flips)


def calibrate_alphas(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor, labels: Tensor,
                     budget_points: float = 0.2,
                     candidates: Sequence[float] = DEFAULT_CANDIDATES,
                     batch_size: int = 250, device: str | torch.device = "cpu",
                     progress: Callable[[str], None] | None = None,
                     criterion: str = "flips") -> Calibration:
    """Per-layer alphas within `budget_points` (`calibrate_comprrae` with alpha)."""
    return calibrate_comprrae(qmodel, hw, images, labels, budget_points, "alpha", candidates,
                              criterion, batch_size, device, progress)


# ---- where early negative detection stops ----------------------------------------------------
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
DEFAULT_BETA_CURVE = (0.5, 0.25, 0.125, 0.0625, 0.03125)


def _row(label: str, res: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    vs = res["vs_dense"]
    params = res["scheme"]["parameters"]
    return {
        "run": label,
        "alpha": params.get("alpha"),
        "beta": params.get("beta"),
        "bounds": params.get("bounds"),
        "top1": res["accuracy"]["top1"],
        "top1_change_points": 100 * (res["accuracy"]["top1"] - dense["accuracy"]["top1"]),
        "conversion_reduction": vs["computation_reduction"]["adc_conversions"],
        "ou_activation_reduction": vs["computation_reduction"]["ou_activations"],
        "energy_efficiency": vs["energy_efficiency"],
        "throughput": vs["speedup"],
        "throughput_pipelined": res["totals"]["images_per_s_pipelined"]
        / dense["totals"]["images_per_s_pipelined"],
        "area_ratio": res["totals"]["area_um2"]["total"] / dense["totals"]["area_um2"]["total"],
    }


def reproduce_comprrae(out_dir: str | Path, model: Any = "default",
                       hw: str | HardwareConfig = "isaac",
                       overrides: dict[str, Any] | None = None, test_images: int = 1000,
                       calibration_images: int = 1000, budget_points: float = 0.2,
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
    from .core.io import atomic_write_text
    from .simulate import simulate

    say = progress or (lambda _msg: None)
    setup = study_setup(model, hw, overrides, test_images, calibration_images)
    config, net, model_name, qmodel = setup.config, setup.net, setup.model_name, setup.qmodel
    x_cal, y_cal, x_test, y_test = setup.x_cal, setup.y_cal, setup.x_test, setup.y_test
    out = Path(out_dir)
    data = (x_test, y_test)

    def run(scheme: Any, label: str) -> dict[str, Any]:
        say(f"running {label} on {len(y_test)} test images")
        res = simulate(net, data, config, scheme, batch_size=batch_size, device=device,
                       qmodel=qmodel).to_json()
        res["model"] = model_name
        return res

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
        "outputs_equal_dense_with_end": end["accuracy"]["top1"] == dense["accuracy"]["top1"],
        "calibration": cal.to_json(), "beta_calibration": cal_beta.to_json(),
        "beta_calibration_slice": cal_slice.to_json(),
        "remaining_mean": lambdas, "rows": rows, "curve": sweep, "beta_curve": beta_sweep,
        "profile": profile, "published": PUBLISHED,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comprrae_reproduce.json", json.dumps(report, indent=2))
    atomic_write_text(out / "comprrae_reproduce.md", reproduce_markdown(report))
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
