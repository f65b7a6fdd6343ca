"""pattern mapping: patterns inferred from the integer weights, pattern blocks cut into units
(one OU each), placed by shelf packing; the fallback rule against the dense mapping."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, dense_events, map_dense
from ...training.prune import KERNEL_POSITIONS, code_masks, mask_codes, pattern_library


def index_bits(count: int) -> int:
    """Bits of an index into `count` items: ceil(log2(count)), at least 1."""
    return max(1, math.ceil(math.log2(max(count, 1))))


def is_pattern_layer(layer: QuantLayer) -> bool:
    """3x3 convolutions (groups=1) get the kernel-reordering mapping; every other layer is
    dense: linear and 1x1 layers, and grouped/depthwise convs (pattern pruning picks patterns
    per layer over all its kernels; a depthwise layer, one kernel per channel, is mapped
    block-diagonally as `dense` maps it)."""
    return layer.kind == "conv" and layer.kernel_size == (3, 3) and layer.groups == 1


def infer_patterns(weight_int: Tensor) -> tuple[Tensor, Tensor]:
    """The layer's patterns and each kernel's pattern, from its integer weights
    (`training.prune.pattern_library` of the kernels' nonzero masks).

    Returns (patterns (P,) int64 codes in ascending order, kernel_pattern (Cout, Cin) int64
    index into `patterns`, -1 for an all-zero kernel). Patterns are the maximal kernel masks;
    a non-maximal mask joins its most frequent maximal superset (ties: the smaller code).
    """
    return pattern_library(mask_codes(weight_int != 0))


@dataclass
class PatternPlan:
    """Blocks, units and their placement for one 3x3 conv layer (tensors on the CPU)."""

    patterns: Tensor  # (P,) int64 pattern codes
    kernel_pattern: Tensor  # (Cout, Cin) int64 pattern index, -1: not stored
    block_channel: Tensor  # (B,) input channel of each block
    block_pattern: Tensor  # (B,) pattern index of each block
    block_kernels: Tensor  # (B,) stored kernels (output channels) of each block
    piece_rows: Tensor  # (Bp, ou.rows) im2col rows of each row piece, -1 padded
    piece_block: Tensor  # (Bp,) block of each piece
    piece_cols: Tensor  # (Bp,) physical columns of the piece (its block's)
    piece_units: Tensor  # (Bp,) OU column groups of the piece
    unit_piece: Tensor  # (S,) piece of each unit
    unit_cols: Tensor  # (S,) columns of each unit (<= ou.cols)
    unit_array: Tensor  # (S,) array holding the unit
    unit_row: Tensor  # (S,) first row of the unit's shelf in its array
    unit_slot: Tensor  # (S,) OU slot of the unit in its shelf (first column = slot x ou.cols)
    unit_columns: Tensor  # (S, ou.cols) dense-layout physical columns of each unit, -1 padded
    arrays: int
    used_rows: int  # distinct im2col rows some block reads (fetched from the buffer)

    @property
    def blocks(self) -> int:
        return int(self.block_channel.numel())

    @property
    def stored_kernels(self) -> int:
        return int(self.block_kernels.sum())

    @property
    def pieces(self) -> int:
        return int(self.piece_block.numel())

    @property
    def units(self) -> int:
        return int(self.unit_piece.numel())

    @property
    def piece_height(self) -> Tensor:
        return (self.piece_rows >= 0).sum(dim=1)


def plan_pattern(layer: QuantLayer, hw: HardwareConfig) -> PatternPlan:
    """Pattern blocks of a 3x3 conv layer, cut into units and placed by shelf packing."""
    w = layer.weight_int
    cout, cin = int(w.shape[0]), int(w.shape[1])
    cpc = hw.polarities * hw.slices  # physical columns per output channel
    ou_r, ou_c = hw.ou.rows, hw.ou.cols
    patterns, kernel_pattern = infer_patterns(w)
    n_pat = int(patterns.numel())
    # Stored kernels sorted by block (input channel, pattern), then output channel.
    o_idx, i_idx = (kernel_pattern >= 0).nonzero(as_tuple=True)
    p_idx = kernel_pattern[o_idx, i_idx]
    block_key = i_idx * max(n_pat, 1) + p_idx
    order = torch.argsort(block_key * cout + o_idx)
    o_idx, block_key = o_idx[order], block_key[order]
    keys, block_of, per_block = torch.unique_consecutive(block_key, return_inverse=True,
                                                         return_counts=True)
    block_start = torch.cumsum(per_block, 0) - per_block
    block_channel = torch.div(keys, max(n_pat, 1), rounding_mode="floor")
    block_pattern = keys - block_channel * max(n_pat, 1)
    block_cols = per_block * cpc
    block_units = torch.div(block_cols + ou_c - 1, ou_c, rounding_mode="floor")
    # Row pieces of each pattern: its positions in order, cut into groups of ou.rows.
    pos_mask = code_masks(patterns)  # (P, 9)
    heights = pos_mask.sum(dim=1)
    pieces_of_pattern = torch.div(heights + ou_r - 1, ou_r, rounding_mode="floor")
    max_pieces = int(pieces_of_pattern.max()) if n_pat else 1
    pattern_piece_pos = torch.full((max(n_pat, 1), max_pieces, ou_r), -1, dtype=torch.int64)
    pp, pos = pos_mask.nonzero(as_tuple=True)  # sorted by pattern, then position
    rank = torch.arange(pp.numel()) - (torch.cumsum(heights, 0) - heights)[pp]
    pattern_piece_pos[pp, torch.div(rank, ou_r, rounding_mode="floor"), rank % ou_r] = pos
    pieces_per_block = pieces_of_pattern[block_pattern] if n_pat else block_pattern
    piece_block = torch.repeat_interleave(torch.arange(keys.numel()), pieces_per_block)
    piece_index = torch.arange(piece_block.numel()) - (
        torch.cumsum(pieces_per_block, 0) - pieces_per_block)[piece_block]
    ppos = pattern_piece_pos[block_pattern[piece_block], piece_index]  # (Bp, ou)
    piece_rows = torch.where(ppos >= 0, block_channel[piece_block].view(-1, 1)
                             * KERNEL_POSITIONS + ppos, ppos)
    piece_cols = block_cols[piece_block]
    piece_units = block_units[piece_block]
    # Units: (piece, column group).
    unit_piece = torch.repeat_interleave(torch.arange(piece_block.numel()), piece_units)
    unit_group = torch.arange(unit_piece.numel()) - (
        torch.cumsum(piece_units, 0) - piece_units)[unit_piece]
    unit_cols = torch.clamp(piece_cols[unit_piece] - unit_group * ou_c, max=ou_c)
    height = (piece_rows >= 0).sum(dim=1)
    unit_array, unit_row, unit_slot, arrays = place_units(height[unit_piece], hw)
    used = torch.zeros(cin * KERNEL_POSITIONS + 1, dtype=torch.bool)
    used[torch.where(piece_rows >= 0, piece_rows, cin * KERNEL_POSITIONS).reshape(-1)] = True
    # Unit columns: the block's stored channels in order, cpc columns each.
    slot_c = torch.arange(ou_c).view(1, -1)
    rank_c = unit_group.view(-1, 1) * ou_c + slot_c  # column rank within the block
    valid = slot_c < unit_cols.view(-1, 1)
    kernel = block_start[piece_block[unit_piece]].view(-1, 1) + torch.div(
        rank_c, cpc, rounding_mode="floor")
    kernel = torch.where(valid, kernel, torch.zeros_like(kernel))
    cols = o_idx[kernel] * cpc + rank_c % cpc if o_idx.numel() else rank_c
    unit_columns = torch.where(valid, cols, torch.full_like(cols, -1))
    return PatternPlan(
        patterns=patterns, kernel_pattern=kernel_pattern, block_channel=block_channel,
        block_pattern=block_pattern, block_kernels=per_block, piece_rows=piece_rows,
        piece_block=piece_block, piece_cols=piece_cols, piece_units=piece_units,
        unit_piece=unit_piece, unit_cols=unit_cols, unit_array=unit_array, unit_row=unit_row,
        unit_slot=unit_slot, unit_columns=unit_columns, arrays=arrays,
        used_rows=int(used[:-1].sum()))


def place_units(unit_height: Tensor, hw: HardwareConfig) -> tuple[Tensor, Tensor, Tensor, int]:
    """Next-fit decreasing-height shelf packing of units (one OU slot each).

    Units are taken tallest first, stably (so in their given order within one height); shelves
    of `array.cols // ou.cols` slots and the units' height are stacked in an array while rows
    remain, then the next array opens. Returns (array, shelf row, slot) per unit and the
    number of arrays. Vectorized per distinct height (a handful).
    """
    n = int(unit_height.numel())
    array = torch.zeros(n, dtype=torch.int64)
    row = torch.zeros(n, dtype=torch.int64)
    slot = torch.zeros(n, dtype=torch.int64)
    if n == 0:
        return array, row, slot, 0
    rows, slots = hw.array.rows, hw.array.cols // hw.ou.cols
    order = torch.argsort(-unit_height, stable=True)
    cur_array, cur_row = 0, 0  # where the next shelf goes
    heights = sorted({int(h) for h in unit_height.unique().tolist()}, reverse=True)
    start = 0
    for h in heights:  # distinct unit heights: at most ou.rows
        count = int((unit_height == h).sum())
        members = order[start : start + count]
        start += count
        rank = torch.arange(count)
        shelf = torch.div(rank, slots, rounding_mode="floor")
        fit_now = (rows - cur_row) // h  # shelves left in the current array
        per_array = rows // h
        later = shelf - fit_now
        in_now = later < 0
        arr = torch.where(in_now, torch.full_like(shelf, cur_array),
                          cur_array + 1 + torch.div(later.clamp(min=0), per_array,
                                                    rounding_mode="floor"))
        top = torch.where(in_now, cur_row + shelf * h, (later.clamp(min=0) % per_array) * h)
        array[members], row[members], slot[members] = arr, top, rank % slots
        cur_array, cur_row = int(arr[-1]), int(top[-1]) + h
    return array, row, slot, int(array.max()) + 1


@dataclass
class PatternMappedLayer(MappedLayer):
    """A `MappedLayer` whose segments are the units of a `PatternPlan`."""

    plan: PatternPlan | None = None
    partial_sum_bound: float = 0.0

    @property
    def arrays(self) -> int:
        assert self.plan is not None
        return self.plan.arrays

    def max_partial_sum(self) -> float:
        """Largest partial sum any column of any unit can produce (ideal), from the mapping."""
        return self.partial_sum_bound


# What the pattern placement must not exceed (before input skipping), else the layer is dense.
FALLBACK_KEYS = ("arrays", "ou_activations", "adc_conversions", "dac_activations", "cell_reads")


def static_counts(plan: PatternPlan) -> dict[str, int]:
    """Per output position, pass and cycle, with every unit activated: crossbar events."""
    height = plan.piece_height[plan.unit_piece]
    cols = plan.unit_cols
    per_array = torch.bincount(plan.unit_array, minlength=max(plan.arrays, 1))
    return {"ou_activations": plan.units, "adc_conversions": int(cols.sum()),
            "dac_activations": int(height.sum()), "cell_reads": int((height * cols).sum()),
            "busiest": int(per_array.max()) if plan.units else 0, "arrays": plan.arrays}


def dense_static_counts(dense: MappedLayer) -> dict[str, int]:
    """The same counts for the straightforward mapping (`mapping.dense_events` per step)."""
    layer = dense.layer
    per = layer.positions * dense.hw.cycles * layer.passes
    events, busiest = dense_events(dense, 1)
    return {"ou_activations": events.ou_activations // per,
            "adc_conversions": events.adc_conversions // per,
            "dac_activations": events.dac_activations // per,
            "cell_reads": events.cell_reads // per, "busiest": busiest // per,
            "arrays": dense.arrays}


def unit_levels(levels: Tensor, group_rows: Tensor, segment_cols: Tensor) -> Tensor:
    """(S, G, ou, K) levels of every segment's row groups and columns, zero at padding (-1).

    Same result as `mapping.gather_group_levels`, but it gathers only the (row, column)
    pairs used, not whole rows first: with tens of thousands of one-OU segments (a 512-channel
    layer) whole rows would take S x ou x all columns (gigabytes)."""
    padded = torch.nn.functional.pad(levels, (0, 1, 0, 1))  # index -1 hits the zero row/col
    rows = torch.where(group_rows < 0, torch.full_like(group_rows, levels.shape[0]), group_rows)
    cols = torch.where(segment_cols < 0, torch.full_like(segment_cols, levels.shape[1]),
                       segment_cols)
    return padded[rows.unsqueeze(3), cols.view(cols.shape[0], 1, 1, cols.shape[1])]


def map_pattern(layer: QuantLayer, hw: HardwareConfig, fallback: bool = True) -> MappedLayer:
    """Kernel-reordering mapping of a 3x3 conv (dense fallback, see the module docstring,
    unless `fallback` is False); any other layer gets the dense mapping."""
    dense = map_dense(layer, hw)
    hw = dense.hw  # adc.bits resolved for the layer
    if not is_pattern_layer(layer):
        return dense
    plan = plan_pattern(layer, hw)
    unit_cols = plan.unit_columns
    mine, theirs = static_counts(plan), dense_static_counts(dense)
    if plan.units == 0 or (fallback and any(mine[key] > theirs[key] for key in FALLBACK_KEYS)):
        return dense
    group_rows = plan.piece_rows[plan.unit_piece].unsqueeze(1)  # (S, 1, ou.rows)
    kwargs: dict[str, Any] = {f.name: getattr(dense, f.name) for f in fields(dense) if f.init}
    kwargs.update(group_rows=group_rows, segment_cols=unit_cols, _cache={}, plan=plan)
    levels = unit_levels(dense.levels.to(torch.int32), group_rows, unit_cols)
    best = int(levels.sum(dim=2).max()) if levels.numel() else 0
    kwargs["partial_sum_bound"] = float(best * (2**hw.dac.bits - 1))
    return PatternMappedLayer(**kwargs)
