"""Exact event counting shared by the sparse schemes (`sre`, the `combined` compositions).

Two pieces:

- `RowSetCounter`: for fixed sets of im2col rows (a packing domain: the kept rows of an OU
  column group in one array, the rows of a pattern unit), the number of rows of each set whose
  input chunk is nonzero, per output position and input chunk. One call of the layer's own
  linear map (its convolution geometry) with the sets as 0/1 filters on a bit plane gives, per
  position and set, the active rows an im2col patch would select. Several chunks share one
  call: the input holds sum_j B^j x plane_j with B = the largest set + 1 (every count fits one
  base-B digit), as many digits as the backend takes exactly (an unsigned byte for the int8
  convolution, results below 2^24 - B for float32); the digits are split exactly afterwards.
- `SlotTable` and `count_slots`: the generic counter of DESIGN.md 3.5 (docs/schemes/
  combined.md). An OU slot j is (packing domain d_j, columns cols_j, array a_j). Per output
  position m and input chunk t, with n_d the active rows of d and live_j the columns of j
  whose output channel is still running:
      OU activations   = ou_j(n)          x [live_j > 0]
      ADC conversions  = ou_j(n) x live_j  (= shift-adds)
      DAC activations  = rows_j(n)         x [live_j > 0]
      cell reads       = rows_j(n) x width_j x [live_j > 0]
  where, by the slot's skip rule, `none`: every row of the domain every cycle (ou =
  ceil(|d| / ou.rows), rows = |d|); `act` (dynamic activation sparsity, rows packed):
  ou = ceil(n_d / ou.rows), rows = n_d; `any` (the slot runs whole when one row of its gate
  domain g_j is active: a pattern unit's own rows, or the row tile of a zero-plane-skipping
  window): ou = ceil(|d| / ou.rows) [n_g > 0], rows = |d| [n_g > 0]. Without early termination
  live_j = width_j always and the sums factor per domain (no per-position products).
  `cycles`: per image, the busiest array's OU activations (arrays run in parallel);
  `time_ns`: per image, the busiest array's time by the timing rule (core/cost.py): an
  activation of slot j converting c columns (width_j, or live_j with early termination) takes
  `timing.time_ns(c)` and ceil(c / adc.per_array) ADC rounds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..core.cost import ActivationTiming, TimingShape
from ..core.engine import FLOAT32_EXACT
from ..core.engine.indices import INT32_LIMIT, above_as, nonzero_as, take_columns
from ..core.frontend import QuantLayer
from ..core.intconv import ExactLinear, as_uint8

# On CPU, early-termination counting does its per-cycle work on about this many (position,
# slot) values at a time (1 MiB of float32 per per-cycle tensor), below the memory budget's
# chunks: its per-cycle tensors then stay in cache. Measured on the demo's model (250
# images, one thread): count_slots 1.0 s with the budget's chunks (up to 2876 images), 0.82 s
# with 2^18; 2^16: 1.09 s (per-call overheads), 2^20: 0.90 s.
LIVE_CPU_CHUNK_VALUES = 2**18
# ... while the counter's convolutions take chunks of at least this many positions (whole
# images), their per-cycle work in row blocks of the size above. Chunks by the size above alone
# gave the full-width VGG-16's late layers (2x2 and 4x4 positions, 9,216 sets) one image per
# convolution: combined, 32 images, one thread, 7.9-8.4 s; 1,024 positions 2.5-2.7 s, 4,096
# 2.3-2.4 s; the demo's model (64 images) 0.48 s, 0.51 s and 0.52-0.54 s.
LIVE_CONV_ROWS = 2048
# `block_plan`: split a counter's convolution by row block only below this share of the plain
# one's multiply-adds (the gather of the blocks' channels and oneDNN's grouped convolution
# cost the rest). Measured on the demo's model (64 images, one thread): 0.47 (3 row tiles)
# 3.5 -> 5.2 ms per call, slower; 0.23 (5 tiles) 5.8 -> 4.0 ms; 0.12 (9 tiles) 8.7 -> 4.3 ms.
BLOCKED_WORK_SHARE = 0.35
# `block_plan`: output channels per group of the grouped convolution, above this a multiple of
# it. oneDNN's u8 x s8 grouped convolution can fall to a slow kernel otherwise (measured, one
# thread, 16 input channels per group, 3x3, 8x8 positions, 32 images, 18 groups: 129 channels
# per group 31 ms, 128 4.6 ms, 144 9.6 ms; 9 groups: 129 13.8 ms, 144 1.95 ms; 4x4 positions:
# 129 21.5 ms, 144 1.3 ms; 64 images, 5 groups, 14x14: 20 2.25 ms, 32 1.77 ms; 9 groups, 7x7:
# 60 2.29 ms, 64 1.89 ms, 65 3.55 ms, 80 3.67 ms). Up to 16 they stay as they are (4 -> 16
# doubled the time: 1.0 -> 2.2 ms). The full-width VGG-16's late layers have 129 sets in
# their largest row tile.
BLOCK_CHANNEL_ALIGN = 16
# `RowSetCounter.image_sums`: the largest per-value table (int64 entries; 2 MiB).
LUT_ENTRIES = 2**18
# `RowSetCounter.image_sums`: (position, set) values gathered and summed per image block (8 MiB
# of int64). Measured on the full-width VGG-16's conv4 shape (2,048 positions x 9,216 sets, one
# thread): the whole call at once 98 ms, in blocks of 2^20 values 21 ms.
SUM_BLOCK_VALUES = 2**20
# `RowSetCounter.image_sums` (and encoding's counts): int32 tables and sums while every sum
# stays below this.
# Measured on the demo's model (64 images, one thread; sre's image_sums over all layers):
# see docs/benchmarks.md, issue 18 part 10.
INT32_SUM_LIMIT = INT32_LIMIT


def narrow_magnitudes(layer: QuantLayer, x_int: Tensor,
                      channels_last: bool = True) -> list[Tensor]:
    """A layer's integer input as narrow magnitudes, one per pass ((x,) or, signed,
    (positive, negative)): uint8 up to 255, else int32; channels-last for conv layers (the
    int8 convolution's layout, which shifts and masks keep) unless `channels_last` is False
    (row-major images: pattern's flag windows); linear: (N, features), as
    `QuantLayer.patches`."""
    fmt = (torch.channels_last if channels_last and layer.kind == "conv" and x_int.dim() == 4
           else torch.contiguous_format)
    narrow = torch.uint8 if layer.input_max <= 255 else torch.int32
    if layer.kind == "linear":
        x_int = x_int.reshape(x_int.shape[0], -1)
    parts = ([x_int.clamp(min=0), (-x_int).clamp(min=0)] if layer.input_signed
             else [x_int])
    if narrow == torch.uint8:
        return [as_uint8(p, fmt) for p in parts]
    return [torch.empty(p.shape, dtype=narrow, device=p.device, memory_format=fmt).copy_(p)
            for p in parts]

class RowSetCounter:
    """Active rows of fixed im2col row sets per output position and input chunk, exactly.

    `sets`: (D, R) 0/1 (bool or integer) on any device, kept as bool on the CPU (one byte per
    entry: an int64 copy of a full-width VGG-16 layer's sets at OU 4x4 took 1.3 GB per layer,
    kept for the whole run); the layer's input magnitudes go in (uint8 or int32, channels-last
    for conv layers), counts come out as (positions, D). The convolution is built on first use
    from a transient integer copy.
    """

    def __init__(self, layer: QuantLayer, sets: Tensor, device: torch.device,
                 row_blocks: list[tuple[int, int]] | None = None) -> None:
        self.layer = layer
        self.device = device
        self.sets = sets.to(device="cpu") != 0
        self.count = int(self.sets.shape[0])
        # the digits' base: above the largest count, and at least 2 (a layer whose sets are
        # all empty, all its weights zero, had base 1: the search for the digits per call
        # then ran for hours)
        self.base = max(2, int(self.sets.sum(dim=1).max()) + 1 if self.sets.numel() else 2)
        self.fields = 1
        self.row_blocks = row_blocks
        self._digits: dict[tuple[int, bool, str], tuple[Tensor, Tensor]] = {}
        self._tables: dict[tuple[int, bool, str, int, int], Tensor] = {}
        self._op: ExactLinear | BlockedRows | None = None

    def op(self) -> ExactLinear | BlockedRows:
        """The layer's linear map with the sets as 0/1 filters, taking `fields` base-B digits
        per call (see the module docstring); split by row block (`BlockedRows`) where every
        set lies in one of `row_blocks` and that saves work."""
        if self._op is None:
            layer = self.layer
            sets = self.sets.to(torch.int64)  # transient: the filters and the block plan
            weight = sets.reshape(self.count, *layer.weight_int.shape[1:])
            base = self.base
            plan = block_plan(layer, sets, self.row_blocks)

            def build(fields: int) -> ExactLinear | BlockedRows:
                top = sum(base**j for j in range(fields))  # every plane at 1
                if plan is not None:
                    return BlockedRows(layer, plan, top, self.device)
                return ExactLinear(layer.kind, weight, top, self.device, layer.stride,
                                   layer.padding, layer.dilation,
                                   probe_shape=layer.input_shape or None)

            def most_fields(limit: int) -> int:
                fields = 1
                while (sum(base**j for j in range(fields + 1)) <= limit
                       and (base - 1) * sum(base**j for j in range(fields + 1))
                       < FLOAT32_EXACT - base):
                    fields += 1
                return fields

            self.fields = most_fields(255)
            op = build(self.fields)
            if op.backend != "int8":
                self.fields = most_fields(FLOAT32_EXACT)
                op = build(self.fields)
            self._op = op
        return self._op

    def chunk_counts(self, xc: Tensor, cycles: int, dac_bits: int,
                     word: bool) -> Iterator[tuple[tuple[int, ...], Tensor]]:
        """(chunks, counts) pairs: counts (images x positions, D) in the op's dtype are the
        active rows of every set for each input chunk index in `chunks` (LSB-first chunk
        numbers; one chunk per pair with granularity `bit`, all of them at once with `word`:
        a row is then active in every cycle when its whole input is nonzero). The consumer
        may modify the counts in place.

        xc: (images, ...) input magnitudes (uint8 or int32), channels-last for conv layers.
        """
        op = self.op()
        if word:  # the same active rows in every cycle: one plane, counted once
            yield tuple(range(cycles)), op.rows(nonzero_as(xc, torch.uint8))
            return
        base = self.base
        for first, width, packed in self._packed_planes(xc, cycles, dac_bits):
            value = op.rows(packed)  # (images * positions, sets)
            for j in range(width, 0, -1):  # digits, most significant first
                if j > 1:
                    digit = torch.floor(value / float(base ** (j - 1)))
                    value.add_(digit, alpha=-float(base ** (j - 1)))
                else:
                    digit = value
                yield (first + j - 1,), digit

    def _packed_planes(self, xc: Tensor, cycles: int,
                       dac_bits: int) -> Iterator[tuple[int, int, Tensor]]:
        """(first chunk, chunks, packed input) per convolution call: the input chunks
        first .. first + chunks - 1 as base-B digits (1 where the chunk is nonzero), up to
        `fields` of them (see the module docstring)."""
        base, fields = self.base, self.fields
        chunk_mask = 2**dac_bits - 1
        wide = self.op().backend != "int8"  # packed values beyond a byte: int32
        for first in range(0, cycles, fields):  # 8-bit inputs: 4 or 3 calls
            width = min(fields, cycles - first)
            if dac_bits == 1:
                # bits first .. first+width-1 as y = sum_j 2^j b_j; packed = sum_j B^j b_j
                packed = (xc >> first) & (2**width - 1)
                if wide:
                    packed = packed.to(torch.int32)
                bits = packed
                for j in range(1, width):  # fields: a handful
                    bit = (bits >> j) if j == width - 1 else (bits >> j) & 1
                    packed = packed + bit * (base**j - 2**j)
            else:  # a row is active when its chunk of this cycle is nonzero
                packed = ((xc >> (first * dac_bits)) & chunk_mask).clamp_(max=1)
                packed = packed.to(torch.int32 if wide else torch.uint8)
                for j in range(1, width):  # fields: a handful
                    plane = ((xc >> ((first + j) * dac_bits)) & chunk_mask).clamp_(max=1)
                    packed = packed + plane.to(packed.dtype) * base**j
            yield first, width, packed

    def image_sums(self, xc: Tensor, cycles: int, dac_bits: int, word: bool, ou_rows: int,
                   gate: bool = False) -> tuple[Tensor, Tensor]:
        """Per image and set, summed over the positions and input chunks: (OU activations,
        active rows), both (images, D) float64 and exact. An OU activation count is
        ceil(n / ou_rows) for n active rows, or [n > 0] with `gate` (the set runs whole
        when one row is active; rows then still counts the active rows).

        Same counts as summing `chunk_counts`, without its per-digit arithmetic: each
        convolution's packed base-B value v indexes a table holding, for the digits c_j of v,
        sum_j f(c_j) in the low bits and sum_j c_j above (f: the OU count; int32 where the
        sums over the positions fit, `_sum_table`), so one gather and one integer sum over
        the positions replace the digit split, the division and two float sums per cycle.
        Tables up to 2^18 entries: a call packing more digits than that (the float32 op packs
        up to 2^24) is split into groups of digits that fit, one gather each (on a CPU without
        VNNI, these sums in sre's demo run 2.3x faster than `chunk_counts`'s split per digit).
        """
        images = int(xc.shape[0])
        device = xc.device
        op = self.op()
        fields = 1 if word else self.fields
        group = fields  # digits per table lookup: a value of more is split into groups
        while group > 1 and self.base ** group > LUT_ENTRIES:
            group -= 1
        lookups = -(-fields // group)
        if self.base ** group > LUT_ENTRIES or not images:
            ou_img = torch.zeros((images, self.count), dtype=torch.float64, device=device)
            rows_img = torch.zeros_like(ou_img)
            for chunks, counts in self.chunk_counts(xc, cycles, dac_bits, word):
                reps = float(len(chunks))
                view = counts.view(images, -1, self.count)
                rows_img += view.sum(dim=1, dtype=torch.float64) * reps
                ou = above_as(counts, 0, counts.dtype) if gate else counts.div_(
                    float(ou_rows)).ceil_()
                ou_img += ou.view(images, -1, self.count).sum(dim=1, dtype=torch.float64) * reps
            return ou_img, rows_img
        digits = (ou_rows, gate, str(device))
        radix = self.base ** group
        f_sum, c_sum = self._digit_sums(radix, ou_rows, gate, device)
        planes = ([(float(cycles), nonzero_as(xc, torch.uint8))] if word else
                  ((1.0, packed) for _, _, packed in self._packed_planes(xc, cycles, dac_bits)))
        # Sums in the op's own column order (`BlockedRows`: its grouped convolution's
        # channels), put in the sets' order once per call, on (images, D) sums.
        blocked = op if isinstance(op, BlockedRows) else None
        width = blocked.width if blocked is not None else self.count  # D' >= D columns
        native_ou = torch.zeros((images, width), dtype=torch.float64, device=device)
        native_rows = torch.zeros_like(native_ou)
        for reps, packed in planes:
            # (images x positions, D') exact integers < B^fields
            value = blocked.native_rows(packed) if blocked is not None else op.rows(packed)
            positions = int(value.shape[0]) // images
            # sums of `lookups` table values per entry, then over the positions
            table, shift, dtype = self._sum_table(digits, f_sum, c_sum, positions * lookups)
            # Whole images per block so one block's gathered int64 values stay in the CPU
            # cache (SUM_BLOCK_VALUES): the gather and the sum over the positions then read
            # and write cached memory (VGG-16 conv4, 128 images: 98 -> 21 ms per plane).
            # Elsewhere (CUDA) one block: fewer, larger kernels.
            step = (max(1, SUM_BLOCK_VALUES // max(1, positions * width))
                    if device.type == "cpu" else images)
            for a in range(0, images, step):  # image blocks
                b = min(images, a + step)
                rest = value[a * positions : b * positions].reshape(-1).to(torch.int32)
                both = None
                for _ in range(lookups - 1):  # the low `group` digits, then the next ...
                    high = torch.div(rest, radix, rounding_mode="floor")
                    part = table.index_select(0, rest.sub_(high * radix))
                    both = part if both is None else both.add_(part)
                    rest = high
                last = table.index_select(0, rest)
                both = last if both is None else both.add_(last)
                both = both.view(b - a, positions, width).sum(dim=1, dtype=dtype)
                native_ou[a:b] += (both & ((1 << shift) - 1)).to(torch.float64) * reps
                native_rows[a:b] += (both >> shift).to(torch.float64) * reps
        if blocked is not None:
            return (native_ou.index_select(1, blocked.select),
                    native_rows.index_select(1, blocked.select))
        return native_ou, native_rows

    def _digit_sums(self, entries: int, ou_rows: int, gate: bool,
                    device: torch.device) -> tuple[Tensor, Tensor]:
        """(entries,) int64 each: for v = sum_j B^j c_j, sum_j f(c_j) and sum_j c_j (see
        `image_sums`); cached per (f, device)."""
        key = (ou_rows, gate, str(device))
        sums = self._digits.get(key)
        if sums is None or sums[0].numel() < entries:
            v = torch.arange(entries, dtype=torch.int64)
            f_sum = torch.zeros_like(v)
            c_sum = torch.zeros_like(v)
            rest = v.clone()
            while bool((rest > 0).any()):  # digits: a handful
                c = rest % self.base
                f_sum += (c > 0).to(torch.int64) if gate else torch.div(
                    c + ou_rows - 1, ou_rows, rounding_mode="floor")
                c_sum += c
                rest = torch.div(rest, self.base, rounding_mode="floor")
            sums = self._digits[key] = (f_sum.to(device), c_sum.to(device))
        return sums

    def _sum_table(self, digits: tuple[int, bool, str], f_sum: Tensor, c_sum: Tensor,
                   positions: int) -> tuple[Tensor, int, torch.dtype]:
        """The gathered table f + 2^shift x c and the dtype of its sums over `positions`:
        int32 with shift = the bits of positions x max f where every such sum stays below
        2^31 (half the bytes of int64 to gather and sum), else int64 with shift 32; cached
        per (`_digit_sums` key, entries, shift)."""
        f_max, c_max = int(f_sum.max()), int(c_sum.max())
        shift = max(1, (positions * f_max).bit_length())
        narrow = positions * ((c_max << shift) + f_max) < INT32_SUM_LIMIT
        if not narrow:
            shift = 32
        dtype = torch.int32 if narrow else torch.int64
        key = (*digits, int(f_sum.numel()), shift)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = (f_sum + (c_sum << shift)).to(dtype)
        return table, shift, dtype


@dataclass(frozen=True)
class BlockPlan:
    """How `BlockedRows` splits a counter's sets: block g reads input channels
    `channel_index[g * width : (g + 1) * width]` and computes its sets as the output
    channels g * per_block ...; `select[d]` is set d's output channel; `weight` is the grouped
    convolution's (G * per_block, width, kh, kw) 0/1 filters."""

    weight: Tensor
    channel_index: Tensor
    select: Tensor
    groups: int


def block_plan(layer: QuantLayer, sets: Tensor,
               row_blocks: list[tuple[int, int]] | None) -> BlockPlan | None:
    """The split of `sets` (D, R) by the im2col row blocks `row_blocks` (an array's row tiles)
    for a groups=1 conv layer, when every set's rows lie in one block and the grouped
    convolution does under `BLOCKED_WORK_SHARE` of the plain one's work; else None.

    A block of rows a..b-1 reads the input channels a // (kh kw) .. ceil(b / (kh kw)) - 1 only
    (im2col rows run channel-major), so the counter's convolution over all C channels for all
    D sets becomes a grouped one over about C / G channels per block: a row tile's sets see
    one tile's channels.
    """
    if (row_blocks is None or len(row_blocks) < 2 or layer.kind != "conv" or layer.groups != 1
            or not sets.numel()):
        return None
    khw = layer.kernel_size[0] * layer.kernel_size[1]
    channels = layer.in_channels
    d, r = sets.shape
    starts = torch.tensor([a for a, _ in row_blocks], dtype=torch.int64)
    stops = torch.tensor([b for _, b in row_blocks], dtype=torch.int64)
    present = sets != 0
    any_row = present.any(dim=1)
    rows = torch.arange(r)
    first = torch.where(present, rows, r).amin(dim=1)
    last = torch.where(present, rows, -1).amax(dim=1)
    block = torch.searchsorted(stops, first, right=True).clamp(max=len(row_blocks) - 1)
    inside = (first >= starts[block]) & (last < stops[block])
    if not bool((inside | ~any_row).all()):
        return None
    block = torch.where(any_row, block, torch.zeros_like(block))
    lo = torch.div(starts, khw, rounding_mode="floor")
    hi = torch.div(stops + khw - 1, khw, rounding_mode="floor")
    width = int((hi - lo).max())
    g = len(row_blocks)
    per_block_sets = torch.bincount(block, minlength=g)
    # output channels per group: the most sets of a block, above BLOCK_CHANNEL_ALIGN rounded
    # up to a multiple of it (the extra channels are all-zero filters, like those of the
    # smaller blocks)
    per_block = int(per_block_sets.max())
    if per_block > BLOCK_CHANNEL_ALIGN:
        per_block = -(-per_block // BLOCK_CHANNEL_ALIGN) * BLOCK_CHANNEL_ALIGN
    if g * width * per_block >= BLOCKED_WORK_SHARE * channels * d:
        return None
    order = torch.argsort(block, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(d) - (torch.cumsum(per_block_sets, 0) - per_block_sets)[
        block[order]]
    select = block * per_block + rank  # (D,) output channel of every set
    # Filters: set d's rows, from its block's first channel, `width` channels wide.
    padded = torch.nn.functional.pad(sets.to(torch.int64), (0, width * khw))  # room past the end
    cols = (lo[block] * khw).unsqueeze(1) + torch.arange(width * khw).unsqueeze(0)
    weight = torch.zeros((g * per_block, width * khw), dtype=torch.int64)
    weight[select] = torch.gather(padded, 1, cols)
    channel_index = (lo.unsqueeze(1) + torch.arange(width).unsqueeze(0)).clamp(
        max=channels - 1).reshape(-1)  # past the last channel: weights are zero there
    return BlockPlan(weight.reshape(g * per_block, width, *layer.kernel_size), channel_index,
                     select, g)


class BlockedRows:
    """A counter's convolution run block by block as one grouped convolution (`block_plan`):
    the same counts as the plain one (exact; same dtype), `rows()` in the sets' order."""

    def __init__(self, layer: QuantLayer, plan: BlockPlan, max_input: int,
                 device: torch.device) -> None:
        shape = layer.input_shape
        probe = (int(plan.channel_index.numel()), *shape[1:]) if shape else None
        self.op = ExactLinear("conv", plan.weight, max_input, device, layer.stride,
                              layer.padding, layer.dilation, probe_shape=probe,
                              groups=plan.groups)
        self.channel_index = plan.channel_index.to(device)
        self.select = plan.select.to(device)
        self.width = int(plan.weight.shape[0])  # D': the grouped convolution's channels
        self.backend = self.op.backend
        self.dtype = self.op.dtype

    def rows(self, x: Tensor) -> Tensor:
        """(images x positions, D) counts of x (N, C, H, W) integers in [0, max_input]."""
        return self.native_rows(x).index_select(1, self.select)

    def native_rows(self, x: Tensor) -> Tensor:
        """`rows` in the grouped convolution's channel order: (images x positions, D')
        with set d's counts in column `select[d]` (D' >= D; the others are padding)."""
        return self.op.rows(x.index_select(1, self.channel_index))


@dataclass
class SlotTable:
    """The OU slots of one mapped layer (see the module docstring); tensors on the device.

    Slots come in `repeats` x `classes` order: slot j has column class j % classes, and the
    slots of one class hold the same columns (an OU column group in every row tile of an
    SRE-style layout; a pattern unit is a class of its own). `sets`: the packing domains'
    rows; `slot_set`: the domain of each slot; `slot_rows`: |d| of each slot's domain;
    `slot_width`: its columns; `slot_array`: the array holding it; `class_channels` /
    `class_channel_cols`: the output channels of each class's columns and how many columns
    each has (padding: channel `channels`, 0 columns); `skip`: the skip rule; `slot_gate`:
    the gate domain of each slot (rule `any`; None: its own domain).
    """

    sets: Tensor  # (D, R) bool
    slot_set: Tensor  # (J,) int64
    slot_rows: Tensor  # (J,) float64
    slot_width: Tensor  # (J,) float64
    slot_array: Tensor  # (J,) int64
    arrays: int
    classes: int
    class_channels: Tensor  # (G, w) int64
    class_channel_cols: Tensor  # (G, w) float32
    channels: int
    skip: str
    slot_gate: Tensor | None = None  # (J,) int64

    @property
    def gate(self) -> Tensor:
        """(J,) the domain whose active rows decide whether a slot runs (rule `any`)."""
        return self.slot_set if self.slot_gate is None else self.slot_gate

    @property
    def slots(self) -> int:
        return int(self.slot_set.numel())

    @property
    def repeats(self) -> int:
        return self.slots // max(self.classes, 1)

    def per_array(self, per_slot: Tensor) -> Tensor:
        """(images, J) per-slot values -> (images, A) their sums per array (an index_add:
        a (J, A) one-hot product took 85 MB and 9 ms per call on the full-width VGG-16)."""
        out = per_slot.new_zeros((int(per_slot.shape[0]), max(self.arrays, 1)))
        return out.index_add_(1, self.slot_array.to(per_slot.device), per_slot)

    def static_ou(self, ou_rows: int) -> Tensor:
        """(J,) float64 OU activations of every slot when all its rows are active."""
        return torch.div(self.slot_rows + ou_rows - 1, ou_rows, rounding_mode="floor")


def slot_domains(table: SlotTable, layer: QuantLayer, device: torch.device,
                 row_blocks: list[tuple[int, int]] | None = None
                 ) -> tuple[SlotTable, RowSetCounter]:
    """The same slots with one packing domain per slot, in slot order (slot j's domain is row
    j of the sets), and its counter: the counter's counts are then the slots' own, with no
    gather of (positions, slots) values per cycle in `count_slots` with early termination, for
    J filters in the counter instead of D (worth it when J is close to D). Skip rule `act`
    only (`any` counts its gate domains)."""
    assert table.skip == "act"
    sets = table.sets.index_select(0, table.slot_set)
    ordered = replace(table, sets=sets,
                      slot_set=torch.arange(table.slots, device=table.slot_set.device))
    return ordered, RowSetCounter(layer, sets, device, row_blocks)


def class_channels(columns: Tensor, col_channel: Tensor, channels: int) -> tuple[Tensor, Tensor]:
    """Per column class (rows of `columns` (G, K) physical columns, -1 padding): its distinct
    output channels (G, w), padded with `channels`, and its number of columns of each."""
    g_count = int(columns.shape[0])
    valid = columns >= 0
    chan = torch.where(valid, col_channel[columns.clamp(min=0)], torch.full_like(columns,
                                                                                   channels))
    counts = torch.zeros((g_count, channels + 1), dtype=torch.int64)
    counts.scatter_add_(1, chan, valid.to(torch.int64))
    counts = counts[:, :channels]
    present = counts > 0
    width = max(1, int(present.sum(dim=1).max())) if g_count else 1
    order = torch.sort((~present).to(torch.int8), dim=1, stable=True).indices[:, :width]
    kept = torch.gather(present, 1, order)
    out_ch = torch.where(kept, order, torch.full_like(order, channels))
    out_cnt = torch.where(kept, torch.gather(counts, 1, order), torch.zeros_like(order))
    return out_ch, out_cnt.to(torch.float32)


@dataclass
class SlotCounts:
    """Sums of one batch (see `count_slots`): float64 totals, and per image the busiest
    array's OU activations and time (ns), summed over the images."""

    ou_activations: float = 0.0
    adc_conversions: float = 0.0
    dac_activations: float = 0.0
    cell_reads: float = 0.0
    cycles: float = 0.0
    adc_rounds: float = 0.0
    time_ns: float = 0.0


def count_slots(table: SlotTable, counter: RowSetCounter | None, parts: list[Tensor],
                images: int, positions: int, passes: int, cycles: int, dac_bits: int,
                ou_rows: int, word: bool, executed: Tensor | None,
                images_per_chunk: int, timing: ActivationTiming) -> SlotCounts:
    """Exact crossbar events of one batch on the slots of `table`.

    parts: the narrow input magnitudes of each pass ((x,) or (positive, negative)), needed
    unless the skip rule is `none`; counter: the domains' `RowSetCounter` (same condition).
    executed: None (every output runs every cycle), or (images, positions, channels) the
    number of MSB-first cycles each output ran (early termination): at MSB-first cycle t (which
    feeds LSB-first chunk cycles-1-t) an output's columns are live when executed > t.

    Per-image sums over the positions are float32 (integers below 2^24: at most positions x
    ou.cols x the largest count per position), totals float64. `timing`: the layer's timing
    rule (each activation's time and ADC rounds from the columns it converts).
    """
    device = table.slot_set.device
    per_image_ou = torch.zeros((images, table.slots), dtype=torch.float64, device=device)
    per_image_ns = torch.zeros_like(per_image_ou)
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # ou, adc, dac, cells, rounds
    most = int(table.slot_width.max()) if table.slots else 0
    tables = timing.table(most, device)
    if executed is None:
        _count_full(table, counter, parts, images, positions, cycles, dac_bits, ou_rows, word,
                    images_per_chunk, per_image_ou, sums, passes, per_image_ns, tables)
    else:
        _count_live(table, counter, parts, images, positions, cycles, dac_bits, ou_rows, word,
                    executed, images_per_chunk, per_image_ou, sums, passes, per_image_ns,
                    tables, timing.shape(most))
    zero = torch.zeros((), dtype=torch.float64)
    busiest = table.per_array(per_image_ou).amax(dim=1).sum() if images else zero
    busiest_ns = table.per_array(per_image_ns).amax(dim=1).sum() if images else zero
    ou_t, adc_t, dac_t, cell_t, rounds_t = (float(v) for v in sums.cpu())
    return SlotCounts(ou_t, adc_t, dac_t, cell_t, float(busiest), rounds_t, float(busiest_ns))


def _per_image(values: Tensor, images: int, positions: int, wide: bool) -> Tensor:
    """(images x positions, ...) -> (images, ...) float64 sums over the positions: float32
    arithmetic (exact for integers below 2^24) unless `wide`."""
    view = values.view(images, positions, *values.shape[1:])
    return view.sum(dim=1, dtype=torch.float64 if wide else None).to(torch.float64)


def _count_live(table: SlotTable, counter: RowSetCounter | None, parts: list[Tensor],
                images: int, positions: int, cycles: int, dac_bits: int, ou_rows: int,
                word: bool, executed: Tensor, images_per_chunk: int, per_image_ou: Tensor,
                sums: Tensor, passes: int, per_image_ns: Tensor,
                tables: tuple[Tensor, Tensor], shape: TimingShape) -> None:
    """`count_slots` with early termination.

    A channel with e executed cycles runs in MSB-first cycles t < e, so a slot's column
    class runs while t < E_max (the largest e of its channels) and converts, at cycle t, the
    columns of its channels with e > t. Per (position, slot), with ou_t / n_t the slot's OUs /
    active rows at MSB-first cycle t:
        OUs         = sum_t ou_t x [E_max > t]
        conversions = sum_t ou_t x W_t,  W_t = sum over the class's channels k of cols_k [e_k > t]
        rows        = sum_t n_t  x [E_max > t]
    accumulated cycle by cycle as the counter yields each cycle's counts (fused multiply-adds
    into float32 buffers, integers below 2^24; no (cycles, positions, slots) prefix sums):
    OUs per (position, slot), conversions and rows per (position, class), since the slots of
    a class share W_t, [E_max > t] and their width (only totals are needed for those). With
    one cycle per counter call and no per-cycle lookups, conversions are summed per channel
    instead: sum_k c_k x (S_0 + ... + S_(e_k - 1)), S_t the class's OUs at cycle t. Static
    slots need no per-cycle work for these (sum_t [E_max > t] = E_max). Time and ADC rounds:
    an activation at cycle t converts W_t columns, so
        time   = sum_t ou_t x time_ns(W_t),   rounds = sum_t ou_t x rounds(W_t)
    per (position, slot) and per class (`tables`: time and rounds by conversion count).
    Where every converting activation takes one time T (`TimingShape`; W_t > 0 exactly where
    the class runs, E_max > t), time = T x OUs; with one round per conversion rounds =
    conversions, with one per activation rounds = OUs: those sums are not accumulated.
    """
    time_of, rounds_of = tables
    lookups = shape.time_ns is None or shape.rounds == "table"  # per-cycle table lookups
    reps, g_count = table.repeats, table.classes
    top_ou = float(table.static_ou(ou_rows).max()) if table.slots else 0.0
    top = max(top_ou * float(table.slot_width.max()), float(table.slot_rows.max())) \
        if table.slots else 0.0
    wide = positions * top * cycles >= FLOAT32_EXACT  # float32 sums over the positions exact
    wide_class = positions * top * cycles * reps >= FLOAT32_EXACT  # the same, per class
    static_ou = table.static_ou(ou_rows).to(torch.float32).view(reps, g_count)
    slot_rows = table.slot_rows.to(torch.float32).view(reps, g_count)
    width = table.slot_width.view(reps, g_count)
    class_width = width[0] if reps else width.new_zeros(g_count)
    # the slots of a class hold the same columns (SlotTable): one width per class
    assert torch.equal(width, class_width.expand_as(width))
    ch, cnt = table.class_channels, table.class_channel_cols
    act = table.skip == "act"
    device = executed.device
    chunk = max(1, images_per_chunk)
    widest = max(table.slots, counter.count if counter is not None else 0, 1)
    step = None  # rows of the per-cycle work at a time (None: the whole chunk)
    if device.type == "cpu":  # cache-sized work (see LIVE_CPU_CHUNK_VALUES)
        per_image = positions * widest
        if table.skip == "none":  # no counter: the chunks themselves are cache-sized
            chunk = min(chunk, max(1, LIVE_CPU_CHUNK_VALUES // per_image))
        else:  # the counter's convolutions on large chunks, the per-cycle work in row blocks
            chunk = min(chunk, max(1, LIVE_CPU_CHUNK_VALUES // per_image,
                                   -(-LIVE_CONV_ROWS // positions)))
            step = max(1, LIVE_CPU_CHUNK_VALUES // widest)
    slot_set = table.slot_set
    # the counter's domains are the slots themselves (one domain per slot, in order): no gather
    own_domains = counter is not None and counter.count == table.slots and bool(
        torch.equal(slot_set.cpu(), torch.arange(table.slots)))
    gate = table.gate
    for a in range(0, images, chunk):  # chunks of whole images (memory bound)
        b = min(images, a + chunk)
        n_img = b - a
        e = as_uint8(executed[a:b].reshape(-1, executed.shape[-1]))
        e = torch.cat([e, torch.zeros_like(e[:, :1])], dim=1)  # padding channel: never runs
        runs = [take_columns(e, ch[:, k]) for k in range(ch.shape[1])]  # (M, G) uint8 each
        e_max = runs[0].clone()
        for r in runs[1:]:  # channels per class: a handful
            torch.maximum(e_max, r, out=e_max)
        if table.skip == "none":  # sum_t [E_max > t] = E_max; both passes alike
            emax_img = _per_image(e_max.to(torch.float32), n_img, positions, wide)  # (n, G)
            ou_img = emax_img.unsqueeze(1) * static_ou * passes  # (n, reps, G)
            per_image_ou[a:b] += ou_img.reshape(n_img, -1)
            sums[0] += ou_img.sum()
            conv = torch.zeros(g_count, dtype=torch.float64, device=device)
            for r, c in zip(runs, cnt.t(), strict=True):  # a handful
                conv += _per_image(r.to(torch.float32), n_img, positions, wide).sum(0) * c
            sums[1] += (conv * static_ou).sum() * passes
            rows_run = emax_img.sum(dim=0) * slot_rows * passes  # (reps, G)
            sums[2] += rows_run.sum()
            sums[3] += (rows_run * width).sum()
            # every slot of a class runs static_ou activations at each cycle its class runs
            if not lookups:  # time T x OUs; rounds = conversions or OUs
                assert shape.time_ns is not None
                per_image_ns[a:b] += ou_img.reshape(n_img, -1) * shape.time_ns
                sums[4] += ((conv * static_ou).sum() * passes if shape.rounds == "conversions"
                            else ou_img.sum())
                continue
            class_ns = torch.zeros((e.shape[0], g_count), dtype=torch.float64, device=device)
            class_rounds = torch.zeros_like(class_ns)
            conv_t = torch.empty((e.shape[0], g_count), dtype=torch.float32, device=device)
            hit = torch.empty_like(conv_t)
            scratch_t = torch.empty_like(conv_t)
            for t in range(cycles):  # input cycles: a handful
                conv_t.zero_()
                for r, c in zip(runs, cnt.t(), strict=True):  # channels per class: a few
                    conv_t.addcmul_(_cycles_below(r, (cycles - 1 - t,), cycles, hit,
                                                  scratch_t), c)
                idx = conv_t.to(torch.int64)
                class_ns += time_of[idx]
                class_rounds += rounds_of[idx]
            ns_img = _per_image(class_ns, n_img, positions, True)  # (n, G)
            per_image_ns[a:b] += (ns_img.unsqueeze(1) * static_ou * passes).reshape(n_img, -1)
            sums[4] += (class_rounds.sum(dim=0) * static_ou).sum() * passes
            continue
        assert counter is not None
        m = int(e.shape[0])
        rows_step = m if step is None else min(m, step)
        live_buf = torch.empty((rows_step, g_count), dtype=torch.float32, device=device)
        weight_buf, hits_buf, scratch_buf = (torch.empty_like(live_buf) for _ in range(3))
        for part in parts:  # one or two passes
            ou_acc = torch.zeros((m, reps, g_count), dtype=torch.float32, device=device)
            ns_acc = torch.zeros((m, reps, g_count), dtype=torch.float64, device=device) \
                if shape.time_ns is None else None
            rounds_acc = torch.zeros((m, g_count), dtype=torch.float64, device=device) \
                if shape.rounds == "table" else None
            conv_acc = torch.zeros((m, g_count), dtype=torch.float32, device=device)
            rows_acc = torch.zeros_like(conv_acc) if act else None  # per class, as W_t
            # Without per-cycle lookups the conversions need only sum_t S_t x W_t, S_t the
            # class's OUs at MSB-first cycle t: per channel k, c_k x (S_0 + ... + S_(e_k-1)).
            # One cycle per call (not `word`): S_t kept in row t + 1 (row 0: zeros), summed
            # up after the pass's cycles and read at each channel's e_k, instead of building
            # W_t every cycle (docs/benchmarks.md, issue 18 part 12).
            by_cycle = None
            filled: set[int] = set()  # the chunks whose S_t rows hold their sums
            if not lookups and not word:
                by_cycle = torch.empty((cycles + 1, m, g_count), dtype=torch.float32,
                                       device=device)
                by_cycle[0].zero_()
            for chunks, all_counts in counter.chunk_counts(part[a:b], cycles, dac_bits, word):
                for r0 in range(0, m, rows_step):  # row blocks (cache-sized on CPU)
                    r1 = min(m, r0 + rows_step)
                    # [E_max > t] and W_t of the block's rows
                    live, conv_weight = live_buf[: r1 - r0], weight_buf[: r1 - r0]
                    hits, scratch = hits_buf[: r1 - r0], scratch_buf[: r1 - r0]
                    counts = all_counts[r0:r1]
                    block_runs = [r[r0:r1] for r in runs]
                    # how many of these chunks' MSB-first cycles t = cycles-1-k each output runs
                    _cycles_below(e_max[r0:r1], chunks, cycles, live, scratch)
                    if by_cycle is None:
                        conv_weight.zero_()
                        for r, c in zip(block_runs, cnt.t(), strict=True):  # per class
                            conv_weight.addcmul_(_cycles_below(r, chunks, cycles, hits, scratch),
                                                 c)
                    if act:
                        n = (counts if own_domains else counts.index_select(1, slot_set)).view(
                            -1, reps, g_count)
                        ou = torch.div(n, float(ou_rows)).ceil_()
                        assert rows_acc is not None
                        rows_acc[r0:r1].addcmul_(_sum_repeats(n), live)
                    else:  # "any": the whole slot when one row of its gate domain is active
                        ou = above_as(counts, 0, counts.dtype).index_select(1, gate).view(
                            -1, reps, g_count)
                        ou.mul_(static_ou)
                    ou_acc[r0:r1].addcmul_(ou, live.unsqueeze(1))
                    if by_cycle is not None:  # S_t of MSB-first cycle t = cycles - 1 - k
                        _sum_repeats_into(ou, by_cycle[cycles - chunks[0], r0:r1])
                        filled.add(chunks[0])
                        continue
                    conv_acc[r0:r1].addcmul_(_sum_repeats(ou), conv_weight)
                    if not lookups:
                        continue
                    # W_t = 0 wherever the class does not run (live 0): time and rounds 0 there
                    if len(chunks) == 1:
                        idx = conv_weight.to(torch.int64)
                        t_sum, r_sum = time_of[idx], rounds_of[idx]
                    else:  # several cycles at once (word): each cycle's W_t on its own
                        t_sum = torch.zeros(live.shape, dtype=torch.float64, device=device)
                        r_sum = torch.zeros_like(t_sum)
                        for k in chunks:  # cycles: a handful
                            w_k = torch.zeros_like(live)
                            for r, c in zip(block_runs, cnt.t(), strict=True):  # a handful
                                w_k.addcmul_(_cycles_below(r, (k,), cycles, hits, scratch), c)
                            idx = w_k.to(torch.int64)
                            t_sum += time_of[idx]
                            r_sum += rounds_of[idx]
                    if ns_acc is not None:
                        ns_acc[r0:r1].addcmul_(ou.to(torch.float64), t_sum.unsqueeze(1))
                    if rounds_acc is not None:
                        rounds_acc[r0:r1].addcmul_(_sum_repeats(ou).to(torch.float64), r_sum)
            if by_cycle is not None:  # row e: S_0 + ... + S_(e-1), read at each e_k
                # every row was written (the buffer is not zeroed): the counter yields each
                # chunk once per pass
                assert m == 0 or len(filled) == cycles, (sorted(filled), cycles)
                for t in range(2, cycles + 1):  # cycles: a handful (torch's cumsum: slower)
                    by_cycle[t].add_(by_cycle[t - 1])
                flat = by_cycle.view(-1)
                cells = m * g_count
                dtype = torch.int32 if flat.numel() < INT32_LIMIT else torch.int64
                cell = torch.arange(cells, dtype=dtype, device=device).view(m, g_count)
                for r, c in zip(runs, cnt.t(), strict=True):  # channels per class: a few
                    index = r.to(dtype).mul_(cells).add_(cell)  # row e_k of each cell
                    conv_acc.addcmul_(flat.index_select(0, index.view(-1)).view(m, g_count), c)
            ou_img = _per_image(ou_acc, n_img, positions, wide)
            per_image_ou[a:b] += ou_img.reshape(n_img, -1)
            conv_sum = _per_image(conv_acc, n_img, positions, wide_class).sum()
            if ns_acc is not None:
                per_image_ns[a:b] += _per_image(ns_acc, n_img, positions, True).reshape(
                    n_img, -1)
            elif shape.time_ns is not None:
                per_image_ns[a:b] += ou_img.reshape(n_img, -1) * shape.time_ns
            sums[4] += (rounds_acc.sum() if rounds_acc is not None else
                        conv_sum if shape.rounds == "conversions" else ou_img.sum())
            sums[0] += ou_img.sum()
            sums[1] += conv_sum
            if rows_acc is not None:  # per class, the same for each of its slots
                rows_class = _per_image(rows_acc, n_img, positions, wide_class).sum(0)  # (G,)
                sums[2] += rows_class.sum()
                sums[3] += (rows_class * class_width).sum()
            else:
                rows_run = ou_img.sum(dim=0) / static_ou.clamp(min=1) * slot_rows
                sums[2] += rows_run.sum()
                sums[3] += (rows_run * width).sum()


def _sum_repeats(values: Tensor) -> Tensor:
    """(M, reps, G) -> (M, G) sums over the repeats (one repeat: a view)."""
    if int(values.shape[1]) == 1:
        return values[:, 0]
    out = values.new_empty((int(values.shape[0]), int(values.shape[2])))
    _sum_repeats_into(values, out)
    return out


def _sum_repeats_into(values: Tensor, out: Tensor) -> None:
    """`_sum_repeats` written into `out` (M, G): slice by slice for up to 6 repeats (faster
    than a reduction over the middle dimension on CPU: 5 repeats of 32 classes, 0.68x its
    time; 7 alike, 8 and 9 slower), else one reduction."""
    reps = int(values.shape[1])
    if reps == 1:
        out.copy_(values[:, 0])
    elif reps > 6:
        torch.sum(values, dim=1, out=out)
    else:
        torch.add(values[:, 0], values[:, 1], out=out)
        for r in range(2, reps):  # a few
            out.add_(values[:, r])


def _cycles_below(runs: Tensor, chunks: tuple[int, ...], cycles: int, out: Tensor,
                  scratch: Tensor) -> Tensor:
    """`out` (M, G) float32: for each output's executed-cycle count in `runs` (uint8), how
    many of the LSB-first `chunks` fall in its executed MSB-first cycles (chunk k is cycle
    t = cycles-1-k, executed when runs > t). `scratch`: a buffer like `out`, not `out`."""
    if len(chunks) == 1:
        return torch.gt(runs, cycles - 1 - chunks[0], out=out)
    out.zero_()
    for k in chunks:  # every cycle at once (word granularity): a handful
        out += torch.gt(runs, cycles - 1 - k, out=scratch)
    return out


def _count_full(table: SlotTable, counter: RowSetCounter | None, parts: list[Tensor],
                images: int, positions: int, cycles: int, dac_bits: int, ou_rows: int,
                word: bool, images_per_chunk: int, per_image_ou: Tensor, sums: Tensor,
                passes: int, per_image_ns: Tensor, tables: tuple[Tensor, Tensor]) -> None:
    """`count_slots` without early termination: every column live, sums per domain first.
    Every activation of slot j converts its width_j columns: time and rounds per slot."""
    width = table.slot_width
    slot_ns = tables[0][width.to(torch.int64)]
    slot_rounds = tables[1][width.to(torch.int64)]
    start = per_image_ou.clone()
    if table.skip == "none":
        ou = table.static_ou(ou_rows)
        reps = float(positions * cycles * passes)
        per_image_ou += (ou * reps).unsqueeze(0)
        sums[0] += ou.sum() * reps * images
        sums[1] += (ou * width).sum() * reps * images
        sums[2] += table.slot_rows.sum() * reps * images
        sums[3] += (table.slot_rows * width).sum() * reps * images
        per_image_ns += (per_image_ou - start) * slot_ns
        sums[4] += (ou * slot_rounds).sum() * reps * images
        return
    assert counter is not None
    d_count = counter.count
    device = per_image_ou.device
    ou_set = torch.zeros(d_count, dtype=torch.float64, device=device)
    rows_set = torch.zeros_like(ou_set)
    chunk = max(1, images_per_chunk)
    act = table.skip == "act"
    static_ou = table.static_ou(ou_rows)
    for part in parts:  # one or two passes
        for a in range(0, images, chunk):  # chunks of whole images (memory bound)
            xc = part[a : a + chunk]
            n_img = int(xc.shape[0])
            # act: OUs ceil(n / ou.rows); any: per gate domain, the (position, cycle)s it
            # has an active row
            ou_img, rows_img = counter.image_sums(xc, cycles, dac_bits, word, ou_rows,
                                                  gate=not act)
            if act:
                rows_set += rows_img.sum(dim=0)
            if act:
                ou_slot = ou_img[:, table.slot_set]  # (images, J)
            else:  # each slot: its static OUs whenever its gate domain runs
                ou_slot = ou_img[:, table.gate] * static_ou
            per_image_ou[a : a + n_img] += ou_slot
            ou_set += ou_img.sum(dim=0)
    if act:
        ou_slots = ou_set[table.slot_set]
        rows_slots = rows_set[table.slot_set]
    else:
        runs = ou_set[table.gate]  # (position, cycle)s each slot runs
        ou_slots = runs * static_ou
        rows_slots = runs * table.slot_rows
    sums[0] += ou_slots.sum()
    sums[1] += (ou_slots * width).sum()
    sums[2] += rows_slots.sum()
    sums[3] += (rows_slots * width).sum()
    sums[4] += (ou_slots * slot_rounds).sum()
    per_image_ns += (per_image_ou - start) * slot_ns
