"""CompRRAE studies: per-layer alpha calibration for an accuracy budget (issue 6).

Splits (Fashion-MNIST, the embedded 10k test file): images [0, 5000) are the test split of the
studies, images [5000, 10000) the calibration split, so alphas are never picked on the images
they are judged on. Other data: the caller passes both splits.

Calibration is greedy, layer by layer in execution order over the layers followed by ReLU:
for each, the largest candidate alpha whose top-1 on the calibration images stays within
`budget_points` of the exact network's (early negative detection alone, = the quantized
network), the alphas chosen for earlier layers held; a layer where no candidate fits keeps
early negative detection only (None). Layers without alpha run the exact integer convolution
(their values are those of END, which equals dense bit for bit), so a trial costs one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .config import HardwareConfig
from .engine import exact_accumulate
from .frontend import QuantizedModel, QuantLayer, accuracy
from .schemes.comprrae import CompKernel, CompRRAEScheme

FMNIST_TEST_SPLIT = (0, 5000)
FMNIST_CALIBRATION_SPLIT = (5000, 10000)
DEFAULT_CANDIDATES = (0.4, 0.2, 0.1, 0.05)


@dataclass
class Calibration:
    """Chosen alphas and the measurements behind them (top-1 as fractions)."""

    alphas: dict[str, float | None]
    exact_top1: float
    top1: float
    budget_points: float
    images: int
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"alphas": self.alphas, "exact_top1": self.exact_top1, "top1": self.top1,
                "budget_points": self.budget_points, "images": self.images,
                "trials": self.trials}


def fmnist_split(which: str, images: int | None = None) -> tuple[Tensor, Tensor]:
    """(float images, labels) of the 'test' or 'calibration' half of the embedded split."""
    from .data import fashion_mnist

    a, b = FMNIST_TEST_SPLIT if which == "test" else FMNIST_CALIBRATION_SPLIT
    if images is not None:
        b = min(b, a + images)
    ds = fashion_mnist("test").subset(a, b)
    return ds.to_float(), ds.labels.long()


class _AlphaExecutor:
    """Crossbar layers with an alpha run CompRRAE's termination; the others run exactly."""

    def __init__(self, scheme: CompRRAEScheme, kernels: dict[str, CompKernel]) -> None:
        self.scheme = scheme
        self.kernels = kernels

    def __call__(self, layer: QuantLayer, x_int: Tensor) -> Tensor:
        kernel = self.kernels.get(layer.name)
        if kernel is None or kernel.alpha is None:
            return exact_accumulate(layer, x_int)
        out, _ = self.scheme.terminate(kernel, x_int)
        return out


def top1_with_alphas(qmodel: QuantizedModel, kernels: dict[str, CompKernel],
                     alphas: dict[str, float | None], images: Tensor, labels: Tensor,
                     batch_size: int = 250, scheme: CompRRAEScheme | None = None) -> float:
    """Top-1 (fraction) of the network with the given per-layer alphas."""
    sch = scheme or CompRRAEScheme()
    for name, kernel in kernels.items():
        kernel.alpha = alphas.get(name)
    run = _AlphaExecutor(sch, kernels)
    correct = 0
    for a in range(0, len(labels), batch_size):
        logits = qmodel.run(images[a : a + batch_size], run)
        correct += accuracy(logits, labels[a : a + batch_size].to(logits.device))
    return correct / max(len(labels), 1)


def calibrate_alphas(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor, labels: Tensor,
                     budget_points: float = 0.2,
                     candidates: Sequence[float] = DEFAULT_CANDIDATES,
                     batch_size: int = 250, device: str | torch.device = "cpu",
                     progress: Callable[[str], None] | None = None) -> Calibration:
    """Greedy per-layer alphas within `budget_points` (accuracy points) of the exact top-1."""
    if budget_points < 0:
        raise ValueError(f"budget must be >= 0 points, got {budget_points}")
    dev = torch.device(device)
    qmodel.to(dev)
    images, labels = images.to(dev), labels.to(dev)
    scheme = CompRRAEScheme(estimate="midpoint")
    kernels: dict[str, CompKernel] = {}
    for q in qmodel.layers:
        if q.followed_by_relu:
            kernel = scheme.kernel(scheme.map_layer(q, hw), dev)
            assert isinstance(kernel, CompKernel)
            kernels[q.name] = kernel
    chosen: dict[str, float | None] = dict.fromkeys(kernels)
    exact = top1_with_alphas(qmodel, kernels, chosen, images, labels, batch_size, scheme)
    current = exact
    trials: list[dict[str, Any]] = []
    floor = exact - budget_points / 100 - 1e-12
    for name in kernels:  # layers in execution order
        for alpha in sorted(candidates, reverse=True):
            trial = {**chosen, name: float(alpha)}
            top1 = top1_with_alphas(qmodel, kernels, trial, images, labels, batch_size, scheme)
            trials.append({"layer": name, "alpha": float(alpha), "top1": top1})
            if progress is not None:
                progress(f"{name}: alpha {alpha:g} -> top-1 {100 * top1:.2f}% "
                         f"(exact {100 * exact:.2f}%)")
            if top1 >= floor:
                chosen, current = trial, top1
                break
    return Calibration(chosen, exact, current, budget_points, len(labels), trials)
