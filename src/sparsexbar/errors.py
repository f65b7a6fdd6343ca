"""User-facing errors: the CLI turns any `SparsexbarError` into one line on stderr, exit 2."""

from __future__ import annotations


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
