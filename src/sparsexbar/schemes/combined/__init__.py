"""Compositions of the sparsity techniques in one run (DESIGN.md 3.5; docs/schemes/combined.md).

A composition is a list of techniques, written `a+b+c` (e.g. `pattern+act+comprrae`):

- weight layout, at most one: `sre-weight` (SRE's static row compression per OU column group,
  `sre` weight mode), `pattern` (kernel-reordering units of pattern-pruned 3x3 convs, with
  their zero-input unit skipping; a layer it cannot help stays dense, as `pattern` does) or
  `dense` (the straightforward layout, the default). Two layouts both choose where the weights
  go: refused.
- `act`: dynamic activation sparsity (SRE's activation mode): in each cycle the rows whose
  input chunk is zero (granularity `bit`, or `word`: the whole input) are dropped and the
  remaining rows of a packing domain packed into ceil(n / ou.rows) OUs (a pattern unit's
  rows: n of its rows driven, one OU when n > 0). Needs an ideal device, as `sre` does.
- `comprrae`: CompRRAE's early negative detection (exact), MSB-first inputs; `alpha` adds the
  adaptive early termination (lossy). ReLU layers only; their conversions must be exact on
  the composed layout (ideal device, unit ADC step, no clipping), as `comprrae` requires.
- `sre` is `sre-weight+act`.

Every composition is counted by one generic counter (`counting.count_slots`): OU slots (packing
domain, columns, array), active rows per domain from the `RowSetCounter` convolution, live
columns from comprrae's executed cycles. Each single scheme is a special case (the tests check
sre in every mode, pattern, comprrae and dense event for event). Auxiliary events are those the
techniques add on their own: sre-weight's row-index reads, pattern's index reads, zero tests
and fetched inputs, comprrae's comparisons and LUT reads; buffer writes and digital work are
`dense`'s.

Values: comprrae on a layer -> its exact termination path (the composed layout's conversions
are exact there); otherwise the layout's own value path (the engine, with SRE's packed
corrections where act packing can clip), so a lossless composition equals `dense` bit for bit.

The named scheme `combined` picks, per layer, the layout whose static events (every unit
activated, no input skipping) cost the least energy, ties to fewer arrays, then the simpler
layout; and adds act and comprrae (END) wherever the hardware allows them (it drops, per layer,
what would be refused, and says why in its parameters).

Built only on the other schemes' public API (their packages' names; tests/test_layout.py).
Modules: kernel (LayerChoice, CombinedKernel, slot tables), scheme (CombinedScheme,
layer_events, static_cost), options (its `name:key=value` table).
"""

from ..entry import CLIPPING, BenchCase, SchemeEntry
from .kernel import CombinedKernel, LayerChoice, pattern_slots, sre_slots
from .options import OPTIONS
from .scheme import (
    ALIASES,
    LAYOUTS,
    OBJECTIVES,
    RUNTIME,
    TECHNIQUES,
    CombinedScheme,
    build_combined,
    is_composition,
    layer_events,
    parse_techniques,
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
                     "lossless encoding", "combined"),
           BenchCase("combined-lossy", "combined, isaac OU 9x8, ADC 5 bit, DAC 2 bit (clips; "
                     "comprrae dropped where it would clip)",
                     "combined", CLIPPING)),
)

__all__ = ["ALIASES", "CombinedKernel", "CombinedScheme", "ENTRY", "LAYOUTS", "LayerChoice",
           "OBJECTIVES", "OPTIONS", "RUNTIME", "TECHNIQUES", "build_combined", "is_composition",
           "layer_events", "parse_techniques", "pattern_slots", "sre_slots", "static_cost"]
