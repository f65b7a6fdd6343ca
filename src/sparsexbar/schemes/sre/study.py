"""`sparsexbar reproduce sre`: accuracy, speedup and energy saving of SRE's weight-only,
activation-only and joint modes against `dense`, at several OU-structured sparsities, beside
the published figures (Yang et al., ISCA 2019).

Splits (Fashion-MNIST, embedded 10k test file, studies.setup): images [0, 5000) are
judged, images [5000, 10000) fine-tune the pruned model (the train split is not shipped).
Speedup = dense cycles / sre cycles (busiest array, DESIGN.md 2.5); energy saving =
1 - sre energy / dense energy (all components, leakage included), one run each.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ...core.config import load_config
from ...core.frontend import quantize_model
from ...simulate import simulate
from ...studies.deviation import deviation_markdown, deviation_study
from ...studies.setup import fmnist_split
from ...studies.writers import write_json, write_text
from ...training.data import ImageDataset
from ...training.models import resolve_model
from ...training.prune import prune_model
from ..entry import RunArgs, StudySpec
from ..options import count, switch
from .scheme import SreScheme

TEST_IMAGES = 1000  # the study's defaults, here only (the CLI's come from STUDY)
DEVIATION_IMAGES = 64
PUBLISHED = {"speedup_max": 42.3, "speedup_avg": 13.1, "energy_saving_max": 0.954,
             "energy_saving_avg": 0.853}
MODES = ("weight", "activation", "joint")


def reproduce_sre(out_dir: str | Path, model: Any = "default", hw: Any = "isaac",
                  overrides: dict[str, Any] | None = None,
                  sparsities: Sequence[float] = (0.0, 0.5, 0.7, 0.9),
                  test_images: int = TEST_IMAGES,
                  tune_images: int = 2000, epochs: int = 1, lr: float = 0.01,
                  granularity: str = "bit", batch_size: int = 250,
                  progress: Callable[[str], None] | None = None, deviation: bool = True,
                  deviation_images: int = DEVIATION_IMAGES,
                  extra_schemes: Sequence[tuple[str, Any]] = (),
                  device: str = "cpu") -> dict[str, Any]:
    """Run the study; write sre_reproduce.json and .md under `out_dir`; return the report.
    `deviation`: also run the accumulated-deviation study (studies.deviation) on the unpruned
    model with the first `deviation_images` (at most `test_images`) test images and write its
    table and plot. `extra_schemes`: (label, scheme) pairs run beside the three modes on
    every pruned model (their rows carry the label as mode)."""
    config = load_config(hw, overrides)
    x_test, y_test = fmnist_split("test", test_images)
    x_tune, y_tune = fmnist_split("calibration", tune_images)
    tune_ds = ImageDataset((x_tune * 255).round().to(torch.uint8), y_tune,
                           [str(i) for i in range(10)], "fashion-mnist")
    base, model_name = resolve_model(model)
    rows: list[dict[str, Any]] = []
    for sparsity in sparsities:  # a few
        net = copy.deepcopy(base)
        if sparsity > 0:
            prune_model(net, tune_ds, config, sparsity, "ou-structured", steps=2,
                        epochs=epochs, lr=lr)
        net.eval()
        qmodel = quantize_model(net, x_test[:256], config.numbers.weight_bits,
                                config.numbers.input_bits)
        dense = simulate(net, (x_test, y_test), config, "dense", batch_size=batch_size,
                         device=device, qmodel=qmodel)
        runs = [*((m, SreScheme(m, granularity)) for m in MODES), *extra_schemes]
        for mode, scheme in runs:
            res = simulate(net, (x_test, y_test), config, scheme, batch_size=batch_size,
                           device=device, qmodel=qmodel)
            energy = res.totals.energy_pj["total"]
            dense_energy = res.dense_totals.energy_pj["total"]
            row: dict[str, Any] = {
                "sparsity": sparsity, "mode": mode, "weight_sparsity": _zero_fraction(net),
                "float_top1": res.accuracy.float_top1,
                "dense_top1": dense.accuracy.top1, "top1": res.accuracy.top1,
                "speedup": res.vs_dense.speedup,
                "energy_saving": 1 - energy / dense_energy if dense_energy else 0.0,
                "ou_reduction": res.vs_dense.computation_reduction["ou_activations"],
                "index_area_um2": res.totals.area_um2["index"]}
            rows.append(row)
            if progress is not None:
                progress(f"sparsity {sparsity:.2f} {mode:>10}: speedup {row['speedup']:.2f}x, "
                         f"energy saving {100 * row['energy_saving']:.1f}%")
    report = {"model": model_name, "hardware": config.to_dict(), "test_images": len(y_test),
              "tune_images": len(y_tune), "epochs_per_step": epochs, "granularity": granularity,
              "rows": rows, "published": PUBLISHED}
    if deviation:  # accuracy vs rows activated at once (issue 4 item 4)
        report["deviation"] = deviation_study(
            out_dir, base, config, test_images=min(deviation_images, len(y_test)),
            batch_size=batch_size, device=device, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sre_reproduce.json", report)
    write_text(out / "sre_reproduce.md", reproduce_markdown(report))
    return report


def _zero_fraction(net: torch.nn.Module) -> float:
    ws = [m.weight for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / total if total else 0.0


def reproduce_markdown(report: dict[str, Any]) -> str:
    """The study's table (Markdown), published figures last."""
    lines = [f"SRE on {report['model']}, {report['test_images']} test images "
             f"(granularity {report['granularity']}, fine-tuning {report['epochs_per_step']} "
             f"epoch(s) per step on {report['tune_images']} images)", "",
             "| target sparsity | weight sparsity | mode | top-1 (dense) | top-1 (sre) | speedup "
             "| energy saving | OU reduction |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        lines.append(f"| {r['sparsity']:.2f} | {r['weight_sparsity']:.3f} | {r['mode']} "
                     f"| {100 * r['dense_top1']:.2f}% | {100 * r['top1']:.2f}% "
                     f"| {r['speedup']:.2f}x | {100 * r['energy_saving']:.1f}% "
                     f"| {100 * r['ou_reduction']:.1f}% |")
    p = report["published"]
    lines.append(f"| published | | joint (structured) | | | up to {p['speedup_max']}x, avg "
                 f"{p['speedup_avg']}x | up to {100 * p['energy_saving_max']:.1f}%, avg "
                 f"{100 * p['energy_saving_avg']:.1f}% | |")
    if "deviation" in report:
        lines += ["", deviation_markdown(report["deviation"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _reproduce(args: RunArgs, test_images: int, deviation: bool, deviation_images: int) -> str:
    """`sparsexbar reproduce sre`: the study at its default sparsities; the report's table."""
    report = reproduce_sre(args.out, args.model, args.hw, dict(args.overrides),
                           test_images=test_images, batch_size=args.batch_size,
                           progress=args.progress, deviation=deviation,
                           deviation_images=deviation_images, device=args.device)
    files = "sre_reproduce.json, sre_reproduce.md" + (
        ", deviation_study.json, .md, .png" if deviation else "")
    return f"{reproduce_markdown(report)}\nwrote {args.out}/{files}"


STUDY = StudySpec(
    name="sre",
    help="SRE: accuracy, speedup and energy saving of the weight, activation and joint modes "
         "at several OU-structured sparsities, beside the published figures; accuracy vs "
         "rows activated at once (deviation study).",
    run=_reproduce,
    options=(
        count("test_images", TEST_IMAGES, "Images of the test half (0..4999) to run.", low=1,
              high=5000),
        switch("deviation", True, "Also run the accumulated-deviation study (top-1 vs rows "
               "activated at once; table and plot)."),
        count("deviation_images", DEVIATION_IMAGES, "Test images of the deviation study "
              "(at most --test-images).", low=1, high=5000),
    ),
)
