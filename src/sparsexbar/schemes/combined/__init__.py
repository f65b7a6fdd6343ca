"""Compositions of the sparsity techniques (`a+b+c`) and the per-layer `combined` scheme
(DESIGN.md 3.5). Built only on the other schemes' public API (their packages' names)."""

from .scheme import (
    ALIASES,
    LAYOUTS,
    RUNTIME,
    TECHNIQUES,
    CombinedKernel,
    CombinedScheme,
    LayerChoice,
    layer_events,
    parse_techniques,
    pattern_slots,
    sre_slots,
    static_cost,
)

__all__ = ["ALIASES", "LAYOUTS", "RUNTIME", "TECHNIQUES", "CombinedKernel", "CombinedScheme",
           "LayerChoice", "layer_events", "parse_techniques", "pattern_slots", "sre_slots",
           "static_cost"]
