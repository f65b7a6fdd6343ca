"""User-facing errors: the CLI turns any `SparsexbarError` into one line on stderr, exit 2."""

from __future__ import annotations

import warnings
from collections.abc import Iterable


class SparsexbarError(ValueError):
    """Bad input from the user: a config value, a model, a data file, a CLI argument."""


class ConfigError(SparsexbarError):
    """An invalid hardware configuration value or an unknown preset/key."""


class UnsupportedModelError(SparsexbarError):
    """The model contains a layer or operation the simulator cannot map."""


class DataError(SparsexbarError):
    """A data set is missing, corrupt or truncated."""


class CheckpointError(SparsexbarError):
    """A checkpoint does not exist, is corrupt, or does not match the architecture."""


def parse_failure(exc: BaseException) -> str:
    """Why a file could not be parsed, as one line: the exception's text with its line breaks
    joined; a RecursionError (a file nested beyond Python's stack, '[[[[...') says so."""
    detail = " ".join(str(exc).split())
    return f"nested too deeply ({detail})" if isinstance(exc, RecursionError) else detail


def require_choice(what: str, value: str, choices: Iterable[str]) -> None:
    """Raise SparsexbarError "<what> must be one of a, b, c, got '<value>'" unless value is one
    of choices (what names the option: '--bounds', 'encoding adc')."""
    known = tuple(choices)
    if value not in known:
        raise SparsexbarError(f"{what} must be one of {', '.join(known)}, got '{value}'")


class SparsexbarWarning(UserWarning):
    """A run that goes on but whose numbers may not mean what the user thinks (a model near
    chance, class counts that differ, an untrained model). The CLI prints one line per
    warning on stderr: `sparsexbar: warning: ...`."""


class SparsexbarNote(SparsexbarWarning):
    """What the run did to make the inputs fit (images resized, grey -> RGB...): the CLI
    prints `sparsexbar: note: ...`."""


def warn(message: str) -> None:
    """Issue a SparsexbarWarning (one line)."""
    warnings.warn(message, SparsexbarWarning, stacklevel=2)


def note(message: str) -> None:
    """Issue a SparsexbarNote (one line)."""
    warnings.warn(message, SparsexbarNote, stacklevel=2)
