"""`sre`: Sparse ReRAM Engine (Yang et al., ISCA 2019), our reconstruction (DESIGN.md 3.1).

Segments: one per (array column tile x OU column group), a group being `ou.cols` consecutive
physical columns of one array (the last group of a tile may be narrower).

- Static weight compression (`weight`, `joint`): per array (row tile) and column group, rows
  whose cells are zero in every column of the group are removed; the kept rows are packed, in
  their original order, into OUs of `ou.rows` rows. Each kept row stores its original row index
  (ceil(log2(array.rows)) bits, at least 1).
- Dynamic activation sparsity (`activation`, `joint`): in each input cycle, rows whose input
  chunk is zero (granularity `bit`: the chunk of this cycle; `word`: the whole input value)
  are dropped, and the rows left for a column group are packed into ceil(active / ou.rows) OUs.

Events, exact, per image, output position, pass, cycle, array and column group (n columns):
ou_activations = ceil(active / ou.rows), adc_conversions = shift_adds = ou x n,
dac_activations = active, cell_reads = active x n. `index_reads` (our choice): the index of
every kept row is read once per output position and pass (the gathered input word stays in
the row's input register for the bit-serial cycles), ceil(log2(array.rows)) bits each; the
`activation` mode stores no indices. Buffer and digital events are those of `dense`.
`cycles`: per image, the busiest array's OU activations (arrays run in parallel), summed over
images.

Values: `weight` mode runs the packed mapping through the engine (`LayerKernel` segments), so
a clipping ADC or a non-ideal device is modelled bit-accurately. `activation`/`joint` pack rows
differently in every cycle: where no packing can change a partial sum (ideal device, unit ADC
step, and the `ou.rows` largest levels of any column of an array times the largest input chunk
within the ADC range) the outputs are the exact integer result; otherwise (ideal device) the
exact result plus ADC(p) - p of every packed OU that could leave the identity range
(`SreScheme.packed_accumulate`). A non-ideal device is refused in these modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.cost import Storage
from ...core.engine import EngineOptions, LayerKernel, accumulate, exact_accumulate
from ...core.errors import SparsexbarError, require_choice
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.intconv import FLOAT32_EXACT, ExactLinear
from ...core.mapping import MappedLayer, dense_events, map_dense, tiles
from ..base import LayerRun, Scheme
from ..counting import RowSetCounter, position_sum_dtype

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
        self.keep = keep.to(device)  # (R, S) bool
        # Distinct kept sets of every tile side by side: tile i's sets are the columns
        # set_offset[i] .. set_offset[i] + U_i; segment s of tile i counts set
        # set_offset[i] + tile_inverse[i][s].
        widths = [int(k.shape[1]) for k in self.tile_keep]
        offsets = [sum(widths[:i]) for i in range(len(widths))]
        self.tile_sets = [inv + off for inv, off in zip(self.tile_inverse, offsets, strict=True)]
        self.sets_total = sum(widths)
        self._counter: RowSetCounter | None = None
        self._value_op: ExactLinear | None = None
        self._value_op_built = False

    def value_op(self) -> ExactLinear | None:
        """The layer's linear map on its input magnitudes, exact (int8 convolution on CPU
        where exact, float32 below 2^24, float64 off CPU); None when float32 would not be
        exact on CPU (the engine's exact accumulate then splits the input). Built on first
        use."""
        if not self._value_op_built:
            layer = self.mapped.layer
            op = ExactLinear(layer.kind, layer.weight_int, layer.input_max, self.device,
                             layer.stride, layer.padding, layer.dilation,
                             probe_shape=layer.input_shape or None)
            self._value_op = op if (self.device.type != "cpu"
                                    or op.bound < FLOAT32_EXACT) else None
            self._value_op_built = True
        return self._value_op

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
            self._counter = RowSetCounter(self.mapped.layer, sets, self.device)
        return self._counter

    def count_op(self) -> ExactLinear:
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


class SreScheme(Scheme):
    """Sparse ReRAM Engine: static weight compression and/or dynamic activation sparsity."""

    name = "sre"
    lossless = True

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
        mapped = map_sre(layer, hw, self.compress)
        if self.dynamic and not hw.device.ideal:
            raise SparsexbarError(
                f"sre {self.mode} mode needs an ideal device (layer {layer.name}): dynamic "
                "packing is modelled with an ideal device only; use mode=weight")
        return mapped

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        return SreKernel(mapped, device)

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        assert isinstance(kernel, SreKernel)
        if not self.dynamic:
            acc = accumulate(kernel, x_int, options)
            events, cycles = self.count(kernel, x_int, options)
            return LayerRun(acc, events, cycles)
        parts = self.narrow_parts(kernel.mapped.layer, x_int)  # shared by values and counts
        if dynamic_packing_lossless(kernel.mapped):
            acc = self.exact_values(kernel, parts, x_int)
        else:
            acc = self.packed_accumulate(kernel, x_int, options)
        events, cycles = self._count(kernel, parts, int(x_int.shape[0]), options)
        return LayerRun(acc, events, cycles)

    @staticmethod
    def exact_values(kernel: SreKernel, parts: list[Tensor], x_int: Tensor) -> Tensor:
        """The exact integer result (float64, the layer's output shape): the layer's linear
        map on the narrow input magnitudes by `ExactLinear` (int8 convolution where exact,
        positive minus negative part for signed inputs), else the engine's exact accumulate."""
        op = kernel.value_op()
        if op is None:
            return exact_accumulate(kernel.mapped.layer, x_int)
        value = op(parts[0])
        if len(parts) == 2:  # exact: |difference| <= the bound < 2^24
            value = value - op(parts[1])
        return torch.empty(value.shape, dtype=torch.float64, device=value.device).copy_(value)

    @staticmethod
    def narrow_parts(layer: QuantLayer, x_int: Tensor) -> list[Tensor]:
        """Input magnitudes as narrow integers ((x,) or, signed, (positive, negative)),
        channels-last for conv layers (the int8 convolution's layout), linear: (N, features)."""
        fmt = (torch.channels_last if layer.kind == "conv" and x_int.dim() == 4
               else torch.contiguous_format)
        narrow = torch.uint8 if layer.input_max <= 255 else torch.int32
        if layer.kind == "linear":  # as `QuantLayer.patches`: (N, features)
            x_int = x_int.reshape(x_int.shape[0], -1)
        parts = ([x_int.clamp(min=0), (-x_int).clamp(min=0)] if layer.input_signed
                 else [x_int])
        return [torch.empty(p.shape, dtype=narrow, device=p.device, memory_format=fmt).copy_(p)
                for p in parts]

    def packed_accumulate(self, kernel: SreKernel, x_int: Tensor,
                          options: EngineOptions) -> Tensor:
        """Accumulator (float64) with dynamic packing and a lossy ADC (ideal device): the exact
        result plus, per (position, cycle, column group) whose packed OUs could leave the
        ADC's identity range, ADC(p) - p of every packed OU's columns.

        Per row tile and cycle, the active kept rows of every (position, segment) are ranked
        in row order (cumsum); rank // ou.rows is the OU a row lands in. A bound (chunk x the
        row's largest level in the segment, summed per OU) picks the candidates; their OU
        partial sums are scatter-added per column and converted.
        """
        mapped = kernel.mapped
        hw, layer = mapped.hw, mapped.layer
        device = x_int.device
        step, top = hw.adc.step, float(hw.adc_max_code)
        ou, dac_bits = hw.ou.rows, hw.dac.bits
        r, c = mapped.levels.shape
        cols = mapped.segment_cols.to(device)
        cols = torch.where(cols < 0, torch.full_like(cols, c), cols)  # (S, K), pad -> c
        lv = torch.nn.functional.pad(mapped.levels.to(device=device, dtype=torch.float32),
                                     (0, 1))
        lev_seg = lv[:, cols]  # (R, S, K)
        rowmax = lev_seg.amax(dim=2)  # (R, S)
        s_count, k = cols.shape
        patches = layer.patches(x_int.to(torch.float32))
        m_total = patches.shape[0]
        parts = ([(patches.clamp(min=0), 1.0), ((-patches).clamp(min=0), -1.0)]
                 if layer.input_signed else [(patches, 1.0)])
        tallest = max(b - a for a, b in mapped.row_tiles)
        per_pos = tallest * s_count * 24 + 1  # bytes of the (m, rows, S) intermediates
        chunk = max(1, int(options.memory_budget_mb * 2**20 // per_pos))
        out = torch.zeros((m_total, layer.out_channels), dtype=torch.float64, device=device)
        for part, sign in parts:  # one or two passes
            corr = torch.zeros((m_total, c + 1), dtype=torch.float64, device=device)
            xi = part.to(torch.int64)
            for a, b in mapped.row_tiles:  # arrays (row tiles): a few
                groups = -(-(b - a) // ou)
                kp = kernel.keep[a:b]
                for t in range(hw.cycles):  # a handful of cycles
                    for m0 in range(0, m_total, chunk):  # chunks of positions (memory)
                        xs = xi[m0 : m0 + chunk, a:b]
                        ch = ((xs >> (t * dac_bits)) & (2**dac_bits - 1)).to(torch.float32)
                        on = (ch != 0) if self.granularity == "bit" else (xs != 0)
                        self._packed_corrections(on, ch, kp, lev_seg[a:b], rowmax[a:b], cols,
                                                 groups, ou, step, top,
                                                 float(2 ** (t * dac_bits)), corr, m0,
                                                 options.memory_budget_mb)
            out += sign * (corr @ kernel.combine)
        return layer.fold_output(out, x_int.shape[0]) + exact_accumulate(layer, x_int)

    @staticmethod
    def _packed_corrections(on: Tensor, ch: Tensor, kp: Tensor, lev: Tensor, rowmax: Tensor,
                            cols: Tensor, groups: int, ou: int, step: float, top: float,
                            weight: float, corr: Tensor, m0: int, budget_mb: float) -> None:
        """Add ADC(p) - p (times the cycle's shift `weight`) of one chunk's packed OUs."""
        m, rows = ch.shape
        s_count = kp.shape[1]
        act = on.unsqueeze(2) & kp.unsqueeze(0)  # (m, rows, S)
        rank = torch.cumsum(act.to(torch.int32), dim=1) - 1
        g = torch.where(act, torch.div(rank, ou, rounding_mode="floor"),
                        torch.full_like(rank, groups)).to(torch.int64)  # dump bin: groups
        base = (torch.arange(m, device=ch.device).view(-1, 1, 1) * s_count
                + torch.arange(s_count, device=ch.device).view(1, 1, -1)) * (groups + 1)
        vals = ch.unsqueeze(2) * rowmax.unsqueeze(0)
        bound = torch.zeros(m * s_count * (groups + 1), dtype=torch.float32, device=ch.device)
        bound.index_add_(0, (base + g).reshape(-1), vals.reshape(-1))
        bound = bound.view(m, s_count, groups + 1)[:, :, :groups]
        threshold = top if step == 1.0 else 0.0
        cm, cs = (bound > threshold).any(dim=2).nonzero(as_tuple=True)
        if cm.numel() == 0:
            return
        k = lev.shape[2]
        per_cand = rows * k * 4 * 3 + 1  # bytes of contrib + partial sums, ~3 live copies
        block = max(1, int(budget_mb * 2**20 // per_cand))
        for c0 in range(0, cm.numel(), block):  # chunks of candidates (memory bound)
            bm, bs = cm[c0 : c0 + block], cs[c0 : c0 + block]
            contrib = ch[bm].unsqueeze(2) * lev[:, bs, :].permute(1, 0, 2)  # (C, rows, K)
            gi = g[bm, :, bs]  # (C, rows)
            p = torch.zeros((bm.numel(), groups + 1, k), dtype=torch.float32,
                            device=ch.device)
            p.scatter_add_(1, gi.unsqueeze(2).expand(-1, -1, k), contrib)
            p = p[:, :groups]
            q = torch.round(p / step).clamp_(0, top) * step
            delta = (q - p).to(torch.float64).sum(dim=1) * weight  # (C, K)
            rows_idx = (m0 + bm).unsqueeze(1).expand(-1, k)
            corr.index_put_((rows_idx, cols[bs]), delta, accumulate=True)

    def storage(self, mapped: MappedLayer) -> Storage:
        """Index bits: every kept row of every (array, column group) stores its row index."""
        if not self.compress:
            return Storage()
        return Storage(index_bits=int(kept_matrix(mapped).sum()) * index_bits(mapped.hw))

    # ---- event counting ---------------------------------------------------------------------
    def count(self, kernel: SreKernel, x_int: Tensor, options: EngineOptions) -> tuple[Events, int]:
        """Exact events of one batch and the summed per-image busiest-array OU activations."""
        parts = self.narrow_parts(kernel.mapped.layer, x_int) if self.dynamic else []
        return self._count(kernel, parts, int(x_int.shape[0]), options)

    def _count(self, kernel: SreKernel, parts: list[Tensor], n: int,
               options: EngineOptions) -> tuple[Events, int]:
        """`count` on the narrow input parts (`narrow_parts`; the static modes need none)."""
        mapped = kernel.mapped
        hw, layer = mapped.hw, mapped.layer
        device = kernel.device
        base, _ = dense_events(mapped, n)
        positions, passes = layer.positions, layer.passes
        ou_r = hw.ou.rows
        ou_sum = torch.zeros(kernel.segments, dtype=torch.float64, device=device)
        row_sum = torch.zeros_like(ou_sum)
        # Per image and array (column tile, row tile): OU activations.
        per_image = torch.zeros((n, len(mapped.col_tiles), len(mapped.row_tiles)),
                                dtype=torch.float64, device=device)
        if not self.dynamic:
            # Static: the same kept rows every cycle, whatever the data.
            ou = torch.div(kernel.kept + ou_r - 1, ou_r, rounding_mode="floor")  # (S, I)
            reps = float(positions * hw.cycles * passes)
            ou_sum += ou.sum(dim=1) * reps * n
            row_sum += kernel.kept.sum(dim=1) * reps * n
            per_array = (kernel.seg_tile.t() @ ou) * reps  # (Ct, I)
            per_image += per_array.unsqueeze(0)
        else:
            chunk = self._images_per_chunk(kernel, positions, options)
            for part in parts:  # one or two passes
                for a in range(0, n, chunk):  # chunks of whole images (memory bound)
                    xc = part[a : a + chunk]
                    self._count_dynamic(kernel, xc, ou_sum, row_sum,
                                        per_image[a : a + int(xc.shape[0])])
        cols = kernel.seg_cols
        adc = int(round(float((ou_sum * cols).sum())))
        kept_total = float(kernel.kept.sum())
        idx = (int(round(kept_total)) * index_bits(hw) * n * positions * passes
               if self.compress else 0)
        events = Events(
            ou_activations=int(round(float(ou_sum.sum()))),
            adc_conversions=adc,
            dac_activations=int(round(float(row_sum.sum()))),
            cell_reads=int(round(float((row_sum * cols).sum()))),
            shift_adds=adc,
            index_reads=idx,
            buffer_read_bytes=base.buffer_read_bytes,
            buffer_write_bytes=base.buffer_write_bytes,
            digital_ops=base.digital_ops,
        )
        busiest = per_image.reshape(n, -1).amax(dim=1).sum() if n else torch.zeros(())
        return events, int(round(float(busiest)))

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
                       per_image: Tensor) -> None:
        """Add one chunk's dynamic counts. xc: (images, ...) layer input magnitudes (uint8 or
        int32), channels-last for conv layers.

        `kernel.counter` gives the active kept rows per (position, kept set) of every cycle
        (`RowSetCounter.chunk_counts`, several cycles per convolution); OU activations are the
        exact ceil(count / ou.rows), summed per image, then mapped to the segments.
        """
        mapped = kernel.mapped
        hw = mapped.hw
        ou_r, cycles, dac_bits = float(hw.ou.rows), hw.cycles, hw.dac.bits
        images = int(xc.shape[0])
        counter = kernel.counter
        word = self.granularity == "word"
        sets_total = kernel.sets_total
        ou_img = torch.zeros((images, sets_total), dtype=torch.float64, device=xc.device)
        rows_img = torch.zeros_like(ou_img)
        # Per image, a sum over the positions of counts (<= B - 1 each) is exact in float32
        # below 2^24, and float32 sums need no float64 copy of the counts.
        sum_dtype = position_sum_dtype(mapped.layer.positions, counter.base, counter.fields,
                                       counter.op().dtype)
        for chunks, counts in counter.chunk_counts(xc, cycles, dac_bits, word):
            reps = float(len(chunks))  # word: the same active rows in every cycle
            rows_img += counts.view(images, -1, sets_total).sum(dim=1, dtype=sum_dtype) * reps
            ou = counts.div_(ou_r).ceil_()  # exact: true division of small integers
            ou_img += ou.view(images, -1, sets_total).sum(dim=1, dtype=sum_dtype) * reps
        rows_set = rows_img.sum(dim=0)
        for i, sets in enumerate(kernel.tile_sets):  # arrays (row tiles): a few
            ou_seg = ou_img[:, sets]  # (images, S)
            ou_sum += ou_seg.sum(dim=0)
            row_sum += rows_set[sets]
            per_image[:, :, i] += ou_seg @ kernel.seg_tile
