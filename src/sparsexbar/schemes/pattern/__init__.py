"""`pattern`: kernel-reordering weight mapping on pattern-pruned 3x3 convolutions (Yu et al.,
arXiv 2010.06156), our reconstruction (DESIGN.md 3.2; docs/schemes/pattern.md).

Pattern blocks. A 3x3 kernel (o, i) stores the weights at its nonzero positions; its mask is
a 9-bit code (bit kh * 3 + kw, `prune.mask_codes`). The layer's patterns are inferred from
its integer weights: the maximal masks (no other kernel mask strictly contains them); a
kernel whose mask is strictly contained in others (a weight quantized to zero, say) joins the
most frequent of its maximal supersets and stores a zero cell there. A pattern block is
(input channel i, pattern p): its rows are the im2col rows i * 9 + position of p's positions,
its columns the physical columns (polarities x slices, dense layout) of the output channels,
in channel order, whose kernel (o, i) has pattern p. Pruned (all-zero) kernels are not stored.

Units. A block is cut into OU column groups of `ou.cols` columns and, when it has more rows
than `ou.rows`, into row pieces of `ou.rows` rows; a unit (row piece x column group) is one
OU. Placement, next-fit decreasing-height shelf packing: units sorted by height (tallest
first), then in (input channel, pattern, piece, column group) order; each array is cut into
shelves as tall as their units, filled left to right with one unit per OU slot (slots start at
multiples of `ou.cols`; `array.cols // ou.cols` slots per shelf, leftover columns unused); a
full shelf opens the next one below, a full array the next array. Since every unit takes one
slot, the order changes which array holds which unit, not the array count.

Input preprocessing: per output position and cycle, a unit is activated only when some of its
rows has a nonzero input chunk (the block's k inputs are fetched and tested; granularity: the
`dac.bits` chunk of the cycle). The output index routes every stored channel's columns back
to its output channel.

Events, exact, per image, output position, pass and cycle, per unit of h rows and n columns
activated: ou_activations 1, adc_conversions = shift_adds n, dac_activations h, cell_reads
h x n. comparisons: one zero test per row piece per cycle (shared by the piece's column
groups). index_reads (bits; once per output position and pass, the fetched inputs stay in the
row registers during the cycles): per block its input index (input channel + pattern id), per
stored kernel its output channel. buffer_read_bytes: the inputs of the rows some block reads
(rows of wholly pruned input channels and positions are not fetched); buffer writes and
digital ops: those of `dense`. cycles: per image, the busiest array's OU activations.

Storage (area): per block ceil(log2 Cin) + ceil(log2 P) bits, per stored kernel
ceil(log2 Cout) bits, per pattern 9 bits (each at least 1); one zero detector per array.

Fallback (our rule): a layer whose pattern placement would, before any input skipping, use more
arrays, OU activations, conversions, driven rows or cell reads per cycle than the
straightforward mapping is mapped as `dense` (a dense layer, or OUs much taller than the
patterns). So no crossbar event count and no array count of `pattern` exceeds `dense`'s. The
busiest array is not in the rule: packing a layer into fewer arrays can load one array with
more OUs than any dense array holds (latency is then won back only by input skipping).
Layers that are not 3x3 convolutions use the dense mapping too.

Values go through the generic engine: one segment per unit (a single OU row group of the
unit's rows, padded to `ou.rows` with -1; the unit's dense-layout column numbers), so a
clipping ADC and a non-ideal device are simulated bit-accurately with the pattern OUs.

Modules: mapping (patterns, units, placement, fallback), kernel (PatternKernel), scheme
(PatternScheme), study (`sparsexbar reproduce pattern`).
"""

from ..entry import CLIPPING, BenchCase, SchemeEntry
from .kernel import PatternKernel
from .mapping import (
    PatternMappedLayer,
    PatternPlan,
    dense_static_counts,
    infer_patterns,
    is_pattern_layer,
    map_pattern,
    place_units,
    plan_pattern,
    static_counts,
    unit_levels,
)
from .scheme import PatternScheme

ENTRY = SchemeEntry(
    name="pattern",
    scheme=PatternScheme,
    help="pattern pruning + kernel-reordering mapping: pruned kernel positions and all-zero "
         "inputs skipped",
    # Meant for --model vgg8-pattern (on unpruned weights pattern falls back to dense layers).
    bench=(BenchCase("pattern", "pattern, isaac, kernel-reordering mapping (exact counts)",
                     "pattern"),
           BenchCase("pattern-lossy", "pattern, isaac OU 9x8, ADC 5 bit, DAC 2 bit (clips)",
                     "pattern", CLIPPING)),
    study="sparsexbar.schemes.pattern.study:STUDY",
)

__all__ = ["ENTRY", "PatternKernel", "PatternMappedLayer", "PatternPlan", "PatternScheme",
           "dense_static_counts", "infer_patterns", "is_pattern_layer", "map_pattern",
           "place_units", "plan_pattern", "static_counts", "unit_levels"]
