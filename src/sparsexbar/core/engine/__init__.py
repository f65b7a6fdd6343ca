"""Engine: bit-serial, OU-granular execution of a mapped layer with the ADC and device model.

For every input chunk (cycle) t, segment s, OU row group g and column k, the partial sum is
    p = sum over the group's rows of conductance[row, col] * chunk_t[row]
and the ADC returns clamp(round(p / step), 0, 2^bits - 1) * step (DESIGN.md 2.3). Shift-and-add
combines cycles (x 2^(t*dac_bits)), slices and polarities (x +-2^(s*cell_bits)), then the
offset of the `offset` encoding is removed digitally.

Three paths, all vectorized torch, the same code on CPU and CUDA (except the draws' compiled
CPU kernel, `fused`, which computes the eager passes' codes in one loop):

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
   it reaches (an exact Poisson-process draw, `paths.tail_events`).

Candidates are processed in blocks of one OU group, one batched matmul per block set; loops
run over image chunks (memory bound), passes, cycles, candidate slices and width buckets only.

Modules, along those seams: options (EngineOptions), pool (worker threads: TaskPool,
run_tasks), exact (the shortcut), gather (group inputs without im2col), plan (chunk planning:
tasks, chunks, the clip plan, candidate slices and blocks), paths (the clip and full
conversion paths), noise (the full path's counter-based draws), fused (their per-conversion
work as one compiled CPU kernel: same codes; the eager passes elsewhere), kernel
(LayerKernel, accumulate).
"""

from .exact import (
    FLOAT32_EXACT,
    exact_accumulate,
    exact_accumulator,
    exact_from_magnitudes,
    layer_linear_op,
)
from .gather import GroupSums, RowGather
from .kernel import LayerKernel, accumulate
from .options import EngineOptions
from .plan import ClipPlan, Packed
from .pool import TaskPool, run_tasks

__all__ = ["FLOAT32_EXACT", "ClipPlan", "EngineOptions", "GroupSums", "LayerKernel", "Packed",
           "RowGather", "TaskPool", "accumulate", "exact_accumulate", "exact_accumulator",
           "exact_from_magnitudes",
           "layer_linear_op",
           "run_tasks"]
