"""`LayerKernel`: the per-layer state of the bit-accurate path (grouped conductances, combine
matrices, the clip plan, group sums and gathers, built on first use) and its `accumulate`,
which cuts a call's images into tasks on the worker threads and runs each pass through the
conversion paths (paths.py); `accumulate()` takes the exact shortcut where it is lossless."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import cached_property

import torch
from torch import Tensor

from ..config import Variation
from ..mapping import MappedLayer, gather_group_levels
from .exact import FLOAT32_EXACT, exact_accumulate, exact_accumulator, exact_int8_op
from .gather import GroupSums, RowGather
from .noise import NormalTable, Stream, column_mix, stream_salt
from .options import EngineOptions
from .paths import clip_corrections, full_conversions
from .plan import PARALLEL_TASKS, ClipPlan, build_clip_plan, images_per_chunk, task_spans
from .pool import run_tasks

PARALLEL_MIN_SUMS = 2**15  # fewer (image, position, group) bounds per call: one worker
CLIP_TASKS_ONE_THREAD = 2  # clip path, one thread: tasks (image halves) run one by one


class LayerKernel:
    """Per-layer state of the bit-accurate path: grouped conductances and combine matrices."""

    def __init__(self, mapped: MappedLayer, device: torch.device) -> None:
        self.mapped = mapped
        self.device = device
        hw = mapped.hw
        s, g, ou = mapped.group_rows.shape
        k = mapped.segment_cols.shape[1]
        self.shape = (s, g, ou, k)
        self.cycle_weight = torch.tensor(
            [float(2 ** (t * hw.dac.bits)) for t in range(hw.cycles)], dtype=torch.float64,
            device=device,
        )
        self.exact_linear = mapped.exact_linear()
        self.max_partial_sum = mapped.max_partial_sum()
        self.seed = hw.device.seed * 7_919 + zlib.crc32(mapped.layer.name.encode())
        self.calls = 0
        self._gathers: dict[tuple[str, tuple[int, ...]], RowGather] = {}

    # The tensors of the per-conversion paths are built on first use: layers that take the
    # exact shortcut never pay for them (memory and set-up time).
    @cached_property
    def group_levels(self) -> Tensor:
        """(S*G, ou, K) float32 programmed conductances (levels, with device effects) of every
        OU row group."""
        s, g, ou, k = self.shape
        lv = gather_group_levels(self.mapped.conductance.cpu(), self.mapped.group_rows.cpu(),
                                  self.mapped.segment_cols.cpu())
        return lv.reshape(s * g, ou, k).to(self.device)

    @cached_property
    def combine(self) -> Tensor:
        """(Ccols+1, Cout) float64: physical column -> output channel, with its shift and sign;
        the last row (padding column) maps to nothing."""
        mapped = self.mapped
        ccols = mapped.physical_cols
        combine = torch.zeros((ccols + 1, mapped.layer.out_channels), dtype=torch.float64)
        combine[torch.arange(ccols), mapped.col_channel.cpu()] = mapped.col_weight.cpu()
        return combine.to(self.device)

    @cached_property
    def col_index(self) -> Tensor:
        """(S*K,) physical column of every segment column; padding -> Ccols."""
        ccols = self.mapped.physical_cols
        cols = self.mapped.segment_cols.reshape(-1).cpu()
        return torch.where(cols < 0, torch.full_like(cols, ccols), cols).to(self.device)

    @cached_property
    def clip_plan(self) -> ClipPlan:
        """The (group, column) pairs that can clip: level sum x largest chunk > ADC top."""
        return build_clip_plan(self.mapped, self.shape, self.device)

    @cached_property
    def clip_sums(self) -> GroupSums:
        """Per (position, clippable group): sum of chunk x the row's largest clippable level."""
        plan = self.clip_plan
        return GroupSums(self.mapped.layer, plan.rows.cpu(), plan.row_bound.cpu(), self.device)

    @cached_property
    def clip_packing(self) -> tuple[int, int]:
        """(base, cycles per call) of `paths.clip_bounds`: base the power of two above the
        largest bound (the chunk's largest value x a group's row bounds), and as many cycles
        per call as keep every packed sum below the group sums' exact range."""
        plan = self.clip_plan
        chunk_max = 2**self.mapped.hw.dac.bits - 1
        sums = plan.row_bound.sum(dim=1) if plan.row_bound.numel() else plan.row_bound.new_zeros(1)
        largest = int(round(float(sums.max()))) * chunk_max
        base = 1 << max(1, largest.bit_length())
        exact = FLOAT32_EXACT if self.clip_sums.dtype == torch.float32 else 2**53
        per_call = 1
        while base ** (per_call + 1) <= exact:
            per_call += 1
        return base, per_call

    @cached_property
    def active_sums(self) -> GroupSums:
        """Per (position, group): the number of real rows (weight 1) with a nonzero chunk."""
        s, g, ou, _ = self.shape
        rows = self.mapped.group_rows.reshape(s * g, ou).cpu()
        return GroupSums(self.mapped.layer, rows, (rows >= 0).to(torch.float32), self.device)

    def gather(self, kind: str, input_shape: tuple[int, ...]) -> RowGather:
        """The row gather of the clip plan's groups ("clip") or of all groups ("all")."""
        key = (kind, input_shape)
        if key not in self._gathers:
            s, g, ou, _ = self.shape
            rows = (self.clip_plan.rows if kind == "clip"
                    else self.mapped.group_rows.reshape(s * g, ou))
            self._gathers[key] = RowGather(self.mapped.layer, rows.cpu(), input_shape,
                                           self.device)
        return self._gathers[key]

    def images_per_chunk(self, input_shape: tuple[int, ...], budget_mb: float) -> int:
        """Images per chunk so one chunk's per-image intermediates fit the memory budget
        (`plan.images_per_chunk`)."""
        return images_per_chunk(self, input_shape, budget_mb)

    @property
    def clip_path(self) -> bool:
        """True when only clipping changes a conversion: ideal device and unit ADC step."""
        hw = self.mapped.hw
        return hw.device.ideal and hw.adc.step == 1.0

    @property
    def deviation_only(self) -> bool:
        """True when accumulated deviation is the only device effect (ideal cells, no read
        noise) and the ADC step is 1: conversions are then exact but for clipping and the
        rare ones whose noise reaches half a level (`_tail_events`)."""
        dev, hw = self.mapped.hw.device, self.mapped.hw
        ideal_cells = dev.variation == Variation.none or dev.variation_sigma == 0
        return (hw.adc.step == 1.0 and dev.accumulated_deviation_sigma > 0 and ideal_cells
                and dev.read_noise_sigma == 0 and dev.stuck_total_rate == 0)

    def accumulate(self, x_int: Tensor, options: EngineOptions) -> Tensor:
        """Integer input (N, ...) -> accumulator (N, Cout[, Ho, Wo]) float64, bit-accurately.

        Ideal device and unit step: the exact integer result plus ADC(p) - p of every
        conversion that clips (clip path). Accumulated deviation only (`deviation_only`): the
        same, plus the change of every conversion whose noise moves it (full path, tiers).
        Otherwise: the conversions of every OU group with an active row (full path; a group
        with no active row reads 0).

        The images are cut into tasks (`task_spans`) that run side by side on CPU threads
        (`run_tasks`, on `options.pool` when given). The full path's noise is counter-based
        (`noise.py`: a function of the device seed, layer, call, pass, cycle, image, position,
        OU group and column), so it runs one task per thread, and results do not depend on
        the number of threads, tasks or slices. The tail events of accumulated deviation draw
        from a generator per task, seeded by the device seed, the layer, the call and the
        task: that path keeps PARALLEL_TASKS tasks whatever the thread count. A layer with
        little work runs on one thread.
        """
        layer = self.mapped.layer
        x = x_int.to(self.device)
        n = int(x.shape[0])
        input_shape = tuple(int(v) for v in x.shape[1:])
        if layer.kind == "linear":
            x = x.reshape(n, -1)
            input_shape = (int(x.shape[1]),)
        threads = options.threads or torch.get_num_threads()
        on_cpu = x.device.type == "cpu"
        positions = layer.positions
        s_g = self.shape[0] * self.shape[1]
        groups = int(self.clip_plan.groups.numel()) if self.clip_path else s_g
        if on_cpu and n * positions * groups < PARALLEL_MIN_SUMS:
            # Too little work for a second thread (hand-offs, OpenMP spinning): one thread.
            threads = 1
        if not self.deviation_only:
            # No per-task random stream (the clip path draws nothing, the full path's draws
            # are counter-based): one task per worker, as every task repeats its cycles' and
            # width buckets' set-up operations; two halves on one thread (smaller
            # intermediates: ~3% faster than one task for the clip path, VGG-8).
            tasks = min(PARALLEL_TASKS, threads if threads > 1 else CLIP_TASKS_ONE_THREAD)
            if not on_cpu or n * positions * groups < PARALLEL_MIN_SUMS:
                tasks = 1
        else:
            tasks = PARALLEL_TASKS  # the tail events' random streams are those of the tasks
        spans = self.task_spans(n, input_shape, options.memory_budget_mb, tasks)
        task_budget = options.memory_budget_mb / tasks
        call = self.calls
        self.calls += 1
        noisy = not self.mapped.hw.device.ideal
        exact_base = self.mapped.hw.device.ideal or self.deviation_only
        parts: list[tuple[Callable[[Tensor], Tensor], float]] = [(lambda v: v.clamp(min=0), 1.0)]
        if layer.input_signed:
            parts.append((lambda v: (-v).clamp(min=0), -1.0))
        # Zeroed by the tasks: an operation of the calling thread on two intra-op threads
        # would leave its OpenMP thread spinning beside the workers for milliseconds.
        out = torch.empty((n, layer.out_channels, positions), dtype=torch.float64,
                          device=x.device)
        self._prepare(input_shape)  # cached tensors are built once, before the threads

        def task(i: int) -> None:
            a, b = spans[i]
            out[a:b].zero_()
            gen: torch.Generator | None = None
            if self.deviation_only:  # the tail events draw from the task's generator
                gen = torch.Generator(device=x.device)
                gen.manual_seed(self.seed + 104_729 * call + 1_299_709 * i)
            for j, (select, sign) in enumerate(parts):  # one or two passes
                part = select(x[a:b])
                if self.clip_path or self.deviation_only:
                    clip_corrections(self, part, input_shape, sign, out[a:b], task_budget)
                if not self.clip_path:
                    stream = Stream(stream_salt(self.seed, call, j), a * positions) \
                        if noisy else None
                    full_conversions(self, part, input_shape, sign, out[a:b], task_budget,
                                     gen, stream, options.compiled_noise)
            if exact_base:  # the corrections above are deviations from the exact sum
                out[a:b] += exact_accumulate(layer, x_int[a:b].to(self.device)).reshape(
                    b - a, layer.out_channels, positions)

        workers = min(threads, len(spans), PARALLEL_TASKS) if on_cpu else 1
        pool = options.pool.executor(workers) if options.pool is not None else None
        run_tasks(len(spans), task, workers, threads, pool)
        if layer.kind == "linear":
            return out[:, :, 0]
        _, ho, wo = layer.output_shape
        return out.reshape(n, layer.out_channels, ho, wo)

    def task_spans(self, n: int, input_shape: tuple[int, ...], budget_mb: float,
                   tasks: int = PARALLEL_TASKS) -> list[tuple[int, int]]:
        """[a, b) image ranges of the tasks of a call (`plan.task_spans`)."""
        return task_spans(self, n, input_shape, budget_mb, tasks)

    def _prepare(self, input_shape: tuple[int, ...]) -> None:
        """Build the cached per-layer tensors the paths use (not thread-safe to build)."""
        if self.clip_path or self.deviation_only:
            _ = (self.clip_plan, self.clip_sums, self.clip_packing,
                 self.gather("clip", input_shape))
            # the exact base's int8 convolution (engine/exact.py), cached in the layer
            exact_int8_op(self.mapped.layer, self.device)
        if not self.clip_path:
            _ = (self.group_levels, self.active_sums, self.col_index, self.combine,
                 self.gather("all", input_shape))
            if not self.mapped.hw.device.ideal:  # the draws' tables
                _ = (NormalTable.on(self.device), column_mix(self.shape[3], self.device))


def accumulate(kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> Tensor:
    """The layer's accumulator: exact shortcut when provably lossless, else bit-accurate."""
    if options.exact_shortcut and kernel.exact_linear:
        return exact_accumulator(kernel.mapped.layer, x_int)
    return kernel.accumulate(x_int, options)
