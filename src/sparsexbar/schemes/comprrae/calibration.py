"""CompRRAE calibration (issue 6): per-layer values of the lossy estimators for an accuracy
budget, picked on the calibration split (studies.setup: the first images of the Fashion-MNIST
train split; other data: the caller's images).

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.engine import exact_accumulate
from ...core.errors import SparsexbarError
from ...core.frontend import QuantizedModel, QuantLayer
from ...studies.setup import calibration_setup
from ...studies.top1 import predict, top1
from ...studies.writers import write_json
from ..entry import CalibrationSpec, RunArgs
from ..options import choice, count, number, text
from .kernel import CompKernel
from .scheme import BOUNDS, ESTIMATORS, CompRRAEScheme, RemainingMean

DEFAULT_CANDIDATES = (3.2, 1.6, 0.8, 0.4, 0.2, 0.1)
DEFAULT_BETAS = (0.5, 0.25, 0.125, 0.0625, 0.03125)
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
    return top1(qmodel, _Executor(scheme or CompRRAEScheme(), kernels), images, labels,
                batch_size)


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
        return predict(qmodel, run, images, batch_size), run

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


def _calibrate(args: RunArgs, images: int, budget: float, candidates: str | None,
               estimator: str, criterion: str, bounds: str) -> str:
    """`sparsexbar calibrate comprrae`: per-layer alphas or betas into `args.out`."""
    values: list[float] | None = None
    if candidates is not None:
        try:
            values = [float(a) for a in candidates.split(",") if a.strip()]
        except ValueError:
            raise SparsexbarError(f"--candidates must be numbers, got '{candidates}'") from None
        top = 1.0 if estimator == "beta" else float("inf")
        if not values or any(not 0 <= a <= top for a in values):
            raise SparsexbarError(f"--candidates must be numbers >= 0"
                                  f"{' and <= 1 for beta' if estimator == 'beta' else ''}, "
                                  f"got '{candidates}'")
    config, qmodel, x, y = calibration_setup(args.model, args.data, args.hw, args.overrides,
                                             images, args.root)
    cal = calibrate_comprrae(qmodel, config, x, y, budget, estimator, values, criterion,
                             args.batch_size, args.device, progress=args.progress,
                             bounds=bounds)
    write_json(args.out, cal.to_json(), newline=False)
    return (f"{estimator}s: {cal.alphas if estimator == 'alpha' else cal.betas}\n"
            f"top-1 {100 * cal.top1:.2f}% vs exact {100 * cal.exact_top1:.2f}% on "
            f"{cal.images} calibration images ({cal.flips} changed class); wrote {args.out}")


CALIBRATION = CalibrationSpec(
    name="comprrae",
    help="Pick per-layer comprrae alphas or betas for a top-1 budget on a calibration split; "
         "use the file with --scheme comprrae:calibration=FILE.",
    run=_calibrate,
    out="out/comprrae/alphas.json",
    options=(
        count("images", 500, "Calibration images: the split's first N (all of it when it "
              "holds fewer; the output says how many ran).", low=1),
        number("budget", 0.2, "Top-1 loss allowed, points.", low=0, high=100, unit="points"),
        text("candidates", None, "Comma-separated values tried per layer (default alpha: "
             "3.2,1.6,0.8,0.4,0.2,0.1; beta: 0.5,0.25,0.125,0.0625,0.03125)."),
        choice("estimator", ESTIMATORS, "alpha", "alpha (adaptive termination) or beta "
               "(predictive negative detection; measures the remaining-bit means too)."),
        choice("criterion", CRITERIA, "flips", "flips: images whose top-1 class changes vs "
               "the exact network (at most budget points of them); top1: the top-1 drop."),
        choice("bounds", BOUNDS, "output", "comprrae bounds the parameters are chosen with: "
               "output or slice."),
    ),
)
