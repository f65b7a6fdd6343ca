"""Engine: bit-serial, OU-granular execution of a mapped layer with the ADC and device model.

For every input chunk (cycle) t, segment s, OU row group g and column k, the partial sum is
    p = sum over the group's rows of conductance[row, col] * chunk_t[row]
and the ADC returns clamp(round(p / step), 0, 2^bits - 1) * step (DESIGN.md 2.3). Shift-and-add
combines cycles (x 2^(t*dac_bits)), slices and polarities (x +-2^(s*cell_bits)), then the
offset of the `offset` encoding is removed digitally.

Three paths, all vectorized torch, the same code on CPU and CUDA:

1. Exact shortcut: when the conversions are provably the identity (ideal device, unit step, no
   reachable partial sum above the ADC range) the layer is one integer convolution, done in
   float32 with the input split into bit pieces small enough that every partial sum stays
   below 2^24 (float32 arithmetic is then exact).
2. Clip path (ideal device, unit step, an ADC that can clip): the exact result plus
   ADC(p) - p = -(p - top) for every conversion with p > top. Statically, only the (group,
   column) pairs whose level sum times the largest input chunk exceeds `top` can clip; per
   (cycle, position, group) a bound (sum over the group's rows of chunk x the row's largest
   level over those columns) picks candidates, which evaluate those columns only. The bound
   comes from depthwise convolutions on the chunk image (no im2col); candidates gather their
   rows from the image.
3. Full path (non-ideal device, or a step other than 1): every OU group with an active input
   row is converted in every column, with read noise and accumulated deviation drawn per
   conversion; groups with no active row read 0 and are skipped. With accumulated deviation
   as the only device effect, the clip path runs and the full path adds ADC(p + e) - ADC(p):
   in full for groups whose noise often reaches half a level, else only at the conversions
   it reaches (an exact Poisson-process draw, `_tail_events`).

Candidates are processed in blocks of one OU group, one batched matmul per block set; loops
run over image chunks (memory bound), passes, cycles, candidate slices and width buckets only.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import Variation
from .frontend import QuantLayer
from .mapping import MappedLayer, _gather_group_levels

FLOAT32_EXACT = 2**24
MAX_BLOCK = 1024  # candidates of one OU group evaluated together by one batched matmul
BLOCK_FACTOR = 2.0  # block size ~ sqrt(BLOCK_FACTOR x candidates per group): see Packed.of
PARALLEL_TASKS = 4  # paths that draw noise cut a call's images into at least this many
# tasks (thread pool); the exact clip path into one per worker, up to this many
PARALLEL_MIN_SUMS = 2**15  # fewer (image, position, group) bounds per call: one worker
CLIP_TASKS_ONE_THREAD = 2  # clip path, one thread: tasks (image halves) run one by one
SLOTS_LOOPED = 4  # up to this many depthwise filters per input channel: one conv each
SLICE_OUTPUTS = 2**18  # partial sums evaluated per candidate slice (1 MiB of float32)
BUCKET_SPREAD = 1.6  # widest / narrowest clippable-column count of the groups of one bucket
# (fewer buckets, fewer operations; 1.6 was 3-4% faster than 1.25 on VGG-8, 1 and 2 threads)
TAIL_DENSE = 0.03  # accumulated deviation: groups whose conversions move with this probability
# or more are converted in full; the others only where the noise reaches half a level
TAIL_POINTS = 2**20  # tail-event points handled per slice (memory bound)


class TaskPool:
    """Worker threads kept across calls and shared by the layers of a run (simulate's
    executor makes one). Fresh threads per call pay for their first torch operations again
    (VGG-8 lossy, 2 threads: 231 -> 207 ms per batch with kept threads); one pool for all
    layers keeps one allocator arena per worker (a pool per layer kept 16 and raised the peak
    RSS of the noisy case from 0.8 to 1.3 GiB). Idle workers are blocked and use no CPU."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._workers = 0

    def executor(self, workers: int) -> ThreadPoolExecutor | None:
        """The pool's executor of `workers` threads; None for one worker (no thread)."""
        if workers <= 1:
            return None
        if self._executor is None or self._workers != workers:
            self.close()
            self._executor = ThreadPoolExecutor(max_workers=workers,
                                                thread_name_prefix="sparsexbar-task")
            self._workers = workers
        return self._executor

    def close(self) -> None:
        """Let the workers exit (a later call starts new ones)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor, self._workers = None, 0


@dataclass(frozen=True)
class EngineOptions:
    """Run-time knobs of the engine (not hardware)."""

    memory_budget_mb: float = 512.0  # bound on the big intermediates of all tasks in flight, MiB
    exact_shortcut: bool = True  # skip per-group conversion where provably lossless
    # CPU threads of the per-conversion paths (None: torch.get_num_threads()). They run image
    # tasks side by side, each task single-threaded; results do not depend on this number.
    threads: int | None = None
    # Workers shared by the layers of a run (None: each call starts its own threads).
    pool: TaskPool | None = field(default=None, compare=False, repr=False)


def run_tasks(count: int, task: Callable[[int], None], workers: int, threads: int,
              pool: ThreadPoolExecutor | None = None) -> None:
    """Run task(0) ... task(count - 1), `workers` at a time on a thread pool (torch operations
    release the GIL), each worker's torch operations on threads // workers intra-op threads.

    `pool`: an executor of `workers` threads kept by the caller across calls (`TaskPool`);
    None: a pool for this call only. torch's intra-op thread count is process-wide:
    it is set for the workers and restored when all tasks are done. Gradient and inference
    modes are thread-local: the caller's are used.
    """
    outer = torch.get_num_threads()
    if workers <= 1 or count <= 1:
        torch.set_num_threads(threads)
        try:
            for i in range(count):  # tasks: a handful of image chunks
                task(i)
        finally:
            torch.set_num_threads(outer)
        return
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    inner = max(1, threads // workers)

    def run(i: int) -> None:
        torch.set_num_threads(inner)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            task(i)

    own = pool is None
    executor = ThreadPoolExecutor(max_workers=workers) if pool is None else pool
    try:
        for future in [executor.submit(run, i) for i in range(count)]:
            future.result()  # re-raises a task's exception
    finally:
        if own:
            executor.shutdown()
        torch.set_num_threads(outer)


def exact_accumulate(layer: QuantLayer, x_int: Tensor) -> Tensor:
    """sum_r W[r, c] * x[r] exactly, via float32 linear ops on bit pieces of |x|; float64 out."""
    if x_int.device.type != "cpu":
        # cuDNN may pick TF32, Winograd or FFT algorithms, which are not exact: use float64.
        return layer.reference_accumulate(x_int).to(torch.float64)
    w = layer.weight_int.to(x_int.device)
    col_abs_sum = float(w.reshape(w.shape[0], -1).abs().sum(dim=1).max()) if w.numel() else 0.0
    x_max = float(x_int.abs().max()) if x_int.numel() else 0.0
    wf = w.to(torch.float32)
    if col_abs_sum * x_max < FLOAT32_EXACT:
        return layer.linear_op(x_int.to(torch.float32), wf).to(torch.float64)
    piece_bits = max(1, int(math.floor(math.log2(FLOAT32_EXACT / max(col_abs_sum, 1.0) + 1))))
    while col_abs_sum * (2**piece_bits - 1) >= FLOAT32_EXACT and piece_bits > 1:
        piece_bits -= 1
    if col_abs_sum * (2**piece_bits - 1) >= FLOAT32_EXACT:  # a single weight column too large
        return layer.reference_accumulate(x_int).to(torch.float64)
    mag = x_int.abs().to(torch.int64)
    sign = torch.sign(x_int).to(torch.float32)
    total_bits = max(1, int(x_max).bit_length())
    acc: Tensor | None = None
    for j in range(math.ceil(total_bits / piece_bits)):  # 2 pieces for 8-bit inputs
        piece = ((mag >> (j * piece_bits)) & (2**piece_bits - 1)).to(torch.float32) * sign
        part = layer.linear_op(piece, wf).to(torch.float64) * float(2 ** (j * piece_bits))
        acc = part if acc is None else acc + part
    assert acc is not None
    return acc


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU (direct convolutions of small integers are exact); float64 elsewhere
    (cuDNN may pick TF32, Winograd or FFT algorithms)."""
    return torch.float32 if device.type == "cpu" else torch.float64


class GroupSums:
    """s[n, b, pos] = sum_j weight[b, j] * x[n, rows[b, j] at output position pos]: a weighted
    sum of every OU row group's inputs at every output position, without im2col.

    Conv layers: the rows of a group are cut into pieces by input channel; every piece is a
    depthwise filter, and the filters of one input channel get distinct slots (pieces of one
    channel in different groups). Slot j of every channel is one depthwise convolution
    (groups = Cin), its outputs added into their groups with index_add. Linear layers: a
    gather of the group rows. Values are small integers: exact in float32 on CPU.
    """

    def __init__(self, layer: QuantLayer, rows: Tensor, weight: Tensor,
                 device: torch.device) -> None:
        self.layer = layer
        self.device = device
        self.dtype = _exact_dtype(device)
        self.groups = int(rows.shape[0])
        rows = rows.cpu()
        weight = weight.cpu().to(torch.float64)
        if layer.kind == "linear":
            r = layer.rows
            self.conv_maps = int(rows.numel())  # the gathered (groups x ou) inputs
            self.rows_padded = torch.where(rows < 0, torch.full_like(rows, r), rows).to(device)
            self.weight = weight.to(device=device, dtype=self.dtype)
            return
        cin = int(layer.weight_int.shape[1])
        kh, kw = layer.kernel_size
        kk = kh * kw
        b_count = self.groups
        valid = (rows >= 0) & (weight != 0)
        b_idx, j_idx = valid.nonzero(as_tuple=True)
        row = rows[b_idx, j_idx]
        chan, tap = torch.div(row, kk, rounding_mode="floor"), row % kk
        key = chan * b_count + b_idx  # pieces sorted by channel, then group
        uniq, inverse = torch.unique(key, return_inverse=True)
        piece_chan = torch.div(uniq, b_count, rounding_mode="floor")
        piece_group = uniq % b_count
        counts = torch.bincount(piece_chan, minlength=cin)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(uniq.numel()) - first[piece_chan]
        self.slots = max(1, int(counts.max())) if counts.numel() else 1
        filters = torch.zeros((self.slots, cin, kk), dtype=torch.float64)
        filters[slot[inverse], chan, tap] = weight[b_idx, j_idx]
        target = torch.full((self.slots, cin), b_count, dtype=torch.int64)  # b_count: dump
        target[slot, piece_chan] = piece_group
        self.cin = cin
        self.conv_maps = cin * (1 if self.slots <= SLOTS_LOOPED else self.slots)
        if self.slots <= SLOTS_LOOPED:
            self.filters = [filters[j].reshape(cin, 1, kh, kw).to(device=device, dtype=self.dtype)
                            for j in range(self.slots)]
            self.targets = [target[j].to(device) for j in range(self.slots)]
        else:  # one depthwise convolution with `slots` filters per channel (channel-major)
            self.filters = [filters.permute(1, 0, 2).reshape(cin * self.slots, 1, kh, kw).to(
                device=device, dtype=self.dtype)]
            self.targets = [target.t().reshape(-1).to(device)]

    def __call__(self, x: Tensor) -> Tensor:
        """x: (N, Cin, H, W) or (N, R) -> (N, groups, positions) in `self.dtype`."""
        layer = self.layer
        n = int(x.shape[0])
        x = x.to(self.dtype)
        if layer.kind == "linear":
            xp = F.pad(x.reshape(n, -1), (0, 1))  # padding row -> 0
            return (xp[:, self.rows_padded] * self.weight).sum(dim=2).unsqueeze(2)
        out: Tensor | None = None
        for filt, target in zip(self.filters, self.targets, strict=True):  # <= 4 slots
            y = F.conv2d(x, filt, None, layer.stride, layer.padding, layer.dilation,
                         groups=self.cin)
            y = y.reshape(n, y.shape[1], -1)
            if out is None:
                out = torch.zeros((n, self.groups + 1, y.shape[2]), dtype=self.dtype,
                                  device=x.device)
            out.index_add_(1, target, y)
        assert out is not None
        return out[:, : self.groups]


class RowGather:
    """Flat indices of the rows of an OU group at an output position, in a flattened, padded
    input chunk: the value of row j of group b at (image n, position pos) is
    flat[n * image_stride + position_base[pos] + row_offset[b, j]]. `flat` ends with one
    image of zeros: a padding slot's base (`tail`) reads zeros there. Padding rows (-1) read
    offset 0 and must meet a zero level."""

    def __init__(self, layer: QuantLayer, rows: Tensor, input_shape: tuple[int, ...],
                 device: torch.device) -> None:
        self.layer = layer
        rows = rows.clamp(min=0)
        if layer.kind == "linear":
            self.image_stride = int(layer.rows)
            self.position_base = torch.zeros(1, dtype=torch.int64, device=device)
            self.row_offset = rows.to(device)
            self.row_offset32 = self.row_offset.to(torch.int32)
            self.pad: tuple[int, int, int, int] = (0, 0, 0, 0)
            return
        cin, h, w = (int(v) for v in input_shape)
        kh, kw = layer.kernel_size
        ph, pw = layer.padding
        sh, sw = layer.stride
        dh, dw = layer.dilation
        hp, wp = h + 2 * ph, w + 2 * pw
        ho = (hp - dh * (kh - 1) - 1) // sh + 1
        wo = (wp - dw * (kw - 1) - 1) // sw + 1
        chan = torch.div(rows, kh * kw, rounding_mode="floor")
        tap = rows % (kh * kw)
        i, j = torch.div(tap, kw, rounding_mode="floor"), tap % kw
        self.row_offset = (chan * hp * wp + i * dh * wp + j * dw).to(device)
        oy = torch.arange(ho).view(-1, 1)
        ox = torch.arange(wo).view(1, -1)
        self.position_base = (oy * sh * wp + ox * sw).reshape(-1).to(device)
        self.image_stride = cin * hp * wp
        self.pad = (pw, pw, ph, ph)
        self.row_offset32 = self.row_offset.to(torch.int32)

    def flat(self, x: Tensor) -> Tensor:
        """A chunk of inputs (N, ...) -> its padded, flattened float32 copy + one zero image."""
        n = int(x.shape[0])
        out = torch.zeros((n + 1) * self.image_stride, dtype=torch.float32, device=x.device)
        if self.layer.kind == "linear":
            out[: n * self.image_stride] = x.reshape(-1)
        else:  # the image inside its zero border, written in place (no padded copy)
            pw, _, ph, _ = self.pad
            c, h, w = (int(v) for v in x.shape[1:])
            padded = out.view(n + 1, c, h + 2 * ph, w + 2 * pw)
            padded[:n, :, ph : ph + h, pw : pw + w] = x
        return out

    def position_bases(self, n: int) -> Tensor:
        """(n * P,) flat index of every (image, position)'s first row, for a chunk of n; int32
        (half the memory traffic of the gathers) when the chunk's flat copy allows it."""
        images = torch.arange(n, device=self.position_base.device).unsqueeze(1)
        bases = (images * self.image_stride + self.position_base.unsqueeze(0)).reshape(-1)
        return bases.to(torch.int32) if (n + 1) * self.image_stride < 2**31 else bases

    def packed_values(self, flat: Tensor, base: Tensor, block_group: Tensor) -> Tensor:
        """(blocks, size) slot bases, (blocks,) group of each block -> (blocks, size, ou)."""
        offsets = self.row_offset32 if base.dtype == torch.int32 else self.row_offset
        index = base.unsqueeze(2) + offsets.index_select(0, block_group).unsqueeze(1)
        return flat.index_select(0, index.reshape(-1)).reshape(index.shape)


@dataclass
class Packed:
    """Candidates (sorted by group) packed into blocks of `size` slots of one group each:
    candidate i sits in flat slot `slot[i]` = block x size + place in the block."""

    slot: Tensor  # (n,) flat slot of each candidate
    block_group: Tensor  # (blocks,) group of each block
    size_bits: int  # slots per block: 2^size_bits

    @property
    def size(self) -> int:
        return 1 << self.size_bits

    @classmethod
    def of(cls, group: Tensor, n_groups: int, max_size: int = MAX_BLOCK) -> Packed:
        """Pack a whole candidate list (all the candidates of a cycle and width bucket).

        A group of c candidates takes ceil(c / size) blocks: padding costs about size / 2
        slots per group, and every block copies its group's levels. `size` is the power of two
        nearest to sqrt(BLOCK_FACTOR x mean c over the present groups), which balances the two,
        at most `max_size` (a candidate slice) and MAX_BLOCK."""
        n = int(group.numel())
        counts = torch.bincount(group, minlength=n_groups)
        present = max(1, int((counts > 0).sum()))
        ideal = math.sqrt(BLOCK_FACTOR * max(1.0, n / present))
        size_bits = max(0, min(round(math.log2(ideal)), MAX_BLOCK.bit_length() - 1,
                               max(1, max_size).bit_length() - 1))
        size = 1 << size_bits
        start = torch.cumsum(counts, 0) - counts
        per_group = (counts + size - 1) >> size_bits
        first_slot = (torch.cumsum(per_group, 0) - per_group) << size_bits
        # slot = first slot of the group + rank of the candidate within its group
        slot = torch.arange(n, device=group.device) + (first_slot - start).index_select(0, group)
        block_group = torch.repeat_interleave(torch.arange(n_groups, device=group.device),
                                              per_group)
        return cls(slot, block_group, size_bits)

    def block_slices(self, max_slots: int) -> list[tuple[int, int]]:
        """[b0, b1) ranges of blocks of at most max_slots slots (at least one block) each."""
        step = max(1, max_slots >> self.size_bits)
        return [(b0, min(b0 + step, self.blocks)) for b0 in range(0, self.blocks, step)]

    @property
    def blocks(self) -> int:
        return int(self.block_group.numel())

    def spread(self, values: Tensor, fill: int | float) -> Tensor:
        """(n,) per-candidate values -> (blocks, size), `fill` in the padding slots."""
        out = torch.full((self.blocks * self.size,), fill, dtype=values.dtype,
                         device=values.device)
        out.index_copy_(0, self.slot, values)
        return out.view(self.blocks, self.size)


@dataclass
class ClipPlan:
    """Static facts of the clip path: the OU groups with a column that can clip (B' of them),
    ordered by their number of clippable columns, in buckets of similar widths."""

    groups: Tensor  # (B',) flat (segment * G + group) index
    rows: Tensor  # (B', ou) row indices, -1 padding
    levels: Tensor  # (B', ou, W) float32 levels of the clippable columns (0: padding)
    channel: Tensor  # (B', W) int64 output channel of each clippable column (0 for padding)
    col_weight: Tensor  # (B', W) float64 signed shift weight (0 for padding)
    row_bound: Tensor  # (B', ou) float32 largest level of the row over the clippable columns
    bucket_start: list[int]  # first group of each width bucket, and B' at the end
    bucket_width: list[int]  # columns evaluated for the groups of each bucket


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
        lv = _gather_group_levels(self.mapped.conductance.cpu(), self.mapped.group_rows.cpu(),
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
        mapped = self.mapped
        hw = mapped.hw
        s, g, ou, k = self.shape
        top = hw.adc_max_code
        chunk_max = 2**hw.dac.bits - 1
        # Static facts, built on the CPU (the mapping's tensors may live on the device).
        group_rows, segment_cols = mapped.group_rows.cpu(), mapped.segment_cols.cpu()
        col_channel, col_weight = mapped.col_channel.cpu(), mapped.col_weight.cpu()
        lv = _gather_group_levels(mapped.levels.cpu().to(torch.int32), group_rows,
                                  segment_cols).reshape(s * g, ou, k)
        can_clip = lv.sum(dim=1) * chunk_max > top  # (S*G, K)
        count = can_clip.sum(dim=1)
        # Groups with a clippable column, by their number of clippable columns.
        order = torch.sort(count, stable=True).indices
        groups = order[count[order] > 0]
        width = max(1, int(count.max())) if groups.numel() else 1
        # Per group: its clippable columns first (in column order), then padding.
        cols = torch.sort((~can_clip[groups]).to(torch.int8), dim=1, stable=True).indices
        cols = cols[:, :width]
        live = torch.gather(can_clip[groups], 1, cols)  # (B', W)
        levels = torch.gather(lv[groups], 2, cols.unsqueeze(1).expand(-1, ou, -1))
        levels = levels * live.unsqueeze(1)
        seg = torch.div(groups, g, rounding_mode="floor")
        phys = torch.gather(segment_cols[seg], 1, cols).clamp(min=0)
        channel = torch.where(live, col_channel[phys], torch.zeros_like(phys))
        weight = torch.where(live, col_weight[phys], torch.zeros((), dtype=torch.float64))
        # Width buckets: a group joins the current bucket while its width is at most
        # BUCKET_SPREAD x the bucket's first width (evaluated columns padded by < 3/8).
        starts: list[int] = []
        widths: list[int] = []
        first_width = 0
        for i, w in enumerate(count[groups].tolist()):  # walks B' ints once (set-up only)
            if not starts or w > BUCKET_SPREAD * first_width:
                starts.append(i)
                widths.append(w)
                first_width = w
            widths[-1] = w
        dev = self.device
        return ClipPlan(groups.to(dev), group_rows.reshape(s * g, ou)[groups].to(dev),
                        levels.to(device=dev, dtype=torch.float32), channel.to(dev),
                        weight.to(dev),
                        levels.amax(dim=2).to(device=dev, dtype=torch.float32)
                        if groups.numel() else torch.zeros((0, ou), device=dev),
                        [*starts, int(groups.numel())], widths)

    @cached_property
    def clip_sums(self) -> GroupSums:
        """Per (position, clippable group): sum of chunk x the row's largest clippable level."""
        plan = self.clip_plan
        return GroupSums(self.mapped.layer, plan.rows.cpu(), plan.row_bound.cpu(), self.device)

    @cached_property
    def active_sums(self) -> GroupSums:
        """Per (position, group): the number of real rows (weight 1) with a nonzero chunk."""
        s, g, ou, _ = self.shape
        rows = self.mapped.group_rows.reshape(s * g, ou).cpu()
        return GroupSums(self.mapped.layer, rows, (rows >= 0).to(torch.float32), self.device)

    def _gather(self, kind: str, input_shape: tuple[int, ...]) -> RowGather:
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
        """Images per chunk so one chunk's per-image intermediates fit the memory budget:
        the input, its chunk image and padded copy, the group sums, the depthwise outputs and
        (full path) the per-column sums, in bytes."""
        s, g, ou, k = self.shape
        layer = self.mapped.layer
        positions = layer.positions
        numel = math.prod(input_shape) if input_shape else layer.rows
        sums = [self.clip_sums] if self.clip_path or self.deviation_only else []
        if not self.clip_path:
            sums.append(self.active_sums)
        # One depthwise convolution's output: Cin x (slots it holds) maps per image.
        conv_maps = max(group_sums.conv_maps for group_sums in sums) if sums else 0
        per_image = 4 * 4 * numel + 4 * 3 * (s * g + 1) * positions + 4 * conv_maps * positions
        if not self.clip_path:
            per_image += 8 * positions * (s * k + self.mapped.physical_cols + 1)
        return max(1, int(budget_mb * 2**20 // per_image))

    def chunk_rows(self, budget_mb: float) -> int:
        """Output positions per chunk (whole images x positions), for callers that chunk by
        positions; the input shape is the one recorded at calibration."""
        layer = self.mapped.layer
        shape = tuple(int(v) for v in layer.input_shape) or (layer.rows,)
        if layer.kind == "linear":
            shape = (layer.rows,)
        return self.images_per_chunk(shape, budget_mb) * layer.positions

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
        (`run_tasks`, on `options.pool` when given); each task draws its noise from its own
        generator, seeded by the device seed, the layer, the call and the task, so results do
        not depend on the number of threads. The exact clip path draws nothing: one task per
        thread. A layer with little work runs on one thread.
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
        if self.clip_path:
            # Exact (no random streams; integer sums in float64): one task per worker, as
            # every task repeats its cycles' and width buckets' set-up operations; two halves
            # on one thread (smaller intermediates: ~3% faster than one task, VGG-8).
            tasks = min(PARALLEL_TASKS, threads if threads > 1 else CLIP_TASKS_ONE_THREAD)
            if not on_cpu or n * positions * groups < PARALLEL_MIN_SUMS:
                tasks = 1
        else:
            tasks = PARALLEL_TASKS  # the random streams are those of the tasks
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
            if noisy:
                gen = torch.Generator(device=x.device)
                gen.manual_seed(self.seed + 104_729 * call + 1_299_709 * i)
            for select, sign in parts:  # one or two passes
                part = select(x[a:b])
                if self.clip_path or self.deviation_only:
                    self._clip_corrections(part, input_shape, sign, out[a:b], task_budget)
                if not self.clip_path:
                    self._full_conversions(part, input_shape, sign, out[a:b], task_budget, gen)
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
        """[a, b) image ranges of the tasks of a call: at least `tasks` (when there are as
        many images), each within budget / tasks, so that up to `tasks` run at once within the
        budget; near-equal sizes. Paths that draw noise pass PARALLEL_TASKS, never a number
        that depends on the thread count: the random streams are those of the tasks."""
        per_task = self.images_per_chunk(input_shape, budget_mb / tasks)
        count = max(min(n, tasks), math.ceil(n / per_task))
        edges = [round(i * n / count) for i in range(count + 1)]
        return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]

    def _prepare(self, input_shape: tuple[int, ...]) -> None:
        """Build the cached per-layer tensors the paths use (not thread-safe to build)."""
        if self.clip_path or self.deviation_only:
            _ = self.clip_plan, self.clip_sums, self._gather("clip", input_shape)
        if not self.clip_path:
            _ = (self.group_levels, self.active_sums, self.col_index, self.combine,
                 self._gather("all", input_shape))

    def _cycles(self, part: Tensor) -> Iterator[tuple[int, Tensor]]:
        """(cycle, chunk image as int32) of every cycle whose chunk is not all zero."""
        hw = self.mapped.hw
        dac_bits = hw.dac.bits
        xi = part.to(torch.int32)
        top_value = int(xi.max()) if xi.numel() else 0
        for t in range(hw.cycles):  # a handful of cycles
            if top_value >> (t * dac_bits) == 0:
                break  # this and every later cycle's chunk is 0 everywhere
            yield t, (xi >> (t * dac_bits)) & (2**dac_bits - 1)

    @staticmethod
    def _candidate_slice(width: int, per_candidate_bytes: int, budget_mb: float) -> int:
        """Candidates per slice: about SLICE_OUTPUTS partial sums (small tensors stay in the
        allocator's cache and the CPU caches), within the memory budget."""
        by_budget = int(budget_mb * 2**20 // per_candidate_bytes)
        return max(1, min(by_budget, max(MAX_BLOCK, SLICE_OUTPUTS // max(1, width))))

    # ---- clip path -------------------------------------------------------------------------
    def _clip_corrections(self, part: Tensor, input_shape: tuple[int, ...], sign: float,
                          out: Tensor, budget_mb: float) -> None:
        """Add sign x shift x (ADC(p) - p) of every clipping conversion of one task's pass
        into out (n, Cout, P) float64."""
        plan = self.clip_plan
        n_groups = int(plan.groups.numel())
        if n_groups == 0:
            return
        top = float(self.mapped.hw.adc_max_code)
        ou = self.shape[2]
        cout, positions = int(out.shape[1]), int(out.shape[2])
        gather = self._gather("clip", input_shape)
        out_flat = out.view(-1)
        n_img = int(part.shape[0])
        per_group = n_img * positions
        first = torch.tensor(plan.bucket_start, dtype=torch.int64, device=part.device)
        bases = gather.position_bases(n_img)  # (n*P,) input offset of every position
        zero_image = n_img * gather.image_stride  # padding slots read the zero image
        targets = (torch.arange(n_img, device=part.device).unsqueeze(1) * (cout * positions)
                   + torch.arange(positions, device=part.device)).reshape(-1)
        for t, chunk_img in self._cycles(part):
            chunk_f = chunk_img.to(torch.float32)
            bound = self.clip_sums(chunk_f)  # (n, B', P)
            # bound is an integer; > top + 0.5 is robust to any rounding below 0.5.
            mask = (bound > top + 0.5).transpose(0, 1).reshape(n_groups, per_group)
            cand_group, cand_pos = mask.nonzero(as_tuple=True)  # sorted by group
            if cand_group.numel() == 0:
                continue
            flat = gather.flat(chunk_f)
            # Candidates are sorted by group, so each width bucket is one contiguous range.
            edges = torch.searchsorted(cand_group, first).tolist()
            scale = -float(self.cycle_weight[t]) * sign
            for bk, width in enumerate(plan.bucket_width):  # width buckets: a handful
                lo, hi = edges[bk], edges[bk + 1]
                if hi == lo:
                    continue
                per_candidate = 4 * (ou * 3 + width * 4) + 64
                slice_size = self._candidate_slice(width, per_candidate, budget_mb)
                pos = cand_pos[lo:hi]
                pk = Packed.of(cand_group[lo:hi], n_groups, slice_size)
                base = pk.spread(bases.index_select(0, pos), zero_image)  # (blocks, size)
                slot_target = pk.spread(targets.index_select(0, pos), 0)
                levels = plan.levels[:, :, :width]
                channel = plan.channel[:, :width] * positions
                weight = plan.col_weight[:, :width] * scale
                for b0, b1 in pk.block_slices(slice_size):  # candidate slices
                    bg = pk.block_group[b0:b1]
                    xg = gather.packed_values(flat, base[b0:b1], bg)  # (blocks, size, ou)
                    p = torch.bmm(xg, levels.index_select(0, bg))  # (blocks, size, width)
                    hit_slot, hit_col = (p.view(-1, width) > top).nonzero(as_tuple=True)
                    if hit_slot.numel() == 0:
                        continue
                    # Flat indices (cheaper than multi-dimensional advanced indexing).
                    column = (hit_slot >> pk.size_bits) * width + hit_col
                    target = slot_target[b0:b1].reshape(-1).index_select(0, hit_slot)
                    target += channel.index_select(0, bg).view(-1).index_select(0, column)
                    excess = p.view(-1).index_select(0, hit_slot * width + hit_col).sub_(top)
                    excess *= weight.index_select(0, bg).view(-1).index_select(0, column)
                    out_flat.index_add_(0, target, excess.to(torch.float64))

    # ---- full path -------------------------------------------------------------------------
    def _full_conversions(self, part: Tensor, input_shape: tuple[int, ...], sign: float,
                          out: Tensor, budget_mb: float, gen: torch.Generator | None) -> None:
        """Add sign x (sum of conversion results) of one task's pass into out (n, Cout, P):
        ADC(p) with the device effects (non-ideal), ADC(p) - p (ideal, step != 1), or, with
        accumulated deviation only, ADC(p + e) - ADC(p) (the clip path adds ADC(p) - p)."""
        mapped = self.mapped
        hw, layer = mapped.hw, mapped.layer
        s, g, ou, k = self.shape
        ideal, deviation_only = hw.device.ideal, self.deviation_only
        sigma = hw.device.accumulated_deviation_sigma
        step, top = hw.adc.step, float(hw.adc_max_code)
        n_img = int(part.shape[0])
        positions = layer.positions
        per_group = n_img * positions
        gather = self._gather("all", input_shape)
        levels = self.group_levels
        # The conversion results are multiples of step: with a power-of-two step their sums are
        # exact in float32 while below 2^24 (bound: the largest |value| x shifts x groups).
        largest = max(self.max_partial_sum, top * step) * 2
        max_term = largest * float(self.cycle_weight.sum()) * g
        exact32 = math.log2(step).is_integer() and max_term / min(step, 1.0) < FLOAT32_EXACT
        acc_dtype = torch.float32 if exact32 else torch.float64
        dump = per_group * s  # padding slots add into this last row
        col_sums = torch.zeros((dump + 1, k), dtype=acc_dtype, device=part.device)
        per_candidate = 4 * (ou * 3 + k * 8) + 64
        slice_size = self._candidate_slice(k, per_candidate, budget_mb)
        bases = gather.position_bases(n_img)  # (n*P,) input offset of every position
        zero_image = n_img * gather.image_stride  # padding slots read the zero image
        segment = torch.div(torch.arange(s * g, device=part.device), g, rounding_mode="floor")
        for t, chunk_img in self._cycles(part):
            shift = float(self.cycle_weight[t])
            active = self.active_sums((chunk_img != 0).to(torch.float32))  # (n, S*G, P)
            counts = active.transpose(0, 1).reshape(s * g, per_group)
            cand_group, cand_pos = (counts > 0.5).nonzero(as_tuple=True)  # sorted by group
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
                self._tail_events(cand_group[sparse], cand_pos[sparse], std[sparse],
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
            for b0, b1 in pk.block_slices(slice_size):  # candidate slices
                bg = pk.block_group[b0:b1]
                xg = gather.packed_values(flat, base[b0:b1], bg)  # padding rows: level 0
                p = torch.bmm(xg, levels.index_select(0, bg))  # (blocks, size, K)
                if gen is None:  # ideal device, step != 1: the deviation ADC(p) - p
                    value = torch.div(p, step).round_().clamp_(0, top).mul_(step).sub_(p)
                else:
                    value = self._noisy_conversions(p, slot_active[b0:b1].unsqueeze(2), gen)
                    if deviation_only:
                        value.sub_(p.clamp_(max=top))
                col_sums.index_add_(0, rows[b0:b1].reshape(-1), value.to(acc_dtype).view(-1, k),
                                    alpha=shift)
        per_col = col_sums[:-1].to(torch.float64).reshape(per_group, s * k)
        phys = torch.zeros((per_group, mapped.physical_cols + 1), dtype=torch.float64,
                           device=part.device)
        phys.index_add_(1, self.col_index, per_col)
        acc = phys @ self.combine  # (n*P, Cout)
        if mapped.offset and not ideal and not deviation_only:
            acc -= float(mapped.offset) * self._window_sums(part).reshape(-1, 1)
        out += sign * acc.reshape(n_img, positions, -1).transpose(1, 2)

    def _noisy_conversions(self, p: Tensor, active: Tensor, gen: torch.Generator) -> Tensor:
        """ADC(p + e) of every partial sum p (blocks, size, K), e Gaussian with standard
        deviation sqrt((read_noise_sigma x p)^2 + (accumulated_deviation_sigma x active)^2)
        (independent read noise and accumulated deviation, one draw with the summed
        variance); `active` (blocks, size, 1): the group's active rows. A new tensor."""
        hw = self.mapped.hw
        dev = hw.device
        step, top = hw.adc.step, float(hw.adc_max_code)
        read, accumulated = dev.read_noise_sigma, dev.accumulated_deviation_sigma
        if read > 0 or accumulated > 0:  # e = std x z, z standard normal; fused passes
            z = torch.empty_like(p).normal_(generator=gen)
            if read > 0 and accumulated > 0:
                var = torch.addcmul((active * accumulated).square_(), p, p, value=read * read)
                value = torch.addcmul(p, z, var.sqrt_())
            elif read > 0:
                value = torch.addcmul(p, p, z, value=read)  # p + read x p x z
            else:
                value = torch.addcmul(p, z, active, value=accumulated)
        else:  # programmed variation and stuck cells only: no draw
            value = p.clone()
        if step != 1.0:
            value.div_(step).round_().clamp_(0, top).mul_(step)
        else:
            value.round_().clamp_(0, top)
        return value

    def _tail_events(self, grp: Tensor, pos: Tensor, std: Tensor, tail: Tensor, flat: Tensor,
                     bases: Tensor, gather: RowGather, col_sums: Tensor, segment: Tensor,
                     shift: float, gen: torch.Generator) -> None:
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
        s, g, ou, k = self.shape
        top = float(self.mapped.hw.adc_max_code)
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
            lv = self.group_levels.view(-1).index_select(
                0, ((cg * (ou * k) + col).unsqueeze(1) + rows_k).reshape(-1))
            p = (xg * lv).view(-1, ou).sum(dim=1).to(torch.float64)
            q = torch.clamp(p + torch.round(e), 0, top) - p.clamp(max=top)
            rows = cp * s + segment.index_select(0, cg)
            col_sums.view(-1).index_add_(0, rows * k + col, q.to(col_sums.dtype), alpha=shift)

    def _window_sums(self, part: Tensor) -> Tensor:
        """(n, P) float64: sum of the inputs of every output position (offset removal)."""
        layer = self.mapped.layer
        n = int(part.shape[0])
        if layer.kind == "linear":
            return part.reshape(n, -1).to(torch.float64).sum(dim=1, keepdim=True)
        ones = torch.ones((1, *layer.weight_int.shape[1:]), dtype=torch.float64,
                          device=part.device)
        return layer.linear_op(part.to(torch.float64), ones).reshape(n, -1)


def accumulate(kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> Tensor:
    """The layer's accumulator: exact shortcut when provably lossless, else bit-accurate."""
    if options.exact_shortcut and kernel.exact_linear:
        return exact_accumulate(kernel.mapped.layer, x_int)
    return kernel.accumulate(x_int, options)
