"""encoding kernel: the layer's values and counts with the encodings: chunk planes, bus-invert
decisions, leading chunks and dynamic precision, and the clipping corrections per conversion."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...core.engine import FLOAT32_EXACT, LayerKernel
from ...core.engine.indices import rows_above
from ...core.frontend import QuantLayer
from ...core.intconv import ExactLinear, exact_int_mm, int8_operand
from ..counting import INT32_SUM_LIMIT, BlockedRows, block_plan
from .mapping import EncodingMappedLayer, LayerEncoding

if TYPE_CHECKING:  # annotations only: the scheme builds its kernels
    from .scheme import EncodingScheme


# ---- dynamic quantization ----------------------------------------------------------------------
def tile_view(x: Tensor, row_tiles: list[tuple[int, int]], tile_rows: int) -> Tensor:
    """(M, R) -> (M, tiles, tile_rows): rows split by array row tile, zero-padded."""
    r = x.shape[1]
    padded = torch.nn.functional.pad(x, (0, len(row_tiles) * tile_rows - r))
    return padded.reshape(x.shape[0], len(row_tiles), tile_rows)


def leading_chunk(tiles: Tensor, dac_bits: int) -> Tensor:
    """(M, I, rows) non-negative integers -> (M, I) int64 index of the most significant nonzero
    chunk of dac_bits bits over each tile's rows (-1 when all are zero)."""
    top = tiles.amax(dim=2).to(torch.int64)
    bitlen = torch.zeros_like(top)
    v = top.clone()
    while bool((v > 0).any()):  # at most input_bits iterations
        bitlen += (v > 0).to(torch.int64)
        v >>= 1
    return torch.div(bitlen - 1, dac_bits, rounding_mode="floor")


def dynamic_precision(tiles: Tensor, lead: Tensor, precision: int, dac_bits: int,
                      rounding: str, value_max: int) -> Tensor:
    """Keep the `precision` chunks from the leading one down, per (position, tile).

    tiles (M, I, rows) int64, lead (M, I) from `leading_chunk`. Dropped chunks are removed by
    truncation, or by rounding half up to a multiple of the kept LSB u, saturating at the
    largest multiple of u the kept chunks (and the input range `value_max`) hold, so no chunk
    above `lead` or below the kept ones is ever fed.
    """
    low = (lead - precision + 1).clamp(min=0)  # lowest kept chunk
    unit = (torch.ones_like(low) << (low * dac_bits)).unsqueeze(2)  # (M, I, 1)
    if rounding == "truncate":
        return torch.div(tiles, unit, rounding_mode="floor") * unit
    span = (torch.ones_like(lead) << ((lead + 1).clamp(min=0) * dac_bits)).unsqueeze(2)
    top = torch.minimum(span - unit, torch.div(value_max, unit, rounding_mode="floor") * unit)
    rounded = torch.div(tiles + unit // 2, unit, rounding_mode="floor") * unit
    return torch.minimum(rounded, top)


def bitwise_or_rows(tiles: Tensor) -> Tensor:
    """(M, I, rows) integers -> (M, I): their bitwise OR over the rows, by halving (log2(rows)
    vectorized ORs of two halves; torch has no OR reduction)."""
    values = tiles
    while values.shape[2] > 1:
        if values.shape[2] % 2:
            values = torch.nn.functional.pad(values, (0, 1))
        half = values.shape[2] // 2
        values = values[:, :, :half] | values[:, :, half:]
    return values[:, :, 0]


def or_tile_masks(entry: Tensor, tiles: int) -> Tensor:
    """(M, tiles x width) int16 table entries (`GroupChunkCounts`: values below 2^15, the
    nonzero-digit mask from bit 4) -> (M, tiles) int64: the OR of each tile's masks. With 4
    entries per int64 word (width a multiple of 4), the words of a tile are ORed and the 4
    lanes folded by two shifts, instead of halving ORs over every entry."""
    m, columns = (int(v) for v in entry.shape)
    width = columns // max(tiles, 1)
    if width % 4 or not entry.is_contiguous():
        return bitwise_or_rows((entry >> 4).view(m, tiles, -1)).to(torch.int64)
    words = entry.view(torch.int64).view(m, tiles, width // 4)  # 4 entries per word
    folded = bitwise_or_rows(words) if width > 4 else words[:, :, 0].clone()
    folded |= folded >> 32  # lanes are non-negative: arithmetic shifts bring zeros
    folded |= folded >> 16
    return (folded >> 4) & 0xFFF


def executed_chunks(tiles: Tensor, lead: Tensor | None, cycles: int, dac_bits: int,
                    skip_zero: bool, precision: int | None) -> Tensor:
    """(T, M, I) bool: chunk t of (position, tile) is executed.

    `tiles` (M, I, rows): the values fed (after any precision transform). skip: only chunks
    nonzero on some row of the tile; precision P: only chunks lead-P+1 .. lead (none for an
    all-zero tile); both: both.
    """
    m, i, _ = tiles.shape
    run = torch.ones((cycles, m, i), dtype=torch.bool, device=tiles.device)
    if skip_zero:
        # a chunk of the bitwise OR over the rows is the OR of the rows' chunks: nonzero
        # exactly when some row's chunk is
        mask = 2**dac_bits - 1
        union = bitwise_or_rows(tiles)  # (M, I)
        for t in range(cycles):  # a handful of input cycles, on (M, I) values
            run[t] = ((union >> (t * dac_bits)) & mask) > 0
    if precision is not None:
        assert lead is not None
        t_idx = torch.arange(cycles, device=tiles.device).view(-1, 1, 1)
        run &= (t_idx <= lead.unsqueeze(0)) & (t_idx > (lead - precision).unsqueeze(0))
    return run


# ---- counting without im2col -------------------------------------------------------------------
# `GroupChunkCounts`: the largest lookup table ((groups + 1) x B^fields int16 entries).
COUNT_TABLE_ENTRIES = 2**22


class GroupChunkCounts:
    """What encoding counts when it feeds the inputs as they are (no dynamic precision, no
    conversion model): per pass, the (cycle, position, OU row group)s that bus-invert feeds
    complemented (the group's chunk sum exceeds its threshold) and, per image and row tile,
    the (position, cycle)s whose chunk is nonzero on some row of the tile (zero-plane
    skipping). The same counts as `inverted_groups` and `executed_chunks` on im2col windows.

    No im2col: the chunk sum of every group at every position is the layer's own linear map
    with the group's rows as a 0/1 filter (`ExactLinear`: oneDNN's int8 convolution on CPU
    where exact; for conv layers over several row tiles, one grouped convolution whose
    groups are the row tiles, `counting.BlockedRows`, when that saves work). `fields` cycles
    share one call: the input holds sum_j B^j chunk_(t+j), B the largest chunk sum + 1, so
    every group's result holds the cycles' sums as base-B digits (packed inputs at most 255,
    a byte). The output columns run tile-major with padding columns (all-zero filters), so a
    row tile's columns are one slice. Per call, one int16 table gather on group x B^fields +
    result gives the number of digits above the group's threshold (low 4 bits) and the mask
    of the nonzero digits (above); the masks ORed over a tile's columns give its executed
    cycles. `usable` is False where the table would exceed `COUNT_TABLE_ENTRIES` (the caller
    then counts on im2col windows). Measured: docs/benchmarks.md, issue 18 part 9.
    """

    def __init__(self, layer: QuantLayer, enc: LayerEncoding, row_tiles: list[tuple[int, int]],
                 cycles: int, dac_bits: int, device: torch.device) -> None:
        self.layer = layer
        self.cycles, self.dac_bits = cycles, dac_bits
        self.chunk_max = chunk_max = 2**dac_bits - 1
        g, ou = (int(v) for v in enc.group_rows.shape)
        self.groups = g
        self.base = base = int(enc.real_rows.max()) * chunk_max + 1 if g else 1
        fields = 1
        while (fields < cycles and chunk_max * sum(base**j for j in range(fields + 1)) <= 255
               and (g + 1) * base ** (fields + 1) <= COUNT_TABLE_ENTRIES):
            fields += 1
        self.fields = fields
        span = base**fields
        self.usable = g > 0 and layer.groups == 1 and (g + 1) * span <= COUNT_TABLE_ENTRIES
        if not self.usable:
            return
        rows = enc.group_rows
        member = torch.zeros((g, layer.rows + 1), dtype=torch.int64)
        member[torch.arange(g).unsqueeze(1).expand(-1, ou),
               torch.where(rows >= 0, rows, torch.full_like(rows, layer.rows))] = 1
        sets = member[:, : layer.rows]
        self.packed_max = chunk_max * sum(base**j for j in range(fields))
        tile = enc.group_tile
        self.tiles = tiles = len(row_tiles)
        plan = block_plan(layer, sets, row_tiles)
        self.op: ExactLinear | BlockedRows
        # Output columns tile-major, (tiles, columns per tile), padding columns (all-zero
        # filters) reading 0: the tiles' ORs reduce the last dimension, with no gather.
        if plan is not None:  # the grouped convolution's columns: one block per row tile
            self.op = BlockedRows(layer, plan, self.packed_max, device)
            column_group = torch.full((self.op.width,), g, dtype=torch.int64)
            column_group[plan.select] = torch.arange(g)
        else:
            per_tile = torch.bincount(tile, minlength=tiles)
            first = torch.cumsum(per_tile, 0) - per_tile
            width = int(per_tile.max())
            column_group = torch.full((tiles * width,), g, dtype=torch.int64)
            column_group[tile * width + torch.arange(g) - first[tile]] = torch.arange(g)
            filters = torch.cat([sets, torch.zeros_like(sets[:1])])[column_group]
            self.op = ExactLinear(layer.kind, filters.reshape(-1, *layer.weight_int.shape[1:]),
                                  self.packed_max, device, layer.stride, layer.padding,
                                  layer.dilation, probe_shape=layer.input_shape or None)
        # One table indexed by group x B^fields + v, v the packed result (digits c_j): the
        # number of digits above the column's group's threshold (padding columns: none) in
        # the low 4 bits, the mask of the nonzero digits above them (int16: fields <= 8).
        v = torch.arange(span, dtype=torch.int64)
        digits = torch.stack([(v // base**j) % base for j in range(fields)])  # (fields, span)
        thr = torch.cat([enc.input_threshold.to(torch.int64),
                         torch.tensor([base * fields])]).view(g + 1, 1, 1)
        above = (digits.unsqueeze(0) > thr).sum(dim=1)  # (G + 1, span)
        nonzero = ((digits > 0).to(torch.int64) << torch.arange(fields).view(-1, 1)).sum(dim=0)
        self.table = (above + (nonzero << 4)).to(torch.int16).reshape(-1).to(device)
        self.offsets = (column_group * span).to(device=device, dtype=torch.int32)

    def _packed(self, x: Tensor) -> Iterator[Tensor]:
        """Per call, the packed input: sum_j B^j chunk_(first+j) of x (uint8 or int32
        magnitudes), in x's dtype and memory format, built as the calls ask for it."""
        for first in range(0, self.cycles, self.fields):  # calls: a handful
            packed: Tensor | None = None
            for j in range(min(self.fields, self.cycles - first)):
                chunk = (x >> ((first + j) * self.dac_bits)) & self.chunk_max
                if j:
                    chunk = chunk * self.base**j
                packed = chunk if packed is None else packed.add_(chunk)
            assert packed is not None
            yield packed

    def count(self, part: Tensor, images: int, bus_invert: bool,
              tiles: bool) -> tuple[int, Tensor | None]:
        """One pass: (inverted (cycle, position, group)s with `bus_invert`, else 0; with
        `tiles`, (images, row tiles) int64 executed (position, cycle)s, else None). part:
        the pass's input magnitudes (N, ...) as the layer takes them, at most 255 when uint8."""
        x = part
        if self.layer.kind == "conv" and x.dim() == 4:  # the int8 convolution's layout
            x = x.contiguous(memory_format=torch.channels_last)
        inverted = torch.zeros((), dtype=torch.int64, device=x.device)
        per_image = (torch.zeros((images, self.tiles), dtype=torch.int64, device=x.device)
                     if tiles else None)
        for packed in self._packed(x):  # calls: a handful
            op = self.op
            value = (op.native_rows(packed) if isinstance(op, BlockedRows)
                     else op.rows(packed)).to(torch.int32)  # (M, columns) packed sums
            m = int(value.shape[0])
            entry = self.table.index_select(0, value.add_(self.offsets).view(-1)).view(m, -1)
            # sums in int32 where they fit (torch's int16 -> int64 sums run ~4x slower)
            if bus_invert:
                wide = entry.numel() * 15 >= INT32_SUM_LIMIT  # low 4 bits: at most 15 each
                inverted += (entry & 15).sum(dtype=torch.int64 if wide else torch.int32)
            if per_image is not None:
                union = or_tile_masks(entry, self.tiles)  # (M, tiles)
                executed = (union & 1).to(torch.int32)
                for j in range(1, self.fields):  # digits: a handful
                    executed += (union >> j) & 1
                wide = m * self.fields >= INT32_SUM_LIMIT  # per image and tile: at most M x fields
                per_image += executed.view(images, -1, self.tiles).sum(
                    dim=1, dtype=torch.int64 if wide else torch.int32)
        return int(inverted), per_image


# ---- encoded conversions -----------------------------------------------------------------------
@dataclass
class ClipTables:
    """What the conversion model of one layer at one ADC resolution needs (device tensors):
    per OU row group, the columns whose encoded partial sums can leave the ADC's identity
    range (K at most; padding columns point at column C, with weight 0 in channel 0)."""

    cols: Tensor  # (G, K) int64 physical columns, C for padding
    levels: Tensor  # (G, ou, K) stored levels (0 on padding)
    group_rows: Tensor  # (G, ou) int64 rows of each group, padding -> R (a zero input)
    real: Tensor  # (G, ou) uint8 1 on real rows
    member: Tensor  # (R+1, G) float32 1 where the row belongs to the group
    row_bound: Tensor  # (R+1, G) the row's largest level over its group's K columns
    bound_total: Tensor  # (G,) sum over the group's rows of row_bound
    threshold: Tensor  # (G,) bus-invert threshold on the group's chunk sum
    channels: int  # the layer's output channels
    channel: Tensor  # (G, K) int64 output channel of each column (padding: 0)
    channel_weight: Tensor  # (G, K) float64 its signed shift weight, negated where the stored
    # levels are complemented (the recovery subtracts p'); padding: 0
    dtype: torch.dtype  # float32 where every sum below is an integer under 2^24, else float64
    member8: Tensor | None = None  # `member` and `row_bound` as int8 operands of
    row_bound8: Tensor | None = None  # `exact_int_mm` (CPU, integer levels), else None


def clip_tables(enc: LayerEncoding, top: int, step: float, rows: int, weight_sum: int,
                device: torch.device, col_channel: Tensor, col_weight: Tensor,
                out_channels: int) -> ClipTables:
    """Per group, the columns that need a conversion model (bound > top with a unit step; any
    nonzero bound otherwise, where rounding changes values), and the per-group matrices.
    `col_channel`, `col_weight` (C,): each physical column's output channel (of
    `out_channels`) and signed shift weight (the mapping's), for corrections added straight
    into the output channels."""
    threshold = top if step == 1.0 else 0
    need = enc.bound > threshold  # (G, C)
    g, ou, c = enc.stored.shape
    k = int(need.sum(dim=1).max()) if need.numel() else 0
    rank = torch.cumsum(need.to(torch.int64), dim=1) - 1
    cols = torch.full((g, k + 1), c, dtype=torch.int64)
    gi, ci = need.nonzero(as_tuple=True)
    cols[gi, rank[gi, ci]] = ci
    cols = cols[:, :k]
    padded = torch.nn.functional.pad(enc.stored.to(torch.float64), (0, 1))  # column C -> 0
    levels = torch.gather(padded, 2, cols.unsqueeze(1).expand(-1, ou, -1))  # (G, ou, K)
    flags = torch.gather(torch.nn.functional.pad(enc.complemented, (0, 1)), 1, cols)
    group_rows = torch.where(enc.group_rows < 0, torch.full_like(enc.group_rows, rows),
                             enc.group_rows)
    flat_rows = group_rows.reshape(-1)
    flat_groups = torch.arange(g).repeat_interleave(ou)
    member = torch.zeros((rows + 1, g), dtype=torch.float64)
    member[flat_rows, flat_groups] = 1.0
    row_bound = torch.zeros((rows + 1, g), dtype=torch.float64)
    row_max = levels.amax(dim=2) if k else torch.zeros((g, ou), dtype=torch.float64)
    row_bound[flat_rows, flat_groups] = row_max.reshape(-1)
    member[rows] = 0.0
    row_bound[rows] = 0.0
    # Unit step: partial sums and errors are integers; weighted by the cycle shifts (summing
    # to `weight_sum`) and summed over cycles and groups they stay below 2^24 (exact in
    # float32) when this holds.
    largest = float(enc.bound.max()) if enc.bound.numel() else 0.0
    # On CUDA float32 matmuls may run in TF32 (a user setting): float64 there.
    exact32 = (step == 1.0 and largest * weight_sum * max(g, 1) < FLOAT32_EXACT
               and device.type == "cpu")
    dtype = torch.float32 if exact32 else torch.float64
    pad_channel = torch.nn.functional.pad(col_channel.cpu().to(torch.int64), (0, 1))
    pad_weight = torch.nn.functional.pad(col_weight.cpu().to(torch.float64), (0, 1))
    channel = pad_channel[cols]  # column C (padding): channel 0, weight 0
    channel_weight = torch.where(flags, -pad_weight[cols], pad_weight[cols])
    member8 = int8_operand(member.to(device)) if device.type == "cpu" else None
    row_bound8 = int8_operand(row_bound.to(device)) if member8 is not None else None
    return ClipTables(
        cols=cols.to(device), levels=levels.to(device=device, dtype=dtype),
        group_rows=group_rows.to(device),
        real=(enc.group_rows >= 0).to(device=device, dtype=torch.uint8),
        member=member.to(device=device, dtype=torch.float32),
        row_bound=row_bound.to(device=device, dtype=dtype),
        bound_total=row_bound.sum(dim=0).to(device=device, dtype=dtype),
        threshold=enc.input_threshold.to(device), channels=out_channels,
        channel=channel.to(device), channel_weight=channel_weight.to(device), dtype=dtype,
        member8=member8 if row_bound8 is not None else None, row_bound8=row_bound8)


def chunk_planes(x: Tensor, cycles: int, dac_bits: int) -> Tensor:
    """x (m, R) non-negative integers -> (T*m, R+1) uint8 input chunks, cycle-major, with a
    zero column R (the input of padding rows)."""
    padded = torch.nn.functional.pad(x, (0, 1))
    shifts = (torch.arange(cycles, device=x.device) * dac_bits).view(-1, 1, 1).to(x.dtype)
    planes = (padded.unsqueeze(0) >> shifts) & (2**dac_bits - 1)
    return planes.to(torch.uint8).reshape(cycles * x.shape[0], -1)


def group_view(x: Tensor, row_tiles: list[tuple[int, int]], tile_rows: int,
               ou_rows: int) -> Tensor:
    """(M, R) -> (ou_rows, M, tiles, groups per tile): the rows of every OU row group of the
    dense mapping, zero-padded (tiles are `tile_rows` apart, groups `ou_rows` apart), with the
    row-within-group dimension first so that sums over it are adds of contiguous slices."""
    per_tile = math.ceil(tile_rows / ou_rows)
    tiles = tile_view(x, row_tiles, tile_rows)
    tiles = torch.nn.functional.pad(tiles, (0, per_tile * ou_rows - tile_rows))
    grouped = tiles.reshape(x.shape[0], len(row_tiles), per_tile, ou_rows)
    return grouped.permute(3, 0, 1, 2).contiguous()


def inverted_groups(x: Tensor, thresholds: Tensor, row_tiles: list[tuple[int, int]],
                    tile_rows: int, ou_rows: int, cycles: int, dac_bits: int) -> int:
    """Number of (cycle, position, OU row group) that bus-invert feeds complemented: the
    group's chunk sum exceeds its threshold. x (M, R) magnitudes; thresholds (tiles, groups per
    tile), groups that do not exist get one no sum reaches."""
    chunk_max = 2**dac_bits - 1
    narrow = ou_rows * chunk_max <= 255  # every chunk sum fits a byte
    dtype = torch.uint8 if narrow else torch.int32
    view = group_view(x, row_tiles, tile_rows, ou_rows)
    # no byte sum exceeds 255: a threshold above it is reached by none, as before
    limit = thresholds.clamp(max=255).to(torch.uint8) if narrow else thresholds
    total = 0
    for t in range(cycles):  # a handful of input cycles
        # a sum over the leading (row-in-group) dimension adds contiguous slices, in the
        # narrow dtype (8x faster than halving with padding copies, measured)
        sums = ((view >> (t * dac_bits)) & chunk_max).to(dtype).sum(dim=0, dtype=dtype)
        total += int((sums > limit).sum())
    return total


def conversion_corrections(planes: Tensor, tables: ClipTables, bus_invert: bool,
                           chunk_max: int, m: int, cycles: int, dac_bits: int, top: int,
                           step: float, count_clipped: bool = False,
                           block: int = 512) -> tuple[Tensor, int, int]:
    """Per (position, output channel), the sum over cycles, groups and the channel's columns
    of shift x sign x (ADC(p') - p') x 2^(t dac): exactly what the ADC changes in the
    digitally recovered result. planes (T*m, R+1) from `chunk_planes`.

    The sign is -1 per encoding that complemented the conversion's inputs or stored levels
    (the recovery subtracts p'). Bus-invert is decided per (cycle, position, group) on the
    chunk sum. Only (cycle, position, group) whose bound (the fed chunks x the rows' largest
    levels) exceeds the identity range are evaluated, on the group's K columns, packed by
    group into blocks of one batched matmul, whose columns are scattered straight into their
    channels (no (positions, physical columns) matrix). Returns ((m, Cout) float64,
    conversions outside the ADC range (with `count_clipped`, else 0), inverted (cycle,
    position, group)).
    """
    device = planes.device
    g_count, ou, k = tables.levels.shape
    dtype = tables.dtype
    # The chunks' sums per group: int8 products (exact, ~10x faster on CPU) where the planes
    # and the tables fit int8, else float products (exact: small integers).
    int8 = tables.row_bound8 is not None and chunk_max <= 127 and planes.dtype == torch.uint8
    pf = None if int8 else planes.to(dtype)
    if int8:
        assert tables.row_bound8 is not None
        bound = exact_int_mm(planes, tables.row_bound8).to(dtype)  # (T*m, G)
    else:
        assert pf is not None
        bound = pf @ tables.row_bound
    inverted: Tensor | None = None
    n_inverted = 0
    if bus_invert:
        if int8:
            assert tables.member8 is not None
            sums = exact_int_mm(planes, tables.member8).to(dtype)
        else:
            assert pf is not None
            sums = pf @ tables.member.to(dtype)
        inverted = sums > tables.threshold.to(dtype)
        n_inverted = int(inverted.sum())
        bound = torch.where(inverted, chunk_max * tables.bound_total - bound, bound)
    g_idx, tm_idx = rows_above(bound.t(), float(top) if step == 1.0 else 0.0)  # by group
    n_cand = int(g_idx.numel())
    if n_cand == 0 or k == 0:
        return torch.zeros((m, tables.channels), dtype=torch.float64, device=device), 0, \
            n_inverted
    counts = torch.bincount(g_idx, minlength=g_count)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n_cand, device=device) - start[g_idx]
    blocks = torch.div(counts + block - 1, block, rounding_mode="floor")
    first = torch.cumsum(blocks, 0) - blocks
    slot = first[g_idx] * block + rank  # flat slot of each candidate
    n_blocks = int(blocks.sum())
    block_group = torch.repeat_interleave(torch.arange(g_count, device=device), blocks)
    width = int(planes.shape[1])  # flat gathers (2-D advanced indexing is several x slower)
    flat = (tm_idx * width).unsqueeze(1) + tables.group_rows.index_select(0, g_idx)
    x = planes.reshape(-1).index_select(0, flat.reshape(-1)).view(n_cand, ou)  # uint8
    t_idx = torch.div(tm_idx, m, rounding_mode="floor")
    # ADC(p) - p = -(p - top) where p > top: the negative sign goes into the slot weights.
    weight = -torch.pow(2.0, (t_idx * dac_bits).to(dtype))
    if inverted is not None:
        inv = inverted.reshape(-1).index_select(0, tm_idx * g_count + g_idx)
        x = torch.where(inv.unsqueeze(1), (chunk_max - x) * tables.real[g_idx], x)
        weight = torch.where(inv, -weight, weight)
    packed = torch.zeros((n_blocks * block, ou), dtype=dtype, device=device)
    packed.index_copy_(0, slot, x.to(dtype))
    slot_weight = torch.zeros((n_blocks * block, 1), dtype=dtype, device=device)
    slot_weight.index_copy_(0, slot, weight.unsqueeze(1))
    # position of each slot; padding slots go to a dump row m with weight 0
    position = torch.full((n_blocks * block,), m, dtype=torch.int64, device=device)
    position.index_copy_(0, slot, tm_idx - t_idx * m)
    p = torch.bmm(packed.view(n_blocks, block, ou),
                  tables.levels.index_select(0, block_group))  # (nb, B, K)
    clipped = 0
    if step == 1.0:
        err = p.sub_(float(top)).clamp_(min=0)  # p - top where p > top
        if count_clipped:
            clipped = int(torch.count_nonzero(err))
    else:  # -(ADC(p) - p), to match the negated weights
        if count_clipped:
            clipped = int(torch.count_nonzero(p > top * step))
        err = p.sub_(torch.round(p / step).clamp_(0, top).mul_(step))
    err = err.view(-1, k).mul_(slot_weight)
    # each slot's columns straight into their channels, in float64 (exact integers)
    cout = tables.channels
    target = (position.view(n_blocks, block, 1) * cout
              + tables.channel.index_select(0, block_group).unsqueeze(1))
    value = err.view(n_blocks, block, k).to(torch.float64).mul_(
        tables.channel_weight.index_select(0, block_group).unsqueeze(1))
    out = torch.zeros(((m + 1) * cout,), dtype=torch.float64, device=device)
    out.index_add_(0, target.view(-1), value.view(-1))
    return out[: m * cout].view(m, cout), clipped, n_inverted


def exact_matmul(x: Tensor, weight: Tensor, col_abs_sum: float) -> Tensor:
    """x (M, R) non-negative integers (float32) @ weight (R, Cout) integers (float32), exactly,
    as float64. float32 while every partial sum stays below 2^24 (CPU), else in bit pieces of
    x; float64 on CUDA (where float32 matmuls may use TF32)."""
    if x.device.type != "cpu":
        return x.to(torch.float64) @ weight.to(torch.float64)
    wf = weight
    x_max = float(x.max()) if x.numel() else 0.0
    if col_abs_sum * x_max < FLOAT32_EXACT:
        return (x @ wf).to(torch.float64)
    piece_bits = 1
    while col_abs_sum * (2 ** (piece_bits + 1) - 1) < FLOAT32_EXACT:
        piece_bits += 1
    if col_abs_sum >= FLOAT32_EXACT:
        return x.to(torch.float64) @ weight.to(torch.float64)
    xi = x.to(torch.int64)
    acc = torch.zeros((x.shape[0], weight.shape[1]), dtype=torch.float64, device=x.device)
    for j in range(math.ceil(int(x_max).bit_length() / piece_bits)):  # 2-3 pieces
        piece = ((xi >> (j * piece_bits)) & (2**piece_bits - 1)).to(torch.float32)
        acc += (piece @ wf).to(torch.float64) * float(2 ** (j * piece_bits))
    return acc


class EncodingKernel(LayerKernel):
    """A `LayerKernel` converting at the layer's ADC bits (the engine path for a non-ideal
    device), plus the encoding's device tensors and counting constants."""

    def __init__(self, mapped: EncodingMappedLayer, device: torch.device,
                 scheme: EncodingScheme) -> None:
        # The engine (device effects) converts with the layer's own resolution.
        super().__init__(replace(mapped, hw=mapped.layer_hw, _cache={}), device)
        self.enc_mapped = mapped
        self.precision = scheme.layer_precision(mapped.layer.name)
        self.skip_zero_planes = scheme.skip_zero_planes
        hw, layer = mapped.hw, mapped.layer
        enc = mapped.encoding
        assert enc is not None
        self.enc = enc
        self.tile_rows = [b - a for a, b in mapped.row_tiles]
        self.tile_groups = [math.ceil(r / hw.ou.rows) for r in self.tile_rows]
        col_groups = [math.ceil((c1 - c0) / hw.ou.cols) for c0, c1 in mapped.col_tiles]
        self.col_groups_total = sum(col_groups)
        self.col_groups_max = max(col_groups)
        self.columns = mapped.physical_cols
        tiles = len(mapped.row_tiles)
        per_tile_pairs = torch.zeros(tiles, dtype=torch.int64)
        per_tile_pairs.index_add_(0, enc.group_tile, enc.complemented.sum(dim=1))
        per_tile_groups = torch.zeros(tiles, dtype=torch.int64)
        per_tile_groups.index_add_(0, enc.group_tile,
                                   enc.complemented.any(dim=1).to(torch.int64))
        self.complemented_pairs = per_tile_pairs.tolist()  # per tile
        self.complemented_groups = per_tile_groups.tolist()  # per tile
        w = layer.matrix()
        self.weight_float = w.to(device=device, dtype=torch.float32)
        self.col_abs_sum = float(w.abs().sum(dim=0).max()) if w.numel() else 0.0
        # Bus-invert thresholds laid out as `group_view` (tiles, groups per tile); groups that
        # do not exist get a threshold no chunk sum reaches.
        per_tile = math.ceil(hw.array.rows / hw.ou.rows)
        thr = torch.full((tiles, per_tile), hw.ou.rows * enc.chunk_max + 1, dtype=torch.int32)
        groups = torch.tensor(self.tile_groups)
        first = torch.cumsum(groups, 0) - groups
        slot = torch.arange(enc.group_tile.numel()) - first[enc.group_tile]
        thr[enc.group_tile, slot] = enc.input_threshold.to(torch.int32)
        self.threshold_view = thr.to(device)

    @property
    def dynamic(self) -> bool:
        """Data-dependent cycle counts: zero-plane skipping or dynamic precision."""
        return self.skip_zero_planes or self.precision is not None

    @cached_property
    def group_counts(self) -> GroupChunkCounts:
        """The im2col-free counter of bus-invert decisions and executed chunks."""
        hw = self.enc_mapped.hw
        return GroupChunkCounts(self.enc_mapped.layer, self.enc, list(self.enc_mapped.row_tiles),
                                hw.cycles, hw.dac.bits, self.device)

    @cached_property
    def tables(self) -> ClipTables:
        hw = self.enc_mapped.layer_hw
        return clip_tables(self.enc, hw.adc_max_code, hw.adc.step, self.enc_mapped.layer.rows,
                           2 ** (hw.cycles * hw.dac.bits) - 1, self.device,
                           self.mapped.col_channel, self.mapped.col_weight,
                           self.mapped.layer.out_channels)
