"""combined kernel: what runs on one layer (`LayerChoice`), the layout's kernel, its OU-slot
table for the generic counter (`sre_slots`, `pattern_slots`), and comprrae's and encoding's
kernels where they apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...core.engine import LayerKernel
from ...core.mapping import MappedLayer, map_dense
from ..comprrae import CompKernel
from ..counting import (
    RowSetCounter,
    SlotTable,
    class_channels,
    slot_domains,
)
from ..encoding import (
    EncodingKernel,
    EncodingMappedLayer,
    EncodingScheme,
)
from ..pattern import PatternKernel, PatternMappedLayer
from ..sre import (
    SreKernel,
    column_segments,
    map_sre,
)


@dataclass(frozen=True)
class LayerChoice:
    """What runs on one layer: its weight layout (as mapped: a pattern layer that fell back is
    `dense`), whether act and comprrae apply, encoding's parts (the layer's ADC bits, None:
    the configured; zero-plane skipping; bus-invert + weight complement) and why something
    asked for does not apply."""

    layout: str
    act: bool
    comprrae: bool
    adc_bits: int | None = None
    skip_planes: bool = False
    encodings: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layout": self.layout, "act": self.act, "comprrae": self.comprrae}
        if self.adc_bits is not None:
            out["adc_bits"] = self.adc_bits
        if self.skip_planes:
            out["skip_zero_planes"] = True
        if self.encodings:
            out["encodings"] = "bus-invert + weight complement"
        if self.note:
            out["note"] = self.note
        return out


class CombinedKernel(LayerKernel):
    """The layout's kernel (values, kept sets), the slot table and its row-set counter, and,
    where they apply, comprrae's kernel and encoding's kernel."""

    def __init__(self, mapped: MappedLayer, device: torch.device, choice: LayerChoice,
                 alpha: float | None, encoding: EncodingScheme | None) -> None:
        super().__init__(mapped, device)
        self.choice = choice
        self.inner: SreKernel | PatternKernel
        self.counter: RowSetCounter | None = None
        self.enc: EncodingKernel | None = None
        self.encoding = encoding
        if isinstance(mapped, PatternMappedLayer):
            self.inner = PatternKernel(mapped, device)
            self.table, self.counter = pattern_slots(self.inner, choice.act, device)
        else:
            layout = mapped
            if isinstance(mapped, EncodingMappedLayer):  # the dense layout, encoded
                assert encoding is not None
                self.enc = EncodingKernel(mapped, device, encoding)
                layout = map_sre(mapped.layer, mapped.hw, compress=False)
            self.inner = SreKernel(layout, device)
            skip = "act" if choice.act else "any" if choice.skip_planes else "none"
            self.table = sre_slots(self.inner, device, skip)
            if choice.act:
                self.counter = self.inner.counter
            elif choice.skip_planes:
                self.counter = RowSetCounter(mapped.layer, self.table.sets, device,
                                             row_blocks=list(mapped.row_tiles))
        self.comp = (CompKernel(map_dense(mapped.layer, mapped.hw), device, alpha)
                     if choice.comprrae else None)
        if (self.comp is not None and choice.act and self.counter is not None
                and 4 * self.table.slots <= 5 * self.counter.count):
            # early termination counts per (position, slot) every cycle: one domain per slot
            # spares a gather per cycle for at most 25% more counter filters
            self.table, self.counter = slot_domains(self.table, mapped.layer, device,
                                                    row_blocks=self.counter.row_blocks)


def sre_slots(kernel: SreKernel, device: torch.device, skip: str) -> SlotTable:
    """Slots of an SRE-style layout (`map_sre`, compressed or not): one per (row tile, OU column
    group), tile-major; its domain the group's kept rows in the tile (the kernel's distinct
    kept sets), its column class the group. skip `any`: zero-plane skipping, the domains are
    the row tiles (a slot runs when its tile has an active row)."""
    mapped = kernel.mapped
    tiles_n = len(mapped.row_tiles)
    ctile = torch.tensor([t for _, _, t in column_segments(mapped.physical_cols, mapped.hw)],
                         dtype=torch.int64)
    slot_set = torch.cat([s.cpu() for s in kernel.tile_sets])  # tile-major: (I * S,)
    segments = kernel.segments
    seg = torch.arange(segments).repeat(tiles_n)
    tile = torch.arange(tiles_n).repeat_interleave(segments)
    rows = kernel.kept.cpu().t().reshape(-1)  # (I, S) tile-major
    width = (mapped.segment_cols >= 0).sum(dim=1).to(torch.float64).cpu()[seg]
    chan, cnt = class_channels(mapped.segment_cols.cpu(), mapped.col_channel.cpu(),
                               mapped.layer.out_channels)
    sets = torch.zeros((kernel.sets_total, mapped.layer.rows), dtype=torch.bool)
    col = 0
    for (a, b), keep in zip(mapped.row_tiles, kernel.tile_keep, strict=True):  # a few
        sets[col : col + keep.shape[1], a:b] = keep.t().cpu().bool()
        col += keep.shape[1]
    gate = None
    if skip == "any":  # the domains of the count: whole row tiles
        sets = torch.zeros((tiles_n, mapped.layer.rows), dtype=torch.bool)
        for i, (a, b) in enumerate(mapped.row_tiles):  # a few
            sets[i, a:b] = True
        gate = tile.to(device)
    return SlotTable(
        sets=sets.to(device), slot_set=slot_set.to(device), slot_rows=rows.to(device),
        slot_width=width.to(device), slot_array=(ctile[seg] * tiles_n + tile).to(device),
        arrays=len(mapped.col_tiles) * tiles_n, classes=segments,
        class_channels=chan.to(device), class_channel_cols=cnt.to(device),
        channels=mapped.layer.out_channels, skip=skip, slot_gate=gate)


def pattern_slots(kernel: PatternKernel, act: bool,
                  device: torch.device) -> tuple[SlotTable, RowSetCounter]:
    """Slots of the kernel-reordering layout: one per unit (its own column class), its
    domain the unit's row piece."""
    plan = kernel.plan
    mapped = kernel.mapped
    assert plan is not None
    r = mapped.layer.rows
    rows = plan.piece_rows
    sets = torch.zeros((plan.pieces, r + 1), dtype=torch.bool)
    sets[torch.arange(plan.pieces).unsqueeze(1).expand_as(rows),
         torch.where(rows >= 0, rows, torch.full_like(rows, r))] = True
    sets = sets[:, :r]
    chan, cnt = class_channels(plan.unit_columns, mapped.col_channel.cpu(),
                               mapped.layer.out_channels)
    table = SlotTable(
        sets=sets.to(device), slot_set=plan.unit_piece.to(device),
        slot_rows=plan.piece_height[plan.unit_piece].to(torch.float64).to(device),
        slot_width=plan.unit_cols.to(torch.float64).to(device),
        slot_array=plan.unit_array.to(device), arrays=plan.arrays, classes=plan.units,
        class_channels=chan.to(device), class_channel_cols=cnt.to(device),
        channels=mapped.layer.out_channels, skip="act" if act else "any")
    return table, RowSetCounter(mapped.layer, sets, device)
