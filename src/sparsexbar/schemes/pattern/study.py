"""`sparsexbar reproduce pattern`: the pattern-mapping paper's table (Yu et al., arXiv
2010.06156) on our data, beside its VGG16 figures.

Columns: weight sparsity (over the pattern-pruned 3x3 convs, and over all crossbar weights),
patterns per conv layer and in total, top-1 change of pruning, RRAM array area efficiency
(array count, and total area), energy efficiency (RRAM + ADC + DAC as published,
`core.cost.rram_adc_dac_energy`, and total), speedup, all of `pattern` against the straightforward
mapping (`dense`) on the same pruned weights and the same inputs, on `pattern-nvmsa` by default.

Models (`model`):
- a shipped pattern-pruned name (default `vgg16-fmnist-pattern`, the paper's network with its
  per-layer pattern counts): used as shipped, its dense parent (`vgg16-fmnist`) the baseline
  of the top-1 change; top-1 of both is the integer-quantized network's on the whole test
  split (studies.setup, `exact_top1`), the ratios against a separate run of the
  straightforward mapping on the same pruned weights;
- "default": the shipped pattern-pruned VGG-8 (`assets/vgg8_fmnist_pattern.*`, pruned and
  fine-tuned on the Fashion-MNIST train split), its dense parent the shipped VGG-8.
- a checkpoint: used as is when its JSON says it was pattern-pruned (the parent named there is
  the baseline), else it is the baseline and is pattern-pruned here, fine-tuned on the train
  split of the data (`tune_images` images, `epochs` per step).
- a zoo name (`vgg16`, ...): built for the data's shape; trained `train_epochs` epochs first if
  asked, else untrained (seeded): then its area, energy and speed figures hold for its layer
  shapes but its accuracy figures mean nothing (the report says so).

Data: "default" is the embedded Fashion-MNIST test split (the shipped model never tuned on
it); else anything `data.load_dataset` takes (`fashion-mnist`, a CIFAR folder such as
`cifar-10-batches-py`, an image folder). Top-1 change is measured in
float on the whole test split; the simulated runs use its first `test_images` images.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...core.config import load_config
from ...core.cost import energy_pj, rram_adc_dac_energy
from ...core.errors import SparsexbarError
from ...core.events import Events
from ...core.frontend import quantize_model
from ...core.mapping import map_dense
from ...result import Result
from ...simulate import simulate
from ...studies.headline import accuracy_note, headline_markdown, headline_row
from ...studies.published import PATTERN_HARDWARE, PATTERN_OTHER_ROWS, PATTERN_SOURCE, as_json
from ...studies.setup import (
    FMNIST_TEST_IMAGES,
    QUANTIZATION_IMAGES,
    accuracy_images_option,
    exact_top1,
    fmnist_split,
    model_input_size,
    test_scope,
)
from ...studies.writers import write_json, write_text
from ...training import zoo
from ...training.checkpoint import (
    load_checkpoint,
    load_shipped_model,
    load_shipped_pattern_model,
    read_meta,
)
from ...training.data import load_dataset
from ...training.models import load_model
from ...training.prune import check_pattern_args, pattern_prune_model
from ...training.shipped import find_shipped
from ...training.train import train
from ..entry import RunArgs, StudySpec
from ..options import count, number, text
from .mapping import dense_static_counts, infer_patterns, is_pattern_layer, static_counts
from .scheme import PatternScheme

# The study's defaults, here only (the CLI's come from STUDY).
TEST_IMAGES, K, MAX_PATTERNS, SPARSITY, EPOCHS, TRAIN_EPOCHS = 200, 4, 8, 0.8, 1, 0
PUBLISHED: dict[str, Any] = {  # studies.published holds the figures; this is their view
    "source": PATTERN_SOURCE, "hardware": PATTERN_HARDWARE, "patterns_per_layer": "2-12",
    "figures": as_json("pattern"), "other_rows": list(PATTERN_OTHER_ROWS),
}
BASELINE = ("the straightforward (dense) mapping of the same pruned weights on {hw}, same "
            "inputs; energy: RRAM, ADC and DAC only, as published")


def _load_parent(spec: Any) -> nn.Module | None:
    """The dense model a pattern checkpoint was pruned from, when it can still be loaded."""
    if spec in ("default", "vgg8-fmnist"):
        return load_shipped_model()[0]
    if isinstance(spec, str) and Path(spec).with_suffix(".json").is_file():
        return load_checkpoint(spec)[0]
    return None


def _test_data(data: str, test_images: int,
               size: int = 28) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
    """(simulated images, labels, all test images, all labels, data name); the default data
    (the embedded Fashion-MNIST test file) zero-padded to `size` x `size`."""
    if data == "default":
        x_all, y_all = fmnist_split("test", None, size)
        return x_all[:test_images], y_all[:test_images], x_all, y_all, "fashion-mnist"
    ds = load_dataset(data, "test")
    x_all, y_all = ds.to_float(), ds.labels.long()
    return x_all[:test_images], y_all[:test_images], x_all, y_all, ds.name


def _model_size(model: Any) -> int:
    """The input size of a shipped model (its metadata), else 28."""
    if isinstance(model, str):
        found = find_shipped(model)
        if found is not None and found.path.is_file():
            return model_input_size(read_meta(found.path))
    return 28


@torch.no_grad()
def float_top1(model: nn.Module, images: Tensor, labels: Tensor, batch: int = 500) -> float:
    """Float top-1 (fraction) of `model` in eval mode."""
    model.eval()
    correct = 0
    for a in range(0, len(labels), batch):  # batches of images
        correct += int((model(images[a : a + batch]).argmax(1) == labels[a : a + batch]).sum())
    return correct / max(len(labels), 1)


def prepare_models(model: Any, data: str, x_shape: tuple[int, ...], classes: int, k: int,
                   max_patterns: int, sparsity: float, steps: int, epochs: int, lr: float,
                   tune_images: int, train_epochs: int, seed: int,
                   log: Callable[[str], None]) -> tuple[nn.Module, nn.Module | None,
                                                        dict[str, Any]]:
    """(pattern-pruned model, its dense baseline or None, how they were obtained)."""
    check_pattern_args(k, max_patterns, sparsity)

    def tune_set() -> Any:
        ds = load_dataset("fashion-mnist" if data == "default" else data, "train")
        return ds.subset(0, min(tune_images, len(ds)))

    if isinstance(model, nn.Module):
        base: nn.Module = model.eval()
        info: dict[str, Any] = {"model": type(model).__name__, "source": "module"}
    elif model in ("default", "vgg8-fmnist"):
        pruned, meta = load_shipped_pattern_model()
        parent = _load_parent("default")
        return pruned, parent, {"model": "vgg8-fmnist-pattern", "source": "shipped",
                                "parent": "vgg8-fmnist", "pruning": _pruning_recipe(meta),
                                "input_size": model_input_size(meta)}
    elif isinstance(model, str) and find_shipped(model) is not None:
        shipped = load_model(model)
        meta = dict(shipped.meta or {})
        if (meta.get("pruning") or {}).get("method") == "pattern":
            parent_name = str((meta.get("pruning") or {}).get("parent") or "")
            parent_name = parent_name if find_shipped(parent_name) else model.removesuffix(
                "-pattern")
            found = find_shipped(parent_name)
            parent = (load_model(parent_name).net if found is not None and found.path.is_file()
                      else None)
            return shipped.net, parent, {"model": shipped.name, "source": "shipped",
                                         "parent": parent_name if parent is not None else None,
                                         "pruning": _pruning_recipe(meta),
                                         "input_size": model_input_size(meta)}
        base, info = shipped.net, {"model": shipped.name, "source": "shipped",
                                   "input_size": model_input_size(meta)}
    elif str(model) in zoo.MODELS:
        torch.manual_seed(seed)
        base = zoo.build_model(str(model), in_channels=x_shape[0], num_classes=classes,
                               input_size=x_shape[-1])
        info = {"model": str(model), "source": "zoo", "trained_epochs": train_epochs}
        if train_epochs > 0:
            log(f"training {model} for {train_epochs} epoch(s) on the train split")
            train(base, tune_set(), None, train_epochs, seed=seed, progress=False)
        else:
            info["untrained"] = True
        base.eval()
    else:
        loaded, meta = load_checkpoint(str(model))
        pruning = meta.get("pruning") or {}
        if pruning.get("method") == "pattern":
            return loaded, _load_parent(pruning.get("parent")), {
                "model": str(meta.get("architecture")), "source": str(model),
                "pruning": _pruning_recipe(meta)}
        base, info = loaded, {"model": str(meta.get("architecture")), "source": str(model)}
    pruned = copy.deepcopy(base)
    tune_epochs = 0 if info.get("untrained") else epochs
    log(f"pattern pruning: k={k}, {max_patterns} patterns per layer, sparsity {sparsity}, "
        f"{steps} step(s) x {tune_epochs} epoch(s) of fine-tuning")
    start = time.perf_counter()
    pattern_prune_model(pruned, tune_set() if tune_epochs > 0 else None, k, max_patterns,
                        sparsity, steps, tune_epochs, lr, seed)
    info["pruning"] = {"k": k, "max_patterns": max_patterns, "sparsity": sparsity,
                       "steps": steps, "epochs_per_step": tune_epochs, "lr": lr,
                       "tune_images": tune_images if tune_epochs > 0 else 0,
                       "time_s": time.perf_counter() - start}
    return pruned, base, info


def _pruning_recipe(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("k", "max_patterns", "sparsity", "steps", "epochs_per_step", "lr", "tune_split",
            "tune_images", "prune_time_s", "fine_tuning", "top1_before", "top1_after")
    pruning = meta.get("pruning") or {}
    return {key: pruning[key] for key in keys if key in pruning}


def _static(counts: dict[str, int], per: int, config: Any) -> tuple[int, int, float]:
    """(OU activations, busiest-array cycles, RRAM+ADC+DAC pJ) with every unit activated in
    every step (`per` = images x positions x passes x cycles): the mapping without input
    skipping."""
    events = Events(ou_activations=counts["ou_activations"], adc_conversions=counts[
        "adc_conversions"], dac_activations=counts["dac_activations"],
        cell_reads=counts["cell_reads"], shift_adds=counts["adc_conversions"]).scaled(per)
    return (events.ou_activations, counts["busiest"] * per,
            rram_adc_dac_energy(energy_pj(events, config, 0.0)))


def layer_rows(qmodel: Any, config: Any, pattern_res: Result,
               images: int) -> list[dict[str, Any]]:
    """Per crossbar layer: mapping used, patterns, sparsity, arrays, occupied cells, OU
    activations, cycles and RRAM+ADC+DAC energy, pattern against dense (with input skipping,
    as simulated, and `static_*`: the mapping alone, every unit activated)."""
    scheme = PatternScheme()
    rows = []
    for layer, rec in zip(qmodel.layers, pattern_res.layers, strict=True):
        mapped = scheme.map_layer(layer, config)
        plan = getattr(mapped, "plan", None)
        per = images * layer.positions * layer.passes * config.cycles
        dense_static = _static(dense_static_counts(map_dense(layer, config)), per, config)
        ours_static = (_static(static_counts(plan), per, config) if plan is not None
                       else dense_static)
        w = layer.weight_int
        wf = layer.float_weight  # BN folding keeps zeros: the pruned model's sparsity
        dense_cells = layer.rows * mapped.physical_cols
        row: dict[str, Any] = {
            "layer": layer.name, "shape": list(w.shape),
            "mapping": "pattern" if plan is not None else (
                "dense (fallback)" if is_pattern_layer(layer) else "dense (not a 3x3 conv)"),
            "weight_sparsity": float((wf == 0).sum()) / wf.numel(),
            "arrays": rec.arrays, "dense_arrays": rec.dense_arrays,
            "cells": dense_cells, "dense_cells": dense_cells,
            "ou_activations": rec.events.ou_activations,
            "dense_ou_activations": rec.dense_events.ou_activations,
            "cycles": rec.cycles, "dense_cycles": rec.dense_cycles,
            "rram_adc_dac_pj": rram_adc_dac_energy(rec.energy_pj),
            "dense_rram_adc_dac_pj": rram_adc_dac_energy(rec.dense_energy_pj),
            "index_bits": scheme.storage(mapped).index_bits,
            "static_ou_activations": ours_static[0], "dense_static_ou_activations":
            dense_static[0], "static_cycles": ours_static[1],
            "dense_static_cycles": dense_static[1], "static_rram_adc_dac_pj": ours_static[2],
            "dense_static_rram_adc_dac_pj": dense_static[2],
        }
        if is_pattern_layer(layer):
            stored = wf.ne(0).reshape(wf.shape[0], wf.shape[1], -1).any(dim=2)
            row["kernel_sparsity"] = 1.0 - float(stored.sum()) / stored.numel()
        if plan is not None:
            height = plan.piece_height[plan.unit_piece]
            row.update(patterns=int(plan.patterns.numel()), blocks=plan.blocks,
                       units=plan.units, cells=int(height.sum()) * config.ou.cols)
        elif is_pattern_layer(layer):
            row["patterns"] = int(infer_patterns(w)[0].numel())
        rows.append(row)
    return rows


def reproduce_pattern(out_dir: str | Path, model: Any = "vgg16-fmnist-pattern",
                      data: str = "default",
                      hw: Any = "pattern-nvmsa", overrides: dict[str, Any] | None = None,
                      test_images: int = TEST_IMAGES, k: int = K,
                      max_patterns: int = MAX_PATTERNS, sparsity: float = SPARSITY,
                      steps: int = 3, epochs: int = EPOCHS, lr: float = 0.01,
                      tune_images: int = 20000, train_epochs: int = TRAIN_EPOCHS,
                      seed: int = 0, batch_size: int = 100, device: str = "cpu",
                      top1_images: int | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the study; write pattern_reproduce.json and .md under `out_dir` (atomically).
    Top-1 change on the first `top1_images` test images (None: all)."""
    log = progress or (lambda _: None)
    if test_images < 1:
        raise SparsexbarError(f"--test-images must be >= 1, got {test_images}")
    start = time.perf_counter()
    config = load_config(hw, overrides)
    x, y, x_all, y_all, data_name = _test_data(data, test_images, _model_size(model))
    if top1_images is not None:
        x_all, y_all = x_all[:top1_images], y_all[:top1_images]
    classes = max(int(y_all.max()) + 1, 10)
    pruned, base, info = prepare_models(model, data, tuple(x.shape[1:]), classes, k,
                                        max_patterns, sparsity, steps, epochs, lr, tune_images,
                                        train_epochs, seed, log)
    pruned.eval()
    if info.get("untrained"):  # accuracy means nothing: do not spend time on it
        x_all, y_all = x, y
    log(f"float and exact integer top-1 on the {len(y_all)} test images")
    top1_pruned = float_top1(pruned, x_all, y_all)
    top1_base = float_top1(base, x_all, y_all) if base is not None else None
    # Input scales from the calibration split (the train split) for the default data.
    x_q = (fmnist_split("calibration", QUANTIZATION_IMAGES, int(x.shape[-1]))[0]
           if data == "default" else x[:QUANTIZATION_IMAGES])
    wb, ib = config.numbers.weight_bits, config.numbers.input_bits
    qmodel = quantize_model(pruned, x_q, wb, ib)
    exact_pruned = exact_top1(qmodel, x_all, y_all)
    exact_base = (exact_top1(quantize_model(base, x_q, wb, ib), x_all, y_all)
                  if base is not None else None)
    sim_start = time.perf_counter()
    log(f"dense mapping on {len(y)} images ({config.name})")
    dense = simulate(pruned, (x, y), config, "dense", batch_size=batch_size, device=device,
                     qmodel=qmodel)
    dense_s = time.perf_counter() - sim_start
    log(f"pattern mapping on {len(y)} images ({config.name})")
    pat = simulate(pruned, (x, y), config, "pattern", batch_size=batch_size, device=device,
                   qmodel=qmodel, baseline_accuracy=dense.accuracy)
    pattern_s = time.perf_counter() - sim_start - dense_s
    layers = layer_rows(qmodel, config, pat, len(y))
    conv = [r for r in layers if "patterns" in r]
    conv_w = sum(r["shape"][0] * r["shape"][1] * 9 for r in conv)
    all_w = sum(int(torch.tensor(r["shape"]).prod()) for r in layers)
    zeros_conv = sum(r["weight_sparsity"] * r["shape"][0] * r["shape"][1] * 9 for r in conv)
    zeros_all = sum(r["weight_sparsity"] * int(torch.tensor(r["shape"]).prod()) for r in layers)

    def ratio(key: str, rows: list[dict[str, Any]]) -> float:
        ours = sum(r[key] for r in rows)
        return sum(r[f"dense_{key}"] for r in rows) / ours if ours else float("inf")

    vs = pat.vs_dense
    totals = {
        "sparsity_pattern_layers": zeros_conv / conv_w if conv_w else 0.0,
        "sparsity_overall": zeros_all / all_w if all_w else 0.0,
        "patterns_per_layer": [r["patterns"] for r in conv],
        "patterns_total": sum(r["patterns"] for r in conv),
        "pattern_mapped_layers": sum(r["mapping"] == "pattern" for r in layers),
        "top1_base": top1_base, "top1_pruned": top1_pruned,
        "top1_change_points": (100 * (top1_pruned - top1_base)
                               if top1_base is not None and not info.get("untrained")
                               else None),
        "top1_images": len(y_all),
        "exact_top1_base": exact_base, "exact_top1_pruned": exact_pruned,
        "exact_top1_change_points": (100 * (exact_pruned - exact_base)
                                     if exact_base is not None and not info.get("untrained")
                                     else None),
        # Against the separate baseline run (the straightforward mapping, same weights):
        "baseline_area_efficiency": dense.totals.arrays / pat.totals.arrays,
        "baseline_rram_adc_dac_energy_efficiency": (dense.totals.rram_adc_dac_energy_pj
                                                    / pat.totals.rram_adc_dac_energy_pj),
        "baseline_speedup": dense.totals.latency_s / pat.totals.latency_s,
        "sim_top1_dense": dense.accuracy.top1, "sim_top1_pattern": pat.accuracy.top1,
        "area_efficiency": vs.area_efficiency,
        "area_efficiency_conv": ratio("arrays", conv),
        "total_area_efficiency": vs.total_area_efficiency,
        "cell_area_efficiency": ratio("cells", layers),
        "cell_area_efficiency_conv": ratio("cells", conv),
        "arrays": pat.totals.arrays, "dense_arrays": pat.dense_totals.arrays,
        "rram_adc_dac_energy_efficiency": vs.rram_adc_dac_energy_efficiency,
        "energy_efficiency": vs.energy_efficiency,
        "speedup": vs.speedup,
        "ou_reduction": vs.computation_reduction["ou_activations"],
        # The mapping alone (every unit activated, no input skipping), same layers:
        "static_ou_reduction": 1 - 1 / ratio("static_ou_activations", layers),
        "static_speedup": ratio("static_cycles", layers),
        "static_rram_adc_dac_energy_efficiency": ratio("static_rram_adc_dac_pj", layers),
    }
    report = {
        "study": "pattern", **info, "data": data_name, "hardware": config.to_dict(),
        "test_images": len(y), "accuracy_images": len(y_all), "totals": totals,
        "layers": layers, "published": PUBLISHED,
        "baseline": BASELINE.format(hw=config.name),
        "time_s": {"total": time.perf_counter() - start, "dense": dense_s,
                   "pattern": pattern_s},
    }
    report["headline"] = headline_rows(report)
    out = Path(out_dir)
    write_json(out / "pattern_reproduce.json", report)
    write_text(out / "pattern_reproduce.md", reproduce_markdown(report))
    return report


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per published figure (VGG16, CIFAR-10): the pattern mapping against the
    straightforward mapping of the same pruned weights (a separate run on the same images)."""
    t = report["totals"]
    change = t["exact_top1_change_points"]
    common = {"setting": "pattern mapping (kernel reordering, zero-input skipping)",
              "baseline": report["baseline"], "model": report["model"],
              "test_images": report["test_images"], "top1": t["exact_top1_pruned"],
              "accuracy_images": report["accuracy_images"],
              "accuracy_how": "the integer-quantized pruned network's top-1 on "
                              f"{test_scope(report['accuracy_images'])} (the mapping is "
                              "lossless on the pruned weights where the "
                              "ADC cannot clip); change: against its dense parent, same way"}
    return [
        headline_row("pattern", "sparsity", t["sparsity_pattern_layers"], **common),
        headline_row("pattern", "patterns_total", float(t["patterns_total"]), **common),
        headline_row("pattern", "top1_change", change, **common),
        headline_row("pattern", "area_efficiency", t["baseline_area_efficiency"], **common),
        headline_row("pattern", "energy_efficiency",
                     t["baseline_rram_adc_dac_energy_efficiency"], **common),
        headline_row("pattern", "speedup", t["baseline_speedup"], **common),
    ]


def _x(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def reproduce_markdown(report: dict[str, Any]) -> str:
    """The headline table beside the published rows, then the per-layer table (Markdown)."""
    t = report["totals"]
    hw = report["hardware"]["name"]
    change = t["exact_top1_change_points"]
    note = " (untrained: accuracy figures meaningless)" if report.get("untrained") else ""
    lines = [
        f"Pattern mapping on {report['model']}{note}, {report['data']}: hardware `{hw}`, "
        f"{report['test_images']} simulated test images; top-1 (integer-quantized network) "
        f"on {t['top1_images']} test images; baseline: {report['baseline']}.", "",
        headline_markdown(report["headline"]), accuracy_note(report["headline"]),
        "| | data | weight sparsity | patterns per conv layer (total) | top-1 change (points) "
        "| area eff. (arrays) | area eff. (total area) | energy eff. (RRAM+ADC+DAC) "
        "| energy eff. (total) | speedup |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| ours: {report['model']} | {report['data']} "
        f"| {100 * t['sparsity_pattern_layers']:.1f}% (3x3 convs), "
        f"{100 * t['sparsity_overall']:.1f}% (all) "
        f"| {', '.join(map(str, t['patterns_per_layer']))} ({t['patterns_total']}) "
        f"| {'-' if change is None else f'{change:+.2f}'} "
        f"| {_x(t['area_efficiency'])} (3x3 convs {_x(t['area_efficiency_conv'])}) "
        f"| {_x(t['total_area_efficiency'])} "
        f"| {_x(t['rram_adc_dac_energy_efficiency'])} | {_x(t['energy_efficiency'])} "
        f"| {_x(t['speedup'])} |",
    ]
    pub = report["published"]
    fig = pub["figures"]
    lines.append(f"| published: VGG16 | CIFAR-10 | {fig['sparsity']['text']} "
                 f"| {pub['patterns_per_layer']} ({fig['patterns_total']['text']}) "
                 f"| {fig['top1_change']['text']} | {fig['area_efficiency']['text']} | - "
                 f"| {fig['energy_efficiency']['text']} | - | {fig['speedup']['text']} |")
    for r in pub["other_rows"]:
        lines.append(f"| published: VGG16 | {r['data']} | {100 * r['sparsity']:.1f}% "
                     f"| {pub['patterns_per_layer']} ({r['patterns_total']}) "
                     f"| {r['top1_change']:+.2f} | {r['area_efficiency']:.2f}x | - "
                     f"| {r['energy_efficiency']:.2f}x | - "
                     f"| {r['speedup']:.2f}x |")
    base = "-" if t["top1_base"] is None else f"{100 * t['top1_base']:.2f}%"
    ebase = "-" if t["exact_top1_base"] is None else f"{100 * t['exact_top1_base']:.2f}%"
    lines += [
        "",
        f"Top-1 (integer-quantized): dense parent {ebase}, pattern-pruned "
        f"{100 * t['exact_top1_pruned']:.2f}%. "
        f"Top-1 (float): dense parent {base}, pattern-pruned {100 * t['top1_pruned']:.2f}%. "
        f"Simulated top-1 on `{hw}` ({report['test_images']} images, same pruned weights): "
        f"straightforward mapping {100 * t['sim_top1_dense']:.2f}%, pattern mapping "
        f"{100 * t['sim_top1_pattern']:.2f}%. Arrays: {t['dense_arrays']} -> {t['arrays']}; "
        f"occupied cells (OU slots reserved): {_x(t['cell_area_efficiency'])} "
        f"(3x3 convs {_x(t['cell_area_efficiency_conv'])}); OU activations "
        f"-{100 * t['ou_reduction']:.1f}%. {t['pattern_mapped_layers']} layer(s) use the "
        "pattern mapping. The mapping alone (every unit activated, no zero-input skipping): "
        f"OU activations -{100 * t['static_ou_reduction']:.1f}%, energy eff. (RRAM+ADC+DAC) "
        f"{_x(t['static_rram_adc_dac_energy_efficiency'])}, speedup "
        f"{_x(t['static_speedup'])}.",
        "",
        "| layer | shape | mapping | patterns | kernel sparsity | weight sparsity | arrays "
        "| occupied cells | OU activations | cycles | RRAM+ADC+DAC energy |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["layers"]:
        ks = r.get("kernel_sparsity")
        lines.append(
            f"| {r['layer']} | {'x'.join(map(str, r['shape']))} | {r['mapping']} "
            f"| {r.get('patterns', '-')} | {'-' if ks is None else f'{ks:.3f}'} "
            f"| {r['weight_sparsity']:.3f} | {r['dense_arrays']} -> {r['arrays']} "
            f"| {_x(r['dense_cells'] / r['cells'] if r['cells'] else None)} "
            f"| {_x(r['dense_ou_activations'] / max(r['ou_activations'], 1))} "
            f"| {_x(r['dense_cycles'] / max(r['cycles'], 1))} "
            f"| {_x(r['dense_rram_adc_dac_pj'] / max(r['rram_adc_dac_pj'], 1e-12))} |")
    ts = report["time_s"]
    lines += ["", f"Ratios are dense / pattern. Time: {ts['total']:.0f} s (dense run "
              f"{ts['dense']:.0f} s, pattern run {ts['pattern']:.0f} s)."]
    return "\n".join(lines) + "\n"


def _reproduce(args: RunArgs, test_images: int, data: str, k: int, max_patterns: int,
               sparsity: float, epochs: int, train_epochs: int, accuracy_images: int) -> str:
    report = reproduce_pattern(args.out, args.model, data, args.hw, dict(args.overrides),
                               test_images, k, max_patterns, sparsity, epochs=epochs,
                               train_epochs=train_epochs,
                               batch_size=min(args.batch_size, 100), device=args.device,
                               top1_images=accuracy_images, progress=args.progress)
    return (f"{reproduce_markdown(report)}\nwrote {args.out}/pattern_reproduce.json, "
            "pattern_reproduce.md")


STUDY = StudySpec(
    name="pattern",
    help="Pattern mapping: the published table (sparsity, patterns per layer, accuracy "
         "change, area and energy efficiency, speedup) beside its VGG16 figures.",
    run=_reproduce,
    defaults={"hw": "pattern-nvmsa", "model": "vgg16-fmnist-pattern"},  # the paper's
    options=(
        count("test_images", TEST_IMAGES, "Images of the test split to simulate.", low=1,
              high=FMNIST_TEST_IMAGES),
        text("data", "default", "'default' (embedded Fashion-MNIST test split), fashion-mnist "
             "or a CIFAR folder (cifar-10-batches-py)."),
        count("k", K, "Weights kept per 3x3 kernel.", low=1, high=9),
        count("max_patterns", MAX_PATTERNS, "Patterns per layer at most.", low=1),
        number("sparsity", SPARSITY, "Target weight sparsity of the 3x3 convs.", low=0, high=1,
               high_open=True),
        count("epochs", EPOCHS, "Fine-tuning epochs per pruning step.", low=0),
        count("train_epochs", TRAIN_EPOCHS, "With a zoo --model: train it first (0: "
              "untrained, hardware figures only).", low=0),
        accuracy_images_option(" (float and exact integer networks)"),
    ),
)
