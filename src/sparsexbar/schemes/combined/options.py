"""The compositions' `name:key=value` options (e.g. `pattern+act+comprrae:alpha=0.4`,
`combined:objective=energy`)."""

from __future__ import annotations

from ..comprrae import ESTIMATES
from ..options import choice, number
from ..sre import GRANULARITIES
from .scheme import OBJECTIVES

OPTIONS = (
    number("alpha", None, "comprrae's adaptive early termination (lossy); none: early "
           "negative detection only", none=True),
    choice("estimate", ESTIMATES, "midpoint", "comprrae's value of an output stopped by alpha"),
    choice("granularity", GRANULARITIES, "bit", "act's zero test: the cycle's input chunk "
           "(bit) or the whole input value (word)"),
    choice("objective", OBJECTIVES, "edp", "what the named `combined` minimizes when it picks "
           "each layer's layout: edp (energy x cycles), energy or latency"),
)
