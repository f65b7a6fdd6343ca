"""sre's `name:key=value` options (e.g. `sre:mode=activation:granularity=word`)."""

from __future__ import annotations

from ..options import choice
from .mapping import GRANULARITIES, MODES

OPTIONS = (
    choice("mode", MODES, "joint", "weight: static row compression per OU column group; "
           "activation: rows with a zero input dropped in each cycle; joint: both"),
    choice("granularity", GRANULARITIES, "bit", "the zero test of the activation modes: the "
           "cycle's input chunk (bit) or the whole input value (word)"),
)
