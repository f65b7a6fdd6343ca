"""Chunk planning: how a call's work is cut so that memory stays bounded and batched
operations stay large. Images into tasks and chunks (`task_spans`, `images_per_chunk`), the
clip path's static plan (`ClipPlan`: which OU groups can clip, in width buckets), and
candidates into slices and blocks of one OU group (`candidate_slice`, `Packed`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..mapping import MappedLayer, gather_group_levels

if TYPE_CHECKING:  # annotations only: the kernel builds its plans from here
    from .kernel import LayerKernel

MAX_BLOCK = 1024  # candidates of one OU group evaluated together by one batched matmul
BLOCK_FACTOR = 2.0  # block size ~ sqrt(BLOCK_FACTOR x candidates per group): see Packed.of
PARALLEL_TASKS = 4  # the tail events (per-task random streams) cut a call's images into at
# least this many tasks (thread pool); the other paths into one per worker, up to this many
SLICE_OUTPUTS = 2**19  # partial sums evaluated per candidate slice (2 MiB of float32; 2^18
# before the noisy path's compiled kernel: with it, 2^19 took 0.92-0.96x the time of the noisy
# case on one thread and 0.88-0.98x on two, the clip path unchanged, docs/benchmarks.md part 14)
BUCKET_SPREAD = 1.6  # widest / narrowest clippable-column count of the groups of one bucket
# (fewer buckets, fewer operations; 1.6 was 3-4% faster than 1.25 on VGG-8, 1 and 2 threads)


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
    def of(cls, group: Tensor, n_groups: int, max_size: int = MAX_BLOCK,
           min_size: int = 1) -> Packed:
        """Pack a whole candidate list (all the candidates of a cycle and width bucket).

        A group of c candidates takes ceil(c / size) blocks: padding costs about size / 2
        slots per group, and every block copies its group's levels. `size` is the power of two
        nearest to sqrt(BLOCK_FACTOR x mean c over the present groups), which balances the two,
        at least `min_size` (rounded down to a power of two), at most `max_size` (a candidate
        slice) and MAX_BLOCK."""
        n = int(group.numel())
        counts = torch.bincount(group, minlength=n_groups)
        present = max(1, int((counts > 0).sum()))
        ideal = math.sqrt(BLOCK_FACTOR * max(1.0, n / present))
        size_bits = max(0, min(max(round(math.log2(ideal)), min_size.bit_length() - 1),
                               MAX_BLOCK.bit_length() - 1, max(1, max_size).bit_length() - 1))
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


def build_clip_plan(mapped: MappedLayer, shape: tuple[int, int, int, int],
                    device: torch.device) -> ClipPlan:
    """The (group, column) pairs that can clip: level sum x largest chunk > ADC top."""
    hw = mapped.hw
    s, g, ou, k = shape
    top = hw.adc_max_code
    chunk_max = 2**hw.dac.bits - 1
    # Static facts, built on the CPU (the mapping's tensors may live on the device).
    group_rows, segment_cols = mapped.group_rows.cpu(), mapped.segment_cols.cpu()
    col_channel, col_weight = mapped.col_channel.cpu(), mapped.col_weight.cpu()
    lv = gather_group_levels(mapped.levels.cpu().to(torch.int32), group_rows,
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
    dev = device
    return ClipPlan(groups.to(dev), group_rows.reshape(s * g, ou)[groups].to(dev),
                    levels.to(device=dev, dtype=torch.float32), channel.to(dev),
                    weight.to(dev),
                    levels.amax(dim=2).to(device=dev, dtype=torch.float32)
                    if groups.numel() else torch.zeros((0, ou), device=dev),
                    [*starts, int(groups.numel())], widths)


def images_per_chunk(kernel: LayerKernel, input_shape: tuple[int, ...], budget_mb: float) -> int:
    """Images per chunk so one chunk's per-image intermediates fit the memory budget:
    the input, its chunk image and padded copy, the group sums, the depthwise outputs and
    (full path) the per-column sums, in bytes."""
    s, g, ou, k = kernel.shape
    layer = kernel.mapped.layer
    positions = layer.positions
    numel = math.prod(input_shape) if input_shape else layer.rows
    sums = [kernel.clip_sums] if kernel.clip_path or kernel.deviation_only else []
    if not kernel.clip_path:
        sums.append(kernel.active_sums)
    # One depthwise convolution's output: Cin x (slots it holds) maps per image.
    conv_maps = max(group_sums.conv_maps for group_sums in sums) if sums else 0
    per_image = 4 * 4 * numel + 4 * 3 * (s * g + 1) * positions + 4 * conv_maps * positions
    if not kernel.clip_path:
        per_image += 8 * positions * (s * k + kernel.mapped.physical_cols + 1)
    return max(1, int(budget_mb * 2**20 // per_image))


def task_spans(kernel: LayerKernel, n: int, input_shape: tuple[int, ...], budget_mb: float,
               tasks: int = PARALLEL_TASKS) -> list[tuple[int, int]]:
    """[a, b) image ranges of the tasks of a call: at least `tasks` (when there are as
    many images), each within budget / tasks, so that up to `tasks` run at once within the
    budget; near-equal sizes. The tail events of accumulated deviation pass PARALLEL_TASKS,
    never a number that depends on the thread count: their random streams are the tasks'."""
    per_task = images_per_chunk(kernel, input_shape, budget_mb / tasks)
    count = max(min(n, tasks), math.ceil(n / per_task))
    edges = [round(i * n / count) for i in range(count + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def candidate_slice(width: int, per_candidate_bytes: int, budget_mb: float) -> int:
    """Candidates per slice: about SLICE_OUTPUTS partial sums (small tensors stay in the
    allocator's cache and the CPU caches), within the memory budget."""
    by_budget = int(budget_mb * 2**20 // per_candidate_bytes)
    return max(1, min(by_budget, max(MAX_BLOCK, SLICE_OUTPUTS // max(1, width))))

# ---- clip path -------------------------------------------------------------------------
