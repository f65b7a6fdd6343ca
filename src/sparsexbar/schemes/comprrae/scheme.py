"""`comprrae`: output-sparsity prediction and early termination (CompRRAE, Chen et al., ASP-DAC
2019; our reconstruction, DESIGN.md 3.3, docs/schemes/comprrae.md).

Inputs are fed most significant chunk first (always, whatever `numbers.bit_order` says). The
work of an output is cut into steps: one per input cycle (`bounds="output"`, default) or, with
`bounds="slice"`, one per (cycle, weight slice), slices most significant first within a cycle
(the columns are laid out slice-major so that one OU column group holds one slice). After each
step every output keeps its running sum A (over all arrays of the output) and bounds on what
the remaining steps can add: with P_c / N_c the sums of the positive / negative integer weights
of output channel c (a per-layer LUT) and R_t the largest value the input bits after cycle t
can take, y_max = A + P_c R_t and y_min = A + N_c R_t (signed inputs, two interleaved passes:
A +- (P_c - N_c) R_t); `slice` adds the lower slices of the current cycle, bounded by their own
positive / negative sums (LUT entries per slice) times the largest chunk. Outputs are compared
in the real domain, acc x input_scale x weight_scale[c] + bias[c], exactly as
`QuantLayer.dequantize` computes it.

- Early negative detection (END), layers followed by ReLU only: dequantize(y_max) < 0 -> the
  output is negative whatever comes, its ReLU is 0; the column stops and returns A (which
  dequantizes to a negative value, A <= y_max), so the network output is bit-for-bit dense's.
- Predictive negative detection (`beta` < 1, lossy): with mu the expected remaining
  contribution, (P_c + N_c) x lambda_t x R_t (lambda_t: the mean of the input bits still to
  come as a fraction of R_t, measured per layer on calibration images, `remaining_mean`; 0
  without), the output is predicted negative when dequantize(A + floor((1 - beta) mu +
  beta (y_max - A))) < 0; it stops and returns min(A, the largest accumulator that dequantizes
  below 0), so its ReLU is 0. beta = 1 is END.
- Adaptive early termination (`alpha`, lossy), ReLU layers only: dequantize(y_min) > 0 and
  y_max - y_min <= alpha |A| (accumulator units) -> stop, return floor((y_max + y_min) / 2)
  (`estimate="midpoint"`, default: A plus the middle of what the rest can add), A + floor(mu)
  (`"expected"`) or A (`"running"`).
- Events: an output channel that stops after e steps skips the conversions of its columns in
  the remaining steps (polarities x slices per step and OU row group per array, / slices with
  `slice`); an OU activation is skipped only when every column of its column group belongs to
  a stopped output (or slice); one LUT read and one comparison (two with alpha) per output per
  step checked (after every step but the last, until the output stops), and one digital
  multiply-add per check for the predictive threshold. Layers not followed by ReLU run exactly
  as `dense`.

Values are exact: needs the conversions to be the identity (`MappedLayer.exact_linear()`);
a layer followed by ReLU whose ADC can clip (or a non-ideal device) is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ...core.config import HardwareConfig, SignEncoding
from ...core.cost import Storage
from ...core.engine import FLOAT32_EXACT, EngineOptions, LayerKernel, accumulate, exact_accumulate
from ...core.errors import SparsexbarError
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.intconv import ExactLinear
from ...core.mapping import MappedLayer, dense_events, map_dense
from ..base import LayerRun, Scheme

AlphaSpec = float | Mapping[str, float | None] | None
BetaSpec = float | Mapping[str, float | None] | None
RemainingMean = Mapping[str, Sequence[float]] | None
ESTIMATES = ("midpoint", "running", "expected")
BOUNDS = ("output", "slice")


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
        self.op = ExactLinear(layer.kind, layer.weight_int, layer.input_max, device,
                              *geometry, probe_shape=probe)
        self.direct = device.type != "cpu" or self.value_bound < FLOAT32_EXACT
        # Not direct: the exact result from input pieces of `piece_bits` bits (each op exact).
        self.piece_bits = 0
        self.piece_op: ExactLinear | None = None
        if not self.direct:
            self.op = ExactLinear(layer.kind, layer.weight_int, 2**dac - 1, device,
                                  *geometry, probe_shape=probe)
            while (self.piece_bits < layer.input_bits
                   and col_abs * (2 ** (self.piece_bits + 1) - 1) < FLOAT32_EXACT):
                self.piece_bits += 1
            self.piece_op = (ExactLinear(layer.kind, layer.weight_int, 2**self.piece_bits - 1,
                                         device, *geometry, probe_shape=probe)
                             if self.piece_bits else None)
        self.value_dtype = self.op.dtype if self.direct else torch.float64
        self.mag_dtype = torch.uint8 if layer.input_max <= 255 else torch.int32
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
        width: list[int] = []
        tile: list[int] = []
        for j, (c0, c1) in enumerate(mapped.col_tiles):
            for g0 in range(c0, c1, ou_c):  # column groups: a handful per array
                g1 = min(g0 + ou_c, c1)
                pairs = sorted(set(zip(channel[g0:g1].tolist(), offset[g0:g1].tolist(),
                                       strict=True)))
                members.append(pairs)
                width.append(g1 - g0)
                tile.append(j)
        span = max(len(m) for m in members)
        chans = [[c for c, _ in m] + [m[-1][0]] * (span - len(m)) for m in members]
        offs = [[o for _, o in m] + [m[-1][1]] * (span - len(m)) for m in members]
        self.group_channels = torch.tensor(chans, dtype=torch.int64).to(device)
        self.group_offsets = torch.tensor(offs, dtype=torch.float32).to(device)
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


class CompRRAEScheme(Scheme):
    """Early negative detection (exact); with `beta`, predictive negative detection (lossy);
    with `alpha`, adaptive early termination (lossy).

    `alpha`: None (no termination), a float for every ReLU layer, or {layer name: float or
    None}. `beta`: None (END), a float in [0, 1] for every ReLU layer or {layer: float or
    None}; 1 is END, smaller predicts more outputs negative. `remaining_mean`: {layer: lambda
    per input cycle} (`calibration.measure_remaining_mean`); missing layers use 0.
    `bounds`: "output" (bounds after each input cycle) or "slice" (after each (cycle, weight
    slice) conversion step: tighter, exact). `estimate`: value of an output stopped by alpha:
    "midpoint" of [y_min, y_max], A + the "expected" remaining contribution, or the "running"
    sum A. `lut_entry_bits`: width of one LUT entry (None: weight_bits + ceil(log2(rows)),
    which holds any sum of a channel's weights).
    """

    name = "comprrae"
    chunk_outputs = 2**19  # outputs per chunk (measured best on the shipped VGG-8)

    def __init__(self, alpha: AlphaSpec = None, bounds: str = "output",
                 estimate: str = "midpoint", lut_entry_bits: int | None = None,
                 beta: BetaSpec = None, remaining_mean: RemainingMean = None) -> None:
        if bounds not in BOUNDS:
            raise SparsexbarError(
                f"comprrae bounds='{bounds}' is not implemented (known: {', '.join(BOUNDS)})")
        if estimate not in ESTIMATES:
            raise SparsexbarError(
                f"comprrae estimate='{estimate}' unknown (known: {', '.join(ESTIMATES)})")
        _check_alpha(alpha)
        _check_beta(beta)
        if remaining_mean is not None and not isinstance(remaining_mean, Mapping):
            raise SparsexbarError("comprrae remaining_mean must map layer names to lists")
        self.alpha = alpha
        self.beta = beta
        self.remaining_mean = remaining_mean
        self.bounds = bounds
        self.estimate = estimate
        self.lut_entry_bits = lut_entry_bits
        # The calibration file the per-layer values came from (`calibration=FILE` text) and
        # the keys given beside it: set by `build_comprrae`.
        self.calibration: str | None = None
        self.calibration_overrides: tuple[str, ...] = ()
        self.lossless = alpha is None and all(
            b is None or b >= 1 for b in (beta.values() if isinstance(beta, Mapping) else [beta]))

    def options(self) -> dict[str, Any]:
        """alpha, beta, bounds, estimate, calibration (its file: per-layer values read from
        it are the file's; values given beside it are kept)."""
        out: dict[str, Any] = {"bounds": self.bounds, "estimate": self.estimate,
                               "calibration": self.calibration}
        for key, value in (("alpha", self.alpha), ("beta", self.beta)):
            if self.calibration is not None and key not in self.calibration_overrides:
                continue  # read from the calibration file
            if isinstance(value, Mapping):
                raise SparsexbarError(f"comprrae {key} per layer has no text form (write a "
                                      "calibration file and give calibration=FILE)")
            # beside a file, an explicit none is printed, unlike a default
            out[key] = "none" if value is None and self.calibration is not None else value
        if self.calibration is None and self.remaining_mean is not None:
            raise SparsexbarError("comprrae remaining_mean has no text form (write a "
                                  "calibration file and give calibration=FILE)")
        return out

    def parameters(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return {k: (list(x) if isinstance(x, Sequence) else x) for k, x in v.items()} \
                if isinstance(v, Mapping) else v

        return {
            "alpha": plain(self.alpha),
            "beta": plain(self.beta),
            "remaining_mean": plain(self.remaining_mean),
            "bounds": self.bounds,
            "estimate": self.estimate,
            "order": "msb_first (always, whatever numbers.bit_order says)",
            "checked_layers": "followed by ReLU",
            "lut_entry_bits": self.lut_entry_bits,
        }

    def layer_alpha(self, name: str) -> float | None:
        """The alpha of one layer (None: no adaptive termination)."""
        if isinstance(self.alpha, Mapping):
            value = self.alpha.get(name)
            return None if value is None else float(value)
        return None if self.alpha is None else float(self.alpha)

    def layer_beta(self, name: str) -> float | None:
        """The beta of one layer (None: early negative detection, exact)."""
        if isinstance(self.beta, Mapping):
            value = self.beta.get(name)
        else:
            value = self.beta
        return None if value is None or value >= 1 else float(value)

    def layer_remaining_mean(self, name: str) -> Sequence[float] | None:
        """lambda_t of one layer (None: 0 for every cycle)."""
        if self.remaining_mean is None:
            return None
        return self.remaining_mean.get(name)

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        mapped = map_dense(layer, hw)
        if layer.followed_by_relu and not mapped.exact_linear():
            why = ("the device is not ideal" if not hw.device.ideal
                   else f"adc.step={hw.adc.step} is not 1" if hw.adc.step != 1.0
                   else f"partial sums up to {mapped.max_partial_sum():g} exceed the "
                   f"{hw.adc.bits}-bit ADC range")
            raise SparsexbarError(
                f"comprrae needs a lossless ADC for now: layer '{layer.name}': {why}")
        if layer.followed_by_relu and self.bounds == "slice":
            return slice_major(mapped)
        return mapped

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        name = mapped.layer.name
        return CompKernel(mapped, device, self.layer_alpha(name), self.bounds,
                          self.layer_beta(name), self.layer_remaining_mean(name))

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        if not isinstance(kernel, CompKernel) or not kernel.checked:
            acc = accumulate(kernel, x_int, options)
            events, cycles = dense_events(kernel.mapped, int(x_int.shape[0]))
            return LayerRun(acc, events, cycles)
        layer = kernel.mapped.layer
        n = int(x_int.shape[0])
        # Chunks of about `chunk_outputs` outputs: fewer, larger convolutions, state in cache.
        per_image = layer.positions * layer.out_channels
        chunk = max(1, min(self.chunk_outputs // per_image,
                           int(options.memory_budget_mb * 2**20 // (per_image * 64))))
        out = torch.empty((n, *layer.output_shape), dtype=torch.float64, device=x_int.device)
        events = Events()
        cycles = 0
        for a in range(0, n, chunk):  # chunks of images (memory bound)
            value, executed = self._terminate_rows(kernel, x_int[a : a + chunk])
            m = int(executed.shape[0]) // layer.positions
            ev, cyc = self.count(kernel, executed.view(m, layer.positions, -1))
            if layer.kind == "linear":
                out[a : a + m] = value
            else:
                c, ho, wo = layer.output_shape
                out[a : a + m] = value.view(m, ho, wo, c).permute(0, 3, 1, 2)
            events = events + ev
            cycles += cyc
        dense, _ = dense_events(kernel.mapped, n)
        events.buffer_read_bytes = dense.buffer_read_bytes
        events.buffer_write_bytes = dense.buffer_write_bytes
        events.digital_ops = dense.digital_ops + events.digital_ops  # + predictive thresholds
        return LayerRun(out, events, cycles)

    # ---- values ------------------------------------------------------------------------------
    # Values are kept as (positions, Cout) rows: the per-channel thresholds then broadcast
    # along the contiguous dimension (vectorized), and the int8 backend's channels-last output
    # is already in that layout.
    def trace(self, k: CompKernel, x_int: Tensor) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        """MSB-first steps: (step, running sum A, y_min, y_max) after each step, all float64
        accumulators of the layer's output shape; after the last step y_min = y_max = A."""
        mags = self._magnitudes(k, x_int)
        n = int(x_int.shape[0])
        per = k.steps_per_cycle
        cout = k.mapped.layer.out_channels
        for t in range(k.mapped.hw.cycles):
            full = self._running_sum(k, mags, t)
            lows = self._low_parts(k, mags, t) if per > 1 else full
            for j in range(per):  # steps of cycle t: slices, most significant first
                step = t * per + j
                s = k.step_slice(step)
                rows = full - lows[:, (s - 1) * cout : s * cout] if s else full
                acc = self._fold(k, rows, n)
                yield step, acc, acc + k.reserve_down[step], acc + k.reserve_up[step]

    @staticmethod
    def _fold(k: CompKernel, rows: Tensor, n: int) -> Tensor:
        """(N*P, Cout) rows -> (N, Cout[, Ho, Wo]) float64, contiguous."""
        layer = k.mapped.layer
        if layer.kind == "linear":
            return rows.to(torch.float64)
        c, ho, wo = layer.output_shape
        return rows.view(n, ho, wo, c).permute(0, 3, 1, 2).to(torch.float64).contiguous()

    @staticmethod
    def _magnitudes(k: CompKernel, x_int: Tensor) -> tuple[Tensor, ...]:
        """The input magnitudes as narrow integers: (x,) or, signed, (positive, negative)."""
        if k.mapped.layer.kind == "linear":  # as `QuantLayer.patches`: (N, features)
            x_int = x_int.reshape(x_int.shape[0], -1)
        fmt = (torch.channels_last if k.mapped.layer.kind == "conv"
               else torch.contiguous_format)  # the int8 convolution's layout: shifts keep it
        if k.mapped.layer.input_signed:
            parts = [x_int.clamp(min=0), (-x_int).clamp(min=0)]
        else:
            parts = [x_int]
        return tuple(p.to(k.mag_dtype).contiguous(memory_format=fmt) for p in parts)

    @staticmethod
    def _part(k: CompKernel, mags: tuple[Tensor, ...], t: int, trunc: bool) -> Tensor:
        """2^shift_t x W . (|x| >> shift_t) (`trunc`: A_t itself) or 2^shift_t x W . chunk_t
        (cycle t's contribution), signed inputs as positive minus negative part, as
        (positions, Cout) rows in the op's dtype (exact: see `CompKernel`)."""
        shift = k.shifts[t]
        mask = 2**k.mapped.hw.dac.bits - 1
        parts = [m >> shift if trunc else (m >> shift) & mask for m in mags]
        value = k.op.rows(parts[0], float(2**shift))
        if len(parts) == 2:  # exact: |difference| <= the bound
            value = value - k.op.rows(parts[1], float(2**shift))
        return value

    @staticmethod
    def _low_parts(k: CompKernel, mags: tuple[Tensor, ...], t: int) -> Tensor:
        """2^shift_t x W_<s . chunk_t for s = 1..slices-1 side by side, (positions,
        (slices-1) x Cout) rows: what the slices below s add in cycle t (`slice`; exact:
        |W_<s| sums x the chunk stay below 2^24)."""
        shift = k.shifts[t]
        mask = 2**k.mapped.hw.dac.bits - 1
        op = k.low_op
        assert op is not None
        value = op.rows((mags[0] >> shift) & mask, float(2**shift))
        if len(mags) == 2:
            value = value - op.rows((mags[1] >> shift) & mask, float(2**shift))
        return value

    def _running_sum(self, k: CompKernel, mags: tuple[Tensor, ...], t: int) -> Tensor:
        """A_t = W . trunc_t(x) as (positions, Cout) rows in `k.value_dtype`."""
        if k.direct:
            return self._part(k, mags, t, trunc=True)
        acc = self._part(k, mags, 0, trunc=False).to(torch.float64)
        for earlier in range(1, t + 1):  # input cycles: a handful
            acc += self._part(k, mags, earlier, trunc=False)
        return acc

    @staticmethod
    def _exact_result(k: CompKernel, mags: tuple[Tensor, ...], x_int: Tensor) -> Tensor:
        """W . x as float64 (positions, Cout) rows: sum over input pieces of `piece_bits`
        bits of 2^offset x W . piece (each exact below 2^24), or the engine's exact
        accumulate when not even 1-bit pieces are exact in float32."""
        layer = k.mapped.layer
        if k.piece_op is None:
            acc = exact_accumulate(layer, x_int)
            if layer.kind == "conv":
                acc = acc.permute(0, 2, 3, 1).reshape(-1, layer.out_channels)
            return acc.contiguous()
        bits = k.piece_bits
        total: Tensor | None = None
        for low in range(0, layer.input_bits, bits):  # pieces: 2 for 8-bit inputs, mostly
            pieces = [(m >> low) & (2**bits - 1) for m in mags]
            part = k.piece_op.rows(pieces[0]).to(torch.float64)
            if len(pieces) == 2:
                part -= k.piece_op.rows(pieces[1])
            part *= float(2**low)
            total = part if total is None else total.add_(part)
        assert total is not None
        return total

    def _sums_last_to_first(self, k: CompKernel, mags: tuple[Tensor, ...],
                            x_int: Tensor) -> Iterator[tuple[int, Tensor]]:
        """(t, A_t) for t = cycles-1 down to 0, computed as they are asked for; the consumer
        must not modify them. Direct: one op per cycle. Otherwise A_(cycles-1) is the exact
        result (the engine's exact accumulate) and A_t = A_(t+1) - contribution_(t+1)."""
        cycles = k.mapped.hw.cycles
        if k.direct:
            for t in range(cycles - 1, -1, -1):  # input cycles, last to first
                yield t, self._part(k, mags, t, trunc=True)
            return
        acc = self._exact_result(k, mags, x_int)
        for t in range(cycles - 1, -1, -1):  # input cycles, last to first
            if t < cycles - 1:
                acc = acc - self._part(k, mags, t + 1, trunc=False)
            yield t, acc

    def _steps_last_to_first(self, k: CompKernel, mags: tuple[Tensor, ...],
                             x_int: Tensor) -> Iterator[tuple[int, Tensor]]:
        """(step, A_step) from the last step back to the first (consumers must not modify
        them). `output`: the cycles' running sums; `slice`: within cycle t, A_t and then
        A_t - 2^shift_t W_<s . chunk_t for s = 1.. (the steps before the cycle's last)."""
        per = k.steps_per_cycle
        cout = k.mapped.layer.out_channels
        for t, acc in self._sums_last_to_first(k, mags, x_int):  # cycles, last to first
            yield t * per + per - 1, acc
            if per > 1:
                lows = self._low_parts(k, mags, t)
                for s in range(1, per):  # slices: a handful
                    yield t * per + per - 1 - s, acc - lows[:, (s - 1) * cout : s * cout]

    def terminate(self, k: CompKernel, x_int: Tensor) -> tuple[Tensor, Tensor]:
        """MSB-first execution with the checks: (accumulator float64, executed steps).

        Both have the layer's output shape (N, Cout[, Ho, Wo]); executed in [1, k.steps]
        (input cycles with the default `bounds="output"`), int8 (int16 beyond 127 steps).
        The comparisons use the integer thresholds of `CompKernel._thresholds`, equivalent
        to dequantize(y_max) < 0 and dequantize(y_min) > 0.
        """
        value, executed = self._terminate_rows(k, x_int)
        n = int(x_int.shape[0])
        layer = k.mapped.layer
        executed = executed.to(torch.int8 if k.steps <= 127 else torch.int16)
        if layer.kind == "linear":
            return value.to(torch.float64), executed
        c, ho, wo = layer.output_shape
        return (self._fold(k, value, n),
                executed.view(n, ho, wo, c).permute(0, 3, 1, 2).contiguous())

    def _terminate_rows(self, k: CompKernel, x_int: Tensor) -> tuple[Tensor, Tensor]:
        """(value, executed steps) as (positions, Cout) rows in `k.value_dtype`.

        The checks are float 0/1 masks (`torch.lt(..., out=float)`): boolean masks and
        `torch.where` are several times slower on CPU. lerp(a, b, mask) picks exactly a or b
        (a + 0 x (b - a), or b - (b - a) x 0).
        """
        if k.alpha is None and k.beta is None and k.monotone:
            return self._terminate_negative(k, x_int)
        return self._terminate_alpha(k, x_int, k.alpha)

    def _terminate_negative(self, k: CompKernel, x_int: Tensor) -> tuple[Tensor, Tensor]:
        """Early negative detection only, steps visited from the last back to the first.

        y_max never grows from one step to the next (the bits or slices fed at step k+1 add
        at most what the reserve kept for them), so once y_max < 0 it stays: END fires at
        every step from an output's stop step k* on. Visiting the steps backwards, an
        output's value is the running sum of the earliest step that fires, its executed steps
        k* + 1 = steps - (checked steps that fire); and when no output fires at step k none
        fires earlier, so the earlier steps are never computed.
        """
        sums = self._steps_last_to_first(k, self._magnitudes(k, x_int), x_int)
        _, value = next(sums)  # the exact result
        if k.steps_per_cycle > 1:  # the cycle's other steps are computed from it
            value = value.clone()
        executed = torch.full(value.shape, float(k.steps), dtype=value.dtype,
                              device=value.device)
        fired = torch.empty_like(value)
        for step, acc in sums:  # steps, last to first
            torch.lt(acc, k.end_value[step], out=fired)  # 0/1
            if float(fired.sum()) == 0.0:
                break
            value.lerp_(acc, fired)  # where fired: the running sum (exact)
            executed.sub_(fired)
        return value, executed

    def _terminate_alpha(self, k: CompKernel, x_int: Tensor,
                         alpha: float | None) -> tuple[Tensor, Tensor]:
        """END (or, with beta, predictive negative detection) and adaptive termination. The
        tests are not monotone in the steps, so every step is computed; visiting them from
        the last back to the first, each stop overwrites the value and executed steps, and
        the earliest stop remains."""
        tests = k.alpha_thresholds(alpha) if alpha is not None else None
        negative = (k.predict_thresholds(k.beta) if k.beta is not None else k.end_value)
        add = {"midpoint": "midpoint", "expected": "expected"}.get(self.estimate)
        sums = self._steps_last_to_first(k, self._magnitudes(k, x_int), x_int)
        _, value = next(sums)  # the exact result
        if k.steps_per_cycle > 1:  # the cycle's other steps are computed from it
            value = value.clone()
        executed = torch.full(value.shape, float(k.steps), dtype=value.dtype,
                              device=value.device)
        settle, stop, candidate = (torch.empty_like(value) for _ in range(3))
        for step, acc in sums:  # steps, last to first
            torch.lt(acc, negative[step], out=stop)  # 0/1: (predicted) negative
            cand = acc
            if k.beta is not None:  # a predicted output may have A >= 0: its ReLU must be 0
                cand = torch.minimum(acc, k.neg_cap, out=candidate)
            if tests is not None:
                test = tests[step]
                torch.ge(acc, test.at_least, out=settle)  # 0/1
                if test.negative is not None:
                    low, high = test.negative
                    settle.add_(torch.ge(acc, low, out=torch.empty_like(acc)).mul_(
                        torch.le(acc, high, out=torch.empty_like(acc))))
                # negative and settling (y_min > 0) exclude each other: stop is 0/1
                stop.add_(settle)
                offset = getattr(test, add) if add is not None else None
                if k.beta is not None:
                    settled = acc if offset is None else acc + offset
                    cand = candidate.lerp_(settled, settle)
                elif offset is not None:
                    cand = torch.addcmul(acc, settle, offset, out=candidate)
            value.lerp_(cand, stop)
            executed.lerp_(acc.new_tensor(float(step + 1)), stop)
        return value, executed

    # ---- events ------------------------------------------------------------------------------
    def count(self, k: CompKernel, executed: Tensor) -> tuple[Events, int]:
        """Events and busiest-array OU cycles of a batch, from each output's executed steps
        `executed` (N, positions, Cout), integer-valued (any real or integer dtype)."""
        mapped = k.mapped
        hw, layer = mapped.hw, mapped.layer
        n = int(executed.shape[0])
        passes = layer.passes
        e = executed if executed.is_floating_point() else executed.to(torch.float32)
        per_step_cols = hw.polarities * hw.slices // k.steps_per_cycle
        total_e = int(e.sum(dtype=torch.float64))
        conversions = passes * k.row_groups_total * per_step_cols * total_e
        # A column group runs while any of its columns does: per cycle, max over its
        # channels (and slices) still running (a few consecutive channels in `output`).
        e_group = k.group_cycles(e)  # (N, P, groups)
        group_cycles = e_group.sum(dim=1, dtype=torch.float64)  # (N, groups)
        active_groups = int(group_cycles.sum())
        cells = int((group_cycles.sum(dim=0) * k.group_width).sum())
        per_tile = torch.zeros((n, k.col_tiles), dtype=torch.float64, device=e.device)
        per_tile.index_add_(1, k.group_tile, group_cycles)
        busiest = int(per_tile.amax(dim=1).sum())  # per image: its busiest column tile
        checks = int(e.clamp(max=k.steps - 1).sum(dtype=torch.float64))
        events = Events(
            ou_activations=passes * k.row_groups_total * active_groups,
            adc_conversions=conversions,
            dac_activations=passes * layer.rows * active_groups,
            cell_reads=passes * layer.rows * cells,
            shift_adds=conversions,
            comparisons=checks * (2 if k.alpha is not None else 1),
            lut_reads=checks,
            digital_ops=checks if k.beta is not None else 0,
        )
        return events, passes * k.row_groups_max * busiest

    # ---- storage -----------------------------------------------------------------------------
    def storage(self, mapped: MappedLayer) -> Storage:
        """LUT: 2 entries (P_c, N_c) per output channel, 2 more per slice below the top with
        `slice` (the lower slices' sums), and with beta the predictive threshold's two
        constants per input cycle; comparators: one per OU column group (two with alpha),
        time-shared by the outputs whose columns the group holds."""
        layer, hw = mapped.layer, mapped.hw
        if not layer.followed_by_relu:
            return Storage()
        width = self.lut_entry_bits or hw.numbers.weight_bits + math.ceil(
            math.log2(max(layer.rows, 2)))
        groups = sum(math.ceil((c1 - c0) / hw.ou.cols) for c0, c1 in mapped.col_tiles)
        per_group = 2 if self.layer_alpha(layer.name) is not None else 1
        entries = 2 * layer.out_channels * (hw.slices if self.bounds == "slice" else 1)
        if self.layer_beta(layer.name) is not None:
            entries += 2 * hw.cycles
        return Storage(lut_bits=entries * width, comparators=groups * per_group)


def _check_alpha(alpha: AlphaSpec) -> None:
    values = list(alpha.values()) if isinstance(alpha, Mapping) else [alpha]
    for v in values:
        if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise SparsexbarError(f"comprrae alpha must be a number >= 0 or None, got {v!r}")


def _check_beta(beta: BetaSpec) -> None:
    values = list(beta.values()) if isinstance(beta, Mapping) else [beta]
    for v in values:
        if v is not None and not (isinstance(v, int | float) and 0 <= v <= 1):
            raise SparsexbarError(f"comprrae beta must be a number in [0, 1] or None, got {v!r}")


def load_calibration(path: str | Path) -> dict[str, Any]:
    """alpha / beta / remaining_mean from a `sparsexbar calibrate-comprrae` JSON file."""
    file = Path(path)
    try:
        saved = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise SparsexbarError(f"cannot read comprrae calibration '{path}': {exc}") from None
    if not isinstance(saved, dict):
        raise SparsexbarError(f"comprrae calibration '{path}' is not a JSON object")
    out: dict[str, Any] = {}
    for key, name in (("alphas", "alpha"), ("betas", "beta"),
                      ("remaining_mean", "remaining_mean")):
        if key in saved:
            if not isinstance(saved[key], dict):
                raise SparsexbarError(f"comprrae calibration '{path}': '{key}' must map layer "
                                      "names to values")
            out[name] = saved[key]
    if not out:
        raise SparsexbarError(f"comprrae calibration '{path}' has no alphas, betas or "
                              "remaining_mean")
    return out


def build_comprrae(**given: Any) -> CompRRAEScheme:
    """The scheme from parsed text options: `calibration` (a `sparsexbar calibrate comprrae`
    file: its per-layer alphas or betas and remaining_mean), then alpha, beta, bounds and
    estimate as given (alpha or beta given beside a file replace the file's)."""
    calibration = given.pop("calibration", None)
    kwargs: dict[str, Any] = load_calibration(calibration) if calibration is not None else {}
    kwargs.update(given)
    scheme = CompRRAEScheme(**kwargs)
    if calibration is not None:
        scheme.calibration = str(calibration)
        scheme.calibration_overrides = tuple(k for k in ("alpha", "beta") if k in given)
    return scheme
