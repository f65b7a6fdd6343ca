"""Scheme registry. Each scheme is a small plug-in (see `base.Scheme`)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import SparsexbarError
from .base import LayerRun, Scheme
from .comprrae import CompRRAEScheme
from .dense import DenseScheme
from .pattern import PatternScheme
from .sre import SreScheme

SCHEMES: dict[str, Callable[[], Scheme]] = {
    "dense": DenseScheme,
    "comprrae": CompRRAEScheme,
    "sre": SreScheme,
    "pattern": PatternScheme,
}


def scheme_names() -> list[str]:
    return list(SCHEMES)


def get_scheme(scheme: str | Scheme) -> Scheme:
    """A scheme object from a name (or the object itself); unknown names raise."""
    if isinstance(scheme, Scheme):
        return scheme
    if scheme not in SCHEMES:
        raise SparsexbarError(f"unknown scheme '{scheme}' (known: {', '.join(SCHEMES)})")
    return SCHEMES[scheme]()


__all__ = ["SCHEMES", "LayerRun", "Scheme", "get_scheme", "scheme_names"]
