"""Training and evaluation of zoo models on `ImageDataset`s (CPU, deterministic given a seed).

Recipe: SGD with momentum 0.9 and Nesterov off, weight decay on all parameters, a per-step
cosine learning-rate schedule from ``lr`` to 0, cross-entropy loss; light augmentation
(random crop with 2-pixel zero padding; horizontal flips for CIFAR only). Inputs are in [0, 1],
never normalized.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor, nn

from ..core.errors import SparsexbarError
from ..core.frontend import QuantLayer, quantize_model
from ..core.intconv import ExactLinear
from . import zoo
from .checkpoint import WEIGHT_FORMATS, round_model_weights, save_checkpoint
from .data import load_dataset

MaskFn = Callable[[nn.Module], None]
PRECISIONS = ("fp32", "bf16")


def augment_batch(images: Tensor, generator: torch.Generator, padding: int = 2,
                  hflip: bool = False) -> Tensor:
    """Random crop after ``padding`` pixels of zero padding, optional random horizontal flip.

    ``images`` is (N, C, H, W), any dtype; the result has the same shape and dtype.
    """
    n, _, h, w = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images.contiguous()


@torch.no_grad()
def evaluate(model: nn.Module, ds: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` in eval mode on `ImageDataset` ``ds``."""
    if len(ds) == 0:
        raise SparsexbarError(f"cannot evaluate on an empty data set ({ds.name})")
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():  # no autograd graph: ~12% faster on VGG-16 here
        for x, y in ds.loader(batch_size):
            correct += int((model(x).argmax(dim=1) == y).sum())
    model.train(was_training)
    return correct / len(ds)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def _run_epochs(model: nn.Module, ds: Any, epochs: int, lr: float, batch_size: int, seed: int,
                weight_decay: float, hflip: bool, padding: int, progress: bool,
                mask_fn: MaskFn | None, test_ds: Any | None,
                log: Callable[[str], None] | None, precision: str = "fp32") -> dict[str, Any]:
    """Shared SGD + cosine loop of `train` and `fine_tune`; returns per-epoch history.

    ``precision`` "bf16" runs forward and backward under CPU/CUDA bfloat16 autocast (weights,
    optimizer state and evaluation stay float32); the model and batches are channels-last,
    the fast layout for CPU convolutions. Both only change speed and rounding of the updates.
    """
    if precision not in PRECISIONS:
        raise SparsexbarError(f"precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {precision!r}")
    if epochs < 1:
        raise SparsexbarError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise SparsexbarError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise SparsexbarError(f"learning rate must be > 0, got {lr}")
    if len(ds) == 0:
        raise SparsexbarError(f"cannot train on an empty data set ({ds.name})")
    if len(ds) == 1 and any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()):
        raise SparsexbarError(f"cannot train {type(model).__name__} on one image: its "
                              "BatchNorm1d's batch statistics need two or more (a larger "
                              "--limit / --tune-images)")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    device_type = next(model.parameters()).device.type
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    # Batch b holds images bounds[b] .. bounds[b + 1] of the epoch's order. A last batch of
    # one image joins the one before (BatchNorm1d cannot train on a batch of one).
    bounds = list(range(0, len(ds), batch_size)) + [len(ds)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    steps_per_epoch = len(bounds) - 1
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with _progress(progress) as bar:
        for epoch in range(epochs):
            model.train()
            task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps_per_epoch, loss=0.0)
            order = torch.randperm(len(ds), generator=gen)
            loss_sum, seen, correct = 0.0, 0, 0
            for b in range(steps_per_epoch):
                idx = order[bounds[b]:bounds[b + 1]]
                x = augment_batch(ds.images[idx], gen, padding, hflip).to(torch.float32) / 255.0
                x = x.contiguous(memory_format=torch.channels_last)
                y = ds.labels[idx]
                with torch.autocast(device_type, dtype=torch.bfloat16,
                                    enabled=precision == "bf16"):
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if mask_fn is not None:
                    with torch.no_grad():
                        mask_fn(model)
                loss_sum += float(loss.detach()) * len(y)
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                bar.update(task, advance=1, loss=loss_sum / seen)
            entry = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_top1": correct / seen,
                     "elapsed_s": time.perf_counter() - start}
            if test_ds is not None:
                entry["test_top1"] = evaluate(model, test_ds, max(batch_size, 256))
            history.append(entry)
            if log is not None:
                log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in entry.items()))
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model.eval()
    return {"history": history, "train_time_s": time.perf_counter() - start}


def train(model: nn.Module, train_ds: Any, test_ds: Any | None, epochs: int, lr: float = 0.05,
          batch_size: int = 128, seed: int = 0, progress: bool = True,
          weight_decay: float = 5e-4, hflip: bool | None = None, crop_padding: int = 2,
          log: Callable[[str], None] | None = None, precision: str = "fp32") -> dict[str, Any]:
    """Train ``model`` in place: SGD (momentum 0.9) with per-step cosine decay of ``lr`` to 0.

    Augmentation: random crop with ``crop_padding`` px of zero padding, horizontal flip
    (``hflip=None``: on for data sets whose name starts with "cifar"). Deterministic for a
    given ``seed`` (torch.manual_seed plus a seeded generator for shuffling/augmentation).
    Returns {"float_top1" (on ``test_ds``, fraction), "final_loss", "history", "train_time_s",
    "epochs", "lr", "batch_size", "seed", "weight_decay"}.
    """
    if hflip is None:
        hflip = str(getattr(train_ds, "name", "")).startswith("cifar")
    result = _run_epochs(model, train_ds, epochs, lr, batch_size, seed, weight_decay, hflip,
                         crop_padding, progress, None, test_ds, log, precision)
    metrics: dict[str, Any] = {
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
        "precision": precision,
        "weight_decay": weight_decay, "optimizer": "sgd momentum 0.9, cosine schedule",
        "augmentation": f"random crop pad {crop_padding}" + (", hflip" if hflip else ""),
        "final_loss": result["history"][-1]["loss"],
        "train_time_s": result["train_time_s"],
        "history": result["history"],
    }
    if test_ds is not None:
        metrics["float_top1"] = result["history"][-1]["test_top1"]
    return metrics


def fine_tune(model: nn.Module, ds: Any, epochs: int, lr: float = 0.01,
              mask_fn: MaskFn | None = None, batch_size: int = 128, seed: int = 0,
              weight_decay: float = 5e-4, progress: bool = False,
              precision: str = "fp32",
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``ds`` with the `train` recipe at a lower ``lr``.

    ``mask_fn(model)``, if given, runs under no_grad after every optimizer step (for example
    to re-apply fixed pruning masks). Returns {"history", "train_time_s"}.
    """
    hflip = str(getattr(ds, "name", "")).startswith("cifar")
    return _run_epochs(model, ds, epochs, lr, batch_size, seed, weight_decay, hflip, 2,
                       progress, mask_fn, None, log, precision)


@torch.no_grad()
def round_weights_to_half(model: nn.Module) -> None:
    """Round, in place, every float tensor with >= 2 dims of the state dict to float16 precision.

    This is what `checkpoint.save_checkpoint(..., half=True)` stores.
    """
    for t in model.state_dict().values():
        if t.is_floating_point() and t.dim() >= 2:
            t.copy_(t.to(torch.float16).to(t.dtype))


def train_command(model_name: str, data_name: str, epochs: int, out: str | Path,
                  batch_size: int = 128, lr: float = 0.05, seed: int = 0,
                  limit: int | None = None, width: float | None = None,
                  root: str | Path | None = None, progress: bool = True,
                  half: bool = False, input_size: int | None = None,
                  precision: str = "fp32", weights: str | None = None) -> dict[str, Any]:
    """Everything behind ``sparsexbar train``: load data, build, train, evaluate, save.

    Loads the train and test splits of ``data_name`` (see `data.load_dataset`; ``root`` is
    where its files are), keeps the first ``limit`` images of each if given, builds zoo model
    ``model_name`` sized to the data (``width`` multiplier if given), trains it with `train`,
    and writes ``<out>.safetensors`` + ``<out>.json`` in the ``weights`` format (float32,
    float16 - also ``half`` - or int8; see `checkpoint`), its accuracy measured on what the
    file holds: float top-1, and the 8-bit integer-quantized network's (`quantized_top1`).
    Returns the metrics dict of `train` plus "checkpoint" (the .safetensors path).
    """
    fmt = weights or ("float16" if half else "float32")
    if fmt not in WEIGHT_FORMATS:
        raise SparsexbarError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got "
                              f"{fmt!r}")
    if limit is not None and limit < 1:
        raise SparsexbarError(f"limit must be >= 1, got {limit}")
    if model_name not in zoo.MODELS:
        raise SparsexbarError(f"unknown model {model_name!r}; known models: "
                              f"{', '.join(sorted(zoo.MODELS))}")
    train_ds = load_dataset(data_name, "train", root=root)
    test_ds = load_dataset(data_name, "test", root=root)
    if limit is not None:
        train_ds, test_ds = train_ds.subset(0, limit), test_ds.subset(0, limit)
    fit: dict[str, Any] | None = None
    if input_size is not None and input_size != train_ds.shape[1]:
        c0, h0, _ = train_ds.shape
        train_ds = train_ds.fitted(c0, input_size)
        test_ds = test_ds.fitted(c0, input_size)
        fit = {"from": h0, "to": input_size,
               "how": "pad" if input_size > h0 and (input_size - h0) % 2 == 0 else "resize"}
    c, h, w = train_ds.shape
    if h != w:
        raise SparsexbarError(f"{train_ds.name}: images must be square, got {h}x{w}")
    arch_kwargs: dict[str, Any] = {"in_channels": c, "num_classes": train_ds.num_classes,
                                   "input_size": h}
    if width is not None:
        arch_kwargs["width"] = width
    torch.manual_seed(seed)
    model = zoo.build_model(model_name, **arch_kwargs)
    metrics = train(model, train_ds, test_ds, epochs, lr=lr, batch_size=batch_size, seed=seed,
                    progress=progress, precision=precision,
                    log=(lambda line: print(line, flush=True)) if progress else None)
    if fmt != "float32":  # round to what the file will hold: the recorded accuracy is exact
        round_model_weights(model, fmt)
        metrics["float_top1"] = evaluate(model, test_ds, max(batch_size, 256))
    metrics["quantized_top1"] = quantized_top1(model, train_ds, test_ds)
    train_meta = {k: metrics[k] for k in ("epochs", "lr", "batch_size", "seed", "weight_decay",
                                          "optimizer", "augmentation", "train_time_s",
                                          "final_loss", "precision", "history")}
    train_meta.update(train_images=len(train_ds), torch_threads=torch.get_num_threads())
    # What the model takes (training.inputs.InputSpec) and what its outputs are: a run of
    # the checkpoint fits other data to it and maps an image folder's classes by name.
    input_spec = {"channels": c, "size": h, "fit": fit["how"] if fit is not None else "auto",
                  "scale": 1 / 255, "mean": [0.0], "std": [1.0]}
    meta = {"architecture": model_name, "arch_kwargs": arch_kwargs, "dataset": train_ds.name,
            "classes": list(train_ds.classes), "input": input_spec,
            "accuracy": {"float_top1": metrics["float_top1"],
                         "quantized_top1": metrics["quantized_top1"],
                         "test_images": len(test_ds)},
            "train": train_meta}
    if fit is not None:
        meta["input_fit"] = fit
    saved, _ = save_checkpoint(out, model, meta, weights=fmt)
    metrics["checkpoint"] = str(saved)
    return metrics


@torch.no_grad()
def quantized_top1(model: nn.Module, calibration_ds: Any, test_ds: Any, weight_bits: int = 8,
                   input_bits: int = 8, calibration_images: int = 256,
                   batch_size: int = 256) -> float:
    """Top-1 (fraction) of the integer-quantized network (the simulator's oracle: what every
    lossless simulated run gives) on `test_ds`, input scales calibrated on the first
    `calibration_images` images of `calibration_ds`."""
    was_training = model.training
    model.eval()
    calib = calibration_ds.subset(0, calibration_images).to_float()
    qmodel = quantize_model(model, calib, weight_bits, input_bits)
    executor = NibbleExecutor()
    correct = 0
    for x, y in test_ds.loader(batch_size):
        correct += int((qmodel.run(x, executor).argmax(dim=1) == y).sum())
    model.train(was_training)
    return correct / len(test_ds)


class NibbleExecutor:
    """The exact integer accumulator of a layer (what `QuantLayer.reference_accumulate` gives)
    computed fast: the input magnitudes are split into 4-bit digits, x = sum_k 16^k d_k, and
    each digit plane goes through `ExactLinear` (oneDNN u8 x s8 on CPU where exact, else
    float32), whose results are exact because every |weight . d_k| <= column |weight| sum x 15
    stays below 2^24 for 8-bit weights up to ~8,800 rows. Signed inputs run as positive and
    negative parts. The digit results combine in int64. VGG-16 (width 1, 32x32): ~5x faster
    than the float64 reference on this CPU; `tests/test_shipped.py` checks equality."""

    def __init__(self) -> None:
        self._linear: dict[int, ExactLinear] = {}

    def _exact(self, layer: QuantLayer) -> ExactLinear | None:
        key = id(layer)
        if key not in self._linear:
            lin = ExactLinear(layer.kind, layer.weight_int, 15, layer.weight_int.device,
                              layer.stride, layer.padding, layer.dilation,
                              probe_shape=layer.input_shape or None, groups=layer.groups)
            self._linear[key] = lin
        lin = self._linear[key]
        return lin if lin.backend != "float64" else None

    def __call__(self, layer: QuantLayer, x_int: Tensor) -> Tensor:
        lin = self._exact(layer)
        if lin is None:  # digits would not be exact either: the float64 reference
            return layer.reference_accumulate(x_int)
        parts = [(x_int.clamp(min=0), 1)]
        if layer.input_signed:
            parts.append(((-x_int).clamp(min=0), -1))
        acc: Tensor | None = None
        for part, sign in parts:
            rest = part.to(torch.int64)
            weight = 1
            while bool((rest > 0).any()):
                digit = rest & 15
                term = lin(digit.to(torch.float32)).to(torch.int64) * (sign * weight)
                acc = term if acc is None else acc + term
                rest = rest >> 4
                weight *= 16
        if acc is None:  # an all-zero input
            return layer.reference_accumulate(x_int)
        if layer.kind == "conv" and not acc.is_contiguous():
            acc = acc.contiguous()
        return acc
