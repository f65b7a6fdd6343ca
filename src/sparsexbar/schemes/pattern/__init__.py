"""`pattern`: pattern pruning + kernel-reordering mapping (Yu et al., arXiv 2010.06156), our
reconstruction (DESIGN.md 3.2)."""

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

__all__ = ["PatternKernel", "PatternMappedLayer", "PatternPlan", "PatternScheme",
           "dense_static_counts", "infer_patterns", "is_pattern_layer", "map_pattern",
           "place_units", "plan_pattern", "static_counts", "unit_levels"]
