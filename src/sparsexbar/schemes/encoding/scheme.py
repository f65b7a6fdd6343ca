"""`encoding`: data encoding, per-layer ADC resolution and dynamic quantization (Chen et al.,
ASP-DAC 2018; our reconstruction of DESIGN.md 3.4, documented in docs/schemes/encoding.md).

The layer keeps the straightforward (dense) mapping; each technique is switched on its own:

- Input encoding `bus-invert`: per OU row group (the rows one OU activates) and cycle, when the
  group's input chunks sum to more than half their maximum (n x c / 2, n real rows, c = 2^dac-1;
  with a 1-bit DAC: more than half of the rows hold a 1), the complemented chunks c - x are fed
  instead and the column result recovered digitally as p = c x S' - p', with S' the column's
  stored-level sum over the group (a per-(group, column) LUT). At most half the chunk mass is
  ever driven, so the largest partial sum, hence the ADC bits a lossless conversion needs, drops.
- Weight encoding `complement`: per (OU row group, physical column), when the stored levels sum
  to more than half their maximum (n x (2^cell_bits - 1) / 2), the complemented levels
  l_max - L are stored instead (a flag bit), and p = l_max x X - p' is recovered digitally, with
  X the group's input chunk sum of the cycle (a popcount). Every column group's worst-case
  partial sum then at most halves.
- ADC resolution per layer: `fixed` (the config's adc.bits), `lossless` (the smallest bits that
  hold every reachable encoded partial sum: exact), `calibrated` (given per-layer bits, e.g. from
  `sparsexbar calibrate-encoding`: lossy, modelled bit-accurately).
- Dynamic quantization, per input window and array row tile (the im2col inputs one array sees
  at one output position, in one pass): `skip` zero planes (a cycle whose chunk is zero on all
  the tile's rows is not executed: lossless) and `precision P` (only the P chunks starting at the
  tile's leading nonzero chunk are processed; the lower ones are dropped by round-half-up,
  saturating within the kept chunks, or by truncation: lossy).

Values (ideal device): the exact integer result of the (precision-transformed) inputs, plus,
where the ADC can clip or round (calibrated bits, a small configured ADC, adc.step != 1), the
sign x (ADC(p') - p') of every conversion of the encoded partial sums p', which is exactly what
the digital recovery leaves of an ADC error. A non-ideal device is modelled (by the engine) only
without encodings and dynamic precision; those combinations are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.cost import Storage
from ...core.engine import FLOAT32_EXACT, EngineOptions, LayerKernel, accumulate, exact_accumulate
from ...core.errors import SparsexbarError, require_choice
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, dense_events, gather_group_levels, map_dense
from ..base import LayerRun, Scheme

INPUT_ENCODINGS = ("none", "bus-invert")
WEIGHT_ENCODINGS = ("none", "complement")
ADC_MODES = ("fixed", "lossless", "calibrated")
ROUNDINGS = ("round", "truncate")
MAX_ADC_BITS = 16  # the config's largest adc.bits
PrecisionSpec = int | Mapping[str, int | None] | str | Path | None


# ---- static encoding of one layer --------------------------------------------------------------
@dataclass
class LayerEncoding:
    """Per OU row group (G groups of the dense mapping, in row-tile order) and physical column
    (C): the stored levels and what the encodings need. Tensors on the CPU."""

    group_rows: Tensor  # (G, ou) int64 rows of each group, -1 padding
    group_tile: Tensor  # (G,) int64 row tile (array row) of each group
    real_rows: Tensor  # (G,) int64 rows of each group that exist
    stored: Tensor  # (G, ou, C) int32 stored levels (complemented where `complemented`)
    complemented: Tensor  # (G, C) bool weight complement flags
    input_threshold: Tensor  # (G,) int64 largest chunk sum fed as is: floor(n c / 2)
    bound: Tensor  # (G, C) int64 largest reachable encoded partial sum
    bus_invert: bool
    chunk_max: int  # c = 2^dac_bits - 1
    level_max: int  # 2^cell_bits - 1

    @property
    def stored_sum(self) -> Tensor:
        """(G, C) int64 S': each column's stored-level sum over each group."""
        return self.stored.sum(dim=1, dtype=torch.int64)

    def recovery_constants(self, col_channel: Tensor, col_weight: Tensor,
                           channels: int) -> Tensor:
        """(G, Cout) int64 bus-invert LUT: K = c x sum over the channel's columns of
        (+-shift weight) x S', the sign -1 where the column is stored complemented. An inverted
        group adds K x 2^(t dac) once per channel after the shift-and-add, which then
        subtracts the group's conversions instead of adding them."""
        sign = torch.where(self.complemented, -1, 1).to(torch.int64)
        shift = col_weight.to(torch.int64)  # +-2^(s cell_bits), exact
        per_col = self.chunk_max * sign * shift.unsqueeze(0) * self.stored_sum  # (G, C)
        out = torch.zeros((per_col.shape[0], channels), dtype=torch.int64)
        out.index_add_(1, col_channel, per_col)
        return out


def group_geometry(mapped: MappedLayer) -> tuple[Tensor, Tensor]:
    """(group rows (G, ou), row tile of each group (G,)) of a dense mapping."""
    if mapped.group_rows.shape[0] != 1:
        raise ValueError("encodings are defined on the dense mapping (one segment)")
    rows = mapped.group_rows[0]
    per_tile = [math.ceil((b - a) / mapped.hw.ou.rows) for a, b in mapped.row_tiles]
    tile = torch.repeat_interleave(torch.arange(len(per_tile)), torch.tensor(per_tile))
    return rows, tile


def complement_weights(levels: Tensor, real: Tensor, level_max: int,
                       enabled: bool = True) -> tuple[Tensor, Tensor]:
    """Weight complement per (group, column): levels (G, ou, C) int, real (G, ou) bool.

    A column group whose level sum exceeds half its maximum (n x level_max / 2) stores
    level_max - L on its real rows. Returns (stored levels, flags (G, C) bool).
    """
    sums = levels.sum(dim=1, dtype=torch.int64)  # (G, C)
    n = real.sum(dim=1, keepdim=True).to(torch.int64)  # (G, 1)
    flags = (2 * sums > n * level_max) if enabled else torch.zeros_like(sums, dtype=torch.bool)
    flip = flags.unsqueeze(1) & real.unsqueeze(2)
    stored = torch.where(flip, level_max - levels, levels)
    return stored, flags


def encoded_bound(stored: Tensor, real_rows: Tensor, chunk_max: int, bus_invert: bool) -> Tensor:
    """(G, C) largest partial sum any input can produce from the stored levels (G, ou, C).

    Without input encoding: c x S'. With bus-invert the encoded chunks sum to at most
    h = floor(n c / 2), so the worst case fills the largest levels first: c x (sum of the
    q = h // c largest levels) + (h mod c) x the next one.
    """
    s = stored.to(torch.int64)
    if not bus_invert:
        return chunk_max * s.sum(dim=1)
    h = (real_rows * chunk_max) // 2  # (G,)
    q = h // chunk_max
    r = h % chunk_max
    top = torch.sort(s, dim=1, descending=True).values  # (G, ou, C)
    csum = torch.nn.functional.pad(torch.cumsum(top, dim=1), (0, 0, 1, 0))  # (G, ou+1, C)
    c = s.shape[2]
    taken = torch.gather(csum, 1, q.view(-1, 1, 1).expand(-1, 1, c)).squeeze(1)
    nxt = torch.gather(torch.nn.functional.pad(top, (0, 0, 0, 1)), 1,
                       q.view(-1, 1, 1).expand(-1, 1, c)).squeeze(1)
    return chunk_max * taken + r.view(-1, 1) * nxt


def encode_layer(mapped: MappedLayer, bus_invert: bool, weight_complement: bool) -> LayerEncoding:
    """The static encoding data of a dense-mapped layer."""
    hw = mapped.hw
    rows, tile = group_geometry(mapped)
    levels = gather_group_levels(mapped.levels.to(torch.int32), rows.unsqueeze(0),
                                  mapped.segment_cols)[0]  # (G, ou, C)
    real = rows >= 0
    level_max = 2**hw.cell.bits - 1
    chunk_max = 2**hw.dac.bits - 1
    stored, flags = complement_weights(levels, real, level_max, weight_complement)
    real_rows = real.sum(dim=1).to(torch.int64)
    return LayerEncoding(
        group_rows=rows, group_tile=tile, real_rows=real_rows, stored=stored,
        complemented=flags, input_threshold=(real_rows * chunk_max) // 2,
        bound=encoded_bound(stored, real_rows, chunk_max, bus_invert),
        bus_invert=bus_invert, chunk_max=chunk_max, level_max=level_max,
    )


def lossless_adc_bits(bound: float, step: float = 1.0) -> int:
    """Smallest ADC bits whose range (2^b - 1) x step holds `bound` (>= 1 bit)."""
    bits = 1
    while (2**bits - 1) * step < bound:
        bits += 1
    return bits


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
        mask = 2**dac_bits - 1
        for t in range(cycles):  # a handful of input cycles
            run[t] = ((tiles >> (t * dac_bits)) & mask).amax(dim=2) > 0
    if precision is not None:
        assert lead is not None
        t_idx = torch.arange(cycles, device=tiles.device).view(-1, 1, 1)
        run &= (t_idx <= lead.unsqueeze(0)) & (t_idx > (lead - precision).unsqueeze(0))
    return run


# ---- encoded conversions -----------------------------------------------------------------------
@dataclass
class ClipTables:
    """What the conversion model of one layer at one ADC resolution needs (device tensors):
    per OU row group, the columns whose encoded partial sums can leave the ADC's identity
    range (K at most; padding columns point at column C, which maps to no channel)."""

    cols: Tensor  # (G, K) int64 physical columns, C for padding
    levels: Tensor  # (G, ou, K) stored levels (0 on padding)
    sign: Tensor | None  # (1, G, K) -1 where stored complemented, +1 else; None: all +1
    group_rows: Tensor  # (G, ou) int64 rows of each group, padding -> R (a zero input)
    real: Tensor  # (G, ou) uint8 1 on real rows
    member: Tensor  # (R+1, G) float32 1 where the row belongs to the group
    row_bound: Tensor  # (R+1, G) the row's largest level over its group's K columns
    bound_total: Tensor  # (G,) sum over the group's rows of row_bound
    threshold: Tensor  # (G,) bus-invert threshold on the group's chunk sum
    dtype: torch.dtype  # float32 where every sum below is an integer under 2^24, else float64


def clip_tables(enc: LayerEncoding, top: int, step: float, rows: int, weight_sum: int,
                device: torch.device) -> ClipTables:
    """Per group, the columns that need a conversion model (bound > top with a unit step; any
    nonzero bound otherwise, where rounding changes values), and the per-group matrices."""
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
    sign = torch.where(flags, -1.0, 1.0).unsqueeze(0) if bool(flags.any()) else None
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
    return ClipTables(
        cols=cols.to(device), levels=levels.to(device=device, dtype=dtype),
        sign=None if sign is None else sign.to(device=device, dtype=dtype),
        group_rows=group_rows.to(device),
        real=(enc.group_rows >= 0).to(device=device, dtype=torch.uint8),
        member=member.to(device=device, dtype=torch.float32),
        row_bound=row_bound.to(device=device, dtype=dtype),
        bound_total=row_bound.sum(dim=0).to(device=device, dtype=dtype),
        threshold=enc.input_threshold.to(device), dtype=dtype)


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


def _sum_first(values: Tensor) -> Tensor:
    """Sum over dim 0 by halving (log2 vectorized adds of contiguous slices)."""
    while values.shape[0] > 1:
        if values.shape[0] % 2:
            values = torch.cat([values, torch.zeros_like(values[:1])])
        half = values.shape[0] // 2
        values = values[:half] + values[half:]
    return values[0]


def inverted_groups(x: Tensor, thresholds: Tensor, row_tiles: list[tuple[int, int]],
                    tile_rows: int, ou_rows: int, cycles: int, dac_bits: int) -> int:
    """Number of (cycle, position, OU row group) that bus-invert feeds complemented: the
    group's chunk sum exceeds its threshold. x (M, R) magnitudes; thresholds (tiles, groups per
    tile), groups that do not exist get one no sum reaches."""
    chunk_max = 2**dac_bits - 1
    dtype = torch.uint8 if ou_rows * chunk_max <= 255 else torch.int32
    view = group_view(x, row_tiles, tile_rows, ou_rows)
    total = 0
    for t in range(cycles):  # a handful of input cycles
        sums = _sum_first(((view >> (t * dac_bits)) & chunk_max).to(dtype))
        total += int((sums.to(torch.int32) > thresholds).sum())
    return total


def conversion_corrections(planes: Tensor, tables: ClipTables, bus_invert: bool,
                           chunk_max: int, m: int, cycles: int, dac_bits: int, top: int,
                           step: float, columns: int, count_clipped: bool = False,
                           block: int = 512) -> tuple[Tensor, int, int]:
    """Per (position, physical column), the sum over cycles and groups of
    sign x (ADC(p') - p') x 2^(t dac): exactly what the ADC changes in the digitally recovered
    result. planes (T*m, R+1) from `chunk_planes`.

    The sign is -1 per encoding that complemented the conversion's inputs or stored levels
    (the recovery subtracts p'). Bus-invert is decided per (cycle, position, group) on the
    chunk sum. Only (cycle, position, group) whose bound (the fed chunks x the rows' largest
    levels) exceeds the identity range are evaluated, on the group's K columns, packed by
    group into blocks of one batched matmul. Returns ((m, columns+1) float64, conversions
    outside the ADC range (with `count_clipped`, else 0), inverted (cycle, position, group)).
    """
    device = planes.device
    g_count, ou, k = tables.levels.shape
    dtype = tables.dtype
    out = torch.zeros((m, columns + 1), dtype=dtype, device=device)
    pf = planes.to(dtype)
    bound = pf @ tables.row_bound  # (T*m, G)
    inverted: Tensor | None = None
    n_inverted = 0
    if bus_invert:
        sums = pf @ tables.member.to(dtype)  # exact: small integers
        inverted = sums > tables.threshold.to(dtype)
        n_inverted = int(inverted.sum())
        bound = torch.where(inverted, chunk_max * tables.bound_total - bound, bound)
    mask = bound > (float(top) if step == 1.0 else 0.0)
    g_idx, tm_idx = mask.t().nonzero(as_tuple=True)  # sorted by group
    n_cand = int(g_idx.numel())
    if n_cand == 0 or k == 0:
        return out.to(torch.float64), 0, n_inverted
    counts = torch.bincount(g_idx, minlength=g_count)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n_cand, device=device) - start[g_idx]
    blocks = torch.div(counts + block - 1, block, rounding_mode="floor")
    first = torch.cumsum(blocks, 0) - blocks
    slot = first[g_idx] * block + rank  # flat slot of each candidate
    n_blocks = int(blocks.sum())
    block_group = torch.repeat_interleave(torch.arange(g_count, device=device), blocks)
    x = planes[tm_idx.unsqueeze(1), tables.group_rows[g_idx]]  # (n, ou) uint8
    t_idx = torch.div(tm_idx, m, rounding_mode="floor")
    # ADC(p) - p = -(p - top) where p > top: the negative sign goes into the slot weights.
    weight = -torch.pow(2.0, (t_idx * dac_bits).to(dtype))
    if inverted is not None:
        inv = inverted[tm_idx, g_idx]
        x = torch.where(inv.unsqueeze(1), (chunk_max - x) * tables.real[g_idx], x)
        weight = torch.where(inv, -weight, weight)
    packed = torch.zeros((n_blocks * block, ou), dtype=dtype, device=device)
    packed[slot] = x.to(dtype)
    slot_weight = torch.zeros((n_blocks * block, 1), dtype=dtype, device=device)
    slot_weight[slot, 0] = weight
    # (position, group) row of each slot; padding slots go to a dump row with weight 0.
    slot_row = torch.full((n_blocks * block,), m * g_count, dtype=torch.int64, device=device)
    slot_row[slot] = (tm_idx - t_idx * m) * g_count + g_idx
    p = torch.bmm(packed.view(n_blocks, block, ou), tables.levels[block_group])  # (nb, B, K)
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
    per_row = torch.zeros((m * g_count + 1, k), dtype=dtype, device=device)
    per_row.index_add_(0, slot_row, err)
    grouped = per_row[:-1].view(m, g_count, k)
    if tables.sign is not None:
        grouped = grouped * tables.sign
    out.index_add_(1, tables.cols.reshape(-1), grouped.reshape(m, g_count * k))
    return out.to(torch.float64), clipped, n_inverted


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


# ---- mapped layer and kernel -------------------------------------------------------------------
@dataclass
class EncodingMappedLayer(MappedLayer):
    """The dense mapping (`hw` is the configured hardware, so the record's dense baseline keeps
    the configured ADC) plus the layer's encoding and its own ADC resolution."""

    encoding: LayerEncoding | None = None
    layer_bits: int = 8
    lossless_bits: int = 8
    encoded_max: float = 0.0  # largest reachable encoded partial sum

    @property
    def layer_hw(self) -> HardwareConfig:
        """The hardware this layer converts with: the config with adc.bits = layer_bits."""
        if "layer_hw" not in self._cache:
            self._cache["layer_hw"] = (self.hw if self.layer_bits == self.hw.adc.bits
                                       else self.hw.with_overrides({"adc.bits": self.layer_bits}))
        value = self._cache["layer_hw"]
        assert isinstance(value, HardwareConfig)
        return value

    def adc_can_clip(self) -> bool:
        """Some reachable encoded partial sum exceeds this layer's ADC range."""
        return self.encoded_max > (2**self.layer_bits - 1) * self.hw.adc.step

    def exact_linear(self) -> bool:
        return self.hw.device.ideal and self.hw.adc.step == 1.0 and not self.adc_can_clip()


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
    def tables(self) -> ClipTables:
        hw = self.enc_mapped.layer_hw
        return clip_tables(self.enc, hw.adc_max_code, hw.adc.step, self.enc_mapped.layer.rows,
                           2 ** (hw.cycles * hw.dac.bits) - 1, self.device)


# ---- the scheme --------------------------------------------------------------------------------
@dataclass
class _Tally:
    """Data-dependent counts of one batch, summed over chunks and passes."""

    per_image: Tensor  # (N, tiles) int64 executed (position, pass, chunk) per row tile
    inverted: int = 0  # (cycle, position, group) fed inverted
    clipped: int = 0  # conversions outside the ADC range (when asked for)
    extra: dict[str, int] = field(default_factory=dict)


class EncodingScheme(Scheme):
    """Data encoding + per-layer ADC resolution + dynamic quantization, each switchable.

    input_encoding: "none" | "bus-invert". weight_encoding: "none" | "complement".
    adc: "fixed" (config adc.bits) | "lossless" (smallest exact bits per layer) | "calibrated"
    (`adc_bits`: {layer name: bits}, or a JSON file written by `calibrate-encoding`).
    skip_zero_planes: skip input chunks that are zero on a whole row tile of a window.
    precision: None, or P chunks processed per window row tile from its leading nonzero chunk
    (an int for every layer, {layer name: int or None}, or a JSON file with a "precision" map);
    rounding: "round" (half up, saturating) or "truncate" for the dropped chunks.
    """

    name = "encoding"

    def __init__(self, input_encoding: str = "bus-invert", weight_encoding: str = "complement",
                 adc: str = "lossless", adc_bits: Mapping[str, int] | str | Path | None = None,
                 skip_zero_planes: bool = True, precision: PrecisionSpec = None,
                 rounding: str = "round") -> None:
        require_choice("encoding input", input_encoding, INPUT_ENCODINGS)
        require_choice("encoding weight", weight_encoding, WEIGHT_ENCODINGS)
        require_choice("encoding adc", adc, ADC_MODES)
        require_choice("encoding rounding", rounding, ROUNDINGS)
        self.precision_file: str | None = None
        if isinstance(precision, str | Path):
            self.precision_file = str(precision)
            precision = load_calibration(precision, "precision")
        precision = _check_precision(precision)
        self.adc_bits_file: str | None = None
        if isinstance(adc_bits, str | Path):
            self.adc_bits_file = str(adc_bits)
            adc_bits = load_adc_bits(adc_bits)
        if adc == "calibrated" and adc_bits is None:
            raise SparsexbarError("encoding adc=calibrated needs per-layer bits (adc_bits=FILE "
                                  "from 'sparsexbar calibrate-encoding')")
        if adc != "calibrated" and adc_bits is not None:
            raise SparsexbarError(f"encoding adc_bits are used only with adc=calibrated "
                                  f"(adc={adc})")
        self.layer_bits_given = _check_bits(adc_bits) if adc_bits is not None else None
        self.input_encoding = input_encoding
        self.weight_encoding = weight_encoding
        self.adc = adc
        self.skip_zero_planes = bool(skip_zero_planes)
        self.precision = precision
        self.rounding = rounding
        self.lossless = adc != "calibrated" and not self.any_precision
        self._chosen_bits: dict[str, int] = {}

    def options(self) -> dict[str, Any]:
        """input, weight, adc, adc_bits (its file), skip, precision (chunks or its file),
        rounding."""
        if self.layer_bits_given is not None and self.adc_bits_file is None:
            raise SparsexbarError("encoding adc_bits per layer have no text form (write them "
                                  "to a file and give adc_bits=FILE)")
        if isinstance(self.precision, Mapping) and self.precision_file is None:
            raise SparsexbarError("encoding precision per layer has no text form (write it to "
                                  "a file and give precision=FILE)")
        return {"input": self.input_encoding, "weight": self.weight_encoding, "adc": self.adc,
                "adc_bits": self.adc_bits_file, "skip": self.skip_zero_planes,
                "precision": self.precision_file or self.precision,
                "rounding": self.rounding}

    def parameters(self) -> dict[str, Any]:
        return {
            "input_encoding": self.input_encoding,
            "weight_encoding": self.weight_encoding,
            "adc": self.adc,
            "adc_bits_file": self.adc_bits_file,
            "layer_adc_bits": dict(self._chosen_bits),
            "skip_zero_planes": self.skip_zero_planes,
            "precision": (dict(self.precision) if isinstance(self.precision, Mapping)
                          else self.precision),
            "precision_file": self.precision_file,
            "rounding": self.rounding if self.any_precision else None,
            "window": "im2col inputs of one output position on one array row tile, per pass",
        }

    def variant(self, **changes: Any) -> EncodingScheme:
        """A copy with some constructor arguments changed."""
        args: dict[str, Any] = {
            "input_encoding": self.input_encoding, "weight_encoding": self.weight_encoding,
            "adc": self.adc, "adc_bits": self.layer_bits_given,
            "skip_zero_planes": self.skip_zero_planes, "precision": self.precision,
            "rounding": self.rounding}
        args.update(changes)
        if args["adc"] != "calibrated":
            args["adc_bits"] = None
        return EncodingScheme(**args)

    @property
    def bus_invert(self) -> bool:
        return self.input_encoding == "bus-invert"

    @property
    def weight_complement(self) -> bool:
        return self.weight_encoding == "complement"

    @property
    def any_precision(self) -> bool:
        """Some layer runs with dynamic precision."""
        if isinstance(self.precision, Mapping):
            return any(v is not None for v in self.precision.values())
        return self.precision is not None

    def layer_precision(self, name: str) -> int | None:
        """Dynamic precision of one layer (None: every chunk)."""
        if isinstance(self.precision, Mapping):
            return self.precision.get(name)
        return self.precision

    # ---- mapping ----------------------------------------------------------------------------
    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        dense = map_dense(layer, hw)
        encoded = self.bus_invert or self.weight_complement
        precision = self.layer_precision(layer.name)
        if not hw.device.ideal and (encoded or precision is not None):
            raise SparsexbarError(
                f"encoding: layer '{layer.name}': input/weight encodings and dynamic precision "
                "are modelled with an ideal device only (use input=none, weight=none, "
                "precision=none with device effects)")
        if precision is not None and precision > hw.cycles:
            raise SparsexbarError(f"encoding precision={precision} exceeds the "
                                  f"{hw.cycles} input chunks per pass")
        enc = encode_layer(dense, self.bus_invert, self.weight_complement)
        encoded_max = float(enc.bound.max()) if enc.bound.numel() else 0.0
        lossless = lossless_adc_bits(encoded_max, hw.adc.step)
        if self.adc == "fixed":
            bits = hw.adc.bits
        elif self.adc == "lossless":
            if lossless > MAX_ADC_BITS:
                raise SparsexbarError(f"encoding: layer '{layer.name}' needs {lossless} ADC "
                                      f"bits to be lossless (at most {MAX_ADC_BITS})")
            bits = lossless
        else:
            assert self.layer_bits_given is not None
            if layer.name not in self.layer_bits_given:
                raise SparsexbarError(f"encoding adc_bits has no entry for layer '{layer.name}'"
                                      " (calibrated for another model?)")
            bits = self.layer_bits_given[layer.name]
        self._chosen_bits[layer.name] = bits
        kwargs = {f.name: getattr(dense, f.name) for f in fields(dense) if f.init}
        kwargs["_cache"] = {}
        return EncodingMappedLayer(**kwargs, encoding=enc, layer_bits=bits,
                                   lossless_bits=lossless, encoded_max=encoded_max)

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        assert isinstance(mapped, EncodingMappedLayer)
        return EncodingKernel(mapped, device, self)

    def adc_bits(self, mapped: MappedLayer) -> int:
        if isinstance(mapped, EncodingMappedLayer):
            return mapped.layer_bits
        return mapped.hw.adc.bits

    def storage(self, mapped: MappedLayer) -> Storage:
        """LUT bits: bus-invert stores one signed recovery constant per (OU row group, output
        channel), wide enough for the layer's largest; weight complement one flag bit per
        (group, physical column). Comparators: one majority (popcount + compare) unit per
        array for bus-invert; one zero/leading-chunk detector per array row tile for dynamic
        quantization."""
        if not isinstance(mapped, EncodingMappedLayer) or mapped.encoding is None:
            return Storage()
        enc = mapped.encoding
        lut = 0
        comparators = 0
        if self.bus_invert:
            consts = enc.recovery_constants(mapped.col_channel, mapped.col_weight,
                                            mapped.layer.out_channels)
            largest = int(consts.abs().max()) if consts.numel() else 0
            lut += int(consts.numel()) * (largest.bit_length() + 1)  # + sign bit
            comparators += mapped.arrays
        if self.weight_complement:
            lut += int(enc.complemented.numel())
        if self.skip_zero_planes or self.layer_precision(mapped.layer.name) is not None:
            comparators += len(mapped.row_tiles)
        return Storage(lut_bits=lut, comparators=comparators)

    # ---- running ----------------------------------------------------------------------------
    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        assert isinstance(kernel, EncodingKernel)
        acc, tally = self.execute(kernel, x_int, options, count=True)
        assert tally is not None
        events, cycles = self.events(kernel, tally, int(x_int.shape[0]))
        return LayerRun(acc, events, cycles)

    def execute(self, kernel: EncodingKernel, x_int: Tensor, options: EngineOptions,
                count: bool = True, count_clipped: bool = False) -> tuple[Tensor, _Tally | None]:
        """The layer's accumulator (float64) and, with `count`, its data-dependent counts.

        Values: the exact integer result (engine's exact convolution, or an exact matmul of the
        precision-transformed windows), plus the conversion corrections where the ADC can clip
        or round (ideal device); with device effects the engine converts (no encoding then).
        """
        mapped = kernel.enc_mapped
        layer = mapped.layer
        n = int(x_int.shape[0])
        tally = (_Tally(per_image=torch.zeros((n, len(mapped.row_tiles)), dtype=torch.int64))
                 if count else None)
        ideal = mapped.hw.device.ideal
        convert = ideal and not mapped.exact_linear()
        precision = kernel.precision
        walk = (precision is not None or convert
                or (count and (self.bus_invert or kernel.dynamic)))
        if not walk:
            if tally is not None:  # every chunk of every position executed
                tally.per_image += layer.positions * layer.passes * mapped.hw.cycles
            return (exact_accumulate(layer, x_int) if ideal
                    else accumulate(kernel, x_int, options)), tally
        acc_mat: Tensor | None = None
        if precision is not None or convert:
            acc_mat = torch.zeros((n * layer.positions, layer.out_channels),
                                  dtype=torch.float64, device=x_int.device)
        patches = layer.patches(x_int.to(torch.float32))
        parts = ([(patches.clamp(min=0), 1.0), ((-patches).clamp(min=0), -1.0)]
                 if layer.input_signed else [(patches, 1.0)])
        positions = layer.positions
        chunk = self._images_per_chunk(kernel, positions, options, convert)
        narrow = torch.uint8 if layer.input_max <= 255 else torch.int32
        for part, sign in parts:  # one or two passes
            xi = part.to(narrow)
            for a in range(0, n, chunk):  # chunks of whole images (memory bound)
                xc = xi[a * positions : (a + chunk) * positions]
                images = xc.shape[0] // positions
                fed, mat = self._chunk(kernel, xc, images, positions, tally, a, convert,
                                       count_clipped)
                if acc_mat is None:
                    continue
                rows = slice(a * positions, a * positions + xc.shape[0])
                if precision is not None:
                    acc_mat[rows] += sign * exact_matmul(fed.to(torch.float32),
                                                         kernel.weight_float,
                                                         kernel.col_abs_sum)
                if mat is not None:
                    acc_mat[rows] += sign * (mat @ kernel.combine)
        if precision is not None:
            assert acc_mat is not None
            return layer.fold_output(acc_mat, n), tally
        acc = exact_accumulate(layer, x_int) if ideal else accumulate(kernel, x_int, options)
        if acc_mat is not None:
            acc = acc + layer.fold_output(acc_mat, n)
        return acc, tally

    def _images_per_chunk(self, kernel: EncodingKernel, positions: int,
                          options: EngineOptions, convert: bool) -> int:
        """Whole images per chunk so the (cycles x positions x rows) intermediates and, when
        converting, the (groups x cycles x positions x columns) partial sums fit."""
        mapped = kernel.enc_mapped
        hw = mapped.hw
        rows = len(mapped.row_tiles) * hw.array.rows
        g, ou = kernel.enc.group_rows.shape
        per_position = rows * 40 + hw.cycles * g * ou * 12 + mapped.physical_cols * 24
        if convert:
            k = kernel.tables.cols.shape[1]
            per_position += hw.cycles * (rows * 5 + g * (ou * 8 + k * 8 + 16)) + g * k * 12
        per_image = positions * per_position
        return max(1, int(options.memory_budget_mb * 2**20 // max(per_image, 1)))

    def _chunk(self, kernel: EncodingKernel, xc: Tensor, images: int, positions: int,
               tally: _Tally | None, first_image: int, convert: bool,
               count_clipped: bool = False) -> tuple[Tensor, Tensor | None]:
        """One chunk of one pass, xc (m, R) magnitudes: (the values fed (m, R), the column
        corrections (m, C+1) float64 or None)."""
        mapped = kernel.enc_mapped
        hw = mapped.hw
        cycles, dac = hw.cycles, hw.dac.bits
        r = xc.shape[1]
        fed = xc
        lead: Tensor | None = None
        precision = kernel.precision
        if precision is not None or (tally is not None and kernel.dynamic):
            tiles = tile_view(xc, mapped.row_tiles, hw.array.rows)
            if precision is not None:
                lead = leading_chunk(tiles, dac)
                tiles = dynamic_precision(tiles.to(torch.int64), lead, precision, dac,
                                          self.rounding, mapped.layer.input_max).to(xc.dtype)
                fed = tiles.reshape(xc.shape[0], -1)[:, :r]
            if tally is not None:
                run = executed_chunks(tiles, lead, cycles, dac, self.skip_zero_planes,
                                      precision)
                per_img = run.sum(dim=0).reshape(images, positions, -1).sum(dim=1)
                tally.per_image[first_image : first_image + images] += per_img.cpu()
        elif tally is not None:
            tally.per_image[first_image : first_image + images] += positions * cycles
        mat = None
        if convert:
            top, step = mapped.layer_hw.adc_max_code, hw.adc.step
            planes = chunk_planes(fed, cycles, dac)
            mat, clipped, inverted = conversion_corrections(
                planes, kernel.tables, self.bus_invert, kernel.enc.chunk_max, xc.shape[0],
                cycles, dac, top, step, mapped.physical_cols,
                count_clipped=count_clipped and tally is not None)
            if tally is not None:
                tally.clipped += clipped
                tally.inverted += inverted
        elif tally is not None and self.bus_invert:
            tally.inverted += inverted_groups(fed, kernel.threshold_view, mapped.row_tiles,
                                              hw.array.rows, hw.ou.rows, cycles, dac)
        return fed, mat

    # ---- events -----------------------------------------------------------------------------
    def events(self, kernel: EncodingKernel, tally: _Tally, images: int) -> tuple[Events, int]:
        """Exact events of one batch and the summed per-image busiest-array OU activations."""
        mapped = kernel.enc_mapped
        hw, layer = mapped.hw, mapped.layer
        base, _ = dense_events(mapped, images)
        groups = torch.tensor(kernel.tile_groups, dtype=torch.int64)
        rows = torch.tensor(kernel.tile_rows, dtype=torch.int64)
        per_tile = tally.per_image.sum(dim=0)  # (tiles,)
        cg, cols = kernel.col_groups_total, kernel.columns
        executed_groups = int((per_tile * groups).sum())  # (cycle, position, group) executed
        adc = executed_groups * cols
        comparisons = 0
        lut_reads = 0
        digital = base.digital_ops
        window_tiles = images * layer.positions * layer.passes * len(mapped.row_tiles)
        if self.bus_invert:  # a majority decision per group and cycle; a LUT add per channel
            comparisons += executed_groups
            lut_reads += tally.inverted * layer.out_channels
            digital += tally.inverted * layer.out_channels
        if self.weight_complement:
            pairs = torch.tensor(kernel.complemented_pairs, dtype=torch.int64)
            flagged = torch.tensor(kernel.complemented_groups, dtype=torch.int64)
            digital += int((per_tile * (pairs + flagged)).sum())
        if self.skip_zero_planes:
            comparisons += window_tiles * hw.cycles
        if kernel.precision is not None:
            comparisons += window_tiles
            if self.rounding == "round":
                digital += images * layer.positions * layer.passes * layer.rows
        events = Events(
            ou_activations=executed_groups * cg,
            adc_conversions=adc,
            dac_activations=int((per_tile * rows).sum()) * cg,
            cell_reads=int((per_tile * rows).sum()) * cols,
            shift_adds=adc,
            comparisons=comparisons,
            lut_reads=lut_reads,
            buffer_read_bytes=base.buffer_read_bytes,
            buffer_write_bytes=base.buffer_write_bytes,
            digital_ops=digital,
        )
        busiest = (tally.per_image * groups.unsqueeze(0)).amax(dim=1).sum() * kernel.col_groups_max
        return events, int(busiest)


# ---- helpers -----------------------------------------------------------------------------------
def _check_bits(bits: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in bits.items():
        if isinstance(value, bool) or not isinstance(value, int) or not (
                1 <= value <= MAX_ADC_BITS):
            raise SparsexbarError(f"encoding adc_bits['{name}'] must be a whole number of bits "
                                  f"in 1..{MAX_ADC_BITS}, got {value!r}")
        out[str(name)] = value
    return out


def _check_precision(precision: Any) -> int | dict[str, int | None] | None:
    values = precision.values() if isinstance(precision, Mapping) else [precision]
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SparsexbarError(f"encoding precision must be a positive number of input "
                                  f"chunks or none, got {v!r}")
    if isinstance(precision, Mapping):
        return {str(k): v for k, v in precision.items()}
    return precision  # type: ignore[no-any-return]


def load_calibration(path: str | Path, key: str) -> dict[str, Any]:
    """The per-layer map `key` ("adc_bits" or "precision") of a JSON file written by
    `sparsexbar calibrate-encoding`, or a plain {layer: value} mapping."""
    p = Path(path)
    if not p.is_file():
        raise SparsexbarError(f"encoding {key} file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SparsexbarError(f"cannot parse encoding {key} file {p}: "
                              f"{' '.join(str(exc).split())}") from None
    if isinstance(data, dict) and isinstance(data.get(key), dict):
        data = data[key]
    if not isinstance(data, dict) or not data:
        raise SparsexbarError(f"encoding {key} file {p} holds no {{layer: value}} mapping")
    return data


def load_adc_bits(path: str | Path) -> dict[str, int]:
    """Per-layer ADC bits from a JSON file ({"adc_bits": {layer: bits}, ...} or a plain
    {layer: bits} mapping)."""
    return _check_bits(load_calibration(path, "adc_bits"))


def build_encoding(**given: Any) -> EncodingScheme:
    """The scheme from parsed text options (keys as in `options.OPTIONS`): `adc_bits=FILE`
    alone means adc=calibrated."""
    names = {"input": "input_encoding", "weight": "weight_encoding", "skip": "skip_zero_planes"}
    kwargs = {names.get(k, k): v for k, v in given.items()}
    if "adc_bits" in kwargs and "adc" not in kwargs:
        kwargs["adc"] = "calibrated"
    return EncodingScheme(**kwargs)


__all__ = ["ClipTables", "EncodingKernel", "EncodingMappedLayer", "EncodingScheme",
           "LayerEncoding", "build_encoding", "chunk_planes", "clip_tables", "complement_weights",
           "conversion_corrections", "dynamic_precision", "encode_layer", "encoded_bound",
           "exact_matmul", "executed_chunks", "group_view", "inverted_groups",
           "leading_chunk", "load_adc_bits", "load_calibration", "lossless_adc_bits",
           "tile_view"]
