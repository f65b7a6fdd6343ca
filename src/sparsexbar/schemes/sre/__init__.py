"""`sre`: Sparse ReRAM Engine (Yang et al., ISCA 2019), our reconstruction (DESIGN.md 3.1):
static weight compression per OU column group and dynamic activation sparsity."""

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

__all__ = ["GRANULARITIES", "MODES", "SreKernel", "SreMappedLayer", "SreScheme",
           "any_rows_bound", "column_segments", "dynamic_packing_lossless",
           "group_partial_sum_bound", "index_bits", "kept_matrix", "map_sre"]
