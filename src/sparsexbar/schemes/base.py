"""The scheme plug-in interface: a scheme picks a mapper and the run-time policies of a layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.config import HardwareConfig
from ..core.cost import Storage
from ..core.engine import EngineOptions, LayerKernel
from ..core.errors import UnsupportedModelError
from ..core.events import Events
from ..core.frontend import QuantLayer
from ..core.mapping import MappedLayer


@dataclass
class LayerRun:
    """What one layer did on one batch: its integer accumulator, events and busiest-array cycles."""

    accumulator: Tensor
    events: Events
    cycles: int


class Scheme:
    """Base class. Subclasses set `name` and override what they change; adding one touches no
    other module (its package's `ENTRY` and one line in `schemes/registry.py`)."""

    name: str = "base"
    lossless: bool = True

    def parameters(self) -> dict[str, Any]:
        """The scheme's parameters, recorded in the result."""
        return {}

    def options(self) -> dict[str, Any]:
        """The values of the scheme's declared options (its registry entry's table, keys as
        there): what its canonical `name:key=value` text is made of. A value with no text
        form (per-layer values not read from a file) raises SparsexbarError."""
        return {}

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        raise NotImplementedError

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        return LayerKernel(mapped, device)

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        raise NotImplementedError

    def storage(self, mapped: MappedLayer) -> Storage:
        """Index/LUT bits and comparators this scheme adds to the layer."""
        return Storage()

    def adc_bits(self, mapped: MappedLayer) -> int:
        """ADC resolution of this layer (schemes may lower it per layer)."""
        return mapped.hw.adc.bits


def refuse_grouped(scheme: str, layer: QuantLayer, reason: str) -> None:
    """Raise the one-line refusal of a scheme that does not map grouped/depthwise convs
    (`layer.groups` > 1), naming the layer and the reason; nothing for other layers."""
    if layer.groups > 1:
        raise UnsupportedModelError(
            f"{scheme} does not map grouped convolutions: layer '{layer.name}' has "
            f"groups={layer.groups} ({reason}); dense and pattern map it block-diagonally")
