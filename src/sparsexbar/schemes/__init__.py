"""Scheme registry. Each scheme is a small plug-in (see `base.Scheme`)."""

from __future__ import annotations

from collections.abc import Callable

from ..core.errors import SparsexbarError
from .base import LayerRun, Scheme
from .combined import TECHNIQUES, CombinedScheme
from .comprrae import CompRRAEScheme
from .dense import DenseScheme
from .encoding import EncodingScheme
from .pattern import PatternScheme
from .sre import SreScheme

SCHEMES: dict[str, Callable[[], Scheme]] = {
    "dense": DenseScheme,
    "comprrae": CompRRAEScheme,
    "sre": SreScheme,
    "pattern": PatternScheme,
    "encoding": EncodingScheme,
    "combined": CombinedScheme,
}


def scheme_names() -> list[str]:
    return list(SCHEMES)


def get_scheme(scheme: str | Scheme) -> Scheme:
    """A scheme object from a name (or the object itself); unknown names raise.

    `name:key=value:key=value` passes options to a scheme that has a `from_options`
    classmethod (e.g. `encoding:adc=calibrated:adc_bits=bits.json`); `a+b+c[:key=value]`
    is a composition of techniques (`combined.CombinedScheme`)."""
    if isinstance(scheme, Scheme):
        return scheme
    name, sep, text = scheme.partition(":")
    if "+" in name or name == "combined" or (name in TECHNIQUES and name not in SCHEMES):
        # a composition `a+b+c[:key=value...]` (or one technique that is no scheme: act)
        return CombinedScheme.from_spec(name, _options(scheme, text) if sep else None)
    if name not in SCHEMES:
        raise SparsexbarError(f"unknown scheme '{name}' (known: {', '.join(SCHEMES)})")
    if not sep:
        return SCHEMES[name]()
    from_options = getattr(SCHEMES[name], "from_options", None)
    if from_options is None:
        raise SparsexbarError(f"scheme '{name}' takes no options (got '{text}')")
    made = from_options(_options(scheme, text))
    assert isinstance(made, Scheme)
    return made


def _options(scheme: str, text: str) -> dict[str, str]:
    """'key=value:key=value' -> {key: value}; a malformed item raises naming it."""
    options: dict[str, str] = {}
    for item in text.split(":"):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SparsexbarError(f"scheme options expect key=value, got '{item}' in '{scheme}'")
        options[key.strip()] = value.strip()
    return options


__all__ = ["SCHEMES", "LayerRun", "Scheme", "get_scheme", "scheme_names"]
