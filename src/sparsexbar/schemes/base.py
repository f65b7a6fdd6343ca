"""The scheme plug-in interface: a scheme picks a mapper and the run-time policies of a layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..core.config import HardwareConfig
from ..core.cost import ActivationTiming, Storage, activation_timing
from ..core.engine import EngineOptions, LayerKernel
from ..core.errors import UnsupportedModelError
from ..core.events import Events
from ..core.frontend import QuantLayer
from ..core.mapping import MappedLayer, dense_events, dense_time_ns


@dataclass
class LayerRun:
    """What one layer did on one batch: its integer accumulator, events, and per image its
    busiest array's OU activations (`cycles`) and time (`time_ns`, by the timing rule of
    core/cost.py), both summed over the batch's images."""

    accumulator: Tensor
    events: Events
    cycles: int
    time_ns: float


class Counted(NamedTuple):
    """A batch's exact counts: events, and per image the busiest array's OU activations and
    time (ns), summed over the images (`LayerRun`'s last three fields)."""

    events: Events
    cycles: int
    time_ns: float


class Scheme:
    """Base class. Subclasses set `name` and override what they change; adding one touches no
    other module (its package's `ENTRY` and one line in `schemes/registry.py`)."""

    name: str = "base"
    lossless: bool = True
    # Whether a layer's later calls on CPU with an ideal device run as image tasks side by side
    # (simulate.LayerRecorder._split; every image's result, events and time must be its own).
    # It pays where counting is many small operations that a second intra-op thread barely
    # speeds up (sre); a whole-batch convolution on two intra-op threads is faster than two
    # one-thread halves (full-width VGG-16, batch 256, two threads: dense 191-194 -> 131-134
    # img/s split), so the default is the whole batch (docs/benchmarks.md, part 5).
    image_tasks: bool = False

    def parameters(self) -> dict[str, Any]:
        """The scheme's parameters, recorded in the result."""
        return {}

    def options(self) -> dict[str, Any]:
        """The values of the scheme's declared options (its registry entry's table, keys as
        there): what its canonical `name:key=value` text is made of. A value with no text
        form (per-layer values not read from a file) raises SparsexbarError."""
        return {}

    def check_model(self, layers: Sequence[QuantLayer]) -> None:
        """Refuse (SparsexbarError) a model the scheme's settings do not fit, before any layer
        is mapped: e.g. a calibration file naming layers the model does not have. `simulate`
        calls it with every crossbar layer of the model; the default accepts any model."""

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        raise NotImplementedError

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        return LayerKernel(mapped, device)

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        raise NotImplementedError

    def storage(self, mapped: MappedLayer) -> Storage:
        """Index/LUT bits and comparators this scheme adds to the layer."""
        return Storage()

    def overridden(self, hw: HardwareConfig) -> dict[str, str]:
        """The config settings this scheme does not follow on `hw`, each with what it uses
        instead (recorded in the result and shown beside its table row). ADC bits per layer
        other than `adc.bits` are found from `adc_bits` and need not be listed here."""
        return {}

    def adc_bits(self, mapped: MappedLayer) -> int:
        """ADC resolution of this layer (schemes may lower it per layer)."""
        return mapped.hw.adc_bits

    def dense_run(self, mapped: MappedLayer, accumulator: Tensor, images: int) -> LayerRun:
        """The run of a layer that executes the straightforward mapping whole (closed-form
        events and time, at this scheme's ADC bits for the layer)."""
        events, cycles = dense_events(mapped, images)
        return LayerRun(accumulator, events, cycles,
                        dense_time_ns(mapped, images, self.timing(mapped)))

    def timing(self, mapped: MappedLayer) -> ActivationTiming:
        """The timing rule of this layer's OU activations, at its ADC bits."""
        return activation_timing(mapped.hw, self.adc_bits(mapped))


def refuse_grouped(scheme: str, layer: QuantLayer, reason: str) -> None:
    """Raise the one-line refusal of a scheme that does not map grouped/depthwise convs
    (`layer.groups` > 1), naming the layer and the reason; nothing for other layers."""
    if layer.groups > 1:
        raise UnsupportedModelError(
            f"{scheme} does not map grouped convolutions: layer '{layer.name}' has "
            f"groups={layer.groups} ({reason}); dense and pattern map it block-diagonally")


def layer_listing(names: Sequence[str]) -> str:
    """The first six of `names` for a one-line message: 'a, b, ..., 13 in all' ('none')."""
    shown = ", ".join(names[:6])
    return (shown + (f", ... {len(names)} in all" if len(names) > 6 else "")) or "none"
