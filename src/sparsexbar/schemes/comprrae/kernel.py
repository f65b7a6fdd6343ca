"""comprrae kernel: the dense layout (slice-major for (bit, slice) bounds) with the per-channel
weight-sum LUT, the row-group geometry of its events and the settle tests of each step."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ...core.config import SignEncoding
from ...core.engine import FLOAT32_EXACT, LayerKernel, layer_linear_op
from ...core.errors import SparsexbarError
from ...core.frontend import QuantLayer
from ...core.intconv import ExactLinear
from ...core.mapping import MappedLayer


class SettleTest(NamedTuple):
    """Adaptive termination at one step, on the running sum A (per output channel):
    A >= at_least, or negative[0] <= A <= negative[1]; `midpoint`: y_mid - A; `expected`:
    floor(mu), the expected remaining contribution."""

    at_least: Tensor
    negative: tuple[Tensor, Tensor] | None
    midpoint: Tensor
    expected: Tensor | None = None


class CompKernel(LayerKernel):
    """LayerKernel plus the CompRRAE per-layer state: the weight-sum LUT and OU column groups.

    `bounds`: "output" (one step per input cycle) or "slice" (one step per cycle and weight
    slice; the mapping must be `slice_major`). `beta`: predictive negative detection (None or
    1: END); `remaining_mean`: lambda_t per input cycle (mean remaining input bits / R_t).
    Per-step lists (`end_thr`, `settle_thr`, `range`, `mid_offset`, `end_value`,
    `reserve_up`, `reserve_down`) have `steps` entries; per-cycle ones (`shifts`,
    `remaining`) have `cycles`.
    """

    def __init__(self, mapped: MappedLayer, device: torch.device, alpha: float | None,
                 bounds: str = "output", beta: float | None = None,
                 remaining_mean: Sequence[float] | None = None) -> None:
        super().__init__(mapped, device)
        layer, hw = mapped.layer, mapped.hw
        self.checked = layer.followed_by_relu
        self.alpha = alpha
        self.bounds = bounds if self.checked else "output"  # unchecked layers: dense
        bounds = self.bounds
        self.steps_per_cycle = hw.slices if bounds == "slice" else 1
        self.steps = hw.cycles * self.steps_per_cycle
        # END's running maximum y_max never grows from one step to the next, except for the
        # offset encoding's slices (their stored levels hold the offset): backwards visiting
        # with an early exit is then not valid (`_terminate_negative`).
        self.monotone = bounds == "output" or hw.cell.sign == SignEncoding.differential
        w = layer.weight_int.reshape(layer.out_channels, -1).to(torch.float64).cpu()
        self.pos_sum = w.clamp(min=0).sum(dim=1)  # P_c, (Cout,)
        self.neg_sum = w.clamp(max=0).sum(dim=1)  # N_c, (Cout,)
        cycles, dac = hw.cycles, hw.dac.bits
        # MSB-first: cycle t feeds the chunk of LSB index cycles-1-t.
        self.shifts = [(cycles - 1 - t) * dac for t in range(cycles)]
        # Largest value of the input bits still to come after cycle t: 2^(shift_t) - 1.
        self.remaining = [float(2**s - 1) for s in self.shifts]
        self.remaining_mean = _check_remaining_mean(remaining_mean, cycles, layer.name)
        col_abs = float(w.abs().sum(dim=1).max()) if w.numel() else 0.0
        # Each cycle's running sum A_t = W . trunc_t(x) (x with the bits not yet fed zeroed)
        # equals 2^shift_t x W . (x >> shift_t): one exact integer linear op of the shifted
        # input magnitudes (oneDNN int8 on CPU where it is exact, else float; intconv.py).
        # `direct`: |A_t| <= col_abs x input_max < 2^24 (or float64), so A_t, the bounds
        # and the midpoint are exact in the op's dtype. Otherwise (wide layers on CPU) the
        # running sums are float64, one cycle's contribution W . chunk_t apart, each exact.
        self.value_bound = col_abs * layer.input_max  # largest |A_t| and |y|
        geometry = (layer.stride, layer.padding, layer.dilation)
        probe = layer.input_shape or None
        self.direct = device.type != "cpu" or self.value_bound < FLOAT32_EXACT
        # Not direct: the exact result from input pieces of `piece_bits` bits (each op exact).
        self.piece_bits = 0
        self.piece_op: ExactLinear | None = None
        if self.direct:  # the layer's own map, shared with the exact shortcut (engine/exact.py)
            self.op = layer_linear_op(layer, device)
        else:
            self.op = ExactLinear(layer.kind, layer.weight_int, 2**dac - 1, device,
                                  *geometry, probe_shape=probe)
            while (self.piece_bits < layer.input_bits
                   and col_abs * (2 ** (self.piece_bits + 1) - 1) < FLOAT32_EXACT):
                self.piece_bits += 1
            self.piece_op = (ExactLinear(layer.kind, layer.weight_int, 2**self.piece_bits - 1,
                                         device, *geometry, probe_shape=probe)
                             if self.piece_bits else None)
        self.value_dtype = self.op.dtype if self.direct else torch.float64
        # `slice`: W_<s, the part of each weight held in the slices below s (from the cell
        # levels, so any sign encoding), its weight sums, and one linear op of one chunk
        # giving every W_<s . chunk at once (s = 1.., stacked along the output channels).
        self.low_op: ExactLinear | None = None
        low_sums: dict[int, tuple[Tensor, Tensor]] = {}
        if bounds == "slice" and hw.slices > 1:
            lows = self._low_weights(mapped)
            for s, low in lows.items():
                flat = low.reshape(layer.out_channels, -1).to(torch.float64)
                low_sums[s] = (flat.clamp(min=0).sum(dim=1), flat.clamp(max=0).sum(dim=1))
            self.low_op = ExactLinear(layer.kind, torch.cat(list(lows.values())), 2**dac - 1,
                                      device, *geometry, probe_shape=probe)
        self._thresholds(layer, low_sums, 2 * col_abs * layer.input_max + 2, device)
        self._alpha_cache: dict[float, list[SettleTest]] = {}
        self._beta_cache: dict[float, list[Tensor]] = {}
        self.beta = beta
        self._groups(mapped, device)
        groups = [math.ceil((r1 - r0) / hw.ou.rows) for r0, r1 in mapped.row_tiles]
        self.row_groups_total = sum(groups)
        self.row_groups_max = max(groups)

    @property
    def beta(self) -> float | None:
        """Predictive negative detection's beta (None: END; 1 counts as None)."""
        return self._beta

    @beta.setter
    def beta(self, value: float | None) -> None:
        self._beta = None if value is None or value >= 1 else float(value)

    def step_slice(self, step: int) -> int:
        """The lowest slice converted by `step` within its cycle (0: the cycle is complete)."""
        return self.steps_per_cycle - 1 - step % self.steps_per_cycle

    def _low_weights(self, mapped: MappedLayer) -> dict[int, Tensor]:
        """{s: W_<s} for s = 1..slices-1, int64 with the weight's shape: the signed sum of the
        cell levels of each channel's columns of slice < s, times their shift weights."""
        layer, hw = mapped.layer, mapped.hw
        levels = mapped.levels.to(torch.float64).cpu()  # (R, Ccols)
        channel = mapped.col_channel.cpu()
        col_weight = mapped.col_weight.cpu()
        col_slice = torch.round(torch.log2(col_weight.abs()) / hw.cell.bits).to(torch.int64)
        out = {}
        for s in range(1, hw.slices):  # slices: a handful
            combine = torch.zeros((mapped.physical_cols, layer.out_channels),
                                  dtype=torch.float64)
            below = col_slice < s
            cols = torch.arange(mapped.physical_cols)[below]
            combine[cols, channel[below]] = col_weight[below]
            low = (levels @ combine).t().round().to(torch.int64)  # (Cout, R)
            out[s] = low.reshape(layer.weight_int.shape)
        return out

    def _groups(self, mapped: MappedLayer, device: torch.device) -> None:
        """OU column groups (per column tile, ou.cols wide): the channels their columns hold
        (`group_channels`, padded by repetition) and, with `slice`, each column's step offset
        within a cycle (`group_offsets`: slices most significant first)."""
        hw = mapped.hw
        ou_c = hw.ou.cols
        channel = mapped.col_channel.cpu()
        offset = torch.zeros_like(channel)
        if self.steps_per_cycle > 1:
            col_slice = torch.round(torch.log2(mapped.col_weight.cpu().abs())
                                    / hw.cell.bits).to(torch.int64)
            offset = self.steps_per_cycle - 1 - col_slice
        members: list[list[tuple[int, int]]] = []
        member_cols: list[list[int]] = []
        width: list[int] = []
        tile: list[int] = []
        for j, (c0, c1) in enumerate(mapped.col_tiles):
            for g0 in range(c0, c1, ou_c):  # column groups: a handful per array
                g1 = min(g0 + ou_c, c1)
                found = list(zip(channel[g0:g1].tolist(), offset[g0:g1].tolist(), strict=True))
                pairs = sorted(set(found))
                members.append(pairs)
                member_cols.append([found.count(p) for p in pairs])
                width.append(g1 - g0)
                tile.append(j)
        span = max(len(m) for m in members)
        chans = [[c for c, _ in m] + [m[-1][0]] * (span - len(m)) for m in members]
        offs = [[o for _, o in m] + [m[-1][1]] * (span - len(m)) for m in members]
        self.group_channels = torch.tensor(chans, dtype=torch.int64).to(device)
        self.group_offsets = torch.tensor(offs, dtype=torch.float32).to(device)
        # columns of each member in the group (padding members: 0)
        self.group_member_cols = torch.tensor([c + [0] * (span - len(c)) for c in member_cols],
                                              dtype=torch.int64).to(device)
        self._group_range = torch.arange(len(members), device=device)
        self.group_width = torch.tensor(width, dtype=torch.float64, device=device)
        self.group_tile = torch.tensor(tile, dtype=torch.int64, device=device)
        self.col_tiles = len(mapped.col_tiles)

    def _thresholds(self, layer: QuantLayer, low_sums: Mapping[int, tuple[Tensor, Tensor]],
                    bound: float, device: torch.device) -> None:
        """Per-step comparisons on the running sum A, equivalent to the real-domain checks.

        dequantize is monotone non-decreasing in the accumulator, so for integers y:
        dequantize(y) < 0 <=> y < neg_thr_c and dequantize(y) > 0 <=> y >= pos_thr_c, the two
        thresholds found by bisection over |y| <= bound (every reachable value). Then after
        step k: END fires <=> A < neg_thr - reserve_up_k; y_min > 0 <=> A >= pos_thr -
        reserve_down_k, with reserve_up/down_k = up/down x R_t plus, with `slice`, the lower
        slices' sums x the chunk's largest value x 2^shift_t.
        """
        cout = layer.out_channels
        shape = (1, -1, 1, 1) if layer.kind == "conv" else (1, -1)
        dev = layer.weight_scale.device

        def smallest(pred_nonneg: bool) -> Tensor:
            a = torch.full((cout,), -bound, dtype=torch.float64, device=dev)
            b = torch.full((cout,), bound + 1, dtype=torch.float64, device=dev)
            while bool((a < b).any()):  # bisection: ~log2(2 bound) steps
                mid = torch.floor((a + b) / 2)
                real = layer.dequantize(mid.reshape(shape)).reshape(cout)
                ok = real >= 0 if pred_nonneg else real > 0
                b = torch.where(ok, mid, b)
                a = torch.where(ok, a, mid + 1)
            return a.to(device).reshape(shape)

        neg_thr, pos_thr = smallest(True), smallest(False)
        self.neg_thr, self.pos_thr = neg_thr, pos_thr
        pos = self.pos_sum.to(device).reshape(shape)
        neg = self.neg_sum.to(device).reshape(shape)
        up, down = (pos - neg, neg - pos) if layer.input_signed else (pos, neg)
        self.up, self.down = up, down
        chunk_max = float(2**self.mapped.hw.dac.bits - 1)
        self.reserve_up: list[Tensor] = []
        self.reserve_down: list[Tensor] = []
        for step in range(self.steps):
            t = step // self.steps_per_cycle
            r = self.remaining[t]
            hi, lo = up * r, down * r
            s = self.step_slice(step)
            if s:  # the slices below s of this cycle are still to come
                p, n = (v.to(device).reshape(shape) for v in low_sums[s])
                lo_up, lo_down = (p - n, n - p) if layer.input_signed else (p, n)
                scale = chunk_max * 2.0 ** self.shifts[t]
                hi, lo = hi + lo_up * scale, lo + lo_down * scale
            self.reserve_up.append(hi)
            self.reserve_down.append(lo)
        self.end_thr = [neg_thr - ru for ru in self.reserve_up]
        self.settle_thr = [pos_thr - rd for rd in self.reserve_down]
        self.range = [ru - rd for ru, rd in zip(self.reserve_up, self.reserve_down, strict=True)]
        self.mid_offset = [torch.floor((ru + rd) / 2)
                           for ru, rd in zip(self.reserve_up, self.reserve_down, strict=True)]
        # mu: the expected contribution of the cycles after the step's (remaining_mean).
        net = (pos + neg)
        self.expected = [net * (self.remaining_mean[step // self.steps_per_cycle]
                                * self.remaining[step // self.steps_per_cycle])
                         for step in range(self.steps)]
        self.end_value = [self._typed(v.reshape(-1)) for v in self.end_thr]
        self.neg_cap = self._typed((neg_thr - 1).reshape(-1))  # dequantizes below 0

    def _typed(self, v: Tensor) -> Tensor:
        """A float64 integer threshold in the dtype of the running sums. Every running sum is
        below 2^24 in magnitude when that dtype is float32, so clamping a threshold to
        +-2^24 (exact in float32) changes no comparison."""
        if self.value_dtype == torch.float64:
            return v
        return v.clamp(-FLOAT32_EXACT, FLOAT32_EXACT).to(self.value_dtype)

    def predict_thresholds(self, beta: float) -> list[Tensor]:
        """Per step, predictive negative detection as a test on A in the running sums' dtype:
        A < neg_thr - floor((1 - beta) mu + beta reserve_up) <=> dequantize(A + floor(...))
        < 0 (A an integer). beta = 1: END's thresholds."""
        if beta not in self._beta_cache:
            self._beta_cache[beta] = [
                self._typed((self.neg_thr - torch.floor((1 - beta) * mu + beta * ru)).reshape(-1))
                for mu, ru in zip(self.expected, self.reserve_up, strict=True)]
        return self._beta_cache[beta]

    def alpha_thresholds(self, alpha: float) -> list[SettleTest]:
        """Per checked step, the adaptive-termination test on A in the running sums' dtype.

        settle <=> A >= settle_thr (y_min > 0) and range <= alpha |A| (float64 product, as
        the reference evaluates it). The second is |A| >= a_min, a_min found by bisection
        over every reachable |A|; together: A >= max(settle_thr, a_min), or settle_thr <=
        A <= min(-a_min, -1) (negative A: only with a positive bias), kept only for the
        steps where some channel has that second interval.
        """
        if alpha not in self._alpha_cache:
            bound = self.value_bound + 1
            ranges = torch.stack([r.reshape(-1) for r in self.range])  # (steps, Cout)
            lo = torch.zeros_like(ranges)
            hi = torch.full_like(ranges, bound + 1)  # bound + 1: "never"
            while bool((lo < hi).any()):  # bisection: ~log2(bound) steps
                mid = torch.floor((lo + hi) / 2)
                ok = ranges <= alpha * mid
                hi = torch.where(ok, mid, hi)
                lo = torch.where(ok, lo, mid + 1)
            tests = []
            for t in range(len(self.range)):  # steps: a handful
                settle, a_min = self.settle_thr[t].reshape(-1), lo[t]
                upper = torch.minimum(-a_min, torch.full_like(a_min, -1.0))
                negative = ((self._typed(settle), self._typed(upper))
                            if bool((settle <= upper).any()) else None)
                tests.append(SettleTest(
                    self._typed(torch.maximum(settle, a_min)), negative,
                    self._typed(self.mid_offset[t].reshape(-1)),
                    self._typed(torch.floor(self.expected[t]).reshape(-1))))
            self._alpha_cache[alpha] = tests
        return self._alpha_cache[alpha]

    def group_max(self, e: Tensor) -> Tensor:
        """(N, P, Cout) per-output values -> (N, P, groups): the max over each OU column
        group's channels (a few consecutive ones), as a max of strided channel slices when
        the groups' first channels are evenly spaced, else of gathered channels."""
        groups, span = self.group_channels.shape
        out: Tensor | None = None
        for j in range(span):  # channels per column group: a handful
            idx = self.group_channels[:, j]
            first = int(idx[0])
            step = int(idx[1] - idx[0]) if groups > 1 else 1
            regular = step > 0 and bool((idx == first + step * self._group_range).all())
            part = (e[:, :, first : first + step * (groups - 1) + 1 : step] if regular
                    else e.index_select(2, idx))
            out = part if out is None else torch.maximum(out, part)
        assert out is not None
        return out

    def group_cycles(self, e: Tensor) -> Tensor:
        """(N, P, Cout) executed steps -> (N, P, groups) cycles each OU column group is
        activated: cycle t runs a group while one of its columns (channel c, step offset j
        within the cycle) is still needed, e_c > t x steps_per_cycle + j."""
        if self.steps_per_cycle == 1:
            return self.group_max(e)
        span = self.group_channels.shape[1]
        need: Tensor | None = None
        for j in range(span):  # (channel, slice) pairs per column group: a handful
            part = e.index_select(2, self.group_channels[:, j]) - self.group_offsets[:, j]
            need = part if need is None else torch.maximum(need, part)
        assert need is not None
        cycles = float(self.mapped.hw.cycles)
        return torch.ceil(need / self.steps_per_cycle).clamp_(0.0, cycles)

    def live_columns(self, e: Tensor) -> list[Tensor]:
        """(N, P, Cout) executed steps -> per input cycle t, (N, P, groups): the columns
        of each OU column group still converting in its activation of cycle t (column of
        channel c, step offset j: e_c > t x steps_per_cycle + j); 0: the group is idle.
        int32 (a narrower copy than int64; the counts are at most ou.cols)."""
        span = self.group_channels.shape[1]
        need = [e.index_select(2, self.group_channels[:, j]) - self.group_offsets[:, j]
                for j in range(span)]  # (channel, slice) pairs per column group: a handful
        spc = float(self.steps_per_cycle)
        member = self.group_member_cols.to(torch.int32)
        out = []
        for t in range(self.mapped.hw.cycles):  # input cycles: a handful
            live: Tensor | None = None
            for j in range(span):
                part = (need[j] > t * spc).to(torch.int32) * member[:, j]
                live = part if live is None else live + part
            assert live is not None
            out.append(live)
        return out

    def column_groups(self) -> int:
        """OU column groups of the layer (over all column tiles)."""
        return int(self.group_width.shape[0])


def slice_major(mapped: MappedLayer) -> MappedLayer:
    """The same layer with its columns laid out slice-major (most significant slice first,
    then channel, then polarity), in the same column tiles: one OU column group then holds
    one slice of ou.cols / polarities channels (`bounds="slice"`)."""
    hw = mapped.hw
    pols, slices = hw.polarities, hw.slices
    cout = mapped.layer.out_channels
    perm = torch.tensor([(c * pols + p) * slices + s for s in range(slices - 1, -1, -1)
                         for c in range(cout) for p in range(pols)], dtype=torch.int64)
    return dataclasses.replace(mapped, levels=mapped.levels[:, perm],
                               col_channel=mapped.col_channel[perm],
                               col_weight=mapped.col_weight[perm], _cache={})


def _check_remaining_mean(values: Sequence[float] | None, cycles: int, name: str) -> list[float]:
    """lambda_t per cycle (0 when not given); the last cycle has nothing after it."""
    if values is None:
        return [0.0] * cycles
    out = [float(v) for v in values]
    if len(out) < cycles - 1 or any(not (math.isfinite(v) and -1 <= v <= 1) for v in out):
        raise SparsexbarError(
            f"comprrae remaining_mean of layer '{name}' needs {cycles - 1} numbers in [-1, 1] "
            f"(one per input cycle but the last), got {list(values)!r}")
    return (out + [0.0] * cycles)[:cycles]
