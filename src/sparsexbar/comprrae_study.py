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

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import HardwareConfig
from .engine import exact_accumulate
from .frontend import QuantizedModel, QuantLayer, accuracy
from .schemes.comprrae import CompKernel, CompRRAEScheme

FMNIST_TEST_SPLIT = (0, 5000)
FMNIST_CALIBRATION_SPLIT = (5000, 10000)
DEFAULT_CANDIDATES = (3.2, 1.6, 0.8, 0.4, 0.2, 0.1)


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
DEFAULT_CURVE = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)


def _row(label: str, res: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    vs = res["vs_dense"]
    return {
        "run": label,
        "alpha": res["scheme"]["parameters"].get("alpha"),
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
                       calibration_images: int = 500, budget_points: float = 0.2,
                       candidates: Sequence[float] = DEFAULT_CANDIDATES,
                       curve: Sequence[float] = DEFAULT_CURVE, batch_size: int = 250,
                       device: str = "cpu",
                       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Dense vs END alone vs calibrated alphas vs a uniform-alpha sweep, on the Fashion-MNIST
    test half; alphas picked on the calibration half. Writes JSON, markdown and a PNG plot."""
    from .config import load_config
    from .frontend import quantize_model
    from .io import atomic_write_text
    from .simulate import resolve_model, simulate

    say = progress or (lambda _msg: None)
    config = load_config(hw, overrides)
    out = Path(out_dir)
    x_cal, y_cal = fmnist_split("calibration", calibration_images)
    x_test, y_test = fmnist_split("test", test_images)
    net, model_name = resolve_model(model, 1, 10, 28)
    qmodel = quantize_model(net, x_cal[:256], config.numbers.weight_bits,
                            config.numbers.input_bits)
    data = (x_test, y_test)

    def run(scheme: Any, label: str) -> dict[str, Any]:
        say(f"running {label} on {len(y_test)} test images")
        res = simulate(net, data, config, scheme, batch_size=batch_size, device=device,
                       qmodel=qmodel).to_json()
        res["model"] = model_name
        return res

    dense = run("dense", "dense")
    end = run(CompRRAEScheme(), "comprrae, early negative detection only")
    say(f"calibrating alphas on {len(y_cal)} calibration images, budget {budget_points} points")
    cal = calibrate_alphas(qmodel, config, x_cal, y_cal, budget_points, candidates, batch_size,
                           device, progress=say)
    adaptive = run(CompRRAEScheme(alpha=cal.alphas), "comprrae, calibrated alphas")
    rows = [_row("dense", dense, dense), _row("END only (exact)", end, dense),
            _row(f"END + calibrated alpha ({budget_points} pt budget)", adaptive, dense)]
    sweep = [_row(f"uniform alpha {a:g}", run(CompRRAEScheme(alpha=a), f"alpha {a:g}"), dense)
             for a in curve]
    report = {
        "model": model_name, "hardware": config.name, "test_images": len(y_test),
        "test_split": f"embedded Fashion-MNIST test file, images 0..{len(y_test) - 1}",
        "calibration_split": f"images 5000..{5000 + len(y_cal) - 1} of the same file",
        "outputs_equal_dense_with_end": end["accuracy"]["top1"] == dense["accuracy"]["top1"],
        "calibration": cal.to_json(), "rows": rows, "curve": sweep, "published": PUBLISHED,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comprrae_reproduce.json", json.dumps(report, indent=2))
    atomic_write_text(out / "comprrae_reproduce.md", reproduce_markdown(report))
    _plot(report, out / "comprrae_tradeoff.png")
    return report


def reproduce_markdown(report: dict[str, Any]) -> str:
    """The reproduction table, beside the published figures."""
    lines = [
        f"CompRRAE on {report['model']}, hardware `{report['hardware']}`, "
        f"{report['test_images']} test images ({report['test_split']}); alphas calibrated on "
        f"{report['calibration']['images']} images ({report['calibration_split']}).",
        "",
        "| run | top-1 % | change (points) | fewer conversions | fewer OU activations | "
        "energy eff. | throughput |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"] + report["curve"]:
        lines.append(
            f"| {r['run']} | {100 * r['top1']:.2f} | {r['top1_change_points']:+.2f} | "
            f"{100 * r['conversion_reduction']:.1f}% | {100 * r['ou_activation_reduction']:.1f}% "
            f"| {r['energy_efficiency']:.2f}x | {r['throughput']:.2f}x |")
    p = report["published"]
    lines.append(f"| published (CompRRAE) | | > {p['top1_change_points']:+.1f} | "
                 f"~{100 * p['computation_reduction']:.0f}% | | > {p['energy_efficiency']}x | "
                 f"> {p['throughput']}x |")
    lines += ["", f"Calibrated alphas: `{report['calibration']['alphas']}`", ""]
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    curve = report["curve"]
    ax.plot([r["top1_change_points"] for r in curve],
            [100 * r["conversion_reduction"] for r in curve], "o-", label="uniform alpha")
    for r in curve:
        ax.annotate(f"{r['alpha']:g}", (r["top1_change_points"], 100 * r["conversion_reduction"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    end, cal = report["rows"][1], report["rows"][2]
    ax.plot([end["top1_change_points"]], [100 * end["conversion_reduction"]], "s",
            label="END only (exact)")
    ax.plot([cal["top1_change_points"]], [100 * cal["conversion_reduction"]], "*", ms=12,
            label="calibrated per-layer alpha")
    pub = report["published"]
    ax.plot([pub["top1_change_points"]], [100 * pub["computation_reduction"]], "kx", ms=10,
            label="published (~70%, < 0.2 pt)")
    ax.set_xlabel("top-1 change vs dense (points)")
    ax.set_ylabel("ADC conversions removed (%)")
    ax.set_title(f"CompRRAE trade-off: {report['model']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
