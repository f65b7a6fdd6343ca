"""The models shipped in the package (src/sparsexbar/assets), by the names users type
(`--model vgg16-fmnist`, `simulate("vgg16-fmnist-sre70", ...)`), and what `sparsexbar models`
lists about each: data, input size, weight sparsity and accuracies (float, 8-bit, simulated
dense), read from their metadata. docs/models.md has the commands that made each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import CheckpointError, SparsexbarError
from .assets import ASSETS_DIR
from .checkpoint import load_checkpoint, read_meta


@dataclass(frozen=True)
class ShippedModel:
    """A shipped model: the name users type, its assets stem and a one-line description."""

    name: str
    stem: str
    description: str

    @property
    def path(self) -> Path:
        return ASSETS_DIR / f"{self.stem}.safetensors"


SHIPPED: tuple[ShippedModel, ...] = (
    ShippedModel("vgg8-fmnist", "vgg8_fmnist",
                 "VGG-8 (width 0.25) on 28x28 Fashion-MNIST: the default model"),
    ShippedModel("vgg8-fmnist-pattern", "vgg8_fmnist_pattern",
                 "vgg8-fmnist pattern-pruned (4 of 9 weights, <= 8 patterns per layer): the "
                 "demo's model"),
    ShippedModel("vgg16-fmnist", "vgg16_fmnist",
                 "CIFAR-style VGG-16 (13 conv + 2 linear) at full width (64-512 channels) on "
                 "Fashion-MNIST padded to 32x32: the papers' network"),
    ShippedModel("vgg16-fmnist-sre50", "vgg16_fmnist_sre50",
                 "vgg16-fmnist OU-structured pruned to 50% (SRE's pruning, isaac's OU columns)"),
    ShippedModel("vgg16-fmnist-sre70", "vgg16_fmnist_sre70",
                 "vgg16-fmnist OU-structured pruned to 70%"),
    ShippedModel("vgg16-fmnist-sre90", "vgg16_fmnist_sre90",
                 "vgg16-fmnist OU-structured pruned to 90%"),
    ShippedModel("vgg16-fmnist-pattern", "vgg16_fmnist_pattern",
                 "vgg16-fmnist pattern-pruned with the pattern paper's per-layer pattern counts "
                 "(71 in all), 86% sparsity of the 3x3 convs"),
    ShippedModel("mobilenetv2-fmnist", "mobilenetv2_fmnist",
                 "CIFAR-style MobileNetV2 (width 0.5; depthwise and grouped convs) on "
                 "Fashion-MNIST padded to 32x32"),
)
ALIASES = {"default": "vgg8-fmnist"}


def shipped_names() -> list[str]:
    """The names of the shipped models whose files are in this installation."""
    return [m.name for m in SHIPPED if m.path.is_file()]


def find_shipped(name: str) -> ShippedModel | None:
    """The shipped model called `name` (or an alias), None when there is none."""
    name = ALIASES.get(name, name)
    return next((m for m in SHIPPED if m.name == name), None)


def load_shipped(name: str) -> tuple[nn.Module, dict[str, Any]]:
    """The shipped model `name` (eval mode) and its metadata."""
    model = find_shipped(name)
    if model is None:
        raise SparsexbarError(f"unknown shipped model '{name}' (shipped: "
                              f"{', '.join(shipped_names())})")
    if not model.path.is_file():
        raise CheckpointError(f"shipped model {model.name}: {model.path} is missing from the "
                              "installation")
    return load_checkpoint(model.path)


def model_width(model: object) -> float | None:
    """The zoo width a shipped model (by name) or a checkpoint (a path) was built with, from
    its metadata; None for anything else (a module, a `module:factory` spec, an ONNX file)."""
    if not isinstance(model, (str, Path)):
        return None
    shipped = find_shipped(str(model))
    path = shipped.path if shipped is not None else Path(model)
    try:
        width = read_meta(path).get("arch_kwargs", {}).get("width")
    except SparsexbarError:  # no metadata of ours there
        return None
    return float(width) if isinstance(width, (int, float)) else None


def describe(model: ShippedModel) -> dict[str, Any]:
    """One row of `sparsexbar models`, from the model's metadata."""
    meta = read_meta(model.path)
    kwargs = meta.get("arch_kwargs", {})
    acc = meta.get("accuracy", {})
    pruning = meta.get("pruning", {})
    size = kwargs.get("input_size")
    channels = kwargs.get("in_channels")
    fit = meta.get("input_fit")
    return {
        "name": model.name,
        "architecture": meta.get("architecture"),
        "data": meta.get("dataset"),
        "input": (f"{channels}x{size}x{size}" if size and channels else "?")
        + (f" (from {fit['from']}x{fit['from']}, {fit['how']})" if fit else ""),
        "sparsity": pruning.get("weight_sparsity", pruning.get("sparsity", 0.0)),
        "float_top1": acc.get("float_top1"),
        "quantized_top1": acc.get("quantized_top1", acc.get("simulated_quantized_top1")),
        "simulated_top1": acc.get("simulated_dense_top1"),
        "simulated_images": acc.get("simulated_images"),
        "test_images": acc.get("test_images"),
        "weights": meta.get("dtype"),
        "file_mb": model.path.stat().st_size / 2**20,
        "description": model.description,
    }
