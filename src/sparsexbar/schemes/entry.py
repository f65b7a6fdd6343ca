"""What a scheme registers (`SchemeEntry`), and the declarations of a study (`StudySpec`) and a
calibration (`CalibrationSpec`) that the command line builds `reproduce NAME` and
`calibrate NAME` from.

A scheme package (schemes/<name>/) defines one `ENTRY` in its `__init__.py`; registry.py
lists the entries. The entry names the scheme's class (its constructor takes keyword
arguments: the Python API and sweep files), its option table (the `name:key=value` text), its
bench cases, whether the demo runs it, and where its calibration and study are declared
("module:attribute", imported on first use: those modules run the pipeline, which itself
parses scheme text through the registry, so the registry cannot import them up front).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import Scheme
from .options import Option, format_options

OU9X8_ADC5 = (("ou.rows", 9), ("ou.cols", 8), ("adc.bits", 5))  # cannot clip at 8-bit DAC
CLIPPING = (*OU9X8_ADC5, ("dac.bits", 2))  # the bench's lossy setting: this ADC clips


@dataclass(frozen=True)
class BenchCase:
    """One case of `sparsexbar bench`: a scheme (text) on `isaac` with config overrides."""

    key: str
    label: str
    scheme: str
    overrides: tuple[tuple[str, Any], ...] = ()
    exact_shortcut: bool = True


@dataclass(frozen=True)
class SchemeEntry:
    """A registered scheme.

    - `name`, `help`; `scheme`: its class (keyword arguments: Python API, sweep files);
    - `options`: the `name:key=value` table, parsed by `options.parse_options`;
    - `build(**values)` makes the scheme from the parsed options that were given (keys as in
      the table); default: `scheme(**{option.keyword: value})`. A composite entry
      (`matches`) also gets `name=` (the text before ':');
    - `matches(name)`: other names this entry builds (the compositions `a+b+c`);
    - `demo`: `sparsexbar demo` runs it; `bench`: its `sparsexbar bench` cases;
    - `calibration`, `study`: "module:attribute" of its CalibrationSpec / StudySpec.
    """

    name: str
    scheme: Callable[..., Scheme]
    help: str
    options: tuple[Option, ...] = ()
    build: Callable[..., Scheme] | None = None
    matches: Callable[[str], bool] | None = None
    demo: bool = True
    bench: tuple[BenchCase, ...] = ()
    calibration: str | None = None
    study: str | None = None

    def make(self, name: str, values: Mapping[str, Any]) -> Scheme:
        """The scheme from parsed option values (only the options given)."""
        if self.build is not None:
            extra = {"name": name} if self.matches is not None else {}
            made = self.build(**extra, **values)
        else:
            keyword = {opt.key: opt.keyword for opt in self.options}
            made = self.scheme(**{keyword[k]: v for k, v in values.items()})
        assert isinstance(made, Scheme)
        return made

    def text(self, scheme: Scheme) -> str:
        """The canonical `name:key=value` text of one of this entry's schemes (options at
        their defaults left out); `get_scheme(text)` makes an equal scheme."""
        return format_options(scheme.name, scheme.options(), self.options)

    def load_calibration(self) -> CalibrationSpec | None:
        return _load(self.calibration, CalibrationSpec) if self.calibration else None

    def load_study(self) -> StudySpec | None:
        return _load(self.study, StudySpec) if self.study else None


@dataclass(frozen=True)
class RunArgs:
    """The options every study and calibration takes: where to write, which model, data and
    hardware, batch size, device, and where progress lines go."""

    out: Path
    model: str
    hw: str
    overrides: Mapping[str, str]
    batch_size: int
    device: str
    progress: Callable[[str], None]
    data: str = "default"
    root: Path | None = None  # where a named data set's files are (calibrations)


@dataclass(frozen=True)
class StudySpec:
    """`sparsexbar reproduce NAME`: the study's own options (with their defaults, the one
    place they are declared), the defaults it gives the common options (e.g. `hw`), and
    `run(args, **options) -> text` (writes the files, returns what the terminal shows)."""

    name: str
    help: str
    run: Callable[..., str]
    options: tuple[Option, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CalibrationSpec:
    """`sparsexbar calibrate NAME`: like a study, writing one JSON file (`--out`, default
    `out`) that the scheme's options read back."""

    name: str
    help: str
    run: Callable[..., str]
    out: str
    options: tuple[Option, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)


def _load(ref: str, kind: type[Any]) -> Any:
    """The object at "module:attribute" (a study or calibration declaration)."""
    module, _, attribute = ref.partition(":")
    value = getattr(importlib.import_module(module), attribute)
    if not isinstance(value, kind):
        raise TypeError(f"{ref} is a {type(value).__name__}, not a {kind.__name__}")
    return value
