"""Dynamic packing with a lossy ADC (ideal device), vectorized: the ADC corrections of every
packed OU of an SRE-style layout.

Per (row tile, column group) the active kept rows of a position and cycle, in row order, are
packed into OUs of `ou.rows`. Segments of one row tile that keep the same rows share their
packing: the plan works on the tile's distinct kept-row sets, each with the columns of all its
segments. A set's kept rows are cut into static blocks of `ou.rows` rows (the OUs of the
weight-compressed layout). A block holds at most `ou.rows` active rows, so at most one packed-OU
boundary falls inside it: its rows before the boundary belong to packed OU o (that of its first
row), the rest (partial sums A) to OU o + 1. With V_b the running sum over the set's blocks of
the block partial sums, minus A_b (non-decreasing in b), a packed OU that ends in block e and
follows one that ended in block e' has the partial sums V_e - V_e' (V_e for the first); V_e'
is the largest V of an end block before e (a prefix maximum); the set's last OU may be the A
of its last block alone. The block sums and A are one batched matrix product of
(ou.rows, positions) inputs, side by side with their rows past the boundary, with each block's
(width, ou.rows) levels; only the ranks (a cumulative sum over the kept rows) are per-row
work. Every packed OU's partial sums are exact
integers in float32; ADC(p) - p of each is added per output channel. With a unit ADC step
only the (set, position) pairs whose whole-set column sums exceed the ADC top can change
anything: a cycle runs the packing on those pairs only (`_pair_deltas`).

Sets (of every row tile) are grouped into buckets of equal width (columns) and block count, so
every step is a regular tensor operation; all work runs in entry-major, position-minor layout.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ...core.engine.indices import nonzero_as, rows_above
from ...core.engine.plan import Packed
from ...core.mapping import MappedLayer

MIN_POSITIONS = 16  # positions per chunk at least (where there are as many): a bucket whose
# chunk would hold fewer (a fully connected layer's many sets) runs in chunks of sets instead,
# so its batched products have 16 columns or more (fewer run 3-12x slower per value here)
PAIR_BLOCK_MIN = 4  # slots per block of pairs at least: `_bucket_deltas`' product then has 8
# columns or more (a few pairs per set would give blocks of 1-2 slots, 2-4 columns)
PAIR_DENSE = 0.5  # a cycle whose (set, position) pairs that may clip are more than this share
# of all runs on all of them (no gather into blocks)


@dataclass
class PackBucket:
    """Kept-row sets (of any row tile) with the same width and number of blocks: `sets` x
    `blocks` blocks of `ou.rows` entries, each set's kept rows padded with the zero row
    (index R)."""

    sets: int
    blocks: int  # per set
    entry_row: Tensor  # (sets x blocks x ou,) int64 layer row of each entry (R: padding)
    levels: Tensor  # (sets x blocks, width, ou) float32 levels of each block's set columns
    col_channel: Tensor  # (sets x width,) int64 output channel of each set column
    col_weight: Tensor  # (sets x width,) float64 its signed shift weight (padding: 0)
    set_levels: Tensor  # (sets, width, blocks x ou) float32 the levels of each set's entries

    def part(self, first: int, last: int) -> PackBucket:
        """Sets [first, last) of the bucket (views, no copies)."""
        entries = int(self.entry_row.numel()) // max(1, self.sets)  # per set
        width = int(self.levels.shape[1])
        return replace(self, sets=last - first,
                       entry_row=self.entry_row[first * entries : last * entries],
                       levels=self.levels[first * self.blocks : last * self.blocks],
                       col_channel=self.col_channel[first * width : last * width],
                       col_weight=self.col_weight[first * width : last * width],
                       set_levels=self.set_levels[first:last])

    @property
    def bytes_per_position(self) -> int:
        """Working memory of one position in `packed_corrections`: entries (words, chunks,
        ranks, masks) and block/OU partial sums (~9 float32 copies)."""
        return int(self.entry_row.numel()) * 24 + self.sets * (self.blocks + 1) * int(
            self.levels.shape[1]) * 36 + 64


@dataclass
class PackPlan:
    """The buckets of a layer's kept-row sets (`PackBucket`)."""

    buckets: list[PackBucket]


def build_pack_plan(mapped: MappedLayer, tile_keep: list[Tensor], tile_inverse: list[Tensor],
                    device: torch.device) -> PackPlan:
    """The static plan of `packed_corrections` from the kernel's distinct kept-row sets per
    row tile (`tile_keep[i]`: (rows, U) of tile i; `tile_inverse[i]`: (S,) set of each
    segment); each column's output channel and signed shift weight are the mapping's. The
    levels are nonnegative (the mapping's uint8 cell levels): a whole set's column sum bounds
    its packed OUs' (`_chunk_deltas`), and the running sums of `_bucket_deltas` never
    decrease."""
    assert bool((mapped.levels >= 0).all()), "packing needs nonnegative levels"
    ou = mapped.hw.ou.rows
    r, c = mapped.levels.shape
    cols = mapped.segment_cols.cpu()
    cols = torch.where(cols < 0, torch.full_like(cols, c), cols)  # (S, K), padding -> c
    levels = torch.nn.functional.pad(mapped.levels.cpu().to(torch.float32), (0, 1, 0, 1))
    # column c (padding) -> channel 0, weight 0
    col_channel = torch.nn.functional.pad(mapped.col_channel.cpu().to(torch.int64), (0, 1))
    col_weight = torch.nn.functional.pad(mapped.col_weight.cpu().to(torch.float64), (0, 1))
    groups: dict[tuple[int, int], list[tuple[Tensor, Tensor]]] = {}
    for (a, _), keep, inverse in zip(mapped.row_tiles, tile_keep, tile_inverse, strict=True):
        keep, inverse = keep.cpu().bool(), inverse.cpu()
        for u in range(int(keep.shape[1])):  # the tile's distinct sets
            rows = keep[:, u].nonzero().flatten() + a
            segs = (inverse == u).nonzero().flatten()
            if rows.numel() == 0 or segs.numel() == 0:
                continue  # no kept row: no OU ever runs
            set_cols = cols[segs].reshape(-1)
            key = (int(set_cols.numel()), -(-int(rows.numel()) // ou))
            groups.setdefault(key, []).append((rows, set_cols))
    buckets = []
    for (width, nb), sets in sorted(groups.items()):
        entries = torch.full((len(sets), nb * ou), r, dtype=torch.int64)
        for j, (rows, _) in enumerate(sets):
            entries[j, : rows.numel()] = rows
        set_cols = torch.stack([sc for _, sc in sets])  # (sets, width)
        lv = levels[entries.unsqueeze(2), set_cols.unsqueeze(1)]  # (sets, nb*ou, width)
        lv = lv.view(len(sets) * nb, ou, width).transpose(1, 2).contiguous()
        set_levels = lv.view(len(sets), nb, width, ou).permute(0, 2, 1, 3).reshape(
            len(sets), width, nb * ou)
        flat_cols = set_cols.reshape(-1)
        buckets.append(PackBucket(len(sets), nb, entries.reshape(-1).to(device), lv.to(device),
                                  col_channel[flat_cols].to(device),
                                  col_weight[flat_cols].to(device),
                                  set_levels.contiguous().to(device)))
    return PackPlan(buckets)


def packed_corrections(plan: PackPlan, words: Tensor, cycles: int, dac_bits: int,
                       granularity: str, ou: int, step: float, top: float, out: Tensor,
                       budget_bytes: float, sign: float = 1.0) -> None:
    """Add sign x the sum over cycles and packed OUs of shift x (ADC(p) - p), per output
    channel, into `out` (M, Cout) float64.

    words: (R + 1, M) int32 input magnitudes of M positions, row-major (row R: zero);
    granularity: "bit" (a row takes a place in an OU when its chunk is not 0) or "word" (when
    its input is not 0). Each bucket runs in chunks of positions of `budget_bytes`. Every
    value added is an integer below 2^53: exact in any order."""
    total_positions = int(words.shape[1])
    top_value = int(words.max()) if words.numel() else 0
    live = [t for t in range(cycles) if top_value >> (t * dac_bits)]  # chunks not all 0
    # Every live cycle's chunk plane once, in bytes where the inputs fit (the buckets gather
    # their entries' rows of it: 3x faster than shifting and masking each bucket's int32
    # words, 8x faster to build than int32 planes)
    source = words.to(torch.uint8) if top_value <= 255 else words
    planes = [(source >> (t * dac_bits)) & (2**dac_bits - 1) for t in live]  # (R + 1, M) each
    for whole_bucket in plan.buckets:  # a few per row tile
        step_m = max(1, int(budget_bytes // whole_bucket.bytes_per_position))
        wide = min(total_positions, MIN_POSITIONS)
        parts = [whole_bucket]
        if step_m < wide:  # few positions fit (many sets): chunks of sets, `wide` positions
            per_set = whole_bucket.bytes_per_position / max(1, whole_bucket.sets)
            step_s = max(1, int(budget_bytes // (per_set * wide)))
            parts = [whole_bucket.part(s0, min(whole_bucket.sets, s0 + step_s))
                     for s0 in range(0, whole_bucket.sets, step_s)]
            step_m = wide
        for bucket in parts:
            for m0 in range(0, total_positions, step_m):  # chunks of positions (memory bound)
                columns = slice(m0, m0 + step_m)
                word = (source[:, columns].index_select(0, bucket.entry_row)
                        if granularity == "word" else None)  # (E, m): inputs take places
                chunks = [(t, plane[:, columns]) for t, plane in zip(live, planes, strict=True)]
                _chunk_deltas(bucket, chunks, word, dac_bits, ou, step, top, out[columns],
                              sign)


def _chunk_deltas(bucket: PackBucket, chunks: list[tuple[int, Tensor]], word: Tensor | None,
                  dac_bits: int, ou: int, step: float, top: float, out: Tensor,
                  sign: float) -> None:
    """Add sign x the shift-weighted sum over the live cycles of `_bucket_deltas` of the
    chunk's m positions into `out` (m, Cout), each set column into its output channel.
    `chunks`: (cycle t, its (R + 1, m) chunk plane) of the live cycles; `word`: the (E, m)
    inputs of the bucket's entries with granularity "word" (a nonzero input takes a place),
    None with "bit" (a nonzero chunk does).

    With a unit ADC step a conversion changes only where its partial sum p exceeds `top`,
    and a packed OU's sum on a column is at most the whole set's sum on it (the chunks and
    levels are nonnegative integers: exact). So a cycle runs only on the (set, position) pairs
    where some column of the whole set exceeds `top` (`_pair_deltas`: packed in blocks of one
    set), or on all pairs when more than `PAIR_DENSE` of them may clip. vgg8-pattern, OU 9x8,
    5-bit ADC, 2-bit DAC: 6.2% of the (set, cycle, position) triples may clip by this bound
    (22% by chunk x each entry's largest level), and 2.8% do."""
    m = int(out.shape[0])
    place = _places(word, bucket, ou) if word is not None else None
    flat_out = out.view(-1)
    cout = int(out.shape[1])
    for t, plane in chunks:  # a handful of cycles
        weight = bucket.col_weight * (float(2 ** (t * dac_bits)) * sign)  # (sets x width,)
        chunk = plane.index_select(0, bucket.entry_row)  # (E, m)
        chunk_f = chunk.to(torch.float32)
        if step == 1.0:
            whole = torch.bmm(bucket.set_levels, chunk_f.view(bucket.sets, -1, m))
            set_of, position = rows_above(whole.amax(dim=1), top)  # (set, position) pairs
            pairs = int(set_of.numel())
            if pairs == 0:
                continue  # no packed OU of the bucket can clip in this cycle
            if pairs <= PAIR_DENSE * bucket.sets * m:
                _pair_deltas(bucket, set_of, position, m, chunk, word, ou, top, flat_out,
                             cout, weight)
                continue
        past, first = place if place is not None else _places(chunk, bucket, ou)
        delta = _bucket_deltas(bucket, chunk_f, past, first, step, top)  # (sets x width, m)
        target = (torch.arange(m, device=out.device) * cout).unsqueeze(0) \
            + bucket.col_channel.unsqueeze(1)
        flat_out.index_add_(0, target.view(-1), delta.mul_(weight.unsqueeze(1)).view(-1))


def _pair_deltas(bucket: PackBucket, set_of: Tensor, position: Tensor, m: int, chunk: Tensor,
                 word: Tensor | None, ou: int, top: float, flat_out: Tensor, cout: int,
                 weight: Tensor) -> None:
    """Add weight x `_bucket_deltas` (unit step) of the (set, position) pairs (`set_of`,
    `position`, sorted by set; positions of the chunk's m) into `flat_out` ((m, Cout)
    flattened), each set column into its channel: the pairs go into blocks of one set
    (`Packed`; padding slots read zeros and add their zero delta to position m - 1), each
    block a set of `_bucket_deltas` with its set's levels. `word`: the (E, m) inputs whose
    nonzero entries take places (granularity "word"), None for the chunk's ("bit")."""
    sets, nb = bucket.sets, bucket.blocks
    width = int(bucket.levels.shape[1])
    per_set = nb * ou  # entries of a set
    pk = Packed.of(set_of, sets, min_size=PAIR_BLOCK_MIN)
    size = pk.size
    slots = pk.spread(position, m)  # (blocks, size); padding: position m
    # 0/1 in the chunk's dtype (no bool masks: slow on CPU), padding slots read position
    # m - 1, zeroed
    valid = torch.lt(slots, m, out=torch.empty(slots.shape, dtype=chunk.dtype,
                                               device=chunk.device)).unsqueeze(1)
    slots.clamp_(max=m - 1)
    owner = pk.block_group  # (blocks,) set of each block
    blocks = pk.blocks
    entry = owner.unsqueeze(1) * per_set + torch.arange(per_set, device=chunk.device)
    flat = (entry.unsqueeze(2) * m + slots.unsqueeze(1)).view(-1)  # (blocks, E_s, size)
    x = chunk.view(-1).index_select(0, flat).view(blocks, per_set, size).mul_(valid)
    on = (word.view(-1).index_select(0, flat).view(blocks, per_set, size).mul_(valid)
          if word is not None else x)  # nonzero: the entry takes a place
    levels = bucket.levels.view(sets, nb, width, ou).index_select(0, owner)
    part = replace(bucket, sets=blocks, levels=levels.view(blocks * nb, width, ou))
    past, first = _places(on.view(blocks * per_set, size), part, ou)
    delta = _bucket_deltas(part, x.view(blocks * per_set, size).to(torch.float32), past, first,
                           1.0, top).view(blocks, width, size)
    column = (owner * width).unsqueeze(1) + torch.arange(width, device=chunk.device)  # (blocks, w)
    delta.mul_(weight.index_select(0, column.view(-1)).view(blocks, width, 1))
    target = slots.unsqueeze(1) * cout \
        + bucket.col_channel.index_select(0, column.view(-1)).view(blocks, width, 1)
    flat_out.index_add_(0, target.view(-1), delta.view(-1))


def _places(values: Tensor, bucket: PackBucket, ou: int) -> tuple[Tensor, Tensor]:
    """From (E, m) entries (nonzero: active): (sets x blocks, ou, m) float32 0/1, the entries
    past their block's packed-OU boundary, and (sets, blocks, m) the packed OU of each
    block's first entry."""
    m = int(values.shape[1])
    rank_dtype = torch.int16 if bucket.blocks * ou < 2**15 else torch.int32  # ranks fit
    act = nonzero_as(values.view(bucket.sets, bucket.blocks * ou, m), rank_dtype)
    before = torch.cumsum(act, dim=1, dtype=rank_dtype).sub_(act)  # active entries before
    before = before.view(bucket.sets * bucket.blocks, ou, m)
    first = torch.div(before[:, 0, :], ou, rounding_mode="floor")  # packed OU of the block
    past = torch.ge(before, ((first + 1) * ou).unsqueeze(1),  # ranks of the next OU
                    out=torch.empty(before.shape, dtype=torch.float32, device=before.device))
    return past, first.view(bucket.sets, bucket.blocks, m)


def _bucket_deltas(bucket: PackBucket, x: Tensor, past: Tensor, first: Tensor, step: float,
                   top: float) -> Tensor:
    """(sets x width, m) sums over each set's packed OUs of ADC(p) - p. Levels and inputs are
    nonnegative (`build_pack_plan`), which the running sums V rely on."""
    sets, nb = bucket.sets, bucket.blocks
    width = int(bucket.levels.shape[1])
    m = int(x.shape[1])
    xb = x.view(sets * nb, -1, m)
    # One product for the block sums and A (the rows past the boundary): [x | x past] side
    # by side doubles the product's columns (oneDNN/MKL's batched products of 8 columns or
    # more run 3-5x faster per value than those of 2-5 on this CPU: docs/benchmarks.md)
    both = torch.empty((sets * nb, int(xb.shape[1]), 2 * m), dtype=x.dtype, device=x.device)
    both[:, :, :m] = xb
    torch.mul(xb, past, out=both[:, :, m:])
    sums = torch.bmm(bucket.levels, both).view(sets, nb, width, 2, m)
    tail = sums[:, :, :, 1]  # A per block
    # V_b = (block sums of blocks 0..b) - A_b, non-decreasing in b (V_(b+1) - V_b = the rows
    # of block b + 1 before its boundary + A_b >= 0). A packed OU ending in block e after one
    # that ended in e' holds V_e - V_e' (the rows of blocks e' + 1..e before e's boundary and
    # the A of e': only end blocks have an A); the first holds V_e.
    v = sums[:, :, :, 0].cumsum(dim=1).sub_(tail)  # (sets, nb, width, m)
    # a packed OU ends in block b when the next block starts in a later OU (the last: always)
    # (0/1 float32 masks and their products: torch's bool masks are several x slower on CPU)
    end = torch.ones((sets, nb, m), dtype=torch.float32, device=x.device)
    torch.gt(first[:, 1:], first[:, :-1], out=end[:, : nb - 1])
    end = end.unsqueeze(2)
    # V at the last end block before b (0: none): as V is non-decreasing, the largest V x end
    # of the blocks before b, an exclusive prefix maximum in doubling steps (log2 of the
    # blocks; no gather, no cummax indices)
    previous = torch.zeros_like(v)
    if nb > 1:
        torch.mul(v[:, :-1], end[:, :-1], out=previous[:, 1:])
        span = 1
        while span < nb - 1:  # log2(blocks) steps
            shifted = previous[:, 1 : nb - span].clone()
            torch.maximum(previous[:, 1 + span :], shifted, out=previous[:, 1 + span :])
            span *= 2
    p = v.sub_(previous)  # at end blocks: the partial sums of the packed OU ending there
    # the set's last packed OU may start past the boundary of its last block: its partial
    # sums are that block's A (0, converted to 0, where no row is past it)
    last = tail[:, -1]  # (sets, width, m)
    if step == 1.0:  # integer sums (exact in float32): only what clips changes
        delta = p.sub_(top).clamp_(min=0).mul_(end).sum(dim=1)
        delta.add_(last.sub(top).clamp_(min=0))
        return delta.neg_().view(sets * width, m).to(torch.float64)
    delta = (torch.round(p / step).clamp_(0, top) * step).sub_(p).to(torch.float64)
    delta = delta.mul_(end).sum(dim=1)  # one conversion per packed OU
    delta += (torch.round(last / step).clamp_(0, top) * step).sub_(last).to(torch.float64)
    return delta.view(sets * width, m)
