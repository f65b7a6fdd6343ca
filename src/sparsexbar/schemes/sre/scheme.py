"""`SreScheme`: the sre scheme (modes, values, events)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig, SignEncoding
from ...core.cost import Storage
from ...core.engine import (
    EngineOptions,
    LayerKernel,
    accumulate,
    exact_accumulator,
    exact_from_magnitudes,
)
from ...core.errors import SparsexbarError, note, require_choice
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, dense_events
from ..base import Counted, LayerRun, Scheme, refuse_grouped
from ..counting import narrow_magnitudes
from .kernel import SreKernel
from .mapping import (
    GRANULARITIES,
    MODES,
    dynamic_packing_lossless,
    index_bits,
    kept_matrix,
    map_sre,
)
from .packing import packed_corrections

PACK_CHUNK_MB = 64.0  # working set of one chunk of dynamic packing with a lossy ADC: on VGG-8
# (vgg8-pattern, OU 9x8, 5-bit ADC, 2-bit DAC, one thread, part 13's code), against 32 MiB:
# 64 images, 64 MiB 0.92x the time (median; fewer, larger operations), 128 MiB 0.90x;
# 16 images, 8 MiB 1.73x, 64 MiB 0.90x, 512 MiB 0.86x (docs/benchmarks.md, issue 18 part 13)


class SreScheme(Scheme):
    """Sparse ReRAM Engine: static weight compression and/or dynamic activation sparsity."""

    name = "sre"
    lossless = True
    # Image tasks (Scheme.image_tasks): its per-(position, kept set) counting gains little
    # from a second intra-op thread. vgg8-pattern, batch 64, 10 repeats: x dense 4.62 ->
    # 3.54 (one thread), 3.79 -> 2.49-3.00 (two); full-width VGG-16, batch 256, two threads:
    # 11.3 -> 13.4 img/s (docs/benchmarks.md, part 5).
    image_tasks = True

    def __init__(self, mode: str = "joint", granularity: str = "bit") -> None:
        require_choice("sre mode", mode, MODES)
        require_choice("sre granularity", granularity, GRANULARITIES)
        self.mode = mode
        self.granularity = granularity

    @property
    def compress(self) -> bool:
        return self.mode in ("weight", "joint")

    @property
    def dynamic(self) -> bool:
        return self.mode in ("activation", "joint")

    def parameters(self) -> dict[str, Any]:
        return {"mode": self.mode, "granularity": self.granularity}

    def options(self) -> dict[str, Any]:
        return {"mode": self.mode, "granularity": self.granularity}

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        refuse_grouped("sre", layer, "its row compression, per-array kept-row sets and dynamic "
                       "packing are modelled on the grid of a groups=1 layer's arrays")
        if self.compress and hw.cell.sign == SignEncoding.offset:
            note("sre's weight compression with cell.sign=offset: a zero weight is stored as "
                 "2^(weight_bits-1), not as zero conductance, so few or no rows are dropped "
                 "(their row indices are still stored and charged); differential cells give "
                 "the compression the scheme is for")
        mapped = map_sre(layer, hw, self.compress)
        if self.dynamic and not hw.device.ideal:
            raise SparsexbarError(
                f"sre {self.mode} mode needs an ideal device (layer {layer.name}): dynamic "
                "packing is modelled with an ideal device only; give the scheme as sre:mode=weight")
        return mapped

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        return SreKernel(mapped, device)

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        assert isinstance(kernel, SreKernel)
        if not self.dynamic:
            acc = accumulate(kernel, x_int, options)
            return LayerRun(acc, *self.count(kernel, x_int, options))
        parts = narrow_magnitudes(kernel.mapped.layer, x_int)  # shared by values and counts
        if dynamic_packing_lossless(kernel.mapped):
            acc = exact_from_magnitudes(kernel.mapped.layer, parts, x_int)
        else:
            acc = self.packed_accumulate(kernel, x_int, options)
        return LayerRun(acc, *self._count(kernel, parts, int(x_int.shape[0]), options))

    def packed_accumulate(self, kernel: SreKernel, x_int: Tensor,
                          options: EngineOptions) -> Tensor:
        """Accumulator (float64) with dynamic packing and a lossy ADC (ideal device): the exact
        result plus ADC(p) - p of every packed OU's columns (`packing.packed_corrections`: per
        row tile and cycle, the active kept rows of every position and kept-row set, ranked in
        row order, packed into OUs of ou.rows; partial sums by batched products per block)."""
        mapped = kernel.mapped
        hw, layer = mapped.hw, mapped.layer
        plan = kernel.pack_plan()
        patches = layer.patches(x_int.to(torch.float32))
        m_total = int(patches.shape[0])
        parts = ([(patches.clamp(min=0), 1.0), ((-patches).clamp(min=0), -1.0)]
                 if layer.input_signed else [(patches, 1.0)])
        budget = min(options.memory_budget_mb, PACK_CHUNK_MB) * 2**20
        out = torch.zeros((m_total, layer.out_channels), dtype=torch.float64,
                          device=x_int.device)
        for part, sign in parts:  # one or two passes
            words = torch.zeros((layer.rows + 1, m_total), dtype=torch.int32,
                                device=x_int.device)
            words[: layer.rows] = part.t()  # row-major; row R reads 0 (padding entries)
            packed_corrections(plan, words, hw.cycles, hw.dac.bits, self.granularity,
                               hw.ou.rows, hw.adc.step, float(hw.adc_max_code), out, budget,
                               sign)
        return layer.fold_output(out, x_int.shape[0]) + exact_accumulator(layer, x_int)

    def storage(self, mapped: MappedLayer) -> Storage:
        """Index bits: every kept row of every (array, column group) stores its row index;
        logic per array: an index decoder (weight compression), a zero detector and an OU
        former (dynamic activation sparsity)."""
        units = mapped.arrays * ((1 if self.compress else 0) + (2 if self.dynamic else 0))
        bits = int(kept_matrix(mapped).sum()) * index_bits(mapped.hw) if self.compress else 0
        return Storage(index_bits=bits, logic_units=units)

    # ---- event counting ---------------------------------------------------------------------
    def count(self, kernel: SreKernel, x_int: Tensor, options: EngineOptions) -> Counted:
        """Exact events of one batch and the summed per-image busiest-array OU activations."""
        parts = narrow_magnitudes(kernel.mapped.layer, x_int) if self.dynamic else []
        return self._count(kernel, parts, int(x_int.shape[0]), options)

    def _count(self, kernel: SreKernel, parts: list[Tensor], n: int,
               options: EngineOptions) -> Counted:
        """`count` on the narrow input parts (`counting.narrow_magnitudes`; the static modes
        need none)."""
        mapped = kernel.mapped
        hw, layer = mapped.hw, mapped.layer
        device = kernel.device
        base, _ = dense_events(mapped, n)
        positions, passes = layer.positions, layer.passes
        ou_r = hw.ou.rows
        # every activation of a segment converts its columns: its time and ADC rounds
        timing = self.timing(mapped)
        widths = [int(w) for w in kernel.seg_cols.tolist()]
        seg_time = torch.tensor([timing.time_ns(w) for w in widths], dtype=torch.float64,
                                device=device)
        seg_rounds = torch.tensor([timing.rounds(w) for w in widths], dtype=torch.float64,
                                  device=device)
        ou_sum = torch.zeros(kernel.segments, dtype=torch.float64, device=device)
        row_sum = torch.zeros_like(ou_sum)
        # Per image and array (column tile, row tile): OU activations and their time.
        per_image = torch.zeros((n, len(mapped.col_tiles), len(mapped.row_tiles)),
                                dtype=torch.float64, device=device)
        per_image_ns = torch.zeros_like(per_image)
        if not self.dynamic:
            # Static: the same kept rows every cycle, whatever the data.
            ou = torch.div(kernel.kept + ou_r - 1, ou_r, rounding_mode="floor")  # (S, I)
            reps = float(positions * hw.cycles * passes)
            ou_sum += ou.sum(dim=1) * reps * n
            row_sum += kernel.kept.sum(dim=1) * reps * n
            per_image += ((kernel.seg_tile.t() @ ou) * reps).unsqueeze(0)  # (Ct, I)
            per_image_ns += ((kernel.seg_tile.t() @ (ou * seg_time.unsqueeze(1)))
                             * reps).unsqueeze(0)
        else:
            chunk = self._images_per_chunk(kernel, positions, options)
            for part in parts:  # one or two passes
                for a in range(0, n, chunk):  # chunks of whole images (memory bound)
                    xc = part[a : a + chunk]
                    b = a + int(xc.shape[0])
                    self._count_dynamic(kernel, xc, ou_sum, row_sum, per_image[a:b],
                                        per_image_ns[a:b], seg_time)
        cols = kernel.seg_cols
        adc = int(round(float((ou_sum * cols).sum())))
        kept_total = float(kernel.kept.sum())
        idx = (int(round(kept_total)) * index_bits(hw) * n * positions * passes
               if self.compress else 0)
        ou_total = int(round(float(ou_sum.sum())))
        # dynamic packing: every input chunk (bit) or word is tested for zero, every OU formed
        checks = (layer.rows * n * positions * passes
                  * (hw.cycles if self.granularity == "bit" else 1)) if self.dynamic else 0
        events = Events(
            ou_activations=ou_total,
            adc_conversions=adc,
            adc_rounds=int(round(float((ou_sum * seg_rounds).sum()))),
            dac_activations=int(round(float(row_sum.sum()))),
            cell_reads=int(round(float((row_sum * cols).sum()))),
            shift_adds=adc,
            index_reads=idx,
            buffer_read_bytes=base.buffer_read_bytes,
            buffer_write_bytes=base.buffer_write_bytes,
            digital_ops=base.digital_ops,
            zero_checks=checks,
            ou_forms=ou_total if self.dynamic else 0,
        )
        if not n:
            return Counted(events, 0, 0.0)
        busiest = per_image.reshape(n, -1).amax(dim=1).sum()
        busiest_ns = per_image_ns.reshape(n, -1).amax(dim=1).sum()
        return Counted(events, int(round(float(busiest))), float(busiest_ns))

    def _images_per_chunk(self, kernel: SreKernel, positions: int,
                          options: EngineOptions) -> int:
        """Whole images per counting chunk so the input planes and the (positions x kept
        sets) counts stay within the engine's memory budget."""
        layer = kernel.mapped.layer
        inputs = int(torch.Size(layer.input_shape).numel()) if layer.input_shape else layer.rows
        # inputs: float32 + narrow copies and planes (~12 bytes); counts: ~8 float32 copies
        per_image = inputs * 12 + positions * kernel.sets_total * 32 + kernel.segments * 16
        return max(1, int(options.memory_budget_mb * 2**20 // max(per_image, 1)))

    def _count_dynamic(self, kernel: SreKernel, xc: Tensor, ou_sum: Tensor, row_sum: Tensor,
                       per_image: Tensor, per_image_ns: Tensor, seg_time: Tensor) -> None:
        """Add one chunk's dynamic counts. xc: (images, ...) layer input magnitudes (uint8 or
        int32), channels-last for conv layers.

        `kernel.counter` gives, per image and kept set, the OU activations (the exact
        ceil(active kept rows / ou.rows) of every position and cycle) and the active rows
        (`RowSetCounter.image_sums`), then mapped to the segments.
        """
        mapped = kernel.mapped
        hw = mapped.hw
        ou_img, rows_img = kernel.counter.image_sums(xc, hw.cycles, hw.dac.bits,
                                                     self.granularity == "word", hw.ou.rows)
        rows_set = rows_img.sum(dim=0)
        for i, sets in enumerate(kernel.tile_sets):  # arrays (row tiles): a few
            ou_seg = ou_img[:, sets]  # (images, S)
            ou_sum += ou_seg.sum(dim=0)
            row_sum += rows_set[sets]
            per_image[:, :, i] += ou_seg @ kernel.seg_tile
            per_image_ns[:, :, i] += (ou_seg * seg_time) @ kernel.seg_tile
