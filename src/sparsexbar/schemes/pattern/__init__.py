"""`pattern`: pattern pruning + kernel-reordering mapping (Yu et al., arXiv 2010.06156), our
reconstruction (DESIGN.md 3.2)."""

from ..entry import BenchCase, SchemeEntry
from .scheme import (
    PatternKernel,
    PatternMappedLayer,
    PatternPlan,
    PatternScheme,
    dense_static_counts,
    infer_patterns,
    is_pattern_layer,
    map_pattern,
    place_units,
    plan_pattern,
    static_counts,
    unit_levels,
)

ENTRY = SchemeEntry(
    name="pattern",
    scheme=PatternScheme,
    help="pattern pruning + kernel-reordering mapping: pruned kernel positions and all-zero "
         "inputs skipped",
    # Meant for --model vgg8-pattern (on unpruned weights pattern falls back to dense layers).
    bench=(BenchCase("pattern", "pattern, isaac, kernel-reordering mapping (exact counts)",
                     "pattern"),),
    study="sparsexbar.schemes.pattern.study:STUDY",
)

__all__ = ["ENTRY", "PatternKernel", "PatternMappedLayer", "PatternPlan", "PatternScheme",
           "dense_static_counts", "infer_patterns", "is_pattern_layer", "map_pattern",
           "place_units", "plan_pattern", "static_counts", "unit_levels"]
