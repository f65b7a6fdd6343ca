"""`CompRRAEScheme`: the comprrae scheme (its parameters, termination, values and events) and
`build_comprrae` (its text options, a calibration file)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...core.config import BitOrder, HardwareConfig
from ...core.cost import Storage
from ...core.engine import EngineOptions, LayerKernel, accumulate, exact_accumulate
from ...core.errors import SparsexbarError, parse_failure
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, dense_events, map_dense
from ..base import Counted, LayerRun, Scheme, layer_listing, refuse_grouped
from ..counting import narrow_magnitudes
from .kernel import CompKernel, slice_major

AlphaSpec = float | Mapping[str, float | None] | None


BetaSpec = float | Mapping[str, float | None] | None


RemainingMean = Mapping[str, Sequence[float]] | None


ESTIMATES = ("midpoint", "running", "expected")


BOUNDS = ("output", "slice")


# What `sparsexbar calibrate comprrae` calibrates (a calibration file's "estimator").
ESTIMATORS = ("alpha", "beta")

# A calibration file's per-layer tables and the scheme arguments they give.
TABLES = (("alphas", "alpha"), ("betas", "beta"), ("remaining_mean", "remaining_mean"))


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
        # The file's tables the scheme uses ({table name: {layer: value}}), checked against
        # the model's layers before any layer is mapped (`check_model`); set with
        # `calibration` by `build_comprrae`.
        self.file_tables: dict[str, Mapping[str, Any]] = {}
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

    def overridden(self, hw: HardwareConfig) -> dict[str, str]:
        if hw.numbers.bit_order != BitOrder.msb_first:
            return {"numbers.bit_order": "msb_first (comprrae's bounds need it)"}
        return {}

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
        refuse_grouped("comprrae", layer, "its per-cycle running sums, bounds and skipped "
                       "conversions are counted per column tile of a groups=1 layer")
        mapped = map_dense(layer, hw)
        if layer.followed_by_relu and not mapped.exact_linear():
            why = ("the device is not ideal" if not hw.device.ideal
                   else f"adc.step={hw.adc.step} is not 1" if hw.adc.step != 1.0
                   else f"partial sums up to {mapped.max_partial_sum():g} exceed the "
                   f"{mapped.hw.adc_bits}-bit ADC range")
            raise SparsexbarError(
                f"comprrae needs a lossless ADC for now: layer '{layer.name}': {why}")
        if layer.followed_by_relu and self.bounds == "slice":
            return slice_major(mapped)
        return mapped

    def check_model(self, layers: Sequence[QuantLayer]) -> None:
        """Refuse per-layer values of another model. A calibration file's tables must name the
        model's comprrae layers (those followed by ReLU) and only those, and its alpha and beta
        tables every one of them (`calibrate comprrae` writes null for a layer without a
        value). Per-layer mappings given in Python (alpha, beta, remaining_mean) may leave
        layers out (None: exact there) but must not name a layer the model lacks or one
        comprrae does not check: a misspelt name would silently run exact."""
        if self.file_tables:
            where = f"comprrae calibration '{self.calibration}'"
            hint = "calibrated for another model?"
            tables: Mapping[str, Mapping[str, Any]] = self.file_tables
        else:
            where, hint = "comprrae", "a misspelt or another model's layer?"
            tables = {key: value for key, value in (("alpha", self.alpha), ("beta", self.beta),
                                                    ("remaining_mean", self.remaining_mean))
                      if isinstance(value, Mapping)}
        if not tables:
            return
        known = {layer.name: layer.followed_by_relu for layer in layers}
        relu = [name for name, checked in known.items() if checked]
        listed = f"the model's comprrae layers (followed by ReLU): {layer_listing(relu)}"
        for table, values in tables.items():
            unknown = [name for name in values if name not in known]
            if unknown:
                extra = len(unknown) - 1
                more = f" (and {extra} more unknown name{'s' if extra > 1 else ''})" \
                    if extra else ""
                raise SparsexbarError(f"{where}: '{table}' names layer '{unknown[0]}'{more} but "
                                      f"the model has no layer '{unknown[0]}' ({hint}); "
                                      f"{listed}")
            unchecked = [name for name in values if not known[name]]
            if unchecked:
                raise SparsexbarError(f"{where}: '{table}' names layer '{unchecked[0]}', which "
                                      "is not followed by ReLU (comprrae checks none of its "
                                      f"outputs; {hint}); {listed}")
        if not self.file_tables:
            return
        for table, values in tables.items():
            if table == "remaining_mean" or not values:
                continue  # missing layers: 0 (`layer_remaining_mean`)
            missing = [name for name in relu if name not in values]
            if missing:
                raise SparsexbarError(f"{where}: '{table}' has no entry for layer "
                                      f"'{missing[0]}' ({hint}); {listed}")

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        name = mapped.layer.name
        return CompKernel(mapped, device, self.layer_alpha(name), self.bounds,
                          self.layer_beta(name), self.layer_remaining_mean(name))

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        if not isinstance(kernel, CompKernel) or not kernel.checked:
            acc = accumulate(kernel, x_int, options)
            return self.dense_run(kernel.mapped, acc, int(x_int.shape[0]))
        layer = kernel.mapped.layer
        n = int(x_int.shape[0])
        chunk = self.images_per_chunk(kernel, options)
        out = self.value_output(kernel, n, x_int.device)
        events = Events()
        cycles = 0
        time_ns = 0.0
        for a in range(0, n, chunk):  # chunks of images (memory bound)
            value, executed = self.terminate_rows(kernel, x_int[a : a + chunk])
            m = int(executed.shape[0]) // layer.positions
            ev, cyc, ns = self.count(kernel, executed.view(m, layer.positions, -1))
            out[a : a + m] = layer.fold_output(value, m)  # rows in out's own layout
            events = events + ev
            cycles += cyc
            time_ns += ns
        dense, _ = dense_events(kernel.mapped, n)
        events.buffer_read_bytes = dense.buffer_read_bytes
        events.buffer_write_bytes = dense.buffer_write_bytes
        events.digital_ops = dense.digital_ops + events.digital_ops  # + predictive thresholds
        return LayerRun(out, events, cycles, time_ns)

    def images_per_chunk(self, k: CompKernel, options: EngineOptions) -> int:
        """Images per `terminate_rows` call: about `chunk_outputs` outputs (fewer, larger
        convolutions, state in cache) within the memory budget (~64 bytes per output)."""
        layer = k.mapped.layer
        per_image = layer.positions * layer.out_channels
        return max(1, min(self.chunk_outputs // per_image,
                          int(options.memory_budget_mb * 2**20 // (per_image * 64))))

    @staticmethod
    def value_output(k: CompKernel, n: int, device: torch.device) -> Tensor:
        """The layer's output for n images, for `terminate_rows`'s values chunk by chunk:
        the rows' dtype (exact: see CompKernel) and, for convolutions, their channels-last
        layout, so each chunk's rows are copied in order, with no transposition."""
        layer = k.mapped.layer
        return torch.empty((n, *layer.output_shape), dtype=k.value_dtype, device=device,
                           memory_format=(torch.channels_last if layer.kind == "conv"
                                          else torch.contiguous_format))

    # ---- values ------------------------------------------------------------------------------
    # Values are kept as (positions, Cout) rows: the per-channel thresholds then broadcast
    # along the contiguous dimension (vectorized), and the int8 backend's channels-last output
    # is already in that layout.
    def trace(self, k: CompKernel, x_int: Tensor) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        """MSB-first steps: (step, running sum A, y_min, y_max) after each step, all float64
        accumulators of the layer's output shape; after the last step y_min = y_max = A."""
        mags = narrow_magnitudes(k.mapped.layer, x_int)
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
        return k.mapped.layer.fold_output(rows, n).to(torch.float64).contiguous()

    @staticmethod
    def _part(k: CompKernel, mags: Sequence[Tensor], t: int, trunc: bool) -> Tensor:
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
    def _low_parts(k: CompKernel, mags: Sequence[Tensor], t: int) -> Tensor:
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

    def _running_sum(self, k: CompKernel, mags: Sequence[Tensor], t: int) -> Tensor:
        """A_t = W . trunc_t(x) as (positions, Cout) rows in `k.value_dtype`."""
        if k.direct:
            return self._part(k, mags, t, trunc=True)
        acc = self._part(k, mags, 0, trunc=False).to(torch.float64)
        for earlier in range(1, t + 1):  # input cycles: a handful
            acc += self._part(k, mags, earlier, trunc=False)
        return acc

    @staticmethod
    def _exact_result(k: CompKernel, mags: Sequence[Tensor], x_int: Tensor) -> Tensor:
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

    def _sums_last_to_first(self, k: CompKernel, mags: Sequence[Tensor],
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

    def _steps_last_to_first(self, k: CompKernel, mags: Sequence[Tensor],
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
        value, executed = self.terminate_rows(k, x_int)
        n = int(x_int.shape[0])
        layer = k.mapped.layer
        executed = executed.to(torch.int8 if k.steps <= 127 else torch.int16)
        if layer.kind == "linear":
            return value.to(torch.float64), executed
        return self._fold(k, value, n), layer.fold_output(executed, n).contiguous()

    def terminate_rows(self, k: CompKernel, x_int: Tensor) -> tuple[Tensor, Tensor]:
        """(value, executed steps) as (positions, Cout) rows in `k.value_dtype` (the layout
        of a channels-last conv output).

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
        sums = self._steps_last_to_first(k, narrow_magnitudes(k.mapped.layer, x_int), x_int)
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
        sums = self._steps_last_to_first(k, narrow_magnitudes(k.mapped.layer, x_int), x_int)
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
    def count(self, k: CompKernel, executed: Tensor) -> Counted:
        """Events, and per image the busiest array's OU cycles and time, of a batch, from each
        output's executed steps `executed` (N, positions, Cout), integer-valued (any real or
        integer dtype). An OU activation converts its group's live columns (`live_columns`):
        its time and ADC rounds follow (the timing rule)."""
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
        # time and ADC rounds of every activation, from its live columns
        # Both depend on an activation's live-column count only (0 .. ou.cols): count, per
        # (image, group), the activations with each count (one bincount per cycle), then
        # weigh the histogram by the tables.
        # Where every converting activation takes one time T and its rounds are its
        # conversions or 1 (`TimingShape`), time = T x activations and rounds follow from the
        # sums above, with no histogram.
        timing = self.timing(mapped)
        shape = timing.shape(hw.ou.cols)
        if shape.time_ns is not None and shape.rounds != "table":
            group_ns = group_cycles * shape.time_ns
            rounds = float(active_groups if shape.rounds == "one"
                           else per_step_cols * total_e)  # conversions per row group, pass
        else:
            time_table, round_table = timing.table(hw.ou.cols, e.device)
            values = hw.ou.cols + 1
            groups = k.column_groups()
            slot = ((torch.arange(n, device=e.device).view(n, 1, 1) * groups
                     + torch.arange(groups, device=e.device).view(1, 1, groups)) * values).to(
                torch.int32)
            hist = torch.zeros(n * groups * values, dtype=torch.float64, device=e.device)
            for live in k.live_columns(e):  # input cycles: a handful
                hist += torch.bincount((live + slot).view(-1), minlength=hist.numel())
            hist = hist.view(n, groups, values)
            group_ns = hist @ time_table  # (N, groups)
            rounds = float((hist.sum(dim=(0, 1)) * round_table).sum())
        tile_ns = torch.zeros((n, k.col_tiles), dtype=torch.float64, device=e.device)
        tile_ns.index_add_(1, k.group_tile, group_ns)
        busiest_ns = float(tile_ns.amax(dim=1).sum()) if n else 0.0
        checks = int(e.clamp(max=k.steps - 1).sum(dtype=torch.float64))
        events = Events(
            ou_activations=passes * k.row_groups_total * active_groups,
            adc_conversions=conversions,
            adc_rounds=passes * k.row_groups_total * int(round(rounds)),
            dac_activations=passes * layer.rows * active_groups,
            cell_reads=passes * layer.rows * cells,
            shift_adds=conversions,
            comparisons=checks * (2 if k.alpha is not None else 1),
            lut_reads=checks,
            digital_ops=checks if k.beta is not None else 0,
        )
        return Counted(events, passes * k.row_groups_max * busiest,
                       passes * k.row_groups_max * busiest_ns)

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
        if v is not None and (isinstance(v, bool) or not (isinstance(v, int | float)
                                                           and math.isfinite(v) and v >= 0)):
            raise SparsexbarError(f"comprrae alpha must be a number >= 0 or None, got {v!r}")


def _check_beta(beta: BetaSpec) -> None:
    values = list(beta.values()) if isinstance(beta, Mapping) else [beta]
    for v in values:
        if v is not None and (isinstance(v, bool)
                              or not (isinstance(v, int | float) and 0 <= v <= 1)):
            raise SparsexbarError(f"comprrae beta must be a number in [0, 1] or None, got {v!r}")


def load_calibration(path: str | Path) -> dict[str, Any]:
    """alpha / beta / remaining_mean from a `sparsexbar calibrate comprrae` JSON file.

    Refused, naming the file: an "estimator" other than alpha or beta, an estimator whose
    table is missing or empty, a file whose tables are all empty, a table that is not an
    object of layer names, a value out of range (alpha: a number >= 0, beta: in [0, 1], null:
    none; remaining_mean: a list of numbers). Its layer names are checked against the
    model's before any layer is mapped (`CompRRAEScheme.check_model`)."""
    file = Path(path)
    where = f"comprrae calibration '{path}'"
    try:
        saved = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise SparsexbarError(f"cannot read {where}: {parse_failure(exc)}") from None
    if not isinstance(saved, dict):
        raise SparsexbarError(f"{where} is not a JSON object")
    out: dict[str, Any] = {}
    for key, name in TABLES:
        if key in saved:
            if not isinstance(saved[key], dict):
                raise SparsexbarError(f"{where}: '{key}' must map layer names to values")
            for layer, value in saved[key].items():
                _check_file_value(where, key, layer, value)
            out[name] = saved[key]
    if not out:
        raise SparsexbarError(f"{where} has no alphas, betas or remaining_mean")
    estimator = saved.get("estimator")
    if "estimator" in saved and estimator not in ESTIMATORS:
        raise SparsexbarError(f"{where}: unknown estimator {estimator!r} (known: "
                              f"{', '.join(ESTIMATORS)})")
    if estimator is not None:
        table = f"{estimator}s"
        if not saved.get(table):
            raise SparsexbarError(f"{where}: estimator '{estimator}' but "
                                  f"{'an empty' if table in saved else 'no'} '{table}' table "
                                  "(it names no layer)")
    elif not any(out.values()):
        present = [key for key, _ in TABLES if key in saved]
        raise SparsexbarError(f"{where}: {' and '.join(repr(k) for k in present)} "
                              f"{'is' if len(present) == 1 else 'are'} empty (no layer)")
    return out


def _check_file_value(where: str, table: str, layer: Any, value: Any) -> None:
    """One entry of a calibration file's table, refused naming the file, table and layer."""
    number = isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)
    if table == "alphas":
        ok, want = value is None or (number and value >= 0), "a number >= 0 or null"
    elif table == "betas":
        ok, want = value is None or (number and 0 <= value <= 1), "a number in [0, 1] or null"
    else:
        ok = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        want = "a list of numbers"
    if not ok:
        raise SparsexbarError(f"{where}: {table}['{layer}'] must be {want}, got {value!r}")


def build_comprrae(**given: Any) -> CompRRAEScheme:
    """The scheme from parsed text options: `calibration` (a `sparsexbar calibrate comprrae`
    file: its per-layer alphas or betas and remaining_mean), then alpha, beta, bounds and
    estimate as given (alpha or beta given beside a file replace the file's). The file's
    tables the scheme uses are checked against the model's layers when it maps them."""
    calibration = given.pop("calibration", None)
    kwargs: dict[str, Any] = load_calibration(calibration) if calibration is not None else {}
    from_file = {key: kwargs[name] for key, name in TABLES
                 if name in kwargs and name not in given}
    kwargs.update(given)
    scheme = CompRRAEScheme(**kwargs)
    if calibration is not None:
        scheme.calibration = str(calibration)
        scheme.calibration_overrides = tuple(k for k in ("alpha", "beta") if k in given)
        scheme.file_tables = from_file
    return scheme
