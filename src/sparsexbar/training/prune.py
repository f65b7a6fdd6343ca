"""Training-time magnitude pruning for `sre` (DESIGN.md 3.1): OU-structured and unstructured.

OU-structured: a block is one crossbar row (one im2col row: input channel x kernel position)
times the output channels that share one OU column group of the hardware: channel c's
physical columns are (c * polarities + pol) * slices + s (mapping.py), tiled over arrays of
`array.cols` and cut into groups of `ou.cols`; channels whose first column lies in the same
(column tile, OU column group) form one block column (our choice where a channel straddles two
groups: it belongs to the group of its first column). Blocks with the smallest L2 norm of
their float weights are zeroed, per layer, until the layer's zero fraction reaches the target;
a zeroed block is a row that static compression removes from that (array, column group).

Unstructured: the smallest-magnitude single weights of each layer, for comparison.

Pattern (for `pattern`, DESIGN.md 3.2; see `pattern_prune_model` and docs/schemes/pattern.md):
each 3x3 kernel keeps `k` weights in one of a small per-layer pattern set, whole kernels are
pruned by norm (connectivity), masks fixed during fine-tuning. Kept apart from the code above.

Gradual: the target rises over `steps` steps along Zhu & Gupta's cubic schedule
s_k = S (1 - (1 - k/steps)^3); after each step the model is fine-tuned with the masks
re-applied after every optimizer step (`train.fine_tune(mask_fn=...)`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.config import HardwareConfig
from ..core.errors import SparsexbarError
from ..core.io import atomic_write_text
from .checkpoint import (
    WEIGHT_FORMATS,
    checkpoint_files,
    load_checkpoint,
    round_model_weights,
    save_checkpoint,
)
from .data import ImageDataset, load_dataset
from .models import LoadedModel
from .shipped import find_shipped, load_shipped, shipped_names
from .torch_files import is_torch_file
from .train import evaluate, fine_tune, quantized_top1

METHODS = ("ou-structured", "unstructured", "pattern")


def crossbar_layers(model: nn.Module) -> list[tuple[str, Tensor]]:
    """(name, weight parameter) of every Conv2d / Linear, in module order."""
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            weight = mod.weight
            assert isinstance(weight, Tensor)
            out.append((name, weight))
    return out


def channel_groups(out_channels: int, hw: HardwareConfig) -> Tensor:
    """(Cout,) int64: the OU column group (numbered over all column tiles) of each channel."""
    per_channel = hw.polarities * hw.slices
    first_col = torch.arange(out_channels) * per_channel
    tile = torch.div(first_col, hw.array.cols, rounding_mode="floor")
    in_tile = first_col - tile * hw.array.cols
    groups_per_tile = -(-hw.array.cols // hw.ou.cols)
    return tile * groups_per_tile + torch.div(in_tile, hw.ou.cols, rounding_mode="floor")


def _block_index(weight: Tensor, hw: HardwareConfig) -> tuple[Tensor, int]:
    """Per weight of the (Cout, rows) matrix: its block id (group x rows + row), block count."""
    cout = weight.shape[0]
    rows = weight[0].numel()
    groups = channel_groups(cout, hw)
    _, dense_ids = torch.unique(groups, return_inverse=True)
    n_groups = int(dense_ids.max()) + 1
    block = dense_ids.view(-1, 1) * rows + torch.arange(rows).view(1, -1)  # (Cout, rows)
    return block, n_groups * rows


def layer_mask(weight: Tensor, sparsity: float, method: str, hw: HardwareConfig) -> Tensor:
    """Keep-mask (same shape as `weight`, bool) zeroing a `sparsity` fraction of its weights."""
    if not 0.0 <= sparsity < 1.0:
        raise SparsexbarError(f"--sparsity must be in [0, 1), got {sparsity}")
    w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    total = w.numel()
    target = int(sparsity * total)
    if target == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    if method == "unstructured":
        order = w.abs().reshape(-1).argsort()
        keep = torch.ones(total, dtype=torch.bool)
        keep[order[:target]] = False
        return keep.reshape(weight.shape)
    if method != "ou-structured":
        raise SparsexbarError(f"unknown pruning method '{method}' for magnitude masks "
                              "(ou-structured, unstructured)")
    block, n_blocks = _block_index(weight, hw)
    flat = block.reshape(-1)
    score = torch.zeros(n_blocks, dtype=torch.float64).index_add_(0, flat, w.reshape(-1) ** 2)
    size = torch.zeros(n_blocks, dtype=torch.float64).index_add_(
        0, flat, torch.ones(total, dtype=torch.float64))
    order = score.sqrt().argsort()
    # Smallest blocks first, as many as keep the zeroed weights within the target.
    zeroed = torch.cumsum(size[order], 0) <= target
    drop = torch.zeros(n_blocks, dtype=torch.bool)
    drop[order[zeroed]] = True
    return (~drop[flat]).reshape(weight.shape)


def compute_masks(model: nn.Module, sparsity: float, method: str,
                  hw: HardwareConfig) -> dict[str, Tensor]:
    """Keep-masks of every crossbar layer at one target `sparsity` (fraction of weights)."""
    return {name: layer_mask(w, sparsity, method, hw) for name, w in crossbar_layers(model)}


def mask_applier(model: nn.Module, masks: dict[str, Tensor]) -> Callable[[nn.Module], None]:
    """A `mask_fn` for `train.fine_tune` that zeroes the pruned weights in place."""
    weights = dict(crossbar_layers(model))

    @torch.no_grad()
    def apply(_: nn.Module) -> None:
        for name, mask in masks.items():
            w = weights[name]
            w.mul_(mask.to(device=w.device, dtype=w.dtype))

    return apply


def sparsity_table(model: nn.Module, hw: HardwareConfig) -> list[dict[str, Any]]:
    """Per crossbar layer: weights, zero weights, weight sparsity, and the fraction of
    (row x OU column group) blocks that are entirely zero (rows static compression drops)."""
    table = []
    for name, weight in crossbar_layers(model):
        w = weight.detach()
        block, n_blocks = _block_index(w, hw)
        nz = torch.zeros(n_blocks, dtype=torch.int64).index_add_(
            0, block.reshape(-1), (w.reshape(w.shape[0], -1) != 0).reshape(-1).to(torch.int64))
        zeros = int((w == 0).sum())
        table.append({"layer": name, "shape": list(w.shape), "weights": w.numel(),
                      "zeros": zeros, "sparsity": zeros / w.numel(), "blocks": n_blocks,
                      "zero_blocks": int((nz == 0).sum()),
                      "block_sparsity": float((nz == 0).sum()) / n_blocks})
    return table


def schedule(sparsity: float, steps: int) -> list[float]:
    """Targets of the gradual schedule (cubic, Zhu & Gupta 2017), ending at `sparsity`."""
    if steps < 1:
        raise SparsexbarError(f"--steps must be >= 1, got {steps}")
    return [sparsity * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


def prune_model(model: nn.Module, ds: Any, hw: HardwareConfig, sparsity: float,
                method: str = "ou-structured", steps: int = 3, epochs: int = 1,
                lr: float = 0.01, seed: int = 0, progress: bool = False,
                final_epochs: int = 0, precision: str = "fp32",
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prune `model` in place gradually, fine-tuning `epochs` per step on `ds` (0: no
    fine-tuning), then `final_epochs` more at the final sparsity. `precision` as in
    `train.train`. Returns {"masks", "table", "history", "schedule"}."""
    if method not in METHODS:
        raise SparsexbarError(f"unknown pruning method '{method}' (known: {', '.join(METHODS)})")
    if method == "pattern":
        raise SparsexbarError("method 'pattern' is pruned by pattern_prune_model (k, patterns)")
    targets = schedule(sparsity, steps)
    history: list[Any] = []
    masks: dict[str, Tensor] = {}
    for k, target in enumerate(targets):  # a few steps
        masks = compute_masks(model, target, method, hw)
        apply = mask_applier(model, masks)
        apply(model)
        tune = epochs + (final_epochs if k == len(targets) - 1 else 0)
        if tune > 0:
            out = fine_tune(model, ds, tune, lr=lr, mask_fn=apply, seed=seed + k,
                            progress=progress, precision=precision, log=log)
            history.append({"step": k + 1, "sparsity": target, **out})
    mask_applier(model, masks)(model)
    model.eval()
    return {"masks": masks, "table": sparsity_table(model, hw), "history": history,
            "schedule": targets}


def table_markdown(table: list[dict[str, Any]]) -> str:
    """The per-layer sparsity table as Markdown."""
    lines = ["| layer | shape | weights | sparsity | zero blocks | block sparsity |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for row in table:
        lines.append(f"| {row['layer']} | {'x'.join(map(str, row['shape']))} | {row['weights']} "
                     f"| {row['sparsity']:.3f} | {row['zero_blocks']}/{row['blocks']} "
                     f"| {row['block_sparsity']:.3f} |")
    return "\n".join(lines) + "\n"


def prune_command(model_spec: str, data_name: str, hw: HardwareConfig, sparsity: float,
                  method: str, steps: int, epochs: int, out: str | Path, lr: float = 0.01,
                  limit: int | None = None, seed: int = 0, progress: bool = True,
                  tune_split: str = "train", k: int = 4,
                  max_patterns: int | Sequence[int] = 8, half: bool = False,
                  final_epochs: int = 0, precision: str = "fp32",
                  root: str | Path | None = None, weights: str | None = None,
                  tune_images: int | None = None, *,
                  prepare: Callable[[LoadedModel, ImageDataset], ImageDataset]
                  ) -> dict[str, Any]:
    """Everything behind ``sparsexbar prune``: load a checkpoint (or the shipped model), prune
    and fine-tune on split `tune_split` (train; "test" only for smoke runs), evaluate on the
    test split, write the checkpoint (``<out>.safetensors`` + ``.json``, the table in its
    "pruning" entry) and ``<out>.sparsity.md``.

    `method` "pattern" uses `pattern_prune_model` with `k` and `max_patterns` (the table is then
    `pattern_table`'s). `weights`: the file's format (float32, float16 - also `half` - or
    int8, pruned tensors stored sparse; see `checkpoint`); accuracies are measured on what the
    file holds (float top-1 and the 8-bit integer-quantized network's). `model_spec`: a
    checkpoint or a shipped model's name (`vgg16-fmnist`).
    `root`: where the data set's files are (cifar10). `tune_images`: fine-tune on the first N
    images of the split only (the test split stays whole, unlike `limit`). `prepare`: makes a
    split's data for the model as a run makes it (`simulate.dataset_for_model`: fitted to its
    input, labels mapped to its classes, one image probed), given by the caller since
    simulate sits above training. The target sparsity, steps and epochs are checked before
    anything is loaded.
    """
    if not 0.0 <= sparsity < 1.0:  # `not` also catches NaN
        raise SparsexbarError(f"--sparsity must be in [0, 1), got {sparsity}")
    if steps < 1:
        raise SparsexbarError(f"--steps must be >= 1, got {steps}")
    if epochs < 0 or final_epochs < 0:
        raise SparsexbarError(f"--epochs and --final-epochs must be >= 0, got {epochs} and "
                              f"{final_epochs}")
    if method == "pattern":
        check_pattern_args(k, max_patterns, sparsity)
    fmt = weights or ("float16" if half else "float32")
    if fmt not in WEIGHT_FORMATS:
        raise SparsexbarError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got "
                              f"{fmt!r}")
    if find_shipped(model_spec) is not None:
        model, meta = load_shipped(model_spec)
    else:
        path = Path(model_spec)
        if is_torch_file(path):
            raise SparsexbarError(
                f"cannot prune {path}: pruning takes a shipped model or a sparsexbar checkpoint "
                "(.safetensors + .json, whose metadata names the data set and the zoo "
                "architecture to fine-tune), not a torch.save file")
        if not any(f.exists() for f in checkpoint_files(path)):
            raise SparsexbarError(
                f"unknown model '{model_spec}' to prune: not a shipped model "
                f"({', '.join(shipped_names())}) and not a checkpoint (.safetensors + .json; "
                "pruning needs its metadata: the data set and architecture)")
        model, meta = load_checkpoint(model_spec)
    name = data_name if data_name != "default" else str(meta.get("dataset") or "fashion-mnist")
    if limit is not None and limit < 1:
        raise SparsexbarError(f"--limit must be >= 1, got {limit}")
    if tune_images is not None and tune_images < 1:
        raise SparsexbarError(f"--tune-images must be >= 1, got {tune_images}")
    tune = min((n for n in (limit, tune_images) if n is not None), default=None)
    # the data made for the model as `run` makes it: fitted to its input (28 -> 32: zero
    # padding), an image folder's labels mapped to its classes by name, one image probed
    loaded = LoadedModel(model.eval(), model_spec, meta)
    train_ds = prepare(loaded, load_dataset(name, tune_split, root=root, limit=tune))
    test_ds = prepare(loaded, load_dataset(name, "test", root=root, limit=limit))
    log = (lambda line: print(line, flush=True)) if progress else None
    before = evaluate(model, test_ds)
    start = time.perf_counter()
    if method == "pattern":
        result = pattern_prune_model(model, train_ds, k, max_patterns, sparsity, steps, epochs,
                                     lr, seed, progress, final_epochs=final_epochs,
                                     precision=precision, log=log)
    else:
        result = prune_model(model, train_ds, hw, sparsity, method, steps, epochs, lr, seed,
                             progress, final_epochs=final_epochs, precision=precision, log=log)
    elapsed = time.perf_counter() - start
    if fmt != "float32":  # what the file holds, so the recorded accuracy is that of the file
        round_model_weights(model, fmt)
        mask_applier(model, result["masks"])(model)
    after = evaluate(model, test_ds)
    quantized = quantized_top1(model, train_ds, test_ds)
    pruning: dict[str, Any] = {
        "method": method, "parent": model_spec, "tune_data": name, "tune_split": tune_split,
        "tune_images": len(train_ds),
        "sparsity": sparsity, "steps": steps, "epochs_per_step": epochs,
        "final_epochs": final_epochs, "precision": precision, "lr": lr,
        "seed": seed, "prune_time_s": elapsed, "torch_threads": torch.get_num_threads(),
        "top1_before": before, "top1_after": after, "test_images": len(test_ds),
        "weight_sparsity": weight_sparsity(model)}
    if method == "pattern":
        table = pattern_table(model)
        pruning.update(k=k, max_patterns=max_patterns if isinstance(max_patterns, int)
                       else list(max_patterns), schedule=result["schedule"],
                       fine_tuning="projected gradient: SGD, masks re-applied after every step",
                       summary=pattern_summary(table),
                       patterns={n: c.tolist() for n, c in result["patterns"].items()},
                       history=result["history"], table=table)
        markdown = pattern_table_markdown(table)
    else:
        table = sparsity_table(model, hw)  # of the weights the file holds
        pruning.update(hardware=hw.to_dict(), table=table)
        markdown = table_markdown(table)
    new_meta = {key: v for key, v in meta.items()
                if key not in ("format_version", "dtype", "packed")}
    new_meta["accuracy"] = {"float_top1": after, "quantized_top1": quantized,
                            "test_images": len(test_ds)}
    new_meta["pruning"] = pruning
    saved, meta_path = save_checkpoint(out, model, new_meta, weights=fmt)
    table_path = saved.with_name(saved.name.removesuffix(".safetensors") + ".sparsity.md")
    atomic_write_text(table_path, markdown)
    return {"checkpoint": str(saved), "meta_path": str(meta_path),
            "table_path": str(table_path), "markdown": markdown,
            "quantized_top1": quantized, **pruning}


def weight_sparsity(model: nn.Module) -> float:
    """The zero fraction of all Conv2d/Linear weights, counted from the weights."""
    layers = crossbar_layers(model)
    zeros = sum(int((w == 0).sum()) for _, w in layers)
    total = sum(w.numel() for _, w in layers)
    return zeros / total if total else 0.0


# ---- pattern pruning (scheme `pattern`, DESIGN.md 3.2) ----------------------------------------
# Kept apart from the magnitude pruning above. A kernel's pattern is a 9-bit code: bit
# kh * 3 + kw is set where the kernel keeps its weight (row-major positions of the 3x3 kernel,
# the im2col row order within one input channel).
KERNEL_POSITIONS = 9


def check_pattern_args(k: int, max_patterns: int | Sequence[int], sparsity: float) -> None:
    """Refuse pattern-pruning arguments out of range, naming the option."""
    if not 1 <= k <= KERNEL_POSITIONS:
        raise SparsexbarError(f"--k must be in 1..{KERNEL_POSITIONS} (weights kept per 3x3 "
                              f"kernel), got {k}")
    counts = [max_patterns] if isinstance(max_patterns, int) else list(max_patterns)
    if not counts or min(counts) < 1:
        raise SparsexbarError(f"--max-patterns must be >= 1 (one number, or one per 3x3 conv "
                              f"layer), got {max_patterns}")
    if not 0.0 <= sparsity < 1.0:
        raise SparsexbarError(f"--sparsity must be in [0, 1), got {sparsity}")


def is_pattern_layer(module: nn.Module) -> bool:
    """A Conv2d with a 3x3 kernel and groups=1: the layers pattern pruning applies to."""
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (3, 3)
            and module.groups == 1)


def pattern_layers(model: nn.Module) -> list[tuple[str, Tensor]]:
    """(name, weight) of every pattern-prunable layer (`is_pattern_layer`), in module order."""
    out = []
    for name, mod in model.named_modules():
        if is_pattern_layer(mod):
            assert isinstance(mod, nn.Conv2d)
            out.append((name, mod.weight))
    return out


def mask_codes(mask: Tensor) -> Tensor:
    """(..., 3, 3) or (..., 9) bool/0-1 -> (...) int64 9-bit pattern codes."""
    flat = mask.reshape(*mask.shape[:-2], KERNEL_POSITIONS) if mask.dim() >= 2 and tuple(
        mask.shape[-2:]) == (3, 3) else mask
    bits = torch.arange(KERNEL_POSITIONS, device=flat.device)
    return ((flat != 0).to(torch.int64) << bits).sum(dim=-1)


def code_masks(codes: Tensor) -> Tensor:
    """(...) int64 pattern codes -> (..., 9) bool kept positions."""
    bits = torch.arange(KERNEL_POSITIONS, device=codes.device)
    return ((codes.unsqueeze(-1) >> bits) & 1).to(torch.bool)


def pattern_library(codes: Tensor) -> tuple[Tensor, Tensor]:
    """The patterns of a layer's kernels and each kernel's pattern, from their nonzero-mask
    codes (Cout, Cin): the maximal masks (no other kernel's mask holds them) in ascending
    order, and per kernel the index of its pattern (-1: an all-zero kernel). A mask inside
    others (a pattern with a weight that is zero, e.g. already pruned in the checkpoint)
    joins its most frequent maximal superset (ties: the smaller code): that pattern's slot
    stores it, with a zero weight, as the pattern scheme maps it."""
    stored = codes != 0
    kernel_pattern = torch.full_like(codes, -1)
    if not bool(stored.any()):
        return torch.zeros(0, dtype=torch.int64), kernel_pattern
    uniq, inverse, counts = torch.unique(codes[stored], return_inverse=True, return_counts=True)
    # contains[a, b]: mask a is a subset of mask b (a != b: a strict subset, codes distinct).
    contains = (uniq.view(-1, 1) & uniq.view(1, -1)) == uniq.view(-1, 1)
    strict = contains & ~torch.eye(len(uniq), dtype=torch.bool)
    maximal = ~strict.any(dim=1)
    target_ok = contains & maximal.view(1, -1)  # b maximal and a inside b (a itself if maximal)
    score = torch.where(target_ok, counts.view(1, -1), torch.full_like(target_ok, -1,
                                                                        dtype=torch.int64))
    target = score.argmax(dim=1)  # first maximum: the smaller code on ties
    pattern_of_uniq = torch.cumsum(maximal.to(torch.int64), 0) - 1
    kernel_pattern[stored] = pattern_of_uniq[target[inverse]]
    return uniq[maximal], kernel_pattern


def candidate_codes(weight: Tensor, k: int) -> Tensor:
    """(Cout, Cin) codes of each kernel's `k` largest-|w| positions (its candidate pattern)."""
    w = weight.detach().abs().reshape(weight.shape[0], weight.shape[1], KERNEL_POSITIONS)
    idx = w.topk(k, dim=2).indices
    return (torch.ones_like(idx) << idx).sum(dim=2)  # distinct positions: sum == bitwise or


def select_patterns(weight: Tensor, k: int, max_patterns: int) -> Tensor:
    """The layer's pattern set: its `max_patterns` most frequent candidate patterns (ties: the
    smaller code first), int64 codes, most frequent first."""
    counts = torch.bincount(candidate_codes(weight, k).reshape(-1),
                            minlength=2**KERNEL_POSITIONS)
    order = torch.argsort(-counts, stable=True)[:max_patterns]
    return order[counts[order] > 0]


def project_kernels(weight: Tensor, patterns: Tensor) -> tuple[Tensor, Tensor]:
    """Each kernel's pattern (index into `patterns`) keeping the most L2 energy, and that
    energy (sum of its kept squared weights). Ties go to the earlier (more frequent) pattern."""
    w2 = weight.detach().to(torch.float64).reshape(
        weight.shape[0], weight.shape[1], KERNEL_POSITIONS) ** 2
    energy = w2 @ code_masks(patterns).to(torch.float64).t()  # (Cout, Cin, P)
    best = energy.argmax(dim=2)
    return best, energy.gather(2, best.unsqueeze(2)).squeeze(2)


def connectivity_keep(energy: Tensor, k: int, sparsity: float,
                      previous: Tensor | None = None) -> Tensor:
    """(Cout, Cin) bool kernels kept by connectivity pruning: the kernels with the smallest
    projected L2 norm are removed until kept kernels x k <= (1 - sparsity) x 9 x kernels, but
    never an output channel's strongest kernel (no filter is removed whole). Kernels pruned
    in `previous` stay pruned."""
    cout, cin = energy.shape
    kernels = cout * cin
    allowed = math.floor((1.0 - sparsity) * KERNEL_POSITIONS * kernels / k + 1e-9)
    n_prune = min(max(0, kernels - allowed), kernels - cout)
    score = energy.clone()
    if previous is not None:
        score[~previous] = -1.0
    strongest = torch.zeros_like(score, dtype=torch.bool)
    strongest[torch.arange(cout), score.argmax(dim=1)] = True
    score = torch.where(strongest, torch.full_like(score, math.inf), score)
    keep = torch.ones(kernels, dtype=torch.bool)
    keep[score.reshape(-1).argsort(stable=True)[:n_prune]] = False
    keep = keep.reshape(cout, cin)
    return keep if previous is None else keep & previous


def pattern_mask(patterns: Tensor, assignment: Tensor, keep: Tensor) -> Tensor:
    """(Cout, Cin, 3, 3) bool keep-mask: each kept kernel's pattern, pruned kernels empty."""
    masks = code_masks(patterns[assignment]) & keep.unsqueeze(2)
    return masks.reshape(*keep.shape, 3, 3)


def pattern_prune_model(model: nn.Module, ds: Any, k: int = 4,
                        max_patterns: int | Sequence[int] = 8,
                        sparsity: float = 0.8, steps: int = 3, epochs: int = 1,
                        lr: float = 0.01, seed: int = 0,
                        progress: bool = False, final_epochs: int = 0,
                        precision: str = "fp32",
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Pattern-prune every 3x3 conv of `model` in place and fine-tune it on `ds`.

    Per layer: the pattern set (`select_patterns`) and each kernel's pattern
    (`project_kernels`) are chosen once, from the trained weights; connectivity pruning
    (`connectivity_keep`) rises to `sparsity` (each layer's zero fraction) over `steps` steps
    of the cubic schedule; after each step the model is fine-tuned `epochs` epochs (0: none)
    by projected gradient: SGD with the masks re-applied after every optimizer step, and
    `final_epochs` more at the final sparsity. Other layers are left dense. `max_patterns` is
    one number for every layer or one per 3x3 conv layer in module order (the pattern paper's
    VGG-16: 2, 2, 2, 6, 8, 8, 8, 6, 5, 4, 6, 6, 8). Returns {"masks", "patterns", "schedule",
    "history"}.
    """
    check_pattern_args(k, max_patterns, sparsity)
    layers = pattern_layers(model)
    if not layers:
        raise SparsexbarError("model has no 3x3 Conv2d layer to pattern-prune")
    if isinstance(max_patterns, int):
        per_layer = [max_patterns] * len(layers)
    else:
        per_layer = list(max_patterns)
        if len(per_layer) != len(layers):
            raise SparsexbarError(f"--max-patterns gives {len(per_layer)} counts but the model "
                                  f"has {len(layers)} 3x3 conv layers")
    patterns = {name: select_patterns(w, k, count)
                for (name, w), count in zip(layers, per_layer, strict=True)}
    assignment = {name: project_kernels(w, patterns[name])[0] for name, w in layers}
    targets = schedule(sparsity, steps)
    keep: dict[str, Tensor] = {}
    masks: dict[str, Tensor] = {}
    history: list[Any] = []
    for step, target in enumerate(targets):  # a few steps
        for name, w in layers:  # layers: a handful
            pm = code_masks(patterns[name][assignment[name]]).to(torch.float64)
            w2 = w.detach().to(torch.float64).reshape(pm.shape) ** 2
            energy = (w2 * pm).sum(dim=2)  # projected kernels' L2^2 (current weights)
            keep[name] = connectivity_keep(energy, k, target, keep.get(name))
            masks[name] = pattern_mask(patterns[name], assignment[name], keep[name])
        apply = mask_applier(model, masks)
        apply(model)
        tune = epochs + (final_epochs if step == len(targets) - 1 else 0)
        if tune > 0:
            out = fine_tune(model, ds, tune, lr=lr, mask_fn=apply, seed=seed + step,
                            progress=progress, precision=precision, log=log)
            history.append({"step": step + 1, "sparsity": target, **out})
    mask_applier(model, masks)(model)
    model.eval()
    return {"masks": masks, "patterns": patterns, "schedule": targets, "history": history}


def pattern_table(model: nn.Module) -> list[dict[str, Any]]:
    """Per crossbar layer: weights, zeros, weight sparsity; for 3x3 convs also kernels, pruned
    (all-zero) kernels, kernel sparsity, the patterns used (`pattern_library`: the maximal
    nonzero masks of the kept kernels, what the pattern scheme stores) and the distinct
    nonzero masks (more than the patterns where a kept kernel has a zero weight inside its
    pattern, e.g. pattern pruning without fine-tuning of a checkpoint already sparse). Other
    layers are marked dense."""
    table: list[dict[str, Any]] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        w = mod.weight.detach()
        zeros = int((w == 0).sum())
        row: dict[str, Any] = {"layer": name, "shape": list(w.shape), "weights": w.numel(),
                               "zeros": zeros, "sparsity": zeros / w.numel(),
                               "pattern_pruned": is_pattern_layer(mod)}
        if is_pattern_layer(mod):
            codes = mask_codes(w != 0)  # (Cout, Cin)
            kept = codes[codes != 0]
            patterns = pattern_library(codes)[0]
            row.update(kernels=codes.numel(), zero_kernels=int((codes == 0).sum()),
                       kernel_sparsity=float((codes == 0).sum()) / codes.numel(),
                       patterns_used=int(patterns.numel()),
                       patterns_used_codes=sorted(int(c) for c in patterns),
                       distinct_masks=int(kept.unique().numel()),
                       max_kept_per_kernel=int(code_masks(kept).sum(dim=1).max())
                       if kept.numel() else 0)
        else:
            row["note"] = ("dense: not a 3x3 conv" if isinstance(mod, nn.Conv2d)
                           else "dense: Linear")
        table.append(row)
    return table


def pattern_summary(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals: weight sparsity over the pattern-pruned layers and over all crossbar weights,
    the patterns per pruned layer and their sum, and the weight share of the dense layers."""
    pruned = [r for r in table if r["pattern_pruned"]]
    p_weights = sum(r["weights"] for r in pruned)
    all_weights = sum(r["weights"] for r in table)
    return {
        "pattern_layers": len(pruned),
        "pattern_layer_weights": p_weights,
        "pattern_layers_sparsity": sum(r["zeros"] for r in pruned) / p_weights
        if p_weights else 0.0,
        "overall_weights": all_weights,
        "overall_sparsity": sum(r["zeros"] for r in table) / all_weights if all_weights else 0.0,
        "patterns_per_layer": [r["patterns_used"] for r in pruned],
        "patterns_total": sum(r["patterns_used"] for r in pruned),
        "kernel_sparsity": sum(r["zero_kernels"] for r in pruned) / max(
            1, sum(r["kernels"] for r in pruned)),
    }


def pattern_table_markdown(table: list[dict[str, Any]]) -> str:
    """The per-layer pattern table and the totals, as Markdown."""
    lines = ["| layer | shape | pruning | patterns | distinct masks | kernel sparsity "
             "| weight sparsity |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in table:
        shape = "x".join(map(str, r["shape"]))
        if r["pattern_pruned"]:
            masks = r.get("distinct_masks", r["patterns_used"])  # rows of older checkpoints
            lines.append(f"| {r['layer']} | {shape} | pattern | {r['patterns_used']} "
                         f"| {masks} | {r['kernel_sparsity']:.3f} | {r['sparsity']:.3f} |")
        else:
            lines.append(f"| {r['layer']} | {shape} | {r['note']} | - | - | - "
                         f"| {r['sparsity']:.3f} |")
    s = pattern_summary(table)
    lines.append(f"| pattern-pruned layers | {s['pattern_layer_weights']} weights | "
                 f"{s['pattern_layers']} layers | {s['patterns_total']} | "
                 f"| {s['kernel_sparsity']:.3f} | {s['pattern_layers_sparsity']:.3f} |")
    lines.append(f"| all crossbar layers | {s['overall_weights']} weights | | | | "
                 f"| {s['overall_sparsity']:.3f} |")
    return "\n".join(lines) + "\n"
