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

Gradual: the target rises over `steps` steps along Zhu & Gupta's cubic schedule
s_k = S (1 - (1 - k/steps)^3); after each step the model is fine-tuned with the masks
re-applied after every optimizer step (`train.fine_tune(mask_fn=...)`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import HardwareConfig
from .errors import SparsexbarError

METHODS = ("ou-structured", "unstructured")


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
        raise SparsexbarError(f"unknown pruning method '{method}' (known: {', '.join(METHODS)})")
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
                lr: float = 0.01, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Prune `model` in place gradually, fine-tuning `epochs` per step on `ds` (0: no
    fine-tuning). Returns {"masks", "table", "history", "schedule"}."""
    from .train import fine_tune

    if method not in METHODS:
        raise SparsexbarError(f"unknown pruning method '{method}' (known: {', '.join(METHODS)})")
    targets = schedule(sparsity, steps)
    history: list[Any] = []
    masks: dict[str, Tensor] = {}
    for k, target in enumerate(targets):  # a few steps
        masks = compute_masks(model, target, method, hw)
        apply = mask_applier(model, masks)
        apply(model)
        if epochs > 0:
            out = fine_tune(model, ds, epochs, lr=lr, mask_fn=apply, seed=seed + k,
                            progress=progress)
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
                  tune_split: str = "train") -> dict[str, Any]:
    """Everything behind ``sparsexbar prune``: load a checkpoint (or the shipped model), prune
    and fine-tune on split `tune_split` (train; "test" only for smoke runs), evaluate on the
    test split, write the checkpoint (``<out>.safetensors`` + ``.json``, the table in its
    "pruning" entry) and ``<out>.sparsity.md``.
    """
    from .checkpoint import load_checkpoint, load_shipped_model, save_checkpoint
    from .data import load_dataset
    from .train import evaluate

    if model_spec in ("default", "vgg8-fmnist"):
        model, meta = load_shipped_model()
    else:
        model, meta = load_checkpoint(model_spec)
    name = data_name if data_name != "default" else str(meta.get("dataset") or "fashion-mnist")
    train_ds = load_dataset(name, tune_split)
    test_ds = load_dataset(name, "test")
    if limit is not None:
        if limit < 1:
            raise SparsexbarError(f"--limit must be >= 1, got {limit}")
        train_ds, test_ds = train_ds.subset(0, limit), test_ds.subset(0, limit)
    before = evaluate(model, test_ds)
    result = prune_model(model, train_ds, hw, sparsity, method, steps, epochs, lr, seed,
                         progress)
    after = evaluate(model, test_ds)
    pruning = {"method": method, "tune_split": tune_split, "sparsity": sparsity, "steps": steps,
               "epochs_per_step": epochs, "lr": lr, "hardware": hw.to_dict(),
               "top1_before": before, "top1_after": after, "table": result["table"]}
    new_meta = {k: v for k, v in meta.items() if k not in ("format_version", "dtype")}
    new_meta["accuracy"] = {"float_top1": after, "test_images": len(test_ds)}
    new_meta["pruning"] = pruning
    weights, _ = save_checkpoint(out, model, new_meta)
    table_path = weights.with_name(weights.name.removesuffix(".safetensors") + ".sparsity.md")
    table_path.write_text(table_markdown(result["table"]))
    return {"checkpoint": str(weights), "table_path": str(table_path), **pruning}
