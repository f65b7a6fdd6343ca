"""The per-conversion paths of a layer kernel (the exact shortcut is `exact.py`):

- clip path (`clip_corrections`): ideal device, unit step, an ADC that can clip: ADC(p) - p
  of every conversion with p > top, found by per-(cycle, position, group) bounds;
- full path (`full_conversions`): a non-ideal device or a step other than 1: every OU group
  with an active input row converted in every column, with read noise and accumulated
  deviation (`noisy_conversions`); with accumulated deviation only, the rare conversions its
  noise moves are drawn exactly (`tail_events`);
- `cycles` (the nonzero input chunks, cycle by cycle), `window_sums` (offset removal).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .exact import FLOAT32_EXACT
from .gather import RowGather
from .indices import INT32_LIMIT, flat_above, nonzero_as, rows_above, split_rows
from .native import NativeHead
from .noise import Refinements, Stream, Workspace, margin, noisy_adc
from .plan import Packed, candidate_slice

if TYPE_CHECKING:  # annotations only: the kernel calls these paths
    from .kernel import LayerKernel

TAIL_DENSE = 0.03  # accumulated deviation: groups whose conversions move with this probability
# or more are converted in full; the others only where the noise reaches half a level
TAIL_POINTS = 2**20  # tail-event points handled per slice (memory bound)


def cycles(kernel: LayerKernel, part: Tensor) -> Iterator[tuple[int, Tensor]]:
    """(cycle, chunk image as int32) of every cycle whose chunk is not all zero."""
    hw = kernel.mapped.hw
    dac_bits = hw.dac.bits
    xi = part.to(torch.int32)
    top_value = int(xi.max()) if xi.numel() else 0
    for t in range(hw.cycles):  # a handful of cycles
        if top_value >> (t * dac_bits) == 0:
            break  # this and every later cycle's chunk is 0 everywhere
        yield t, (xi >> (t * dac_bits)) & (2**dac_bits - 1)


def clip_bounds(kernel: LayerKernel, part: Tensor) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(cycle, chunk image in the group sums' dtype, bound (n, B', P)) of every cycle whose
    chunk is not all zero: per position and clippable group, sum of chunk x the row's
    largest clippable level (`kernel.clip_sums`). The group sums of `kernel.clip_packing`'s
    cycles per call come from one call on their chunks packed as base-2^k digits (2^k above
    the largest bound: every digit is one cycle's bound); the digits are split exactly
    (division by a power of two and floor of integers below the dtype's exact range). One
    depthwise convolution for several cycles: the convolutions are most of the clip path's
    cost before any candidate."""
    base, per_call = kernel.clip_packing
    pending: list[tuple[int, Tensor]] = []
    for t, chunk_img in cycles(kernel, part):
        pending.append((t, chunk_img))
        if len(pending) == per_call:
            yield from _split_bounds(kernel, base, pending)
            pending = []
    if pending:
        yield from _split_bounds(kernel, base, pending)


def _split_bounds(kernel: LayerKernel, base: int,
                  chunks: list[tuple[int, Tensor]]) -> Iterator[tuple[int, Tensor, Tensor]]:
    """`clip_bounds` of a few cycles from one call of the group sums; the chunks come back in
    the group sums' dtype (converted once: the caller gathers from the same values)."""
    sums = kernel.clip_sums
    values = [chunk_img.to(sums.dtype) for _, chunk_img in chunks]  # cycles per call: a few
    packed = values[0]
    for j in range(1, len(values)):  # the later cycles as base-B digits
        packed = (torch.add(packed, values[j], alpha=float(base**j)) if j == 1
                  else packed.add_(values[j], alpha=float(base**j)))
    rest = sums(packed)  # (n, B', P): sum_j base^j x bound_j, exact
    for j, (t, _) in enumerate(chunks):
        if j == len(chunks) - 1:
            yield t, values[j], rest
            return
        high = torch.div(rest, float(base)).floor_()
        bound = rest.sub_(high, alpha=float(base))  # the lowest digit: this cycle's bound
        yield t, values[j], bound
        rest = high


def clip_corrections(kernel: LayerKernel, part: Tensor, input_shape: tuple[int, ...], sign: float,
                      out: Tensor, budget_mb: float) -> None:
    """Add sign x shift x (ADC(p) - p) of every clipping conversion of one task's pass
    into out (n, Cout, P) float64."""
    plan = kernel.clip_plan
    n_groups = int(plan.groups.numel())
    if n_groups == 0:
        return
    top = float(kernel.mapped.hw.adc_max_code)
    ou = kernel.shape[2]
    cout, positions = int(out.shape[1]), int(out.shape[2])
    gather = kernel.gather("clip", input_shape)
    out_flat = out.view(-1)
    n_img = int(part.shape[0])
    first = torch.tensor(plan.bucket_start, dtype=torch.int64, device=part.device)
    bases = gather.position_bases(n_img)  # (n*P,) input offset of every position
    zero_image = n_img * gather.image_stride  # padding slots read the zero image
    # int32 indices where every one fits (torch's int64 arithmetic is several x slower)
    narrow = out.numel() < INT32_LIMIT
    index_dtype = torch.int32 if narrow else torch.int64
    targets = (torch.arange(n_img, device=part.device).unsqueeze(1) * (cout * positions)
               + torch.arange(positions, device=part.device)).reshape(-1).to(index_dtype)
    for t, chunk_img, bound in clip_bounds(kernel, part):  # bound: (n, B', P)
        chunk_f = chunk_img.to(torch.float32)  # no copy on CPU (already float32)
        # bound is an integer; > top + 0.5 is robust to any rounding below 0.5.
        cand_group, cand_pos = rows_above(bound.transpose(0, 1), top + 0.5)  # sorted by group
        if cand_group.numel() == 0:
            continue
        flat = gather.flat(chunk_f)
        # Candidates are sorted by group, so each width bucket is one contiguous range.
        edges = torch.searchsorted(cand_group, first).tolist()
        scale = -float(kernel.cycle_weight[t]) * sign
        for bk, width in enumerate(plan.bucket_width):  # width buckets: a handful
            lo, hi = edges[bk], edges[bk + 1]
            if hi == lo:
                continue
            per_candidate = 4 * (ou * 3 + width * 4) + 64
            slice_size = candidate_slice(width, per_candidate, budget_mb)
            pos = cand_pos[lo:hi]
            pk = Packed.of(cand_group[lo:hi], n_groups, slice_size)
            base = pk.spread(bases.index_select(0, pos), zero_image)  # (blocks, size)
            slot_target = pk.spread(targets.index_select(0, pos), 0)
            levels = plan.levels[:, :, :width]
            channel = (plan.channel[:, :width] * positions).to(index_dtype)
            weight = plan.col_weight[:, :width] * scale
            for b0, b1 in pk.block_slices(slice_size):  # candidate slices
                bg = pk.block_group[b0:b1]
                xg = gather.packed_values(flat, base[b0:b1], bg)  # (blocks, size, ou)
                p = torch.bmm(xg, levels.index_select(0, bg))  # (blocks, size, width)
                hit = flat_above(p, top)  # flat (slot x width + column) indices
                if hit.numel() == 0:
                    continue
                hit_slot, hit_col = split_rows(hit, width, p.numel(), narrow)
                # Flat indices (cheaper than multi-dimensional advanced indexing).
                column = (hit_slot >> pk.size_bits) * width + hit_col
                target = slot_target[b0:b1].reshape(-1).index_select(0, hit_slot)
                target += channel.index_select(0, bg).view(-1).index_select(0, column)
                excess = p.view(-1).index_select(0, hit).sub_(top)
                excess *= weight.index_select(0, bg).view(-1).index_select(0, column)
                out_flat.index_add_(0, target, excess.to(torch.float64))

# ---- full path -------------------------------------------------------------------------


def full_conversions(kernel: LayerKernel, part: Tensor, input_shape: tuple[int, ...], sign: float,
                      out: Tensor, budget_mb: float, gen: torch.Generator | None,
                      stream: Stream | None, compiled: bool = False) -> None:
    """Add sign x (sum of conversion results) of one task's pass into out (n, Cout, P):
    ADC(p) with the device effects (non-ideal), ADC(p) - p (ideal, step != 1), or, with
    accumulated deviation only, ADC(p + e) - ADC(p) (the clip path adds ADC(p) - p).
    `compiled`: the draws' per-conversion work as one compiled kernel where it applies
    (`native.NativeHead`; same results)."""
    mapped = kernel.mapped
    hw, layer = mapped.hw, mapped.layer
    s, g, ou, k = kernel.shape
    ideal, deviation_only = hw.device.ideal, kernel.deviation_only
    sigma = hw.device.accumulated_deviation_sigma
    step, top = hw.adc.step, float(hw.adc_max_code)
    n_img = int(part.shape[0])
    positions = layer.positions
    per_group = n_img * positions
    gather = kernel.gather("all", input_shape)
    levels = kernel.group_levels
    # The conversion results are multiples of step: with a power-of-two step their sums are
    # exact in float32 while below 2^24 (bound: the largest |value| x shifts x groups).
    largest = max(kernel.max_partial_sum, top * step) * 2
    max_term = largest * float(kernel.cycle_weight.sum()) * g
    exact32 = math.log2(step).is_integer() and max_term / min(step, 1.0) < FLOAT32_EXACT
    acc_dtype = torch.float32 if exact32 else torch.float64
    dump = per_group * s  # padding slots add into this last row
    col_sums = torch.zeros((dump + 1, k), dtype=acc_dtype, device=part.device)
    per_candidate = 4 * (ou * 3 + k * 8) + 64
    slice_size = candidate_slice(k, per_candidate, budget_mb)
    ws: Workspace | None = None
    bases = gather.position_bases(n_img)  # (n*P,) input offset of every position
    zero_image = n_img * gather.image_stride  # padding slots read the zero image
    segment = torch.div(torch.arange(s * g, device=part.device), g, rounding_mode="floor")
    for t, chunk_img in cycles(kernel, part):
        shift = float(kernel.cycle_weight[t])
        active = kernel.active_sums(nonzero_as(chunk_img, torch.float32))  # (n, S*G, P)
        counts = active.transpose(0, 1).reshape(s * g, per_group)
        cand_group, cand_pos = rows_above(counts, 0.5)  # sorted by group
        if cand_group.numel() == 0:
            continue
        flat = gather.flat(chunk_img.to(torch.float32))
        cand_active = counts.reshape(-1).index_select(0, cand_group * per_group + cand_pos)
        if deviation_only:
            assert gen is not None
            std = cand_active.to(torch.float64) * sigma
            tail = torch.special.erfc(0.5 / (std * math.sqrt(2.0)))  # P(|e| >= 1/2)
            dense = tail > TAIL_DENSE
            sparse = ~dense
            tail_events(kernel, cand_group[sparse], cand_pos[sparse], std[sparse],
                              tail[sparse], flat, bases, gather, col_sums, segment, shift,
                              gen)
            cand_group, cand_pos = cand_group[dense], cand_pos[dense]
            cand_active = cand_active[dense]
            if cand_group.numel() == 0:
                continue
        pk = Packed.of(cand_group, s * g, slice_size)
        base = pk.spread(bases.index_select(0, cand_pos), zero_image)
        rows = pk.spread(cand_pos * s + segment.index_select(0, cand_group), dump)
        slot_active = pk.spread(cand_active.to(torch.float32), 0.0)
        keys = None if stream is None else pk.spread(
            stream.keys(t, cand_pos, cand_group, s * g), 0)
        slices = pk.block_slices(slice_size)
        outputs = max(b1 - b0 for b0, b1 in slices) * pk.size * k
        if ws is None or ws.outputs < outputs:
            ws = Workspace(outputs, part.device)
        # the cycle's conversions to refine, refined together after its slices
        deferred = None if keys is None else Refinements(hw.device.read_noise_sigma, top, step)
        for b0, b1 in slices:  # candidate slices
            bg = pk.block_group[b0:b1]
            xg = gather.packed_values(flat, base[b0:b1], bg)  # padding rows: level 0
            p = torch.bmm(xg, levels.index_select(0, bg),
                          out=ws.take(ws.p, b1 - b0, pk.size, k))  # (blocks, size, K)
            slot_rows = rows[b0:b1].reshape(-1)
            if keys is None:  # ideal device, step != 1: the deviation ADC(p) - p
                value = torch.div(p, step).round_().clamp_(0, top).mul_(step).sub_(p)
            else:
                assert deferred is not None
                flagged_calls = len(deferred.rows)
                value = noisy_conversions(kernel, p, slot_active[b0:b1].unsqueeze(2),
                                          keys[b0:b1], ws, deferred, compiled)
                if len(deferred.rows) > flagged_calls:  # their slots -> rows of col_sums
                    deferred.rows[-1] = slot_rows.index_select(0, deferred.rows[-1])
                if deviation_only:
                    value.sub_(p.clamp_(max=top))
            col_sums.index_add_(0, slot_rows, value.to(acc_dtype).view(-1, k), alpha=shift)
        if deferred is not None and deferred.keys:  # their codes read 0 above
            target = torch.cat(deferred.rows).mul_(k).add_(torch.cat(deferred.cols))
            col_sums.view(-1).index_add_(0, target, deferred.codes().to(acc_dtype),
                                         alpha=shift)
    per_col = col_sums[:-1].to(torch.float64).reshape(per_group, s * k)
    phys = torch.zeros((per_group, mapped.physical_cols + 1), dtype=torch.float64,
                       device=part.device)
    phys.index_add_(1, kernel.col_index, per_col)
    acc = phys @ kernel.combine  # (n*P, Cout)
    if mapped.offset and not ideal and not deviation_only:
        acc -= float(mapped.offset) * window_sums(kernel, part)
    out += sign * acc.reshape(n_img, positions, -1).transpose(1, 2)


def noisy_conversions(kernel: LayerKernel, p: Tensor, active: Tensor, keys: Tensor,
                      ws: Workspace, deferred: Refinements | None = None,
                      compiled: bool = False) -> Tensor:
    """ADC(p + e) of every partial sum p (blocks, size, K), e Gaussian with standard
    deviation sqrt((read_noise_sigma x p)^2 + (accumulated_deviation_sigma x active)^2)
    (independent read noise and accumulated deviation, one draw with the summed variance);
    `active` (blocks, size, 1): the group's active rows; `keys` (blocks, size) int32: the
    slots' random keys (`noise.noisy_adc` draws one normal per conversion from them). The
    result lives in `ws` (valid until its next use). `deferred`: see `noise.noisy_adc` (the
    flagged conversions' codes read 0 and join it). `compiled`: `noise.noisy_adc`'s work as
    one compiled loop where `native.NativeHead` applies (same codes)."""
    hw = kernel.mapped.hw
    dev = hw.device
    step, top = hw.adc.step, float(hw.adc_max_code)
    read, accumulated = dev.read_noise_sigma, dev.accumulated_deviation_sigma
    blocks, size, k = (int(v) for v in p.shape)
    flat = p.view(blocks * size, k)
    if read > 0 or accumulated > 0:
        deviation = (active * accumulated).view(-1, 1) if accumulated > 0 else None
        # |p + s z| / step: below twice the ideal largest partial sum (programmed variation,
        # noise of a midpoint; wider draws are in refined buckets)
        largest = 2 * max(kernel.max_partial_sum, top * step) / step
        head = NativeHead.run if compiled else None
        value = noisy_adc(flat, keys.reshape(-1), read, deviation, top, step, ws,
                          margin(largest), deferred, head)
    else:  # programmed variation and stuck cells only: no draw
        code = ws.take(ws.code, blocks * size, k)
        if step == 1.0:  # no division or product by the step (two passes fewer)
            value = torch.round(flat, out=code).clamp_(0, top)
        else:
            value = torch.div(flat, step, out=code).round_().clamp_(0, top).mul_(step)
    return value.view(blocks, size, k)


def tail_events(kernel: LayerKernel, grp: Tensor, pos: Tensor, std: Tensor, tail: Tensor,
                flat: Tensor, bases: Tensor, gather: RowGather, col_sums: Tensor,
                segment: Tensor, shift: float, gen: torch.Generator) -> None:
    """Accumulated deviation on groups where noise rarely matters: add ADC(p + e) - ADC(p)
    of the conversions with |e| >= 1/2 (the others convert exactly, as p is an integer).

    Exact in distribution: each of the K conversions of candidate i has |e| >= 1/2 with
    probability tail_i, independently. Drawn as a Poisson process: candidate i gets
    Poisson(K h_i) points (h_i = -log(1 - tail_i)) on uniformly random columns; a column
    with a point (P = 1 - exp(-h_i) = tail_i) is one such conversion. Given |e| >= 1/2, |e|
    is drawn by inverse CDF from the Gaussian tail, and its sign is fair.
    """
    n = int(grp.numel())
    if n == 0:
        return
    s, g, ou, k = kernel.shape
    top = float(kernel.mapped.hw.adc_max_code)
    hazard = -torch.log1p(-tail)
    points = torch.poisson(hazard * k, generator=gen).to(torch.int64)  # per candidate
    ends = torch.cumsum(points, 0)
    total = int(ends[-1])
    if total == 0:
        return
    # Slices of about TAIL_POINTS points bound the memory of one pass.
    marks = list(range(TAIL_POINTS, total, TAIL_POINTS))
    cuts = torch.searchsorted(ends, torch.tensor(marks, dtype=torch.int64,
                                                 device=ends.device)).tolist() if marks else []
    bounds = sorted({0, n, *[min(n, c + 1) for c in cuts]})
    rows_k = torch.arange(ou, device=grp.device) * k
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):  # point slices
        cand = torch.repeat_interleave(torch.arange(lo, hi, device=grp.device),
                                       points[lo:hi])
        if cand.numel() == 0:
            continue
        col = torch.randint(0, k, cand.shape, generator=gen, device=cand.device)
        key = torch.unique(cand * k + col)  # a column with two points counts once
        cand = torch.div(key, k, rounding_mode="floor")
        col = key - cand * k
        u = 1.0 - torch.rand(key.shape, dtype=torch.float64, generator=gen,
                             device=key.device)  # (0, 1]
        z = -torch.special.ndtri(u * tail.index_select(0, cand) / 2)  # >= 1/(2 std)
        negative = torch.rand(key.shape, generator=gen, device=key.device) < 0.5
        e = torch.where(negative, -z, z) * std.index_select(0, cand)
        cg, cp = grp.index_select(0, cand), pos.index_select(0, cand)
        xg = flat.index_select(0, (bases.index_select(0, cp).unsqueeze(1)
                                   + gather.row_offset.index_select(0, cg)).reshape(-1))
        lv = kernel.group_levels.view(-1).index_select(
            0, ((cg * (ou * k) + col).unsqueeze(1) + rows_k).reshape(-1))
        p = (xg * lv).view(-1, ou).sum(dim=1).to(torch.float64)
        q = torch.clamp(p + torch.round(e), 0, top) - p.clamp(max=top)
        rows = cp * s + segment.index_select(0, cg)
        col_sums.view(-1).index_add_(0, rows * k + col, q.to(col_sums.dtype), alpha=shift)


def window_sums(kernel: LayerKernel, part: Tensor) -> Tensor:
    """(n*P, 1) float64: sum of the inputs of every output position (offset removal); a
    grouped conv: (n*P, Cout), each output channel's sum over its group's inputs."""
    layer = kernel.mapped.layer
    n = int(part.shape[0])
    if layer.kind == "linear":
        return part.reshape(n, -1).to(torch.float64).sum(dim=1, keepdim=True)
    g = layer.groups
    ones = torch.ones((g, *layer.weight_int.shape[1:]), dtype=torch.float64,
                      device=part.device)
    sums = torch.nn.functional.conv2d(part.to(torch.float64), ones, None, layer.stride,
                                      layer.padding, layer.dilation, g)  # (n, g, Ho, Wo)
    sums = sums.reshape(n, g, -1).transpose(1, 2).reshape(-1, g)
    return sums if g == 1 else sums.repeat_interleave(layer.out_channels // g, dim=1)
