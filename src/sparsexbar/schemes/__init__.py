"""Computation-reduction schemes: plug-ins to the engine, one package each (schemes/<name>/:
its mapping, kernel, scheme, options, calibration and study), listed in registry.py.

Shared by the schemes: base (the plug-in interface), options (declared options, one parser),
entry (what a scheme registers), counting (the generic OU-slot counter of sre, pattern and
the compositions)."""

from .base import LayerRun, Scheme
from .entry import BenchCase, CalibrationSpec, RunArgs, SchemeEntry, StudySpec
from .options import Option, format_options, parse_options
from .registry import (
    ENTRIES,
    SCHEMES,
    bench_cases,
    calibrations,
    demo_schemes,
    entry_for,
    get_scheme,
    scheme_names,
    scheme_text,
    studies,
)

__all__ = ["BenchCase", "CalibrationSpec", "ENTRIES", "LayerRun", "Option", "RunArgs", "SCHEMES",
           "Scheme", "SchemeEntry", "StudySpec", "bench_cases", "calibrations", "demo_schemes",
           "entry_for", "format_options", "get_scheme", "parse_options", "scheme_names",
           "scheme_text", "studies"]
