"""`sparsexbar reproduce sre`: speedup and energy saving of SRE's weight-only, activation-only and
joint modes, at both input-skipping granularities, on each OU-structured pruned model, against
the paper's baseline: the OU-based design that exploits no sparsity (`dense`, same hardware,
same OU, same weights and inputs), beside the published figures (Yang et al., ISCA 2019;
studies.published).

Models: by default the shipped `vgg16-fmnist` and its OU-structured pruned variants
`vgg16-fmnist-sre50`, `-sre70`, `-sre90` (pruned and fine-tuned on the train split,
docs/models.md). Another shipped name NAME uses NAME-sreXX where shipped; any other model is
pruned here (OU-structured, `sparsities`, fine-tuned on the calibration split).

Figures: speedup = dense latency / sre latency (busiest array per layer, conversion-driven
timing, docs/cost.md); energy saving = 1 - sre energy / dense energy (all components). The
paper reports the largest and the mean over its networks: ours are the largest and the
arithmetic mean over the pruned models (each pruned model one network), joint mode at bit
granularity (the headline; docs/schemes/sre.md argues why), every mode and granularity in the
full table. Accuracy: SRE is lossless (tests prove it equal to `dense` bit for bit), so each
model's top-1 is its integer-quantized network's on the whole test split (studies.setup,
`exact_top1`); the simulated runs' top-1 on their images is checked against it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core.config import load_config
from ...core.errors import SparsexbarError, UnsupportedModelError
from ...core.frontend import quantize_model
from ...simulate import simulate
from ...studies.deviation import deviation_markdown, deviation_study
from ...studies.headline import accuracy_note, headline_markdown, headline_row
from ...studies.published import as_json
from ...studies.setup import (
    FMNIST_TEST_IMAGES,
    QUANTIZATION_IMAGES,
    accuracy_images_option,
    exact_predictions,
    exact_top1,
    fmnist_split,
    model_input_size,
    test_images_option,
    test_scope,
)
from ...studies.writers import write_json, write_text
from ...training.data import ImageDataset
from ...training.models import load_model
from ...training.prune import prune_model
from ...training.shipped import find_shipped
from ..entry import RunArgs, StudySpec
from ..options import count, switch
from .scheme import SreScheme

TEST_IMAGES, DEVIATION_IMAGES = 200, 64  # the study's defaults, here only
SPARSITIES = (0.5, 0.7, 0.9)  # the shipped pruned variants
MODES = ("weight", "activation", "joint")
GRANULARITIES = ("bit", "word")
HEADLINE_GRANULARITY = "bit"
Progress = Callable[[str], None]


def pruned_models(model: Any, sparsities: Sequence[float], tune_images: int, epochs: int,
                  lr: float, hw: Any, say: Progress) -> tuple[nn.Module, str, Any,
                                                              list[tuple[float, nn.Module, str]]]:
    """(parent module, its name, its metadata, [(target sparsity, pruned module, name)]): the
    shipped NAME-sreXX variants of a shipped `model` that are installed (those missing are
    said and left out), else (none, or not a shipped model) `model` OU-structured pruned here
    at `sparsities` (fine-tuned on the calibration split)."""
    parent = load_model(model)
    for name, module in parent.net.named_modules():  # before any pruning (minutes of it)
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            raise UnsupportedModelError(
                f"sre does not map grouped convolutions: layer '{name}' of {parent.name} has "
                f"groups={module.groups}; the study runs sre on every layer (dense and pattern "
                "map it block-diagonally)")
    shipped = find_shipped(parent.name) if isinstance(model, str) else None
    out: list[tuple[float, nn.Module, str]] = []
    if shipped is not None:
        for s in sparsities:  # the shipped variants there are
            name = f"{shipped.name}-sre{round(100 * s)}"
            found = find_shipped(name)
            if found is not None and found.path.is_file():
                out.append((s, load_model(name).net, name))
            else:
                say(f"{name} is not shipped in this installation: left out")
        if out:
            return parent.net, parent.name, parent.meta, out
    size = model_input_size(parent.meta)
    x_tune, y_tune = fmnist_split("calibration", tune_images, size)
    tune_ds = ImageDataset((x_tune * 255).round().to(torch.uint8), y_tune,
                           [str(i) for i in range(10)], "fashion-mnist")
    config = load_config(hw)
    for s in sparsities:
        say(f"OU-structured pruning to {s:.2f} (fine-tuning on {len(y_tune)} train images)")
        net = copy.deepcopy(parent.net)
        if s > 0:
            prune_model(net, tune_ds, config, s, "ou-structured", steps=2, epochs=epochs, lr=lr)
        out.append((s, net.eval(), f"{parent.name} pruned to {s:g} here"))
    return parent.net, parent.name, parent.meta, out


def _zero_fraction(net: nn.Module) -> float:
    ws = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / total if total else 0.0


def reproduce_sre(out_dir: str | Path, model: Any = "vgg16-fmnist", hw: Any = "isaac",
                  overrides: dict[str, Any] | None = None,
                  sparsities: Sequence[float] = SPARSITIES,
                  test_images: int = TEST_IMAGES,
                  accuracy_images: int = FMNIST_TEST_IMAGES,
                  tune_images: int = 2000, epochs: int = 1, lr: float = 0.01,
                  granularities: Sequence[str] = GRANULARITIES, batch_size: int = 250,
                  progress: Progress | None = None, deviation: bool = True,
                  deviation_images: int = DEVIATION_IMAGES,
                  extra_schemes: Sequence[tuple[str, Any]] = (),
                  device: str = "cpu") -> dict[str, Any]:
    """Run the study; write sre_reproduce.json and .md under `out_dir`; return the report.
    `deviation`: also run the accumulated-deviation study (studies.deviation) on the parent
    model with the first `deviation_images` test images and write its table and plot.
    `extra_schemes`: (label, scheme) pairs run beside the modes on every pruned model (their
    rows carry the label as mode)."""
    say = progress or (lambda _msg: None)
    if not 0 < test_images <= FMNIST_TEST_IMAGES or not 0 < accuracy_images <= FMNIST_TEST_IMAGES:
        raise SparsexbarError(f"--test-images and --accuracy-images must be in 1..10000, got "
                              f"{test_images} and {accuracy_images}")
    if HEADLINE_GRANULARITY not in granularities:
        raise SparsexbarError(f"the SRE study needs granularity {HEADLINE_GRANULARITY}")
    config = load_config(hw, overrides)
    parent, parent_name, meta, variants = pruned_models(model, sparsities, tune_images, epochs,
                                                        lr, hw, say)
    size = model_input_size(meta)
    x_all, y_all = fmnist_split("test", max(accuracy_images, test_images), size)
    x_test, y_test = x_all[:test_images], y_all[:test_images]
    x_all, y_all = x_all[:accuracy_images], y_all[:accuracy_images]
    x_q, _ = fmnist_split("calibration", QUANTIZATION_IMAGES, size)
    wb, ib = config.numbers.weight_bits, config.numbers.input_bits
    say(f"exact top-1 of {parent_name} on {len(y_all)} test images")
    parent_top1 = exact_top1(quantize_model(parent, x_q, wb, ib), x_all, y_all)
    rows: list[dict[str, Any]] = []
    for sparsity, net, name in variants:  # a few models
        qmodel = quantize_model(net, x_q, wb, ib)
        say(f"exact top-1 of {name} on {len(y_all)} test images")
        top1 = exact_top1(qmodel, x_all, y_all)
        first = exact_predictions(qmodel, x_all)[:test_images]
        runs: list[tuple[str, str, Any]] = [("weight", "-", SreScheme("weight"))]
        runs += [(m, g, SreScheme(m, g)) for m in ("activation", "joint") for g in granularities]
        runs += [(label, "-", scheme) for label, scheme in extra_schemes]
        for mode, gran, scheme in runs:
            res = simulate(net, (x_test, y_test), config, scheme, batch_size=batch_size,
                           device=device, qmodel=qmodel)
            energy, dense_energy = (res.totals.energy_pj["total"],
                                    res.dense_totals.energy_pj["total"])
            assert res.outputs is not None
            sim_equals_exact = bool(torch.equal(res.outputs.argmax(dim=1).cpu(), first.cpu()))
            row: dict[str, Any] = {
                "model": name, "sparsity": sparsity, "mode": mode, "granularity": gran,
                "weight_sparsity": _zero_fraction(net), "top1": top1,
                "parent_top1": parent_top1, "top1_change_points": 100 * (top1 - parent_top1),
                "accuracy_images": len(y_all), "simulated_top1": res.accuracy.top1,
                "simulated_classes_equal_exact": sim_equals_exact,
                "speedup": res.vs_dense.speedup,
                "energy_saving": 1 - energy / dense_energy if dense_energy else 0.0,
                "ou_reduction": res.vs_dense.computation_reduction["ou_activations"],
                "index_area_um2": res.totals.area_um2["index"], "test_images": len(y_test)}
            rows.append(row)
            say(f"{name} {mode:>10} {gran:>4}: speedup {row['speedup']:.2f}x, energy saving "
                f"{100 * row['energy_saving']:.1f}%")
    report: dict[str, Any] = {
        "study": "sre", "model": parent_name, "models": [n for _, _, n in variants],
        "hardware": config.to_dict(), "test_images": len(y_test),
        "accuracy_images": len(y_all), "parent_top1": parent_top1,
        "headline_granularity": HEADLINE_GRANULARITY, "granularities": list(granularities),
        "baseline": baseline_text(config), "rows": rows, "published": as_json("sre")}
    report["headline"] = headline_rows(report)
    if deviation:  # accuracy vs rows activated at once: whole-array vs OU activation
        n = min(deviation_images, len(y_test))
        report["deviation"] = deviation_study(
            out_dir, parent, config, data=(x_test[:n], y_test[:n]), batch_size=batch_size,
            device=device, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sre_reproduce.json", report)
    write_text(out / "sre_reproduce.md", reproduce_markdown(report))
    return report


def baseline_text(config: Any) -> str:
    """The SRE baseline in words."""
    return (f"dense on {config.name} (OU-based, exploits no sparsity, same OU "
            f"{config.ou.rows}x{config.ou.cols}, same weights and inputs)")


def headline_rows(report: dict[str, Any], mode: str = "joint") -> list[dict[str, Any]]:
    """Largest and mean speedup and energy saving over the pruned models, `mode` at the
    headline granularity (the paper: up to / on average over its networks)."""
    pruned = [r for r in report["rows"] if r["mode"] == mode and r["sparsity"] > 0
              and r["granularity"] in (report["headline_granularity"], "-")]
    if not pruned:
        return []
    sp = [r["speedup"] for r in pruned]
    es = [r["energy_saving"] for r in pruned]
    worst = min(pruned, key=lambda r: r["top1_change_points"])
    names = ", ".join(r["model"] for r in pruned)
    common = {"baseline": report["baseline"], "model": names,
              "test_images": report["test_images"], "top1": worst["top1"],
              "accuracy_images": report["accuracy_images"],
              "accuracy_how": "lossless: the integer-quantized network's top-1 on "
                              f"{test_scope(report['accuracy_images'])} (lowest of the pruned "
                              "models shown; pruning changed "
                              f"it by {worst['top1_change_points']:+.2f} pt)"}
    gran = "" if mode not in ("activation", "joint") else f", {report['headline_granularity']}"
    label = f"sre {mode}{gran}"
    best_s = max(pruned, key=lambda r: r["speedup"])
    best_e = max(pruned, key=lambda r: r["energy_saving"])
    return [
        headline_row("sre", "speedup_max", max(sp), setting=f"{label}, {best_s['model']}",
                     **common),
        headline_row("sre", "speedup_mean", sum(sp) / len(sp),
                     setting=f"{label}, mean of {len(sp)} pruned models", **common),
        headline_row("sre", "energy_saving_max", max(es), setting=f"{label}, {best_e['model']}",
                     **common),
        headline_row("sre", "energy_saving_mean", sum(es) / len(es),
                     setting=f"{label}, mean of {len(es)} pruned models", **common),
    ]


def reproduce_markdown(report: dict[str, Any]) -> str:
    """The headline rows, then every model, mode and granularity (Markdown)."""
    lines = [f"SRE on {report['model']} and its pruned variants ({', '.join(report['models'])}),"
             f" `{report['hardware']['name']}`; energy and time on {report['test_images']} "
             f"simulated test images, top-1 on {report['accuracy_images']}; baseline: "
             f"{report['baseline']}.", "", headline_markdown(report["headline"]),
             accuracy_note(report["headline"]),
             "| model | weight sparsity | mode | granularity | top-1 | change of pruning "
             "| simulated = exact | speedup | energy saving | OU reduction |",
             "| --- | ---: | --- | --- | ---: | ---: | :-: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['weight_sparsity']:.3f} | {r['mode']} "
                     f"| {r['granularity']} | {100 * r['top1']:.2f}% "
                     f"| {r['top1_change_points']:+.2f} pt "
                     f"| {'yes' if r['simulated_classes_equal_exact'] else 'no'} "
                     f"| {r['speedup']:.2f}x | {100 * r['energy_saving']:.1f}% "
                     f"| {100 * r['ou_reduction']:.1f}% |")
    lines += ["", f"Parent ({report['model']}) top-1: {100 * report['parent_top1']:.2f}% on "
              f"{report['accuracy_images']} test images (integer-quantized network). simulated "
              "= exact: the simulated run's classes on its images equal the exact network's."]
    if "deviation" in report:
        lines += ["", deviation_markdown(report["deviation"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _reproduce(args: RunArgs, test_images: int, accuracy_images: int, deviation: bool,
               deviation_images: int) -> str:
    """`sparsexbar reproduce sre`: the study on the shipped pruned models; its tables."""
    report = reproduce_sre(args.out, args.model, args.hw, dict(args.overrides),
                           test_images=test_images, accuracy_images=accuracy_images,
                           batch_size=args.batch_size, progress=args.progress,
                           deviation=deviation, deviation_images=deviation_images,
                           device=args.device)
    files = "sre_reproduce.json, sre_reproduce.md" + (
        ", deviation_study.json, .md, .png" if deviation else "")
    return f"{reproduce_markdown(report)}\nwrote {args.out}/{files}"


STUDY = StudySpec(
    name="sre",
    help="SRE: speedup and energy saving of the weight, activation and joint modes (bit and "
         "word granularity) on the shipped OU-structured pruned VGG-16s against dense, beside "
         "the published figures; accuracy vs rows activated at once (deviation study).",
    run=_reproduce,
    defaults={"model": "vgg16-fmnist"},
    options=(
        test_images_option(TEST_IMAGES),
        accuracy_images_option(" (exact integer network)"),
        switch("deviation", True, "Also run the accumulated-deviation study (top-1 vs rows "
               "activated at once; table and plot)."),
        count("deviation_images", DEVIATION_IMAGES, "Test images of the deviation study "
              "(at most --test-images).", low=1, high=FMNIST_TEST_IMAGES),
    ),
)
