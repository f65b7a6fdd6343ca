"""Counter-based Gaussian draws of the full path: every conversion's noise is a function of
the conversion itself (device seed, layer, call, cycle, pass, image, position, OU group,
column), never of the task, chunk, slice or thread that computes it.

Random bits: `hash32_` (Chris Wellons' lowbias32, a bijective integer hash) of a counter
made of a per-slot key (a hash of the slot's identity and the stream) XOR a per-column
constant. Every op is a vectorized int32 torch op (the same code on CPU and CUDA); one 32-bit
hash gives two conversions 16 bits each.

Gaussian from 16 bits, exactly: z = Phi^-1(u) with u uniform; its top 16 bits pick one of
2^16 equally likely quantile buckets [Phi^-1(i / 2^16), Phi^-1((i + 1) / 2^16)). A conversion
reads clamp(round(p + s z), 0, top), a non-decreasing function of z, so where the whole
bucket gives one code (checked with the bucket's midpoint and a bound on its half-width,
`NARROW`), that code is the conversion's, whatever z is inside the bucket. The others
(buckets wider than `NARROW` in the tails, about 0.1% of draws, and codes within s x NARROW
of a rounding boundary) draw the rest of u (32 more bits) and convert
p + s Phi^-1((i + v) / 2^16) exactly. So each conversion's code has exactly the distribution
of clamp(round(p + s z)) with z standard normal (to float32 arithmetic, like any draw), for
about one table gather per conversion instead of a transcendental.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .indices import nonzero_2d, nonzero_flat, split_rows

TABLE_BITS = 16  # bits of the quantile bucket per draw (two draws per 32-bit hash)
NARROW = 0.005  # half-width in z above which a bucket is always refined (its midpoint is inf)
MARGIN = 1e-4  # float32 slack of the rounding check for |v| <= MARGIN_SCALE (~26 ulp at 64);
MARGIN_SCALE = 64.0  # larger values scale it: margin(v_max) = MARGIN x v_max / MARGIN_SCALE
SEGMENT = 32  # conversions per segment in the search for the ones to refine
_M1 = 0x7FEB352D
_M2 = 0x846CA68B - 2**32  # as a signed int32
_MASK32 = 0xFFFFFFFF
REFINE_SALT = (0x3C6EF372, 0x5851F42D)  # streams of the refinement bits (low, high half)
COLUMN_SALT = 0x1B873593


def mix32_(x: Tensor, scratch: Tensor | None = None) -> Tensor:
    """The core of lowbias32, in place: x * M1, xor its logical shift by 15, * M2 (wrapping
    int32 products; the logical shift as an arithmetic shift and a mask). The quantile
    buckets take their bits from it (`bucket_indices`, `conversion_buckets`: one definition,
    so their buckets agree bit for bit; the compiled loop, `native.SOURCE`, repeats it in C,
    and tests/test_noise.py checks its codes against the eager ones).
    `scratch`: a buffer like x for the shifted copy (None: a new tensor)."""
    x.mul_(_M1)
    shifted = x >> 15 if scratch is None else torch.bitwise_right_shift(x, 15, out=scratch)
    return x.bitwise_xor_(shifted.bitwise_and_(0x1FFFF)).mul_(_M2)


def hash32_(x: Tensor) -> Tensor:
    """lowbias32 of an int32 tensor, in place (`mix32_` between two xor-shifts by 16). A
    bijection of the 32-bit words."""
    x.bitwise_xor_((x >> 16) & 0xFFFF)
    mix32_(x)
    x.bitwise_xor_((x >> 16) & 0xFFFF)
    return x


def hash32_int(value: int) -> int:
    """lowbias32 of a Python int (its low 32 bits), as an unsigned 32-bit int."""
    x = value & _MASK32
    x ^= x >> 16
    x = (x * (_M1 & _MASK32)) & _MASK32
    x ^= x >> 15
    x = (x * (_M2 & _MASK32)) & _MASK32
    x ^= x >> 16
    return x


def as_int32(value: int) -> int:
    """The low 32 bits of `value` as a signed int32 value."""
    value &= _MASK32
    return value - 2**32 if value >= 2**31 else value


def stream_salt(*parts: int) -> int:
    """A 32-bit stream key from integers (seed, layer, call, cycle, pass), by chained hashes."""
    salt = 0x9E3779B9
    for part in parts:
        salt = hash32_int(salt ^ hash32_int(part & _MASK32) ^ hash32_int(part >> 32))
    return salt


def slot_keys(slot_ids: Tensor, salt: int) -> Tensor:
    """(n,) int64 slot identities -> (n,) int32 keys: hash32(low word ^ hash32(high word ^
    salt)); distinct identities of one stream give independent-looking keys."""
    low = slot_ids & _MASK32
    low = torch.where(low >= 2**31, low - 2**32, low).to(torch.int32)
    high = (slot_ids >> 32).to(torch.int32)
    high.bitwise_xor_(as_int32(salt))
    hash32_(high)
    return hash32_(low.bitwise_xor_(high))


@dataclass(frozen=True)
class Stream:
    """The random stream of one pass of a layer call (`salt`: device seed, layer, call,
    pass) as seen by one task, whose first (image, position) is global position `offset`."""

    salt: int
    offset: int

    def keys(self, cycle: int, position: Tensor, group: Tensor, groups: int) -> Tensor:
        """(n,) int32 keys of the slots (task position, OU group) of a cycle: a hash of the
        global slot (position + offset) x groups + group and of the cycle's stream."""
        slot = (position + self.offset) * groups + group
        return slot_keys(slot, stream_salt(self.salt, cycle))


class NormalTable:
    """The 2^16 quantile buckets of the standard normal on one device: `mid` (float32
    midpoint of every bucket, inf where the bucket is wider than 2 x NARROW)."""

    _tables: dict[torch.device, NormalTable] = {}

    def __init__(self, device: torch.device) -> None:
        n = 1 << TABLE_BITS
        q = torch.arange(n + 1, dtype=torch.float64) / n
        edges = torch.special.ndtri(q)  # -inf, ..., +inf
        lo, hi = edges[:-1], edges[1:]
        mid = (lo + hi) / 2
        mid32 = mid.to(torch.float32)
        half = torch.maximum(mid32.double() - lo, hi - mid32.double())
        mid32[~(half <= NARROW)] = math.inf  # tails (and the two infinite buckets)
        self.mid = mid32.to(device)
        self.narrow_fraction = float((half <= NARROW).double().mean())

    @classmethod
    def on(cls, device: torch.device) -> NormalTable:
        table = cls._tables.get(device)
        if table is None:
            table = cls._tables[device] = cls(device)
        return table


_MIX: dict[tuple[torch.device, int], Tensor] = {}


def column_mix(k: int, device: torch.device) -> Tensor:
    """(ceil(k / 2),) int32 per-column-pair constants hash32(j ^ COLUMN_SALT) (cached)."""
    key = (device, (k + 1) // 2)
    mix = _MIX.get(key)
    if mix is None:
        j = torch.arange(key[1], dtype=torch.int32, device=device)
        mix = _MIX[key] = hash32_(j.bitwise_xor_(COLUMN_SALT))
    return mix


class Workspace:
    """Buffers of one task's noisy conversions, reused slice after slice: at most `outputs`
    conversions per slice. No allocation per slice, and the few tensors a slice touches
    (4 bytes per conversion each) stay in the CPU cache."""

    def __init__(self, outputs: int, device: torch.device) -> None:
        self.outputs = outputs
        half = outputs  # rows x ceil(k / 2) <= rows x k
        f32, i32 = torch.float32, torch.int32
        self.p = torch.empty(outputs, dtype=f32, device=device)  # partial sums (bmm output)
        self.z = torch.empty(outputs, dtype=f32, device=device)  # draws, p + s z, gaps
        self.s = torch.empty(outputs, dtype=f32, device=device)  # standard deviations
        self.code = torch.empty(outputs, dtype=f32, device=device)
        self.idx = torch.empty(outputs, dtype=i32, device=device)
        self.h = torch.empty(half, dtype=i32, device=device)
        self.t = torch.empty(half, dtype=i32, device=device)
        self._flagged: Tensor | None = None  # the compiled kernel's flagged indices (lazy)

    def flagged(self) -> Tensor:
        """(outputs,) int64: room for the flat index of every conversion of a slice."""
        if self._flagged is None:
            self._flagged = torch.empty(self.outputs, dtype=torch.int64, device=self.p.device)
        return self._flagged

    @staticmethod
    def take(buffer: Tensor, *shape: int) -> Tensor:
        """The first prod(shape) elements of `buffer`, viewed as `shape`."""
        return buffer[: math.prod(shape)].view(shape)


def bucket_indices(keys: Tensor, k: int, mix: Tensor, ws: Workspace) -> Tensor:
    """(rows,) int32 keys -> (rows, k) int32 bucket indices (in `ws`): columns 2j and 2j + 1
    take the low and the high 16 bits of mix32(key ^ mix[j])."""
    rows = int(keys.shape[0])
    half = (k + 1) // 2
    h = torch.bitwise_xor(keys.unsqueeze(1), mix.unsqueeze(0), out=ws.take(ws.h, rows, half))
    mix32_(h, ws.take(ws.t, rows, half))  # the shifted copy in a reused buffer
    halves = h.view(torch.uint16)  # (rows, 2 half): low, high, low, ...
    idx = ws.take(ws.idx, rows, k)
    return idx.copy_(halves if 2 * half == k else halves[:, :k])


def margin(largest: float) -> float:
    """Slack of the rounding check when every |p + s z| / step is at most `largest`."""
    return MARGIN * max(1.0, largest / MARGIN_SCALE)


@dataclass
class Refinements:
    """Conversions flagged by `noisy_adc` over several calls, refined together (`codes`):
    per call its flagged conversions' rows and columns in the call's (rows, k) (`rows` the
    caller may map to rows of its own sums), their rows' keys, partial sums and, where the
    calls had a per-row deviation, their rows' deviations; their quantile buckets and
    standard deviations are computed once, in `codes`. One batch instead of a dozen small
    operations per call: the flagged are about 0.1% of the conversions (shipped VGG-8, the
    bench's non-ideal case: 0.127%, 0.093% tail buckets), and refined call by call they cost
    more in operation overhead than in work."""

    read: float
    top: float
    step: float
    mix: Tensor | None = None  # the calls' `column_mix` (one column count k)
    rows: list[Tensor] = field(default_factory=list)
    cols: list[Tensor] = field(default_factory=list)
    keys: list[Tensor] = field(default_factory=list)
    sums: list[Tensor] = field(default_factory=list)
    deviations: list[Tensor] = field(default_factory=list)  # none where s = read x p

    def codes(self) -> Tensor:
        """The flagged conversions' codes, in the order they were flagged (call by call):
        clamp(round((p + s Phi^-1((i + v) / 2^16)) / step), 0, top) x step, i their bucket,
        v their own refinement uniform (`refine_bits`), s from the same operations as the
        eager head's (`_eager_head`)."""
        assert self.keys and self.mix is not None, "no conversion was flagged"
        cols = torch.cat(self.cols)
        keys = torch.cat(self.keys)
        u = refine_bits(keys, self.mix, cols) \
            .add_(conversion_buckets(keys, self.mix, cols)).div_(1 << TABLE_BITS)
        zf = torch.special.ndtri(u).to(torch.float32)
        pf = torch.cat(self.sums)
        if not self.deviations:  # s = read x p
            vf = torch.addcmul(pf, pf, zf, value=self.read)
        elif self.read > 0:
            deviation = torch.cat(self.deviations)
            sigma = sqrt_(torch.addcmul(deviation.square(), pf, pf,
                                        value=self.read * self.read))
            vf = torch.addcmul(pf, zf, sigma)
        else:  # s = deviation
            vf = torch.addcmul(pf, zf, torch.cat(self.deviations))
        if self.step != 1.0:
            vf.div_(self.step)
        return vf.round_().clamp_(0, self.top).mul_(self.step)


NativeKernel = Callable[..., "Tensor | None"]  # `native.NativeHead.run`


def noisy_adc(p: Tensor, keys: Tensor, read: float, deviation: Tensor | None, top: float,
              step: float, ws: Workspace, slack: float = MARGIN,
              deferred: Refinements | None = None,
              compiled: NativeKernel | None = None) -> Tensor:
    """clamp(round((p + s z) / step), 0, top) x step for every partial sum p (rows, k) >= 0,
    z a standard normal drawn from `keys` (rows,) int32, one draw per (row, column), and
    s = sqrt((read x p)^2 + deviation^2) (`deviation` (rows, 1): a per-row standard
    deviation, or None). `slack`: `margin` of the largest |p + s z| / step. The result lives
    in `ws` (valid until its next use). `deferred`: the conversions that need the rest of
    their uniform are not refined here: their codes read 0 and they join `deferred`, whose
    `codes()` the caller adds where they belong. `compiled`: `native.NativeHead.run`, the
    per-conversion work and the search for the conversions to refine as one compiled loop
    (same codes; the eager passes, `_eager_head` and `_flagged`, where it returns None)."""
    rows, k = (int(v) for v in p.shape)
    mix = column_mix(k, p.device)
    mid = NormalTable.on(p.device).mid
    limit = 0.5 - slack
    flagged = None
    if compiled is not None:
        alpha = (read if deviation is None else 1.0) * NARROW / step  # the check's coefficient
        code = ws.take(ws.code, rows, k)
        flagged = compiled(p, keys, mix, deviation, mid, read, top, step, alpha, limit, code,
                           ws.flagged())
    if flagged is None:
        code, gap = _eager_head(p, keys, mix, mid, read, deviation, top, step, ws)
        flagged = _flagged(gap.view(-1), limit)  # NaN flagged (no separate max: one pass fewer)
    if flagged.numel() == 0:
        return code
    row, col = split_rows(flagged, k, rows * k)
    batch = Refinements(read, top, step) if deferred is None else deferred
    batch.mix = mix
    batch.rows.append(row)
    batch.cols.append(col)
    batch.keys.append(keys.index_select(0, row))
    batch.sums.append(p.reshape(-1).index_select(0, flagged))
    if deviation is not None:
        batch.deviations.append(deviation.reshape(-1).index_select(0, row))
    if deferred is None:  # refined here, in place
        code.view(-1).index_copy_(0, flagged, batch.codes())
    else:  # refined by the caller: 0 until then
        code.view(-1).index_fill_(0, flagged, 0.0)
    return code


def _eager_head(p: Tensor, keys: Tensor, mix: Tensor, mid: Tensor, read: float,
                deviation: Tensor | None, top: float, step: float, ws: Workspace
                ) -> tuple[Tensor, Tensor]:
    """`noisy_adc`'s per-conversion work in eager passes over `ws`: (codes, gaps |v - code| +
    s x NARROW / step)."""
    rows, k = (int(v) for v in p.shape)
    idx = bucket_indices(keys, k, mix, ws)
    z = ws.take(ws.z, rows, k)
    torch.index_select(mid, 0, idx.view(-1), out=z.view(-1))
    sigma: Tensor | None  # s where it is a tensor (per conversion or per row)
    if deviation is None:  # s = read x p
        sigma = None
        v = torch.addcmul(p, p, z, value=read, out=z)  # p + read p z_mid
    elif read > 0:
        sigma = sqrt_(torch.addcmul(deviation.square(), p, p, value=read * read,
                                    out=ws.take(ws.s, rows, k)))
        v = torch.addcmul(p, z, sigma, out=z)  # p + s z_mid
    else:  # s = deviation, one per row
        sigma = deviation
        v = torch.addcmul(p, z, deviation, out=z)
    if step != 1.0:
        v.div_(step)
    code = torch.round(v, out=ws.take(ws.code, rows, k))
    # |v - code| + s x NARROW / step <= 0.5 - MARGIN: every z of the bucket gives `code`;
    # not so (or NaN, an infinite midpoint): refine.
    gap = v.sub_(code).abs_()
    if sigma is None:
        gap.add_(p, alpha=read * NARROW / step)
    else:
        gap.add_(sigma, alpha=NARROW / step)
    code.clamp_(0, top)
    if step != 1.0:
        code.mul_(step)
    return code, gap


def conversion_buckets(row_keys: Tensor, mix: Tensor, col: Tensor) -> Tensor:
    """(m,) int32 quantile buckets of single conversions (keys of their rows, their columns):
    the entries of `bucket_indices` at (row, col), for the few flagged conversions."""
    h = mix32_(row_keys ^ mix.index_select(0, col >> 1))
    high = (col & 1).to(torch.bool)
    return torch.where(high, (h >> 16) & 0xFFFF, h & 0xFFFF)


def sqrt_(x: Tensor) -> Tensor:
    """In-place square root, correctly rounded: on CPU through numpy (torch 2.13's float32
    `sqrt_` on this CPU is ~1.8x slower, 334 against 188 us per 524k values, and not
    correctly rounded: 20% of its results 1 ulp off the float64 root rounded)."""
    if x.device.type == "cpu" and x.is_contiguous():
        array = x.numpy()
        np.sqrt(array, out=array)
        return x
    return x.sqrt_()


def _counters(row_keys: Tensor, mix: Tensor, col: Tensor) -> Tensor:
    """(m,) int32 refinement counters of conversions of keys `row_keys` in columns `col`:
    their counter ^ REFINE_SALT of their half."""
    x = row_keys ^ mix.index_select(0, col >> 1)
    x ^= (col & 1).to(torch.int32).mul_(as_int32(REFINE_SALT[1] ^ REFINE_SALT[0])) \
        .bitwise_xor_(as_int32(REFINE_SALT[0]))
    return x


def _uniforms(counters: Tensor) -> Tensor:
    """(m,) float64 uniforms in (0, 1): the hashes of the counters, centred in their 2^-32
    steps."""
    h = hash32_(counters).to(torch.int64).bitwise_and_(_MASK32)
    return h.to(torch.float64).add_(0.5).div_(2**32)


def refine_bits(row_keys: Tensor, mix: Tensor, col: Tensor) -> Tensor:
    """(m,) float64 uniforms in (0, 1) for single conversions (keys of their rows, their
    columns): 32 more bits of their own stream (the hash of their counter ^ REFINE_SALT of
    their half)."""
    return _uniforms(_counters(row_keys, mix, col))


def _flagged(gap: Tensor, limit: float) -> Tensor:
    """Flat indices where not (gap <= limit) (NaN included), ascending. On CPU one numpy
    comparison and `flatnonzero` over the whole slice (3.5x faster than the segment maxima
    and their second search, 262,144 gaps with 2% flagged: 66 against 233 us); elsewhere
    segment by segment (a max per `SEGMENT` conversions, then the flagged segments)."""
    if gap.device.type == "cpu" and gap.is_contiguous():
        mask = gap.numpy() <= limit
        np.logical_not(mask, out=mask)
        return torch.from_numpy(np.flatnonzero(mask))
    n = int(gap.numel())
    whole = n - n % SEGMENT
    seg = gap[:whole].view(-1, SEGMENT)
    bad = nonzero_flat(~(seg.amax(dim=1) <= limit))
    inner = nonzero_2d(~(seg.index_select(0, bad) <= limit))
    found = bad.index_select(0, inner[0]).mul_(SEGMENT).add_(inner[1])
    if whole < n:
        found = torch.cat([found, nonzero_flat(~(gap[whole:] <= limit)) + whole])
    return found
