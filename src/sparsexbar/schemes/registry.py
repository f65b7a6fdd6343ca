"""The scheme registry: one line per scheme. Everything that lists schemes reads it: scheme
text (`get_scheme`), `compare` without --schemes, the demo, the bench cases, `sparsexbar
calibrate NAME` and `sparsexbar reproduce NAME`.

Adding a scheme: a package schemes/<name>/ whose `__init__.py` defines `ENTRY` (a
`SchemeEntry`), and its line below. Order: the published schemes as DESIGN.md lists them,
compositions last (the demo, `compare` and the bench cases run in this order).
"""

from __future__ import annotations

from ..core.errors import SparsexbarError
from . import combined, comprrae, dense, encoding, pattern, sre
from .base import Scheme
from .entry import BenchCase, CalibrationSpec, SchemeEntry, StudySpec
from .options import parse_options

ENTRIES: tuple[SchemeEntry, ...] = (
    dense.ENTRY,
    sre.ENTRY,
    pattern.ENTRY,
    comprrae.ENTRY,
    encoding.ENTRY,
    combined.ENTRY,  # compositions of the others: keep last
)
SCHEMES: dict[str, SchemeEntry] = {e.name: e for e in ENTRIES}


def scheme_names() -> list[str]:
    return list(SCHEMES)


def entry_for(name: str) -> SchemeEntry:
    """The entry that builds scheme `name` (a registered name or a composition); unknown
    names raise."""
    if name in SCHEMES:
        return SCHEMES[name]
    for e in ENTRIES:
        if e.matches is not None and e.matches(name):
            return e
    raise SparsexbarError(f"unknown scheme '{name}' (known: {', '.join(SCHEMES)})")


def get_scheme(scheme: str | Scheme) -> Scheme:
    """A scheme object from its text `name[:key=value...]` (or the object itself).

    The options are the entry's table (`options.parse_options`: the same rules for every
    scheme); `a+b+c[:key=value]` is a composition of techniques (schemes/combined)."""
    if isinstance(scheme, Scheme):
        return scheme
    if not isinstance(scheme, str):
        raise SparsexbarError(f"scheme must be a name such as 'sre:mode=joint' or a Scheme "
                              f"object, got {type(scheme).__name__} {scheme!r}")
    name = scheme.partition(":")[0]
    entry = entry_for(name)
    _, values = parse_options(scheme, entry.options)
    return entry.make(name, values)


def scheme_text(scheme: str | Scheme) -> str:
    """The canonical text of a scheme: its name and the options that differ from their
    defaults, in table order; `get_scheme(scheme_text(s))` equals `s`."""
    made = get_scheme(scheme)
    return entry_for(made.name).text(made)


def demo_schemes() -> list[str]:
    """The schemes `sparsexbar demo` runs, in registry order."""
    return [e.name for e in ENTRIES if e.demo]


def bench_cases() -> dict[str, BenchCase]:
    """Every entry's bench cases by key, in registry order."""
    return {case.key: case for e in ENTRIES for case in e.bench}


def studies() -> dict[str, StudySpec]:
    """The schemes' studies (`reproduce NAME`), by name, in registry order."""
    found = (e.load_study() for e in ENTRIES)
    return {s.name: s for s in found if s is not None}


def calibrations() -> dict[str, CalibrationSpec]:
    """The schemes' calibrations (`calibrate NAME`), by name, in registry order."""
    found = (e.load_calibration() for e in ENTRIES)
    return {c.name: c for c in found if c is not None}
