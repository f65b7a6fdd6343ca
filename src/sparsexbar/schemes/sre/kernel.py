"""sre kernel: the kept-row sets per (row tile, OU column group) and the counters and exact linear
maps of the dynamic modes."""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.engine import LayerKernel
from ...core.intconv import ExactLinear
from ...core.mapping import MappedLayer
from ..counting import BlockedRows, RowSetCounter
from .mapping import column_segments, kept_matrix
from .packing import PackPlan, build_pack_plan


class SreKernel(LayerKernel):
    """`LayerKernel` plus the per-(row tile, segment) kept-row sets used to count events."""

    def __init__(self, mapped: MappedLayer, device: torch.device) -> None:
        super().__init__(mapped, device)
        keep = kept_matrix(mapped)  # (R, S)
        s_count = keep.shape[1]
        self.seg_cols = (mapped.segment_cols >= 0).sum(dim=1).to(torch.float64).to(device)
        ctile = torch.tensor([t for _, _, t in column_segments(mapped.physical_cols, mapped.hw)],
                             dtype=torch.int64)
        # (S, Ct) one-hot: which array column tile each segment lies in.
        self.seg_tile = torch.nn.functional.one_hot(ctile, len(mapped.col_tiles)).to(
            torch.float64).to(device)
        # Per row tile: the distinct kept-row columns (segments often share one) and the map
        # segment -> distinct column, so the count matmul runs over distinct sets only.
        self.tile_keep: list[Tensor] = []
        self.tile_inverse: list[Tensor] = []
        kept_counts = []
        for a, b in mapped.row_tiles:  # row tiles: a few
            kt = keep[a:b]
            uniq, inverse = torch.unique(kt, dim=1, return_inverse=True)
            self.tile_keep.append(uniq.to(torch.float32).to(device))
            self.tile_inverse.append(inverse.to(device))
            kept_counts.append(kt.sum(dim=0))
        self.kept = torch.stack(kept_counts, dim=1).to(torch.float64).to(device)  # (S, I)
        self.segments = s_count
        # Distinct kept sets of every tile side by side: tile i's sets are the columns
        # set_offset[i] .. set_offset[i] + U_i; segment s of tile i counts set
        # set_offset[i] + tile_inverse[i][s].
        widths = [int(k.shape[1]) for k in self.tile_keep]
        offsets = [sum(widths[:i]) for i in range(len(widths))]
        self.tile_sets = [inv + off for inv, off in zip(self.tile_inverse, offsets, strict=True)]
        self.sets_total = sum(widths)
        self._counter: RowSetCounter | None = None
        self._pack_plan: PackPlan | None = None

    def pack_plan(self) -> PackPlan:
        """The static plan of dynamic packing with a lossy ADC (`packing.build_pack_plan`),
        built on first use."""
        if self._pack_plan is None:
            self._pack_plan = build_pack_plan(self.mapped, self.tile_keep, self.tile_inverse,
                                              self.device)
        return self._pack_plan

    @property
    def counter(self) -> RowSetCounter:
        """The distinct kept sets of every row tile as a `counting.RowSetCounter`: applied to
        an input bit plane its convolution gives, per output position and set, the active kept
        rows of the set's row tile, i.e. the rows an im2col patch would select. Several cycles
        share one call (base-B digits, `fields` of them). Built on first use: the static modes
        never need it."""
        if self._counter is None:
            r = self.mapped.layer.rows
            sets = torch.zeros((self.sets_total, r), dtype=torch.int64)
            col = 0
            for (a, b), keep in zip(self.mapped.row_tiles, self.tile_keep, strict=True):
                sets[col : col + keep.shape[1], a:b] = keep.t().cpu().to(torch.int64)
                col += keep.shape[1]
            self._counter = RowSetCounter(self.mapped.layer, sets, self.device,
                                          row_blocks=list(self.mapped.row_tiles))
        return self._counter

    def count_op(self) -> ExactLinear | BlockedRows:
        """The counter's convolution (`RowSetCounter.op`)."""
        return self.counter.op()

    @property
    def fields(self) -> int:
        """Cycles (base-B digits) per call of the count convolution (after `count_op()`)."""
        return self.counter.fields

    @property
    def field_base(self) -> int:
        """B: the largest kept set + 1."""
        return self.counter.base
