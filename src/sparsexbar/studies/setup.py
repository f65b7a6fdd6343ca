"""The splits and the set-up every published-study reproduction starts from.

Splits (Fashion-MNIST): the test split is the whole embedded 10,000-image test file
(accuracy is measured on all of it; energy, time and event counts on its first
`--test-images` images); the calibration split is the first images of the train split (60k,
the Debian package dataset-fashion-mnist), on which every lossy parameter (CompRRAE's alphas
and betas, encoding's ADC bits and dynamic precision) is picked and the network's input scales
are calibrated: never on the images they are judged on. Images are fitted to the model's input
(28x28 -> 32x32 by zero padding for the VGG-16 models, `training.data.fit_images`). Other
data: the caller passes both splits.

Accuracy of a lossless setting is the integer-quantized network's (the simulator's oracle: the
engine's tests prove every lossless scheme equal to it bit for bit), computed once per
quantized model on the whole split by the exact fast path (`exact_top1`: 4-bit digit planes
through oneDNN / float32, `training.train.NibbleExecutor`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.config import HardwareConfig, load_config
from ..core.errors import SparsexbarError
from ..core.frontend import QuantizedModel, quantize_model
from ..schemes.options import Option, count
from ..simulate import resolve_inputs
from ..training.data import KNOWN_DATASETS, ImageDataset, fashion_mnist, fit_images
from ..training.models import load_model
from ..training.train import NibbleExecutor

FMNIST_TEST_IMAGES = 10000  # the whole embedded test file
FMNIST_CALIBRATION_IMAGES = 60000  # the train split
QUANTIZATION_IMAGES = 256  # calibration images the input scales are calibrated on
TEST_SPLIT_TEXT = "embedded Fashion-MNIST test file"
CALIBRATION_SPLIT_TEXT = "Fashion-MNIST train split"


def test_images_option(default: int) -> Option:
    """A study's `test_images`: the test images each simulated run takes."""
    return count("test_images", default, "Test images each simulated run takes (energy, "
                 "time, events).", low=1, high=FMNIST_TEST_IMAGES)


def accuracy_images_option(detail: str = "") -> Option:
    """A study's `accuracy_images`: the test images top-1 is measured on (all by default);
    `detail`, e.g. " (exact integer network)", ends its help."""
    return count("accuracy_images", FMNIST_TEST_IMAGES, f"Test images top-1 is measured "
                 f"on{detail}.", low=1, high=FMNIST_TEST_IMAGES)


def calibration_images_option(default: int, purpose: str) -> Option:
    """A study's `calibration_images`: the train-split images `purpose` ("the alphas and
    betas are picked on")."""
    return count("calibration_images", default, f"Train-split images {purpose}.", low=1,
                 high=FMNIST_CALIBRATION_IMAGES)


@lru_cache(maxsize=2)
def _fmnist(split: str) -> ImageDataset:
    return fashion_mnist(split)


def fmnist_split(which: str, images: int | None = None,
                 size: int = 28) -> tuple[Tensor, Tensor]:
    """(float images, labels): the first `images` (None: all) of the 'test' split (the
    embedded test file) or the 'calibration' split (the train split), zero-padded to
    `size` x `size`."""
    ds = _fmnist("test" if which == "test" else "train")
    b = len(ds) if images is None else min(len(ds), images)
    sub = ds.subset(0, b)
    x = sub.to_float()
    if size != x.shape[-1]:
        x = fit_images(x, int(x.shape[1]), size, "pad")
    return x, sub.labels.long()


def model_input_size(meta: Mapping[str, Any] | None, default: int = 28) -> int:
    """The input size a checkpoint's metadata records (`arch_kwargs.input_size`), else
    `default`."""
    kwargs = (meta or {}).get("arch_kwargs") or {}
    size = kwargs.get("input_size")
    return int(size) if isinstance(size, int) and size > 0 else default


def weights_key(qmodel: QuantizedModel) -> str:
    """A digest of a quantized model's integer weights and input scales: two quantized
    models with the same key compute the same function."""
    h = hashlib.sha256()
    for q in qmodel.layers:
        h.update(q.name.encode())
        h.update(q.weight_int.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr(getattr(q, "input_scale", None)).encode())
    return h.hexdigest()[:16]


_EXACT: dict[tuple[str, int, float], Tensor] = {}


@torch.no_grad()
def exact_predictions(qmodel: QuantizedModel, images: Tensor,
                      batch_size: int = 500) -> Tensor:
    """Top-1 class of every image through the exact integer network (fast exact path,
    `NibbleExecutor`), cached per quantized model and image count within the process."""
    key = (weights_key(qmodel), len(images), float(images.double().sum()))
    if key not in _EXACT:
        ex = NibbleExecutor()
        preds = torch.cat([qmodel.run(images[a : a + batch_size], ex).argmax(dim=1)
                           for a in range(0, len(images), batch_size)])
        _EXACT[key] = preds
    return _EXACT[key]


def exact_top1(qmodel: QuantizedModel, images: Tensor, labels: Tensor,
               batch_size: int = 500) -> float:
    """Top-1 (fraction) of the integer-quantized network on `images` (cached, see
    `exact_predictions`)."""
    preds = exact_predictions(qmodel, images, batch_size)
    return float((preds == labels.to(preds.device)).sum()) / max(len(labels), 1)


@dataclass
class StudySetup:
    """What every published-study reproduction starts from: the hardware, the model and its
    integer quantization (calibrated on the first 256 calibration images), the whole test
    split (`x_all`, `y_all`: accuracy), its first `test_images` (`x_test`, `y_test`:
    simulated runs) and the calibration images."""

    config: HardwareConfig
    net: torch.nn.Module
    model_name: str
    qmodel: QuantizedModel
    x_test: Tensor
    y_test: Tensor
    x_cal: Tensor
    y_cal: Tensor
    x_all: Tensor = field(default_factory=lambda: torch.zeros(0))
    y_all: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def description(self) -> dict[str, Any]:
        """The report fields every study shares: model, hardware and both splits."""
        return {
            "model": self.model_name, "hardware": self.config.name,
            "test_images": len(self.y_test), "accuracy_images": len(self.y_all),
            "test_split": f"{TEST_SPLIT_TEXT}: accuracy on images 0..{len(self.y_all) - 1}, "
                          f"simulated runs on images 0..{len(self.y_test) - 1}",
            "calibration_split": f"{CALIBRATION_SPLIT_TEXT}, images 0..{len(self.y_cal) - 1}",
            "input_size": int(self.x_test.shape[-1]),
        }

    def exact_top1(self, batch_size: int = 500) -> float:
        """The integer-quantized network's top-1 on the whole test split."""
        return exact_top1(self.qmodel, self.x_all, self.y_all, batch_size)


def test_scope(accuracy_images: int | None) -> str:
    """Where a study's top-1 was measured, in words: 'the whole test split' (all 10,000
    images), else 'the first N test images' (`--accuracy-images N`)."""
    if accuracy_images is None or accuracy_images >= FMNIST_TEST_IMAGES:
        return "the whole test split"
    return f"the first {accuracy_images} test images"


def study_setup(model: Any, hw: str | HardwareConfig, overrides: dict[str, Any] | None,
                test_images: int, calibration_images: int,
                accuracy_images: int = FMNIST_TEST_IMAGES) -> StudySetup:
    """Load the hardware and model, take both splits (fitted to the model's input),
    quantize."""
    config = load_config(hw, overrides)
    loaded = load_model(model)
    size = model_input_size(loaded.meta)
    x_cal, y_cal = fmnist_split("calibration", calibration_images, size)
    x_all, y_all = fmnist_split("test", max(accuracy_images, test_images), size)
    x_test, y_test = x_all[:test_images], y_all[:test_images]
    x_all, y_all = x_all[:accuracy_images], y_all[:accuracy_images]
    qmodel = quantize_model(loaded.net, x_cal[:QUANTIZATION_IMAGES],
                            config.numbers.weight_bits, config.numbers.input_bits)
    return StudySetup(config, loaded.net, loaded.name, qmodel, x_test, y_test, x_cal, y_cal,
                      x_all, y_all)


def calibration_setup(model: Any, data: str, hw: str | HardwareConfig,
                      overrides: Mapping[str, Any] | None, images: int,
                      root: str | Path | None = None
                      ) -> tuple[HardwareConfig, QuantizedModel, Tensor, Tensor]:
    """A calibration's hardware, images and labels ('default': the first images of the
    Fashion-MNIST train split, which the studies do not test on; else the train split of the
    named data set, whose files are in `root`, or of the folder, made for the model as `run`
    makes data: `resolve_inputs`) and the model quantized on the first 256 of them."""
    config = load_config(hw, dict(overrides or {}))
    if data == "default":
        if root is not None:
            raise SparsexbarError(f"--root applies to a named data set, not to the default "
                                  f"data (give --data {' or '.join(KNOWN_DATASETS[:2])})")
        loaded = load_model(model)
        x, y = fmnist_split("calibration", images, model_input_size(loaded.meta))
    else:
        loaded, batches = resolve_inputs(model, data, images, root=root, split="train")
        x, y = batches.images, batches.labels
    qmodel = quantize_model(loaded.net, x[:QUANTIZATION_IMAGES], config.numbers.weight_bits,
                            config.numbers.input_bits)
    return config, qmodel, x, y
