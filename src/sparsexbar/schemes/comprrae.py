"""`comprrae`: output-sparsity prediction and early termination (CompRRAE, Chen et al., ASP-DAC
2019; our reconstruction, DESIGN.md 3.3, docs/schemes/comprrae.md).

Inputs are fed most significant chunk first (always, whatever `numbers.bit_order` says). After
each cycle t every output keeps its running sum A (over all arrays of the output) and bounds on
what the remaining cycles can add: with P_c / N_c the sums of the positive / negative integer
weights of output channel c (a per-layer LUT) and R_t the largest value the remaining input bits
can take, y_max = A + P_c R_t and y_min = A + N_c R_t (signed inputs, two interleaved passes:
A +- (P_c - N_c) R_t). Outputs are compared in the real domain, acc x input_scale x
weight_scale[c] + bias[c], exactly as `QuantLayer.dequantize` computes it.

- Early negative detection (END), layers followed by ReLU only: dequantize(y_max) < 0 -> the
  output is negative whatever comes, its ReLU is 0; the column stops and returns A (which
  dequantizes to a negative value, A <= y_max), so the network output is bit-for-bit dense's.
- Adaptive early termination (`alpha`, lossy), ReLU layers only: dequantize(y_min) > 0 and
  y_max - y_min <= alpha |A| (accumulator units) -> stop, return floor((y_max + y_min) / 2)
  (`estimate="midpoint"`, default: A plus the middle of what the rest can add) or A
  (`estimate="running"`).
- Events: an output channel that stops after e of T cycles skips, in the remaining cycles, all
  its columns' conversions (polarities x slices per OU row group per array); an OU activation
  is skipped only when every column of its column group belongs to a stopped channel; one LUT
  read and one comparison (two with alpha) per output per cycle checked (after every cycle but
  the last, until the output stops). Layers not followed by ReLU run exactly as `dense`.

Values are exact: needs the conversions to be the identity (`MappedLayer.exact_linear()`);
a layer followed by ReLU whose ADC can clip (or a non-ideal device) is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..config import HardwareConfig
from ..cost import Storage
from ..engine import FLOAT32_EXACT, EngineOptions, LayerKernel, accumulate, exact_accumulate
from ..errors import SparsexbarError
from ..events import Events
from ..frontend import QuantLayer
from ..intconv import ExactLinear
from ..mapping import MappedLayer, dense_events, map_dense
from .base import LayerRun, Scheme

AlphaSpec = float | Mapping[str, float | None] | None
ESTIMATES = ("midpoint", "running")
BOUNDS = ("output",)


class SettleTest(NamedTuple):
    """Adaptive termination at one cycle, on the running sum A (per output channel):
    A >= at_least, or negative[0] <= A <= negative[1]; `midpoint`: y_mid - A."""

    at_least: Tensor
    negative: tuple[Tensor, Tensor] | None
    midpoint: Tensor


class CompKernel(LayerKernel):
    """LayerKernel plus the CompRRAE per-layer state: the weight-sum LUT and OU column groups."""

    def __init__(self, mapped: MappedLayer, device: torch.device, alpha: float | None) -> None:
        super().__init__(mapped, device)
        layer, hw = mapped.layer, mapped.hw
        self.checked = layer.followed_by_relu
        self.alpha = alpha
        w = layer.weight_int.reshape(layer.out_channels, -1).to(torch.float64).cpu()
        self.pos_sum = w.clamp(min=0).sum(dim=1)  # P_c, (Cout,)
        self.neg_sum = w.clamp(max=0).sum(dim=1)  # N_c, (Cout,)
        cycles, dac = hw.cycles, hw.dac.bits
        # MSB-first: cycle t feeds the chunk of LSB index cycles-1-t.
        self.shifts = [(cycles - 1 - t) * dac for t in range(cycles)]
        # Largest value of the input bits still to come after cycle t: 2^(shift_t) - 1.
        self.remaining = [float(2**s - 1) for s in self.shifts]
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
        self._thresholds(layer, 2 * col_abs * layer.input_max + 2, device)
        self._alpha_cache: dict[float, list[SettleTest]] = {}
        # OU column groups (per column tile, ou.cols wide) and the channels their columns hold.
        ou_c = hw.ou.cols
        channel = mapped.col_channel.cpu()
        lo_ch: list[int] = []
        hi_ch: list[int] = []
        width: list[int] = []
        tile: list[int] = []
        for j, (c0, c1) in enumerate(mapped.col_tiles):
            for g0 in range(c0, c1, ou_c):  # column groups: a handful per array
                g1 = min(g0 + ou_c, c1)
                lo_ch.append(int(channel[g0]))
                hi_ch.append(int(channel[g1 - 1]))
                width.append(g1 - g0)
                tile.append(j)
        span = max(h - lo for lo, h in zip(lo_ch, hi_ch, strict=True)) + 1
        idx = torch.tensor(lo_ch).unsqueeze(1) + torch.arange(span).unsqueeze(0)
        self.group_channels = torch.minimum(idx, torch.tensor(hi_ch).unsqueeze(1)).to(device)
        self._group_range = torch.arange(len(lo_ch), device=device)
        self.group_width = torch.tensor(width, dtype=torch.float64, device=device)
        self.group_tile = torch.tensor(tile, dtype=torch.int64, device=device)
        self.col_tiles = len(mapped.col_tiles)
        groups = [math.ceil((r1 - r0) / hw.ou.rows) for r0, r1 in mapped.row_tiles]
        self.row_groups_total = sum(groups)
        self.row_groups_max = max(groups)

    def _thresholds(self, layer: QuantLayer, bound: float, device: torch.device) -> None:
        """Per-cycle comparisons on the running sum A, equivalent to the real-domain checks.

        dequantize is monotone non-decreasing in the accumulator, so for integers y:
        dequantize(y) < 0 <=> y < neg_thr_c and dequantize(y) > 0 <=> y >= pos_thr_c, the two
        thresholds found by bisection over |y| <= bound (every reachable value). Then after
        cycle t: END fires <=> A < neg_thr - up R_t; y_min > 0 <=> A >= pos_thr - down R_t.
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
        pos = self.pos_sum.to(device).reshape(shape)
        neg = self.neg_sum.to(device).reshape(shape)
        up, down = (pos - neg, neg - pos) if layer.input_signed else (pos, neg)
        self.up, self.down = up, down
        self.end_thr = [neg_thr - up * r for r in self.remaining]
        self.settle_thr = [pos_thr - down * r for r in self.remaining]
        self.range = [(up - down) * r for r in self.remaining]
        self.mid_offset = [torch.floor((up + down) * r / 2) for r in self.remaining]
        self.end_value = [self._typed(v.reshape(-1)) for v in self.end_thr]

    def _typed(self, v: Tensor) -> Tensor:
        """A float64 integer threshold in the dtype of the running sums. Every running sum is
        below 2^24 in magnitude when that dtype is float32, so clamping a threshold to
        +-2^24 (exact in float32) changes no comparison."""
        if self.value_dtype == torch.float64:
            return v
        return v.clamp(-FLOAT32_EXACT, FLOAT32_EXACT).to(self.value_dtype)

    def alpha_thresholds(self, alpha: float) -> list[SettleTest]:
        """Per checked cycle, the adaptive-termination test on A in the running sums' dtype.

        settle <=> A >= settle_thr (y_min > 0) and range <= alpha |A| (float64 product, as
        the reference evaluates it). The second is |A| >= a_min, a_min found by bisection
        over every reachable |A|; together: A >= max(settle_thr, a_min), or settle_thr <=
        A <= min(-a_min, -1) (negative A: only with a positive bias), kept only for the
        cycles where some channel has that second interval.
        """
        if alpha not in self._alpha_cache:
            bound = self.value_bound + 1
            ranges = torch.stack([r.reshape(-1) for r in self.range])  # (T, Cout)
            lo = torch.zeros_like(ranges)
            hi = torch.full_like(ranges, bound + 1)  # bound + 1: "never"
            while bool((lo < hi).any()):  # bisection: ~log2(bound) steps
                mid = torch.floor((lo + hi) / 2)
                ok = ranges <= alpha * mid
                hi = torch.where(ok, mid, hi)
                lo = torch.where(ok, lo, mid + 1)
            tests = []
            for t in range(len(self.range)):  # input cycles: a handful
                settle, a_min = self.settle_thr[t].reshape(-1), lo[t]
                upper = torch.minimum(-a_min, torch.full_like(a_min, -1.0))
                negative = ((self._typed(settle), self._typed(upper))
                            if bool((settle <= upper).any()) else None)
                tests.append(SettleTest(self._typed(torch.maximum(settle, a_min)), negative,
                                        self._typed(self.mid_offset[t].reshape(-1))))
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

    def column_groups(self) -> int:
        """OU column groups of the layer (over all column tiles)."""
        return int(self.group_width.shape[0])


class CompRRAEScheme(Scheme):
    """Early negative detection (exact) and, with `alpha`, adaptive early termination (lossy).

    `alpha`: None (END only), a float for every ReLU layer, or {layer name: float or None}.
    `bounds`: "output" (bounds on each output after each cycle; the only one implemented).
    `estimate`: value of an output stopped by alpha: "midpoint" of [y_min, y_max] or the
    "running" sum A. `lut_entry_bits`: width of one LUT entry (None: weight_bits +
    ceil(log2(rows)), which holds any sum of a channel's weights).
    """

    name = "comprrae"
    chunk_outputs = 2**19  # outputs per chunk (measured best on the shipped VGG-8)

    def __init__(self, alpha: AlphaSpec = None, bounds: str = "output",
                 estimate: str = "midpoint", lut_entry_bits: int | None = None) -> None:
        if bounds not in BOUNDS:
            raise SparsexbarError(
                f"comprrae bounds='{bounds}' is not implemented (known: {', '.join(BOUNDS)})")
        if estimate not in ESTIMATES:
            raise SparsexbarError(
                f"comprrae estimate='{estimate}' unknown (known: {', '.join(ESTIMATES)})")
        _check_alpha(alpha)
        self.alpha = alpha
        self.bounds = bounds
        self.estimate = estimate
        self.lut_entry_bits = lut_entry_bits
        self.lossless = alpha is None

    def parameters(self) -> dict[str, Any]:
        alpha: Any = dict(self.alpha) if isinstance(self.alpha, Mapping) else self.alpha
        return {
            "alpha": alpha,
            "bounds": self.bounds,
            "estimate": self.estimate,
            "order": "msb_first (always, whatever numbers.bit_order says)",
            "checked_layers": "followed by ReLU",
            "lut_entry_bits": self.lut_entry_bits,
        }

    def layer_alpha(self, name: str) -> float | None:
        """The alpha of one layer (None: early negative detection only)."""
        if isinstance(self.alpha, Mapping):
            value = self.alpha.get(name)
            return None if value is None else float(value)
        return None if self.alpha is None else float(self.alpha)

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        mapped = map_dense(layer, hw)
        if layer.followed_by_relu and not mapped.exact_linear():
            why = ("the device is not ideal" if not hw.device.ideal
                   else f"adc.step={hw.adc.step} is not 1" if hw.adc.step != 1.0
                   else f"partial sums up to {mapped.max_partial_sum():g} exceed the "
                   f"{hw.adc.bits}-bit ADC range")
            raise SparsexbarError(
                f"comprrae needs a lossless ADC for now: layer '{layer.name}': {why}")
        return mapped

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        return CompKernel(mapped, device, self.layer_alpha(mapped.layer.name))

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
        events.digital_ops = dense.digital_ops
        return LayerRun(out, events, cycles)

    # ---- values ------------------------------------------------------------------------------
    # Values are kept as (positions, Cout) rows: the per-channel thresholds then broadcast
    # along the contiguous dimension (vectorized), and the int8 backend's channels-last output
    # is already in that layout.
    def trace(self, k: CompKernel, x_int: Tensor) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        """MSB-first cycles: (t, running sum A, y_min, y_max) after each cycle t, all float64
        accumulators of the layer's output shape; after the last cycle y_min = y_max = A."""
        mags = self._magnitudes(k, x_int)
        n = int(x_int.shape[0])
        for t in range(k.mapped.hw.cycles):
            acc = self._fold(k, self._running_sum(k, mags, t), n)
            rem = k.remaining[t]
            yield t, acc, acc + k.down * rem, acc + k.up * rem

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

    def terminate(self, k: CompKernel, x_int: Tensor) -> tuple[Tensor, Tensor]:
        """MSB-first execution with the checks: (accumulator float64, executed cycles int8).

        Both have the layer's output shape (N, Cout[, Ho, Wo]); executed in [1, cycles]. The
        comparisons use the integer thresholds of `CompKernel._thresholds`, equivalent to
        dequantize(y_max) < 0 and dequantize(y_min) > 0.
        """
        value, executed = self._terminate_rows(k, x_int)
        n = int(x_int.shape[0])
        layer = k.mapped.layer
        executed = executed.to(torch.int8)
        if layer.kind == "linear":
            return value.to(torch.float64), executed
        c, ho, wo = layer.output_shape
        return (self._fold(k, value, n),
                executed.view(n, ho, wo, c).permute(0, 3, 1, 2).contiguous())

    def _terminate_rows(self, k: CompKernel, x_int: Tensor) -> tuple[Tensor, Tensor]:
        """(value, executed cycles) as (positions, Cout) rows in `k.value_dtype`.

        The checks are float 0/1 masks (`torch.lt(..., out=float)`): boolean masks and
        `torch.where` are several times slower on CPU. lerp(a, b, mask) picks exactly a or b
        (a + 0 x (b - a), or b - (b - a) x 0).
        """
        if k.alpha is None:
            return self._terminate_negative(k, x_int)
        return self._terminate_alpha(k, x_int, k.alpha)

    def _terminate_negative(self, k: CompKernel, x_int: Tensor) -> tuple[Tensor, Tensor]:
        """Early negative detection only, cycles visited from the last back to the first.

        y_max never grows from one cycle to the next (the bits fed in cycle t+1 add at most
        what R_t reserved for them), so once y_max < 0 it stays: END fires at every cycle from
        an output's stop cycle t* on. Visiting the cycles backwards, an output's value is the
        running sum of the earliest cycle that fires, its executed cycles t* + 1 = cycles -
        (checked cycles that fire); and when no output fires at cycle t none fires earlier,
        so the earlier cycles are never computed.
        """
        cycles = k.mapped.hw.cycles
        sums = self._sums_last_to_first(k, self._magnitudes(k, x_int), x_int)
        _, value = next(sums)  # the exact result
        executed = torch.full(value.shape, float(cycles), dtype=value.dtype,
                              device=value.device)
        fired = torch.empty_like(value)
        for t, acc in sums:  # input cycles, last to first
            torch.lt(acc, k.end_value[t], out=fired)  # 0/1
            if float(fired.sum()) == 0.0:
                break
            value.lerp_(acc, fired)  # where fired: the running sum (exact)
            executed.sub_(fired)
        return value, executed

    def _terminate_alpha(self, k: CompKernel, x_int: Tensor,
                         alpha: float) -> tuple[Tensor, Tensor]:
        """END and adaptive termination. The settle test is not monotone in the cycles, so
        every cycle is computed; visiting them from the last back to the first, each stop
        overwrites the value and executed cycles, and the earliest stop remains."""
        cycles = k.mapped.hw.cycles
        tests = k.alpha_thresholds(alpha)
        midpoint = self.estimate == "midpoint"
        sums = self._sums_last_to_first(k, self._magnitudes(k, x_int), x_int)
        _, value = next(sums)  # the exact result
        executed = torch.full(value.shape, float(cycles), dtype=value.dtype,
                              device=value.device)
        settle, stop, candidate = (torch.empty_like(value) for _ in range(3))
        for t, acc in sums:  # input cycles, last to first
            test = tests[t]
            torch.ge(acc, test.at_least, out=settle)  # 0/1
            if test.negative is not None:
                low, high = test.negative
                settle.add_(torch.ge(acc, low, out=torch.empty_like(acc)).mul_(
                    torch.le(acc, high, out=torch.empty_like(acc))))
            # END (y_max < 0) and settling (y_min > 0) exclude each other: stop is 0/1
            torch.lt(acc, k.end_value[t], out=stop).add_(settle)
            if midpoint:
                acc = torch.addcmul(acc, settle, test.midpoint, out=candidate)
            value.lerp_(acc, stop)
            executed.lerp_(acc.new_tensor(float(t + 1)), stop)
        return value, executed

    # ---- events ------------------------------------------------------------------------------
    def count(self, k: CompKernel, executed: Tensor) -> tuple[Events, int]:
        """Events and busiest-array OU cycles of a batch, from each output's executed cycles
        `executed` (N, positions, Cout), integer-valued (any real or integer dtype)."""
        mapped = k.mapped
        hw, layer = mapped.hw, mapped.layer
        n = int(executed.shape[0])
        passes = layer.passes
        e = executed if executed.is_floating_point() else executed.to(torch.float32)
        per_channel_cols = hw.polarities * hw.slices
        total_e = int(e.sum(dtype=torch.float64))
        conversions = passes * k.row_groups_total * per_channel_cols * total_e
        # A column group runs while any of its channels does: max of their executed cycles
        # (a group's channels are a few consecutive ones: a max over shifted column slices).
        e_group = k.group_max(e)  # (N, P, groups)
        group_cycles = e_group.sum(dim=1, dtype=torch.float64)  # (N, groups)
        active_groups = int(group_cycles.sum())
        cells = int((group_cycles.sum(dim=0) * k.group_width).sum())
        per_tile = torch.zeros((n, k.col_tiles), dtype=torch.float64, device=e.device)
        per_tile.index_add_(1, k.group_tile, group_cycles)
        busiest = int(per_tile.amax(dim=1).sum())  # per image: its busiest column tile
        checks = int(e.clamp(max=hw.cycles - 1).sum(dtype=torch.float64))
        events = Events(
            ou_activations=passes * k.row_groups_total * active_groups,
            adc_conversions=conversions,
            dac_activations=passes * layer.rows * active_groups,
            cell_reads=passes * layer.rows * cells,
            shift_adds=conversions,
            comparisons=checks * (2 if k.alpha is not None else 1),
            lut_reads=checks,
        )
        return events, passes * k.row_groups_max * busiest

    # ---- storage -----------------------------------------------------------------------------
    def storage(self, mapped: MappedLayer) -> Storage:
        """LUT: 2 entries (P_c, N_c) per output channel; comparators: one per OU column group
        (two with alpha), time-shared by the outputs whose columns the group holds."""
        layer, hw = mapped.layer, mapped.hw
        if not layer.followed_by_relu:
            return Storage()
        width = self.lut_entry_bits or hw.numbers.weight_bits + math.ceil(
            math.log2(max(layer.rows, 2)))
        groups = sum(math.ceil((c1 - c0) / hw.ou.cols) for c0, c1 in mapped.col_tiles)
        per_group = 2 if self.layer_alpha(layer.name) is not None else 1
        return Storage(lut_bits=2 * layer.out_channels * width, comparators=groups * per_group)


def _check_alpha(alpha: AlphaSpec) -> None:
    values = list(alpha.values()) if isinstance(alpha, Mapping) else [alpha]
    for v in values:
        if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise SparsexbarError(f"comprrae alpha must be a number >= 0 or None, got {v!r}")
