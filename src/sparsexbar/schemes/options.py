"""Declared options, parsed and validated by one set of rules for every scheme, study and
calibration.

An `Option` is one entry of a table: its key, its kind (what values it takes), its default and
its help text. Two front ends read the same tables:

- scheme text, `name:key=value:key=value` (`parse_options`): every item must be `key=value`,
  every key known to the scheme and given once; each value is converted by its option
  (`Option.parse`). Value ranges are the scheme constructor's to check (the same check for
  text and Python callers); choices are checked here.
- the command line (`sparsexbar reproduce NAME`, `sparsexbar calibrate NAME`): the CLI makes
  one `--key-with-dashes` option per entry (`Option.flag`, `Option.python_type`); after parsing
  `Option.check` refuses values outside the declared choices or bounds with one line.

Kinds: `choice` (one of `choices`), `number` (a float), `count` (a whole number), `switch`
(on/off), `path` (a file), `text`, `numbers` (comma-separated floats, a CLI list). `none`
allows 'none' (or 'off', '') for None; `file` lets a number or count be a .json file instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import SparsexbarError

KINDS = ("choice", "number", "count", "switch", "path", "text", "numbers")
NONE_WORDS = ("none", "off", "")
ON_WORDS = ("1", "true", "yes", "on")
OFF_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Option:
    """One declared option: `key` (scheme text key; CLI flag `--key-with-dashes`), `kind`,
    `default`, `help`; `choices` for a choice; `none`/`file` widen a number or count; `low`,
    `high` (inclusive unless `high_open`) and `unit` bound a CLI value; `arg` is the keyword
    argument the value is passed as (default: the key)."""

    key: str
    kind: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    none: bool = False
    file: bool = False
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    unit: str = ""
    arg: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.key}: unknown kind {self.kind!r}")
        if self.kind == "choice" and self.default is not None and self.default not in self.choices:
            raise ValueError(f"option {self.key}: default {self.default!r} not in its choices")

    @property
    def flag(self) -> str:
        """The command-line spelling: --key-with-dashes."""
        return "--" + self.key.replace("_", "-")

    @property
    def keyword(self) -> str:
        """The keyword argument the value is passed as."""
        return self.arg or self.key

    # ---- scheme text ---------------------------------------------------------------------------
    def parse(self, text: str, where: str) -> Any:
        """The value of `key=text` in the options of `where` (a scheme name); a value this
        option does not take raises naming the scheme, the key and the text."""
        value = text.strip()
        low = value.lower()
        if self.none and low in NONE_WORDS:
            return None
        if self.kind == "choice":
            if value not in self.choices:
                raise SparsexbarError(f"{where} {self.key} must be one of "
                                      f"{', '.join(self.choices)}, got '{text}'")
            return value
        if self.kind == "switch":
            if low in ON_WORDS:
                return True
            if low in OFF_WORDS:
                return False
            raise SparsexbarError(f"{where} {self.key} must be on or off, got '{text}'")
        if self.kind in ("number", "count"):
            if self.file and low.endswith(".json"):
                return value
            try:
                number: float | int = float(value) if self.kind == "number" else int(value)
            except ValueError:
                raise SparsexbarError(f"{where} {self.key} must be {self._expects()}, "
                                      f"got '{text}'") from None
            if isinstance(number, float) and not math.isfinite(number):
                raise SparsexbarError(f"{where} {self.key} must be {self._expects()}, "
                                      f"got '{text}'")
            return number
        if self.kind == "numbers":
            return self.parse_numbers(text)
        return value  # path, text

    def _expects(self) -> str:
        what = "a number" if self.kind == "number" else "a whole number"
        extras = [", a .json file" if self.file else "", " or none" if self.none else ""]
        return what + "".join(extras)

    def format(self, value: Any) -> str:
        """The text of a value, such that `parse(format(v)) == v`."""
        if value is None:
            return "none"
        if self.kind == "switch":
            return "on" if value else "off"
        if self.kind == "number" and isinstance(value, int | float) and not isinstance(value,
                                                                                      bool):
            return repr(float(value))
        if self.kind == "numbers":
            return ",".join(repr(float(v)) for v in value)
        return str(value)

    # ---- command line --------------------------------------------------------------------------
    @property
    def python_type(self) -> Any:
        """The type the CLI parses the option as."""
        base: Any = {"number": float, "count": int, "switch": bool, "path": Path}.get(self.kind,
                                                                                     str)
        return base | None if self.default is None and self.kind != "switch" else base

    def parse_numbers(self, text: str) -> list[float]:
        """A `numbers` option's comma-separated values."""
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise SparsexbarError(f"{self.flag} must be numbers separated by commas, got "
                                  f"'{text}'") from None

    def check(self, value: Any) -> Any:
        """A command-line value, checked against the declared choices and bounds (one line
        naming the flag otherwise); `numbers` text becomes its list."""
        if value is None:
            return None
        if self.kind == "choice":
            if value not in self.choices:
                raise SparsexbarError(f"{self.flag} must be one of {', '.join(self.choices)}, "
                                      f"got '{value}'")
            return value
        if self.kind == "numbers":
            values = self.parse_numbers(str(value))
            if not values or any(not (math.isfinite(v) and self._within(v)) for v in values):
                raise SparsexbarError(f"{self.flag} must be {self._bounds() or 'numbers'}, "
                                      f"got '{value}'")
            return values
        if self.kind in ("number", "count") and (
                not math.isfinite(value) or not self._within(value)):
            raise SparsexbarError(f"{self.flag} must be {self._bounds()}, got {value}")
        return value

    def _within(self, v: float) -> bool:
        if self.low is not None and v < self.low:
            return False
        if self.high is not None and (v >= self.high if self.high_open else v > self.high):
            return False
        return True

    def _bounds(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        low, high = self.low, self.high
        if self.kind == "numbers" and low is not None and high is not None:
            return f"in [{low:g}, {high:g}{')' if self.high_open else ']'}"
        if low is not None and high is not None:
            return f"in {low:g}..{high:g}{unit}"
        if low == 1 and self.kind == "count":
            return "positive"
        if low is not None:
            return f">= {low:g}{unit}"
        if high is not None:
            return f"{'<' if self.high_open else '<='} {high:g}{unit}"
        return "a number"


def choice(key: str, choices: Iterable[str], default: str, help: str, **kw: Any) -> Option:
    return Option(key, "choice", default, help, choices=tuple(choices), **kw)


def number(key: str, default: float | None, help: str, **kw: Any) -> Option:
    return Option(key, "number", default, help, **kw)


def count(key: str, default: int | None, help: str, **kw: Any) -> Option:
    return Option(key, "count", default, help, **kw)


def switch(key: str, default: bool, help: str, **kw: Any) -> Option:
    return Option(key, "switch", default, help, **kw)


def path(key: str, help: str, default: str | None = None, **kw: Any) -> Option:
    return Option(key, "path", default, help, **kw)


def text(key: str, default: str | None, help: str, **kw: Any) -> Option:
    return Option(key, "text", default, help, **kw)


def numbers(key: str, default: str, help: str, **kw: Any) -> Option:
    return Option(key, "numbers", default, help, **kw)


def parse_options(spec: str, table: Iterable[Option]) -> tuple[str, dict[str, Any]]:
    """`name:key=value:...` -> (name, {key: value}) with the values of the options given (in
    the order given), each converted by its `Option`. Refused with one line: an item that is
    not key=value, a key the scheme does not take, a key given twice, a value its option does
    not take; a scheme without options refuses any."""
    name, sep, body = spec.partition(":")
    options = {opt.key: opt for opt in table}
    if not sep:
        return name, {}
    if not options:
        raise SparsexbarError(f"scheme '{name}' takes no options (got '{body}')")
    given: dict[str, Any] = {}
    for item in body.split(":"):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SparsexbarError(f"scheme options expect key=value, got '{item}' in '{spec}'")
        if key not in options:
            raise SparsexbarError(f"unknown option '{key}' for scheme '{name}' (known: "
                                  f"{', '.join(options)})")
        if key in given:
            raise SparsexbarError(f"option '{key}' given twice in '{spec}'")
        given[key] = options[key].parse(value, name)
    return name, given


def format_options(name: str, values: Mapping[str, Any], table: Iterable[Option]) -> str:
    """The canonical text of a scheme: its name, then `:key=value` for every option whose
    value differs from its default, in table order."""
    parts = [name]
    for opt in table:
        if opt.key in values and values[opt.key] != opt.default:
            parts.append(f"{opt.key}={opt.format(values[opt.key])}")
    return ":".join(parts)
