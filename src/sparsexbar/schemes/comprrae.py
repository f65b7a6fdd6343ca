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
from typing import Any

import torch
from torch import Tensor

from ..config import HardwareConfig
from ..cost import Storage
from ..engine import FLOAT32_EXACT, EngineOptions, LayerKernel, accumulate
from ..errors import SparsexbarError
from ..events import Events
from ..frontend import QuantLayer
from ..mapping import MappedLayer, dense_events, map_dense
from .base import LayerRun, Scheme

AlphaSpec = float | Mapping[str, float | None] | None
ESTIMATES = ("midpoint", "running")
BOUNDS = ("output",)


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
        self.float32_ok = device.type == "cpu" and col_abs * (2**dac - 1) < FLOAT32_EXACT
        dtype = torch.float32 if self.float32_ok else torch.float64
        self.weight = layer.weight_int.to(device=device, dtype=dtype)
        # Weights pre-scaled by each cycle's shift (a power of two: products stay exact, and
        # every partial sum is a multiple of 2^shift below 2^24 x 2^shift, so float32 is exact).
        self.cycle_weights = [self.weight * float(2**sh) for sh in self.shifts]
        self._thresholds(layer, 2 * col_abs * layer.input_max + 2, device)
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
        # Chunks of about 2^17 outputs: the per-cycle bookkeeping then stays in cache, and
        # small convolutions are no slower per image than big ones.
        per_image = layer.positions * layer.out_channels
        chunk = max(1, min(2**17 // per_image,
                           int(options.memory_budget_mb * 2**20 // (per_image * 64))))
        outs: list[Tensor] = []
        events = Events()
        cycles = 0
        for a in range(0, n, chunk):  # chunks of images (memory bound)
            out, executed = self.terminate(kernel, x_int[a : a + chunk])
            ev, cyc = self.count(kernel, executed)
            outs.append(out)
            events = events + ev
            cycles += cyc
        dense, _ = dense_events(kernel.mapped, n)
        events.buffer_read_bytes = dense.buffer_read_bytes
        events.buffer_write_bytes = dense.buffer_write_bytes
        events.digital_ops = dense.digital_ops
        return LayerRun(torch.cat(outs), events, cycles)

    # ---- values ------------------------------------------------------------------------------
    def trace(self, k: CompKernel, x_int: Tensor) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        """MSB-first cycles: (t, running sum A, y_min, y_max) after each cycle t, all float64
        accumulators of the layer's output shape; after the last cycle y_min = y_max = A."""
        acc: Tensor | None = None
        for t, part in enumerate(self._parts(k, x_int)):
            if part is None:
                if acc is None:
                    acc = torch.zeros(self._out_shape(k, x_int), dtype=torch.float64,
                                      device=x_int.device)
            else:
                acc = part.to(torch.float64) if acc is None else acc + part
            rem = k.remaining[t]
            yield t, acc, acc + k.down * rem, acc + k.up * rem

    @staticmethod
    def _out_shape(k: CompKernel, x_int: Tensor) -> tuple[int, ...]:
        return (int(x_int.shape[0]), *k.mapped.layer.output_shape)

    def _parts(self, k: CompKernel, x_int: Tensor) -> Iterator[Tensor | None]:
        """Each cycle's exact contribution W . chunk_t x 2^shift_t, MSB first (float32/64);
        None for an all-zero chunk (never the last one)."""
        layer = k.mapped.layer
        mask = 2**k.mapped.hw.dac.bits - 1
        # Narrow integers: the per-cycle shifts then move 1 byte per input (8-bit inputs).
        mag = x_int.abs().to(torch.uint8 if layer.input_max < 256 else torch.int32)
        sign = torch.sign(x_int).to(k.weight.dtype) if layer.input_signed else None
        for t, shift in enumerate(k.shifts):  # input cycles, MSB first
            bits = (mag >> shift) & mask
            if t < len(k.shifts) - 1 and not bool(bits.any()):
                yield None  # an all-zero chunk (common in the high bits) adds nothing
                continue
            piece = bits.to(k.weight.dtype)
            if sign is not None:
                piece = piece * sign
            part = layer.linear_op(piece, k.cycle_weights[t])
            if not k.float32_ok:  # float64 path (CUDA, or huge columns): integers, rounded
                part = torch.round(part)
            yield part

    def terminate(self, k: CompKernel, x_int: Tensor) -> tuple[Tensor, Tensor]:
        """MSB-first execution with the checks: (accumulator float64, executed cycles int8).

        Both have the layer's output shape (N, Cout[, Ho, Wo]); executed in [1, cycles]. The
        comparisons use the integer thresholds of `CompKernel._thresholds`, equivalent to
        dequantize(y_max) < 0 and dequantize(y_min) > 0.
        """
        last = k.mapped.hw.cycles - 1
        acc = out = alive = executed = None
        for t, part in enumerate(self._parts(k, x_int)):
            if acc is None:
                acc = (torch.zeros(self._out_shape(k, x_int), dtype=torch.float64,
                                   device=x_int.device) if part is None
                       else part.to(torch.float64))
                out = torch.empty_like(acc)
                alive = torch.ones(acc.shape, dtype=torch.bool, device=acc.device)
                executed = torch.ones(acc.shape, dtype=torch.int8, device=acc.device)
            elif part is not None:
                acc.add_(part)
            if t == last:
                break
            assert out is not None and alive is not None and executed is not None
            stop = (acc < k.end_thr[t]) & alive  # early negative detection: ReLU gives 0
            value = acc
            if k.alpha is not None:
                settle = ((acc >= k.settle_thr[t]) & (k.range[t] <= k.alpha * acc.abs())
                          & alive & ~stop)
                if self.estimate == "midpoint":
                    value = torch.where(settle, acc + k.mid_offset[t], acc)
                stop = stop | settle
            out = torch.where(stop, value, out)
            alive &= ~stop
            executed.add_(alive)
        assert acc is not None and out is not None and alive is not None
        assert executed is not None
        return torch.where(alive, acc, out), executed

    # ---- events ------------------------------------------------------------------------------
    def count(self, k: CompKernel, executed: Tensor) -> tuple[Events, int]:
        """Events and busiest-array OU cycles of a batch, from each output's executed cycles."""
        mapped = k.mapped
        hw, layer = mapped.hw, mapped.layer
        n = int(executed.shape[0])
        passes = layer.passes
        e = executed.reshape(n, layer.out_channels, -1)  # (N, Cout, P)
        per_channel_cols = hw.polarities * hw.slices
        total_e = int(e.sum())
        conversions = passes * k.row_groups_total * per_channel_cols * total_e
        # A column group runs while any of its channels does: max of their executed cycles.
        e_group = e[:, k.group_channels, :].amax(dim=2).to(torch.float64)  # (N, groups, P)
        group_cycles = e_group.sum(dim=2)  # (N, groups)
        active_groups = int(group_cycles.sum())
        cells = int((group_cycles.sum(dim=0) * k.group_width).sum())
        per_tile = torch.zeros((n, k.col_tiles), dtype=torch.float64, device=e.device)
        per_tile.index_add_(1, k.group_tile, group_cycles)
        busiest = int(per_tile.amax(dim=1).sum())  # per image: its busiest column tile
        checks = int(e.clamp(max=hw.cycles - 1).sum())
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
