"""Importing a user's module by name: from the installed packages, or else the current
directory, as `python -m` would find it (`module:factory` model specs, the classes a
`torch.save` file names)."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_module_here(name: str) -> ModuleType:
    """`importlib.import_module(name)`; when its top-level package is not importable, that
    package is loaded from the current directory (as `python -m` would find it) and `name`
    imported through it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.partition(".")[0]
        if exc.name != top or top in sys.modules:
            raise
        found = importlib.machinery.PathFinder.find_spec(top, [str(Path.cwd())])
        if found is None or found.loader is None:
            raise
        module = importlib.util.module_from_spec(found)
        sys.modules[top] = module
        try:
            found.loader.exec_module(module)
        except BaseException:
            del sys.modules[top]
            raise
        return importlib.import_module(name)
