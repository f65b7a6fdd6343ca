"""Compositions of the sparsity techniques (`a+b+c`) and the per-layer `combined` scheme
(DESIGN.md 3.5). Built only on the other schemes' public API (their packages' names)."""

from ..entry import BenchCase, SchemeEntry
from .options import OPTIONS
from .scheme import (
    ALIASES,
    LAYOUTS,
    OBJECTIVES,
    RUNTIME,
    TECHNIQUES,
    CombinedKernel,
    CombinedScheme,
    LayerChoice,
    build_combined,
    is_composition,
    layer_events,
    parse_techniques,
    pattern_slots,
    sre_slots,
    static_cost,
)

ENTRY = SchemeEntry(
    name="combined",
    scheme=CombinedScheme,
    help="per layer the best layout (dense, sre-weight, pattern) + act + comprrae + "
         "encoding's lossless parts; or a composition of techniques a+b+c",
    options=OPTIONS,
    build=build_combined,
    matches=is_composition,
    bench=(BenchCase("combined", "combined, isaac, per-layer best layout + act + comprrae + "
                     "lossless encoding", "combined"),),
)

__all__ = ["ALIASES", "CombinedKernel", "CombinedScheme", "ENTRY", "LAYOUTS", "LayerChoice",
           "OBJECTIVES", "OPTIONS", "RUNTIME", "TECHNIQUES", "build_combined", "is_composition",
           "layer_events", "parse_techniques", "pattern_slots", "sre_slots", "static_cost"]
