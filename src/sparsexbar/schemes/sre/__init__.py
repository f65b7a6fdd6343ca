"""`sre`: Sparse ReRAM Engine (Yang et al., ISCA 2019), our reconstruction (DESIGN.md 3.1):
static weight compression per OU column group and dynamic activation sparsity."""

from ..entry import BenchCase, SchemeEntry
from .options import OPTIONS
from .scheme import (
    GRANULARITIES,
    MODES,
    SreKernel,
    SreMappedLayer,
    SreScheme,
    any_rows_bound,
    column_segments,
    dynamic_packing_lossless,
    group_partial_sum_bound,
    index_bits,
    kept_matrix,
    map_sre,
)

ENTRY = SchemeEntry(
    name="sre",
    scheme=SreScheme,
    help="Sparse ReRAM Engine: static weight compression and dynamic activation sparsity at "
         "OU granularity",
    options=OPTIONS,
    bench=(BenchCase("sre", "sre, isaac, joint mode (static rows + zero input bits, exact "
                     "counts)", "sre"),),
    study="sparsexbar.schemes.sre.study:STUDY",
)

__all__ = ["ENTRY", "GRANULARITIES", "MODES", "OPTIONS", "SreKernel", "SreMappedLayer",
           "SreScheme", "any_rows_bound", "column_segments", "dynamic_packing_lossless",
           "group_partial_sum_bound", "index_bits", "kept_matrix", "map_sre"]
