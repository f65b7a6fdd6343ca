"""Mapping: one layer's integer weights -> crossbar cell levels, arrays and OU blocks.

Physical column layout (DESIGN.md 2.2): output channel major, then polarity (positive, negative;
differential only), then slice (least significant first): column = (c * polarities + pol) *
slices + s. Rows are the im2col rows (Cin*kh*kw). Rows are tiled over arrays of `array.rows`,
columns over arrays of `array.cols`, contiguously, in order.

Row groups: an OU activates `ou.rows` rows of one array at once. A mapping gives, for every
segment (a set of physical columns that share their row grouping), the row groups it activates.
The straightforward (dense) mapping has a single segment (all columns) whose row groups are the
consecutive `ou.rows`-row blocks of each row tile; sparse mappers (later schemes) pack rows
differently per segment but return the same `MappedLayer` shape.

Grouped and depthwise convolutions (`map_grouped`, the dense mapping of a layer with groups >
1): the layer's matrix is block-diagonal (group g: rows g*Rg..(g+1)*Rg of the im2col rows,
columns g*Cg..(g+1)*Cg of the physical columns, Rg = (Cin/groups)*kh*kw, Cg = Cout/groups x
polarities x slices). Each group is its own block; blocks are packed along the diagonal of
arrays, k = min(array.rows // Rg, array.cols // Cg) groups per array, so that nothing outside
the blocks is stored (the zeros between groups take no array). A group larger than one array
is tiled over arrays of its own, like a dense layer. OUs never straddle two groups: every
block is cut into OUs of its own rows and columns (one segment per block's column range), so
no scheme converts or counts the off-diagonal zeros. `MappedLayer.blocks` lists the blocks
and the array of each; `dense_events` counts OUs block by block.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .config import HardwareConfig, SignEncoding, Variation
from .cost import ActivationTiming
from .events import Events
from .frontend import QuantLayer


@dataclass
class MappedLayer:
    """A layer placed on crossbars. Tensors live on the device the engine runs on."""

    layer: QuantLayer
    hw: HardwareConfig
    levels: Tensor  # (R, Ccols) uint8 ideal cell levels in [0, 2^cell_bits - 1]
    col_channel: Tensor  # (Ccols,) int64 output channel of each physical column
    col_weight: Tensor  # (Ccols,) float64 signed shift weight: +-2^(s*cell_bits)
    offset: int  # stored offset (offset encoding), removed digitally; 0 for differential
    row_tiles: list[tuple[int, int]]
    col_tiles: list[tuple[int, int]]
    # Row groups per segment, padded with -1: (S, G, ou_rows); columns per segment, padded -1.
    group_rows: Tensor
    segment_cols: Tensor  # (S, K)
    # Grouped layers: (row start, row stop, col start, col stop, array) of every block of one
    # group in one array; None: the grid of row tiles x column tiles, one array each.
    blocks: list[tuple[int, int, int, int, int]] | None = None
    _cache: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def conductance(self) -> Tensor:
        """(R, Ccols) float32 programmed levels, device variation and faults applied (cached)."""
        if "conductance" not in self._cache:
            self._cache["conductance"] = program_conductance(self.levels, self.hw,
                                                             self.layer.name)
        value = self._cache["conductance"]
        assert isinstance(value, Tensor)
        return value

    @property
    def arrays(self) -> int:
        if self.blocks is not None:
            return len({b[4] for b in self.blocks})
        return len(self.row_tiles) * len(self.col_tiles)

    def array_blocks(self) -> list[tuple[int, int, int, int, int]]:
        """(row start, row stop, col start, col stop, array) of every stored rectangle: the
        blocks of a grouped layer, else every (row tile, column tile) pair."""
        if self.blocks is not None:
            return list(self.blocks)
        n_cols = len(self.col_tiles)
        return [(r0, r1, c0, c1, i * n_cols + j) for i, (r0, r1) in enumerate(self.row_tiles)
                for j, (c0, c1) in enumerate(self.col_tiles)]

    @property
    def physical_cols(self) -> int:
        return int(self.levels.shape[1])

    def max_partial_sum(self) -> float:
        """Largest partial sum any single column of any OU activation can produce (ideal)."""
        if "max_partial_sum" not in self._cache:
            chunk_max = 2**self.hw.dac.bits - 1
            best = 0
            levels = self.levels  # uint8: the gather moves a quarter of int32's bytes
            s, g, ou = self.group_rows.shape
            k = self.segment_cols.shape[1]
            step = max(1, 2**24 // max(1, g * ou * k))  # segments per chunk (memory bound)
            for seg in range(0, s, step):  # chunks of segments: one for dense
                lv = gather_group_levels(levels, self.group_rows[seg : seg + step],
                                          self.segment_cols[seg : seg + step])
                if lv.numel():  # sums of ou.rows levels: int32 holds them
                    best = max(best, int(lv.sum(dim=2, dtype=torch.int32).max()))
            self._cache["max_partial_sum"] = float(best * chunk_max)
        value = self._cache["max_partial_sum"]
        assert isinstance(value, float)
        return value

    def adc_can_clip(self) -> bool:
        """True when some reachable partial sum exceeds the ADC range (the ADC is lossy)."""
        return self.max_partial_sum() > self.hw.adc_max_code * self.hw.adc.step

    def exact_linear(self) -> bool:
        """The conversions are provably the identity: ideal device, unit step, no clipping."""
        return self.hw.device.ideal and self.hw.adc.step == 1.0 and not self.adc_can_clip()


def gather_group_levels(levels: Tensor, group_rows: Tensor, segment_cols: Tensor) -> Tensor:
    """levels (R, C) -> (S, G, ou, K), zero where a row or column index is padding (-1).

    Gathers only the (row, column) pairs used: memory is that of the result, also for
    mappings with many small segments."""
    padded = torch.nn.functional.pad(levels, (0, 1, 0, 1))  # index -1 hits the zero row/col
    group_rows = group_rows.to(levels.device)
    segment_cols = segment_cols.to(levels.device)
    rows = torch.where(group_rows < 0, torch.full_like(group_rows, levels.shape[0]), group_rows)
    cols = torch.where(segment_cols < 0, torch.full_like(segment_cols, levels.shape[1]),
                       segment_cols)
    s, k = cols.shape
    return padded[rows.unsqueeze(3), cols.view(s, 1, 1, k)]


def tiles(total: int, size: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) tiles of `size` covering `total`."""
    return [(i, min(i + size, total)) for i in range(0, total, size)]


def cell_levels(layer: QuantLayer, hw: HardwareConfig) -> tuple[Tensor, Tensor, Tensor, int]:
    """Slice the integer weight matrix into cell levels in the physical column layout.

    Returns levels (R, Ccols) uint8, col_channel (Ccols,), col_weight (Ccols,) float64, offset.
    A grouped layer's levels are its groups' blocks on the diagonal, zero elsewhere (cells
    outside the blocks are not stored: zero also under the offset encoding).
    """
    # One group's rows per output channel: (Rg, Cout); all rows when groups is 1.
    w = layer.weight_int.reshape(layer.out_channels, -1).t().to(torch.int64)
    cb, s_count, pols = hw.cell.bits, hw.slices, hw.polarities
    mask = 2**cb - 1
    if hw.cell.sign == SignEncoding.differential:
        offset = 0
        parts = [w.clamp(min=0), (-w).clamp(min=0)]
        signs = [1.0, -1.0]
    else:
        offset = 2 ** (hw.numbers.weight_bits - 1)
        parts = [w + offset]
        signs = [1.0]
    rg, cout = w.shape
    levels = torch.empty((rg, cout, pols, s_count), dtype=torch.uint8)
    col_weight = torch.empty((cout, pols, s_count), dtype=torch.float64)
    for p, (mag, sign) in enumerate(zip(parts, signs, strict=True)):
        for s in range(s_count):  # slices: a handful, not rows/OUs
            levels[:, :, p, s] = (mag >> (s * cb)) & mask
            col_weight[:, p, s] = sign * float(2 ** (s * cb))
    g = layer.groups
    if g > 1:  # the blocks on the diagonal of the (Cin*kh*kw, Cout) matrix
        per = cout // g
        full = torch.zeros((g, rg, g, per, pols, s_count), dtype=torch.uint8)
        idx = torch.arange(g)
        full[idx, :, idx] = levels.view(rg, g, per, pols, s_count).transpose(0, 1)
        levels = full.view(g * rg, cout, pols, s_count)
    col_channel = torch.arange(cout).repeat_interleave(pols * s_count)
    return levels.reshape(levels.shape[0], -1), col_channel, col_weight.reshape(-1), offset


def program_conductance(levels: Tensor, hw: HardwareConfig, layer_name: str) -> Tensor:
    """Programmed cell values in level units, with the device's variation and stuck-at faults.

    Seeded by device.seed and the layer name, so the same config gives the same cells; the
    variation and the faults draw from streams of their own, so turning variation on keeps the
    fault map of the same seed (it redrew it: the faults came after the variation's draws).
    """
    g = levels.to(torch.float32)
    dev = hw.device
    if dev.ideal or (dev.variation == Variation.none and dev.stuck_total_rate == 0):
        return g

    def stream(tag: str) -> torch.Generator:
        return torch.Generator().manual_seed(
            dev.seed * 1_000_003 + zlib.crc32((layer_name + tag).encode()))

    if dev.variation != Variation.none and dev.variation_sigma > 0:
        eps = torch.randn(g.shape, generator=stream("")) * dev.variation_sigma
        g = g * (torch.exp(eps) if dev.variation == Variation.lognormal else (1 + eps))
    if dev.stuck_total_rate > 0:
        u = torch.rand(g.shape, generator=stream("\0stuck-at"))
        g = torch.where(u < dev.stuck_at_off_rate, torch.zeros_like(g), g)
        on = (u >= dev.stuck_at_off_rate) & (u < dev.stuck_total_rate)
        g = torch.where(on, torch.full_like(g, float(2**hw.cell.bits - 1)), g)
    return g.clamp(min=0)


def _ou_groups(start: int, stop: int, ou: int) -> Tensor:
    """Consecutive OU row groups of rows [start, stop), padded with -1: (n, ou)."""
    n = math.ceil((stop - start) / ou)
    padded = torch.full((n * ou,), -1, dtype=torch.int64)
    padded[: stop - start] = torch.arange(start, stop)
    return padded.reshape(n, ou)


def group_blocks(layer: QuantLayer, hw: HardwareConfig) -> list[tuple[int, int, int, int, int]]:
    """The blocks of a grouped layer (see the module docstring), in group order: (row start,
    row stop, col start, col stop, array). Groups that fit one array share arrays, k per
    array along the diagonal; a larger group is tiled over arrays of its own."""
    g = layer.groups
    rg = layer.group_rows
    cg = layer.out_channels // g * hw.polarities * hw.slices
    ar, ac = hw.array.rows, hw.array.cols
    blocks: list[tuple[int, int, int, int, int]] = []
    if rg <= ar and cg <= ac:
        per_array = min(ar // rg, ac // cg, g)
        return [(i * rg, (i + 1) * rg, i * cg, (i + 1) * cg, i // per_array) for i in range(g)]
    array = 0
    for i in range(g):  # groups larger than an array: each its own tiles
        for r0, r1 in tiles(rg, ar):
            for c0, c1 in tiles(cg, ac):
                blocks.append((i * rg + r0, i * rg + r1, i * cg + c0, i * cg + c1, array))
                array += 1
    return blocks


def map_grouped(layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
    """The straightforward mapping of a grouped/depthwise conv: block-diagonal packing (module
    docstring); one segment per column range of a group in an array, its row groups the
    consecutive OU row groups of each of the group's row ranges."""
    levels, col_channel, col_weight, offset = cell_levels(layer, hw)
    blocks = group_blocks(layer, hw)
    ou = hw.ou.rows
    segments: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r0, r1, c0, c1, _ in blocks:  # blocks: one or a few per group
        rows = segments.setdefault((c0, c1), [])
        if (r0, r1) not in rows:
            rows.append((r0, r1))
    s_count = len(segments)
    seg_groups = [torch.cat([_ou_groups(r0, r1, ou) for r0, r1 in rows])
                  for rows in segments.values()]
    g_max = max(int(t.shape[0]) for t in seg_groups)
    k_max = max(c1 - c0 for c0, c1 in segments)
    group_rows = torch.full((s_count, g_max, ou), -1, dtype=torch.int64)
    segment_cols = torch.full((s_count, k_max), -1, dtype=torch.int64)
    for i, ((c0, c1), grp) in enumerate(zip(segments, seg_groups, strict=True)):
        group_rows[i, : grp.shape[0]] = grp
        segment_cols[i, : c1 - c0] = torch.arange(c0, c1)
    arrays = sorted({b[4] for b in blocks})
    row_tiles = [(min(b[0] for b in blocks if b[4] == a), max(b[1] for b in blocks if b[4] == a))
                 for a in arrays]
    col_tiles = [(min(b[2] for b in blocks if b[4] == a), max(b[3] for b in blocks if b[4] == a))
                 for a in arrays]
    return MappedLayer(layer=layer, hw=hw, levels=levels, col_channel=col_channel,
                       col_weight=col_weight, offset=offset, row_tiles=row_tiles,
                       col_tiles=col_tiles, group_rows=group_rows, segment_cols=segment_cols,
                       blocks=blocks)


def map_dense(layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
    """The straightforward mapping: every weight slice in place, consecutive OU row groups
    (grouped convolutions: `map_grouped`). `adc.bits: auto` is resolved for the layer here
    (`HardwareConfig.for_layer`, from the rows one OU can hold: a group's rows for a grouped
    layer, whose OUs never straddle two groups): every mapper starts from this one, so a
    mapped layer's `hw` always has its ADC bits."""
    hw = hw.for_layer(layer.group_rows)
    if layer.groups > 1:
        return map_grouped(layer, hw)
    levels, col_channel, col_weight, offset = cell_levels(layer, hw)
    r, c = levels.shape
    row_tiles = tiles(r, hw.array.rows)
    col_tiles = tiles(c, hw.array.cols)
    ou = hw.ou.rows
    groups: list[Tensor] = []
    for start, stop in row_tiles:  # arrays, not rows: a few per layer
        idx = torch.arange(start, stop)
        n = math.ceil((stop - start) / ou)
        padded = torch.full((n * ou,), -1, dtype=torch.int64)
        padded[: stop - start] = idx
        groups.append(padded.reshape(n, ou))
    one = torch.cat(groups)  # (G, ou)
    # Column tiles do not change any partial sum (each column converts on its own), and every
    # column tile of the dense mapping sees the same row groups: one segment holds all columns.
    seg_cols = torch.arange(c).unsqueeze(0)
    return MappedLayer(
        layer=layer,
        hw=hw,
        levels=levels,
        col_channel=col_channel,
        col_weight=col_weight,
        offset=offset,
        row_tiles=row_tiles,
        col_tiles=col_tiles,
        group_rows=one.unsqueeze(0),
        segment_cols=seg_cols,
    )


def column_group_widths(col_tiles: list[tuple[int, int]], ou_cols: int) -> list[list[int]]:
    """Per column tile (array column), the widths of its OU column groups."""
    return [[min(ou_cols, c1 - g) for g in range(c0, c1, ou_cols)] for c0, c1 in col_tiles]


def dense_events(mapped: MappedLayer, images: int) -> tuple[Events, int]:
    """Closed-form events of the straightforward mapping and its busiest array's OU cycles.

    Per image and pass, every array activates ceil(r/ou_rows) x ceil(c/ou_cols) OUs per cycle
    per output position for each block it holds (r x c: the whole array's tile; a grouped
    layer's blocks one by one, OU column groups cut from each block's first column); each
    activation converts each of its columns once, in ceil(columns / adc.per_array) ADC rounds.
    """
    hw, layer = mapped.hw, mapped.layer
    per = layer.positions * hw.cycles * layer.passes * images
    ou_act, adc, rounds, dac, cells, busiest = _dense_per_step(mapped)
    in_bytes = math.ceil(hw.numbers.input_bits / 8)
    positions = layer.positions * images
    digital = positions * layer.out_channels * 2  # bias add + rescale per output
    if mapped.offset:
        digital += positions * (layer.rows + layer.out_channels)  # input sum + offset removal
    events = Events(
        ou_activations=ou_act * per,
        adc_conversions=adc * per,
        adc_rounds=rounds * per,
        dac_activations=dac * per,
        cell_reads=cells * per,
        shift_adds=adc * per,
        buffer_read_bytes=positions * layer.rows * in_bytes * layer.passes,
        buffer_write_bytes=positions * layer.out_channels * in_bytes,
        digital_ops=digital,
    )
    return events, busiest * per


def _dense_per_step(mapped: MappedLayer) -> tuple[int, int, int, int, int, int]:
    """(OU activations, conversions, ADC rounds, DAC activations, cell reads, the busiest
    array's OU activations) of the straightforward mapping per position, cycle and pass: a
    sum over the array blocks (a few to hundreds), computed once per mapping (cached)."""
    cached = mapped._cache.get("dense_per_step")
    if isinstance(cached, tuple):
        return cached
    hw = mapped.hw
    ou_r = hw.ou.rows
    adcs = hw.adc.per_array
    ou_act = adc = rounds = dac = cells = 0
    per_array: dict[int, int] = {}
    for r0, r1, c0, c1, array in mapped.array_blocks():  # arrays (blocks): a few to hundreds
        rows = r1 - r0
        groups = math.ceil(rows / ou_r)
        tile = column_group_widths([(c0, c1)], hw.ou.cols)[0]
        cols = sum(tile)
        ou_act += groups * len(tile)
        adc += groups * cols
        rounds += groups * sum(-(-w // adcs) for w in tile)
        dac += rows * len(tile)
        cells += rows * cols
        per_array[array] = per_array.get(array, 0) + groups * len(tile)
    sums = (ou_act, adc, rounds, dac, cells, max(per_array.values(), default=0))
    mapped._cache["dense_per_step"] = sums
    return sums


def dense_time_ns(mapped: MappedLayer, images: int, timing: ActivationTiming) -> float:
    """The straightforward mapping's busiest array's time, ns, summed over `images`: per
    position, cycle and pass, the array of the tallest row tile (most row groups) and the
    column tile whose column groups take longest (`timing` of each group's columns). A
    grouped layer's array runs its blocks one after another: its time is the sum over its
    blocks of row groups x the block's column groups' times."""
    hw, layer = mapped.hw, mapped.layer
    per = layer.positions * hw.cycles * layer.passes * images
    if mapped.blocks is not None:
        per_array: dict[int, float] = {}
        for r0, r1, c0, c1, array in mapped.blocks:  # blocks: a few to hundreds
            groups = math.ceil((r1 - r0) / hw.ou.rows)
            block = sum(timing.time_ns(w) for w in column_group_widths([(c0, c1)], hw.ou.cols)[0])
            per_array[array] = per_array.get(array, 0.0) + groups * block
        return max(per_array.values(), default=0.0) * per
    groups = max(math.ceil((r1 - r0) / hw.ou.rows) for r0, r1 in mapped.row_tiles)
    tile_time = max(sum(timing.time_ns(w) for w in tile)
                    for tile in column_group_widths(mapped.col_tiles, hw.ou.cols))
    return groups * tile_time * per
