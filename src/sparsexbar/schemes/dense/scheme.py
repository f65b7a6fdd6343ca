"""`dense`: the OU-based baseline with the straightforward mapping; skips nothing."""

from __future__ import annotations

from torch import Tensor

from ...core.config import HardwareConfig
from ...core.engine import EngineOptions, LayerKernel, accumulate
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, map_dense
from ..base import LayerRun, Scheme


class DenseScheme(Scheme):
    name = "dense"

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        return map_dense(layer, hw)

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        acc = accumulate(kernel, x_int, options)
        return self.dense_run(kernel.mapped, acc, int(x_int.shape[0]))
