"""`sre`: Sparse ReRAM Engine (Yang et al., ISCA 2019), our reconstruction (DESIGN.md 3.1).

Segments: one per (array column tile x OU column group), a group being `ou.cols` consecutive
physical columns of one array (the last group of a tile may be narrower).

- Static weight compression (`weight`, `joint`): per array (row tile) and column group, rows
  whose cells are zero in every column of the group are removed; the kept rows are packed, in
  their original order, into OUs of `ou.rows` rows. Each kept row stores its original row index
  (ceil(log2(array.rows)) bits, at least 1).
- Dynamic activation sparsity (`activation`, `joint`): in each input cycle, rows whose input
  chunk is zero (granularity `bit`: the chunk of this cycle; `word`: the whole input value)
  are dropped, and the rows left for a column group are packed into ceil(active / ou.rows) OUs.

Events, exact, per image, output position, pass, cycle, array and column group (n columns):
ou_activations = ceil(active / ou.rows), adc_conversions = shift_adds = ou x n,
dac_activations = active, cell_reads = active x n. `index_reads` (our choice): the index of
every kept row is read once per output position and pass (the gathered input word stays in
the row's input register for the bit-serial cycles), ceil(log2(array.rows)) bits each; the
`activation` mode stores no indices. Buffer and digital events are those of `dense`.
`cycles`: per image, the busiest array's OU activations (arrays run in parallel), summed over
images.

Values: `weight` mode runs the packed mapping through the engine (`LayerKernel` segments), so
a clipping ADC or a non-ideal device is modelled bit-accurately. `activation`/`joint` pack rows
differently in every cycle: where no packing can change a partial sum (ideal device, unit ADC
step, and the `ou.rows` largest levels of any column of an array times the largest input chunk
within the ADC range) the outputs are the exact integer result; otherwise (ideal device) the
exact result plus ADC(p) - p of every packed OU that could leave the identity range
(`SreScheme.packed_accumulate`). A non-ideal device is refused in these modes.

Modules: mapping (map_sre, partial-sum bounds), kernel (SreKernel), scheme (SreScheme),
options (its `name:key=value` table), study (`sparsexbar reproduce sre`).
"""

from ..entry import CLIPPING, BenchCase, SchemeEntry
from .kernel import SreKernel
from .mapping import (
    GRANULARITIES,
    MODES,
    SreMappedLayer,
    any_rows_bound,
    column_segments,
    dynamic_packing_lossless,
    group_partial_sum_bound,
    index_bits,
    kept_matrix,
    map_sre,
)
from .options import OPTIONS
from .scheme import SreScheme

ENTRY = SchemeEntry(
    name="sre",
    scheme=SreScheme,
    help="Sparse ReRAM Engine: static weight compression and dynamic activation sparsity at "
         "OU granularity",
    options=OPTIONS,
    bench=(BenchCase("sre", "sre, isaac, joint mode (static rows + zero input bits, exact "
                     "counts)", "sre"),
           BenchCase("sre-lossy", "sre, isaac OU 9x8, ADC 5 bit, DAC 2 bit (clips: packed OUs "
                     "converted)",
                     "sre", CLIPPING)),
    study="sparsexbar.schemes.sre.study:STUDY",
)

__all__ = ["ENTRY", "GRANULARITIES", "MODES", "OPTIONS", "SreKernel", "SreMappedLayer",
           "SreScheme", "any_rows_bound", "column_segments", "dynamic_packing_lossless",
           "group_partial_sum_bound", "index_bits", "kept_matrix", "map_sre"]
