"""sre mapping: one segment per (column tile x OU column group); per segment and row tile the
kept rows packed in order into OU row groups; bounds on the partial sums."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, map_dense, tiles

MODES = ("weight", "activation", "joint")


GRANULARITIES = ("bit", "word")


def column_segments(cols: int, hw: HardwareConfig) -> list[tuple[int, int, int]]:
    """(start, stop, column tile index) of every OU column group, in column order."""
    out: list[tuple[int, int, int]] = []
    for t, (c0, c1) in enumerate(tiles(cols, hw.array.cols)):  # column tiles: a few
        out.extend((c0 + a, c0 + b, t) for a, b in tiles(c1 - c0, hw.ou.cols))
    return out


def index_bits(hw: HardwareConfig) -> int:
    """Bits of one stored row index: ceil(log2(array.rows)), at least 1."""
    return max(1, math.ceil(math.log2(hw.array.rows)))


def map_sre(layer: QuantLayer, hw: HardwareConfig, compress: bool = True) -> MappedLayer:
    """SRE mapping: one segment per (column tile x OU column group); per segment and row tile
    the kept rows (all rows when not `compress`, else rows nonzero somewhere in the group)
    packed in order into OU row groups of `ou.rows` (padded with -1)."""
    dense = map_dense(layer, hw)
    hw = dense.hw  # adc.bits resolved for the layer
    levels = dense.levels
    r, c = levels.shape
    row_tiles = tiles(r, hw.array.rows)
    segs = column_segments(c, hw)
    s_count, ou = len(segs), hw.ou.rows
    starts = torch.tensor([a for a, _, _ in segs], dtype=torch.int64)
    stops = torch.tensor([b for _, b, _ in segs], dtype=torch.int64)
    seg_cols = torch.full((s_count, hw.ou.cols), -1, dtype=torch.int64)
    offs = torch.arange(hw.ou.cols)
    valid = offs.unsqueeze(0) < (stops - starts).unsqueeze(1)
    seg_cols[valid] = (starts.unsqueeze(1) + offs.unsqueeze(0))[valid]
    if compress:
        # A row is kept for a segment when any of the segment's cells is nonzero.
        nz = torch.nn.functional.pad(levels != 0, (0, 1))  # padding column (index C) is False
        cols = torch.where(seg_cols < 0, torch.full_like(seg_cols, c), seg_cols).reshape(-1)
        kept = nz[:, cols].reshape(r, s_count, -1).any(dim=2)  # (R, S)
    else:
        kept = torch.ones((r, s_count), dtype=torch.bool)
    per_tile = torch.stack([kept[a:b].sum(dim=0) for a, b in row_tiles], dim=1)  # (S, I)
    groups = torch.div(per_tile + ou - 1, ou, rounding_mode="floor")
    goff = torch.cumsum(groups, dim=1) - groups  # first group of each tile, per segment
    g_total = max(1, int(groups.sum(dim=1).max()))
    group_rows = torch.full((s_count, g_total, ou), -1, dtype=torch.int64)
    for i, (a, b) in enumerate(row_tiles):  # row tiles: a few
        kt = kept[a:b]
        rank = torch.cumsum(kt.to(torch.int32), dim=0).to(torch.int64) - 1
        r_idx, s_idx = kt.nonzero(as_tuple=True)
        rk = rank[r_idx, s_idx]
        group_rows[s_idx, goff[s_idx, i] + torch.div(rk, ou, rounding_mode="floor"),
                   rk % ou] = a + r_idx
    # Same cells, tiles and columns as the dense mapping; only the row groups differ.
    kwargs: dict[str, Any] = {f.name: getattr(dense, f.name) for f in fields(dense) if f.init}
    rows_bound = any_rows_bound(levels, row_tiles, hw)
    # Any packed group is some <= ou.rows rows of one array: `rows_bound` bounds its partial
    # sums. Within the ADC range that settles exactness; otherwise compute the exact maximum.
    bound = (rows_bound if rows_bound <= hw.adc_max_code
             else group_partial_sum_bound(levels, group_rows, seg_cols, hw))
    kwargs.update(group_rows=group_rows, segment_cols=seg_cols, partial_sum_bound=float(bound),
                  rows_bound=rows_bound)
    if "_cache" in kwargs:  # derived values of the dense row groups do not carry over
        kwargs["_cache"] = {}
    return SreMappedLayer(**kwargs)


def group_partial_sum_bound(levels: Tensor, group_rows: Tensor, seg_cols: Tensor,
                       hw: HardwareConfig) -> float:
    """Largest column sum of levels over any OU row group, times the largest input chunk."""
    s_count, g_count, ou = group_rows.shape
    k = seg_cols.shape[1]
    lv = torch.nn.functional.pad(levels.to(torch.int32), (0, 1))  # padding column -> 0
    cols = torch.where(seg_cols < 0, torch.full_like(seg_cols, levels.shape[1]), seg_cols)
    sums = torch.zeros((s_count * g_count + 1, k), dtype=torch.int32)
    # Flat (segment, group) index of every stored (row, segment) pair; padding -> last slot.
    seg_idx = torch.arange(s_count).view(-1, 1, 1).expand_as(group_rows)
    grp_idx = torch.arange(g_count).view(1, -1, 1).expand_as(group_rows)
    flat = torch.where(group_rows >= 0, seg_idx * g_count + grp_idx,
                       torch.full_like(group_rows, s_count * g_count)).reshape(-1)
    rows = group_rows.clamp(min=0).reshape(-1)
    segs = seg_idx.reshape(-1)
    for a in range(0, flat.numel(), 1 << 16):  # bounded gathers of (rows x K) levels
        sel = slice(a, a + (1 << 16))
        sums.index_add_(0, flat[sel], lv[rows[sel].unsqueeze(1), cols[segs[sel]]])
    best = int(sums[:-1].max()) if sums.numel() > k else 0
    return float(best * (2**hw.dac.bits - 1))


@dataclass
class SreMappedLayer(MappedLayer):
    """A `MappedLayer` whose partial-sum bound was computed once, vectorized, at mapping."""

    partial_sum_bound: float = 0.0
    rows_bound: int = 0  # bound over any ou.rows rows of one array (see `any_rows_bound`)

    def max_partial_sum(self) -> float:
        """Largest partial sum any single column of any OU activation can produce (ideal), or
        an upper bound of it that is itself within the ADC range (exactness is then settled)."""
        return self.partial_sum_bound


def kept_matrix(mapped: MappedLayer) -> Tensor:
    """(R, S) bool: row r is stored (kept) for segment s, read off the mapping's row groups."""
    s_count = mapped.group_rows.shape[0]
    r = mapped.levels.shape[0]
    keep = torch.zeros((s_count, r + 1), dtype=torch.bool)
    rows = mapped.group_rows.reshape(s_count, -1)
    rows = torch.where(rows < 0, torch.full_like(rows, r), rows)
    keep.scatter_(1, rows, True)
    return keep[:, :r].t().contiguous()


def any_rows_bound(levels: Tensor, row_tiles: list[tuple[int, int]],
                   hw: HardwareConfig) -> int:
    """Largest column sum of levels over any `ou.rows` rows of one array, times the largest
    input chunk: a bound on every partial sum, whatever rows are packed together. Cheap first
    (ou.rows x largest level), exact (top-k per column) only when that exceeds the ADC range."""
    chunk_max = 2**hw.dac.bits - 1
    if levels.numel() == 0:
        return 0
    tallest = max(b - a for a, b in row_tiles)
    trivial = min(hw.ou.rows, tallest) * int(levels.max()) * chunk_max
    if trivial <= hw.adc_max_code:
        return trivial
    worst = 0
    for a, b in row_tiles:  # row tiles: a few
        lv = levels[a:b].to(torch.int32)
        k = min(hw.ou.rows, b - a)
        worst = max(worst, int(lv.topk(k, dim=0).values.sum(dim=0).max()))
    return worst * chunk_max


def dynamic_packing_lossless(mapped: MappedLayer) -> bool:
    """True when no choice of `ou.rows` rows of one array can exceed the ADC range in any column
    (ideal device, unit step): then dynamic packing cannot change any conversion."""
    hw = mapped.hw
    if not hw.device.ideal or hw.adc.step != 1.0:
        return False
    bound = (mapped.rows_bound if isinstance(mapped, SreMappedLayer)
             else any_rows_bound(mapped.levels, mapped.row_tiles, hw))
    return bound <= hw.adc_max_code
