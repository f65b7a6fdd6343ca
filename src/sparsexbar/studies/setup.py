"""The splits and the set-up every published-study reproduction starts from.

Splits (Fashion-MNIST, the embedded 10k test file): images [0, 5000) are the test split of the
studies, images [5000, 10000) the calibration split, so parameters are never picked on the
images they are judged on. Other data: the caller passes both splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.config import HardwareConfig, load_config
from ..core.frontend import QuantizedModel, quantize_model
from ..simulate import resolve_data
from ..training.data import fashion_mnist, load_dataset
from ..training.models import resolve_model

FMNIST_TEST_SPLIT = (0, 5000)
FMNIST_CALIBRATION_SPLIT = (5000, 10000)


def fmnist_split(which: str, images: int | None = None) -> tuple[Tensor, Tensor]:
    """(float images, labels) of the 'test' or 'calibration' half of the embedded split."""
    a, b = FMNIST_TEST_SPLIT if which == "test" else FMNIST_CALIBRATION_SPLIT
    if images is not None:
        b = min(b, a + images)
    ds = fashion_mnist("test").subset(a, b)
    return ds.to_float(), ds.labels.long()


@dataclass
class StudySetup:
    """What every published-study reproduction starts from: the hardware, the model and its
    integer quantization (calibrated on the first 256 calibration images), and both halves."""

    config: HardwareConfig
    net: torch.nn.Module
    model_name: str
    qmodel: QuantizedModel
    x_test: Tensor
    y_test: Tensor
    x_cal: Tensor
    y_cal: Tensor

    def description(self) -> dict[str, Any]:
        """The report fields every study shares: model, hardware and both splits."""
        return {
            "model": self.model_name, "hardware": self.config.name,
            "test_images": len(self.y_test),
            "test_split": f"embedded Fashion-MNIST test file, images 0..{len(self.y_test) - 1}",
            "calibration_split": f"images 5000..{5000 + len(self.y_cal) - 1} of the same file",
        }


def study_setup(model: Any, hw: str | HardwareConfig, overrides: dict[str, Any] | None,
                test_images: int, calibration_images: int) -> StudySetup:
    """Load the hardware and model, take both halves of the embedded split, quantize."""
    config = load_config(hw, overrides)
    x_cal, y_cal = fmnist_split("calibration", calibration_images)
    x_test, y_test = fmnist_split("test", test_images)
    net, model_name = resolve_model(model, 1, 10, 28)
    qmodel = quantize_model(net, x_cal[:256], config.numbers.weight_bits,
                            config.numbers.input_bits)
    return StudySetup(config, net, model_name, qmodel, x_test, y_test, x_cal, y_cal)


def calibration_setup(model: Any, data: str, hw: str | HardwareConfig,
                      overrides: Mapping[str, Any] | None, images: int
                      ) -> tuple[HardwareConfig, QuantizedModel, Tensor, Tensor]:
    """A calibration's hardware, images and labels ('default': images 5000.. of the embedded
    Fashion-MNIST test file, which the studies do not test on; else the named data set's
    train split) and the model quantized on the first 256 of them."""
    config = load_config(hw, dict(overrides or {}))
    if data == "default":
        x, y = fmnist_split("calibration", images)
    else:
        batches = resolve_data(load_dataset(data, "train"), images)
        x, y = batches.images, batches.labels
    net, _ = resolve_model(model, int(x.shape[1]), max(int(y.max()) + 1, 10), int(x.shape[-1]))
    qmodel = quantize_model(net, x[:256], config.numbers.weight_bits, config.numbers.input_bits)
    return config, qmodel, x, y
