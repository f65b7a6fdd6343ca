"""Accumulated-deviation study (SRE, Yang et al., ISCA 2019; issue 4 item 4): top-1 of a model
against the number of crossbar rows activated at once, from whole-array activation (the
over-idealized design) down to small OUs, for a few deviation strengths.

Device model (config `device.accumulated_deviation_sigma`, engine.py): every partial sum gets
an additive Gaussian error of standard deviation sigma x (rows with a nonzero input chunk in
the OU activation), in units of one cell level x one input LSB; the ADC then rounds and clips.
Everything else is ideal. Our choice: each OU size gets the ADC resolution that resolves its
partial sums exactly (`lossless_adc`), so the deviation is the only error and sigma 0 is the
integer-quantized network; with the preset's ADC, whole-array activation would also clip.

Images: the first `test_images` of the embedded Fashion-MNIST test file, as in the
other studies, unless `data` is given. One run per (OU rows, sigma, seed); the noise of a run
is seeded by `device.seed`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ..core.config import HardwareConfig, load_config
from ..core.errors import SparsexbarError
from ..core.frontend import QuantizedModel, quantize_model
from ..core.runtime import pyplot
from ..simulate import simulate
from ..training.models import load_model, resolve_model
from ..training.shipped import model_width
from .setup import fmnist_split, model_input_size
from .shipped_models import width_phrase
from .writers import save_png, write_json, write_text

DEFAULT_OU_ROWS = (128, 64, 32, 16, 8, 4)
DEFAULT_SIGMAS = (0.1, 0.2)
FILES = ("deviation_study.json", "deviation_study.md", "deviation_study.png")


def lossless_adc_bits(hw: HardwareConfig, ou_rows: int) -> int:
    """Smallest ADC resolution whose range holds ou_rows x largest level x largest chunk."""
    worst = ou_rows * (2**hw.cell.bits - 1) * (2**hw.dac.bits - 1)
    return max(1, math.ceil(math.log2(worst + 1)))


def deviation_study(out_dir: str | Path | None, model: Any = "default", hw: Any = "isaac",
                    overrides: dict[str, Any] | None = None,
                    ou_rows: Sequence[int] | None = None,
                    sigmas: Sequence[float] = DEFAULT_SIGMAS, test_images: int = 64,
                    seeds: Sequence[int] = (0,), batch_size: int = 100,
                    lossless_adc: bool = True, device: str = "cpu",
                    data: tuple[Tensor, Tensor] | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the sweep; write deviation_study.json, .md and .png under `out_dir` (if given);
    return the report. `ou_rows` defaults to the array height, then 64, 32, 16, 8, 4 (those
    below it); sigma 0 (no noise) is always run once per OU size."""
    config = load_config(hw, overrides)
    rows_list = _ou_rows(config, ou_rows)
    sigma_list = sorted({float(s) for s in sigmas})
    if any(not 0 <= s <= 10 for s in sigma_list) or not sigma_list:
        raise SparsexbarError(f"deviation sigmas must be in 0..10, got {list(sigmas)}")
    if not seeds:
        raise SparsexbarError("the deviation study needs at least one seed")
    if data is None:
        if not 0 < test_images <= 10000:
            raise SparsexbarError(f"--deviation-images must be in 1..10000, got {test_images}")
        # the images fitted to the input size the checkpoint records (the VGG-16s: 32x32,
        # padded), as study_setup does
        loaded = load_model(model)
        x, y = fmnist_split("test", test_images, model_input_size(loaded.meta))
        net, model_name = loaded.net, loaded.name
        dataset = f"fashion-mnist test[0:{test_images}]"
    else:
        x, y = data
        dataset = "given"
        net, model_name = resolve_model(model, int(x.shape[1]), max(int(y.max()) + 1, 10),
                                        int(x.shape[-1]))
    qmodel: QuantizedModel = quantize_model(net, x[:256], config.numbers.weight_bits,
                                            config.numbers.input_bits)
    baseline: dict[str, float] | None = None
    runs: list[dict[str, Any]] = []
    for rows in rows_list:  # a handful of OU sizes
        base = {"ou.rows": rows}
        if lossless_adc:
            base["adc.bits"] = lossless_adc_bits(config, rows)
        for sigma in [0.0, *[s for s in sigma_list if s > 0]]:
            for seed in (seeds if sigma > 0 else seeds[:1]):  # noiseless: one run
                res = simulate(net, (x, y), config, "dense", batch_size=batch_size,
                               device=device, qmodel=qmodel, baseline_accuracy=baseline,
                               overrides={**base, "device.accumulated_deviation_sigma": sigma,
                                          "device.seed": int(seed)})
                if baseline is None:
                    baseline = {"float_top1": res.accuracy.float_top1,
                                "quantized_top1": res.accuracy.quantized_top1}
                runs.append({"ou_rows": rows, "sigma": sigma, "seed": int(seed),
                             "adc_bits": res.hardware["adc"]["bits"],
                             "top1": res.accuracy.top1})
                if progress is not None:
                    progress(f"OU rows {rows:4d}, sigma {sigma:g}, seed {seed}: top-1 "
                             f"{100 * runs[-1]['top1']:.2f}%")
    assert baseline is not None
    report = {"model": model_name, "model_width": model_width(model), "dataset": dataset,
              "test_images": int(len(y)),
              "hardware": config.to_dict(), "array_rows": config.array.rows,
              "lossless_adc": lossless_adc, "sigmas": sigma_list, "seeds": [int(s) for s in seeds],
              "ou_rows": rows_list, **baseline, "runs": runs, "summary": _summary(runs)}
    if out_dir is not None:
        write_files(report, Path(out_dir))
    return report


def _ou_rows(config: HardwareConfig, ou_rows: Sequence[int] | None) -> list[int]:
    """The OU heights to sweep, largest first: the whole array, then the defaults below it."""
    top = config.array.rows
    if ou_rows is None:
        return [top, *[r for r in DEFAULT_OU_ROWS if r < top]]
    chosen = sorted({int(r) for r in ou_rows}, reverse=True)
    bad = [r for r in chosen if not 1 <= r <= top]
    if bad or not chosen:
        raise SparsexbarError(f"OU rows must be in 1..{top} (array.rows), got {list(ou_rows)}")
    return chosen


def _summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (OU rows, sigma): mean, standard deviation, min and max top-1 over the seeds."""
    keys = sorted({(r["ou_rows"], r["sigma"]) for r in runs}, key=lambda k: (-k[0], k[1]))
    out = []
    for rows, sigma in keys:
        vals = [r["top1"] for r in runs if r["ou_rows"] == rows and r["sigma"] == sigma]
        out.append({"ou_rows": rows, "sigma": sigma, "seeds": len(vals),
                    "top1_mean": statistics.fmean(vals),
                    "top1_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "top1_min": min(vals), "top1_max": max(vals)})
    return out


def deviation_markdown(report: dict[str, Any]) -> str:
    """Top-1 (%) per OU height (rows) and sigma (columns); mean +- std over seeds."""
    sigmas = report["sigmas"]
    by = {(s["ou_rows"], s["sigma"]): s for s in report["summary"]}
    seeds = len(report["seeds"])
    width = [report["model_width"]] if "model_width" in report else None
    lines = [f"Accumulated deviation on {report['model']}{width_phrase(width)}, "
             f"{report['test_images']} images "
             f"({report['dataset']}), {seeds} seed(s) per noisy cell; top-1 %, "
             f"{'mean +- std over seeds; ' if seeds > 1 else ''}ADC "
             f"{'lossless for each OU height' if report['lossless_adc'] else 'of the preset'}. "
             f"Quantized model without noise: {100 * report['quantized_top1']:.2f}%.", "",
             "| rows activated at once | ADC bits | no noise | "
             + " | ".join(f"sigma {s:g}" for s in sigmas if s > 0) + " |",
             "| ---: | ---: | ---: | " + " | ".join("---:" for s in sigmas if s > 0) + " |"]
    bits = {r["ou_rows"]: r["adc_bits"] for r in report["runs"]}
    for rows in report["ou_rows"]:
        label = f"{rows} (whole array)" if rows == report["array_rows"] else str(rows)
        cells = [f"{100 * by[(rows, 0.0)]['top1_mean']:.2f}"]
        for s in sigmas:
            if s > 0:
                cell = by[(rows, s)]
                cells.append(f"{100 * cell['top1_mean']:.2f}"
                             + (f" +- {100 * cell['top1_std']:.2f}" if seeds > 1 else ""))
        lines.append(f"| {label} | {bits[rows]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_files(report: dict[str, Any], out: Path) -> list[Path]:
    """deviation_study.json, .md and .png under `out`, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in FILES]
    write_json(paths[0], report)
    write_text(paths[1], deviation_markdown(report))
    _plot(report, paths[2])
    return paths


def _plot(report: dict[str, Any], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6.4, 4.2))
    rows = report["ou_rows"]
    by = {(s["ou_rows"], s["sigma"]): s for s in report["summary"]}
    for sigma in [0.0, *[s for s in report["sigmas"] if s > 0]]:
        mean = [100 * by[(r, sigma)]["top1_mean"] for r in rows]
        std = [100 * by[(r, sigma)]["top1_std"] for r in rows]
        ax.errorbar(rows, mean, yerr=std if len(report["seeds"]) > 1 and sigma else None,
                    marker="o", capsize=3, ls="--" if sigma == 0 else "-",
                    color="gray" if sigma == 0 else None,
                    label="no noise" if sigma == 0 else f"sigma {sigma:g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(rows)
    ax.set_xticklabels([f"{r}\n(whole array)" if r == report["array_rows"] else str(r)
                        for r in rows], fontsize=8)
    ax.set_xlabel("rows activated at once (OU rows)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Accumulated deviation: {report['model']}, {report['test_images']} images",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
