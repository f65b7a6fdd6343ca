"""`pattern`: kernel-reordering weight mapping on pattern-pruned 3x3 convolutions (Yu et al.,
arXiv 2010.06156), our reconstruction (DESIGN.md 3.2; docs/schemes/pattern.md).

Pattern blocks. A 3x3 kernel (o, i) stores the weights at its nonzero positions; its mask is
a 9-bit code (bit kh * 3 + kw, `prune.mask_codes`). The layer's patterns are inferred from
its integer weights: the maximal masks (no other kernel mask strictly contains them); a
kernel whose mask is strictly contained in others (a weight quantized to zero, say) joins the
most frequent of its maximal supersets and stores a zero cell there. A pattern block is
(input channel i, pattern p): its rows are the im2col rows i * 9 + position of p's positions,
its columns the physical columns (polarities x slices, dense layout) of the output channels,
in channel order, whose kernel (o, i) has pattern p. Pruned (all-zero) kernels are not stored.

Units. A block is cut into OU column groups of `ou.cols` columns and, when it has more rows
than `ou.rows`, into row pieces of `ou.rows` rows; a unit (row piece x column group) is one
OU. Placement, next-fit decreasing-height shelf packing: units sorted by height (tallest
first), then in (input channel, pattern, piece, column group) order; each array is cut into
shelves as tall as their units, filled left to right with one unit per OU slot (slots start at
multiples of `ou.cols`; `array.cols // ou.cols` slots per shelf, leftover columns unused); a
full shelf opens the next one below, a full array the next array. Since every unit takes one
slot, the order changes which array holds which unit, not the array count.

Input preprocessing: per output position and cycle, a unit is activated only when some of its
rows has a nonzero input chunk (the block's k inputs are fetched and tested; granularity: the
`dac.bits` chunk of the cycle). The output index routes every stored channel's columns back
to its output channel.

Events, exact, per image, output position, pass and cycle, per unit of h rows and n columns
activated: ou_activations 1, adc_conversions = shift_adds n, dac_activations h, cell_reads
h x n. comparisons: one zero test per row piece per cycle (shared by the piece's column
groups). index_reads (bits; once per output position and pass, the fetched inputs stay in the
row registers during the cycles): per block its input index (input channel + pattern id), per
stored kernel its output channel. buffer_read_bytes: the inputs of the rows some block reads
(rows of wholly pruned input channels and positions are not fetched); buffer writes and
digital ops: those of `dense`. cycles: per image, the busiest array's OU activations.

Storage (area): per block ceil(log2 Cin) + ceil(log2 P) bits, per stored kernel
ceil(log2 Cout) bits, per pattern 9 bits (each at least 1); one zero detector per array.

Fallback (our rule): a layer whose pattern placement would, before any input skipping, use more
arrays, OU activations, conversions, driven rows or cell reads per cycle than the
straightforward mapping is mapped as `dense` (a dense layer, or OUs much taller than the
patterns). So no crossbar event count and no array count of `pattern` exceeds `dense`'s. The
busiest array is not in the rule: packing a layer into fewer arrays can load one array with
more OUs than any dense array holds (latency is then won back only by input skipping).
Layers that are not 3x3 convolutions use the dense mapping too.

Values go through the generic engine: one segment per unit (a single OU row group of the
unit's rows, padded to `ou.rows` with -1; the unit's dense-layout column numbers), so a
clipping ADC and a non-ideal device are simulated bit-accurately with the pattern OUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.config import HardwareConfig, SignEncoding
from ...core.cost import Storage
from ...core.engine import EngineOptions, LayerKernel, accumulate
from ...core.errors import SparsexbarError
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, dense_events, map_dense
from ...training.prune import KERNEL_POSITIONS, code_masks, mask_codes
from ..base import LayerRun, Scheme

CODES = 2**KERNEL_POSITIONS  # nonzero-flag codes of the 9 inputs of one 3x3 kernel
CYCLES_PER_WORD = 63 // KERNEL_POSITIONS  # cycles whose codes share one int64 word


def index_bits(count: int) -> int:
    """Bits of an index into `count` items: ceil(log2(count)), at least 1."""
    return max(1, math.ceil(math.log2(max(count, 1))))


def is_pattern_layer(layer: QuantLayer) -> bool:
    """3x3 convolutions get the kernel-reordering mapping; every other layer is dense."""
    return layer.kind == "conv" and layer.kernel_size == (3, 3)


def infer_patterns(weight_int: Tensor) -> tuple[Tensor, Tensor]:
    """The layer's patterns and each kernel's pattern, from its integer weights.

    Returns (patterns (P,) int64 codes in ascending order, kernel_pattern (Cout, Cin) int64
    index into `patterns`, -1 for an all-zero kernel). Patterns are the maximal kernel masks;
    a non-maximal mask joins its most frequent maximal superset (ties: the smaller code).
    """
    codes = mask_codes(weight_int != 0)  # (Cout, Cin)
    stored = codes != 0
    kernel_pattern = torch.full_like(codes, -1)
    if not bool(stored.any()):
        return torch.zeros(0, dtype=torch.int64), kernel_pattern
    uniq, inverse, counts = torch.unique(codes[stored], return_inverse=True, return_counts=True)
    # contains[a, b]: mask a is a subset of mask b (a != b: a strict subset, codes distinct).
    contains = (uniq.view(-1, 1) & uniq.view(1, -1)) == uniq.view(-1, 1)
    strict = contains & ~torch.eye(len(uniq), dtype=torch.bool)
    maximal = ~strict.any(dim=1)
    target_ok = contains & maximal.view(1, -1)  # b maximal and a inside b (a itself if maximal)
    score = torch.where(target_ok, counts.view(1, -1), torch.full_like(target_ok, -1,
                                                                        dtype=torch.int64))
    target = score.argmax(dim=1)  # first maximum: the smaller code on ties
    pattern_of_uniq = torch.cumsum(maximal.to(torch.int64), 0) - 1
    kernel_pattern[stored] = pattern_of_uniq[target[inverse]]
    return uniq[maximal], kernel_pattern


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


class PatternKernel(LayerKernel):
    """`LayerKernel` plus what counting needs: each row piece's input channel and position
    mask, and per piece its units in every array."""

    @cached_property
    def flag_tables(self) -> list[tuple[Tensor, int]]:
        """Input value -> which of its DAC chunks are nonzero, as lookup tables over all
        2^input_bits values: per group of up to CYCLES_PER_WORD cycles, an int64 table whose
        bit KERNEL_POSITIONS * j flags the group's cycle j, and the group's cycle count."""
        hw = self.mapped.hw
        cycles, dac_bits = hw.cycles, hw.dac.bits
        values = torch.arange(2**hw.numbers.input_bits, dtype=torch.int64, device=self.device)
        tables = []
        for first in range(0, cycles, CYCLES_PER_WORD):  # one or a few words
            count = min(CYCLES_PER_WORD, cycles - first)
            table = torch.zeros_like(values)
            for j in range(count):  # cycles of the word
                chunk = (values >> ((first + j) * dac_bits)) & (2**dac_bits - 1)
                table |= (chunk != 0).to(torch.int64) << (KERNEL_POSITIONS * j)
            tables.append((table, count))
        return tables

    @cached_property
    def code_hits(self) -> tuple[Tensor, Tensor]:
        """(512 codes, distinct piece masks) float64: 1 where a code of nonzero flags meets
        the mask; and each piece's index into those masks."""
        masks, mask_index = torch.unique(self.piece_mask, return_inverse=True)
        codes = torch.arange(CODES, dtype=torch.int32, device=self.device).view(-1, 1)
        return ((codes & masks.view(1, -1)) != 0).to(torch.float64), mask_index

    @cached_property
    def group_levels(self) -> Tensor:
        """(S*G, ou, K) float32 programmed levels of every OU row group (memory-light)."""
        s, g, ou, k = self.shape
        lv = unit_levels(self.mapped.conductance, self.mapped.group_rows,
                         self.mapped.segment_cols)
        return lv.reshape(s * g, ou, k).to(self.device)

    def __init__(self, mapped: MappedLayer, device: torch.device) -> None:
        super().__init__(mapped, device)
        self.plan = mapped.plan if isinstance(mapped, PatternMappedLayer) else None
        if self.plan is None:
            return
        plan = self.plan
        rows = plan.piece_rows
        channel = plan.block_channel[plan.piece_block]
        pos = torch.where(rows >= 0, rows - channel.view(-1, 1) * KERNEL_POSITIONS,
                          torch.full_like(rows, KERNEL_POSITIONS))
        bits = torch.where(pos < KERNEL_POSITIONS, torch.ones_like(pos) << pos.clamp(
            max=KERNEL_POSITIONS - 1), torch.zeros_like(pos))
        self.piece_channel = channel.to(device)
        self.piece_mask = bits.sum(dim=1).to(torch.int32).to(device)  # 9-bit position mask
        height = plan.piece_height.to(torch.float64)
        cols = plan.piece_cols.to(torch.float64)
        units = plan.piece_units.to(torch.float64)
        # Per activated piece: OUs, conversions, driven rows, cell reads (all its units).
        self.piece_weights = torch.stack([units, cols, height * units, height * cols],
                                         dim=1).to(device)  # (Bp, 4)
        per_array = torch.zeros((plan.pieces, max(plan.arrays, 1)), dtype=torch.float64)
        per_array.index_put_((plan.unit_piece, plan.unit_array),
                             torch.ones(plan.units, dtype=torch.float64), accumulate=True)
        self.piece_arrays = per_array.to(device)  # (Bp, A): units of the piece in each array


class PatternScheme(Scheme):
    """Kernel-reordering mapping of pattern-pruned 3x3 convs with zero-input skipping."""

    name = "pattern"
    lossless = True

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        mapped = map_pattern(layer, hw)
        if (isinstance(mapped, PatternMappedLayer) and hw.cell.sign == SignEncoding.offset
                and not hw.device.ideal):
            raise SparsexbarError(
                f"pattern with cell.sign=offset needs an ideal device (layer {layer.name}): the "
                "digital offset removal of unstored kernels is not modelled; use differential")
        return mapped

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        return PatternKernel(mapped, device)

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        assert isinstance(kernel, PatternKernel)
        n = int(x_int.shape[0])
        if kernel.plan is None:  # dense mapping
            acc = accumulate(kernel, x_int, options)
            events, cycles = dense_events(kernel.mapped, n)
            return LayerRun(acc, events, cycles)
        if options.exact_shortcut and kernel.exact_linear:
            acc = accumulate(kernel, x_int, options)
        else:  # bounded memory: the engine keeps (positions x units x columns) sums
            step = self.images_per_call(kernel, options)
            acc = torch.cat([accumulate(kernel, x_int[a : a + step], options)
                             for a in range(0, n, step)])  # chunks of images
        events, cycles = self.count(kernel, x_int, options)
        return LayerRun(acc, events, cycles)

    @staticmethod
    def images_per_call(kernel: PatternKernel, options: EngineOptions) -> int:
        mapped = kernel.mapped
        s, _, _, k = kernel.shape
        per_image = mapped.layer.positions * (s * k * 24 + (mapped.physical_cols + 1) * 16)
        return max(1, int(options.memory_budget_mb * 2**20 // max(per_image, 1)))

    def storage(self, mapped: MappedLayer) -> Storage:
        """Input index per block, output index per stored kernel, the pattern table; one zero
        detector per array."""
        if not isinstance(mapped, PatternMappedLayer) or mapped.plan is None:
            return Storage()
        return Storage(index_bits=self.layer_index_bits(mapped)
                       + 9 * int(mapped.plan.patterns.numel()),
                       comparators=mapped.plan.arrays)

    @staticmethod
    def layer_index_bits(mapped: PatternMappedLayer) -> int:
        """Index bits read per output position and pass (input + output indices)."""
        plan = mapped.plan
        assert plan is not None
        cout, cin = plan.kernel_pattern.shape
        in_bits = index_bits(int(cin)) + index_bits(int(plan.patterns.numel()))
        return plan.blocks * in_bits + plan.stored_kernels * index_bits(int(cout))

    # ---- event counting ---------------------------------------------------------------------
    def count(self, kernel: PatternKernel, x_int: Tensor,
              options: EngineOptions) -> tuple[Events, int]:
        """Exact events of one batch and the summed per-image busiest-array OU activations."""
        mapped = kernel.mapped
        plan = kernel.plan
        assert isinstance(mapped, PatternMappedLayer) and plan is not None
        hw, layer = mapped.hw, mapped.layer
        n = int(x_int.shape[0])
        base, _ = dense_events(mapped, n)
        positions = layer.positions
        x = x_int.to(kernel.device, torch.int64)  # (N, Cin, H, W)
        parts = [x.clamp(min=0), (-x).clamp(min=0)] if layer.input_signed else [x]
        active = torch.zeros((n, plan.pieces), dtype=torch.float64, device=kernel.device)
        chunk = self._images_per_chunk(kernel, options)
        for part in parts:  # one or two passes
            for a in range(0, n, chunk):  # chunks of whole images (memory bound)
                active[a : a + chunk] += self._active_pieces(kernel, part[a : a + chunk])
        totals = active.sum(dim=0) @ kernel.piece_weights  # (4,)
        ou, adc, dac, cells = (int(round(float(v))) for v in totals)
        steps = n * positions * layer.passes
        in_bytes = math.ceil(hw.numbers.input_bits / 8)
        events = Events(
            ou_activations=ou, adc_conversions=adc, dac_activations=dac, cell_reads=cells,
            shift_adds=adc, index_reads=self.layer_index_bits(mapped) * steps,
            comparisons=plan.pieces * hw.cycles * steps,
            buffer_read_bytes=plan.used_rows * in_bytes * steps,
            buffer_write_bytes=base.buffer_write_bytes, digital_ops=base.digital_ops)
        busiest = (active @ kernel.piece_arrays).amax(dim=1).sum() if n else torch.zeros(())
        return events, int(round(float(busiest)))

    @staticmethod
    def _images_per_chunk(kernel: PatternKernel, options: EngineOptions) -> int:
        """Whole images per counting chunk: the padded flag images, the (channels x positions)
        words and codes and the (channels x 512) code histogram of every image stay within
        the memory budget."""
        layer = kernel.mapped.layer
        cin, h, w = layer.input_shape
        ph, pw = layer.padding
        per_channel = ((h + 2 * ph) * (w + 2 * pw) * 8
                       + layer.positions * (16 + 16 * CYCLES_PER_WORD) + CODES * 16)
        return max(1, int(options.memory_budget_mb * 2**20 // max(cin * per_channel, 1)))

    @staticmethod
    def _active_pieces(kernel: PatternKernel, xc: Tensor) -> Tensor:
        """(images, pieces) float64: activations of every row piece of a batch of int64 input
        magnitudes (images, Cin, H, W), summed over positions and cycles. A piece is active in
        a cycle when one of its rows has a nonzero chunk: per input channel, output position
        and cycle the 9 nonzero flags form a code, and `code & piece mask` tests them.

        The codes of several cycles are built at once, per input pixel rather than per im2col
        entry: each input value's flags come from a table (`flag_tables`), and kernel
        position k's shifted window of the flag image is added shifted by k, so that bits
        9j..9j+8 of the sum are cycle j's code. A histogram of the codes per (image, channel)
        - 512 bins - times a (code, mask) hit table gives the counts, so the work grows with
        channels, not with pieces; all counts are integers below 2^53, exact in float64.
        """
        layer = kernel.mapped.layer
        images, cin = int(xc.shape[0]), int(xc.shape[1])
        _, ho, wo = layer.output_shape
        (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
        kw_size = layer.kernel_size[1]
        dev = xc.device
        lanes = torch.arange(KERNEL_POSITIONS, dtype=torch.int64, device=dev)
        cell = ((torch.arange(images, device=dev).view(-1, 1) * cin
                 + torch.arange(cin, device=dev).view(1, -1)) * CODES).view(images, cin, 1, 1)
        hist = torch.zeros(images * cin * CODES, dtype=torch.int64, device=dev)
        for table, count in kernel.flag_tables:  # one or a few words of cycles
            flags = F.pad(table[xc], (pw, pw, ph, ph))  # padding: zero inputs, no flags
            word = torch.zeros((images, cin, ho, wo), dtype=torch.int64, device=dev)
            for k in range(KERNEL_POSITIONS):  # the 9 kernel positions (im2col row order)
                r0, c0 = (k // kw_size) * dh, (k % kw_size) * dw
                window = flags[:, :, r0 : r0 + (ho - 1) * sh + 1 : sh,
                               c0 : c0 + (wo - 1) * sw + 1 : sw]
                word += window << k  # disjoint bits: sum == or
            codes = (word.view(images, cin, 1, ho * wo)
                     >> (lanes[:count] * KERNEL_POSITIONS).view(1, 1, -1, 1)) & (CODES - 1)
            hist += torch.bincount((codes + cell).flatten(), minlength=images * cin * CODES)
        table_hit, mask_index = kernel.code_hits
        per_mask = (hist.view(images * cin, CODES).to(torch.float64) @ table_hit).view(
            images, cin, -1)
        return per_mask[:, kernel.piece_channel, mask_index]
