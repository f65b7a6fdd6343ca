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
    imported through it. While it loads, the current directory is on the import path (last,
    after the installed packages), so the modules it imports from beside itself are found
    too (`from helper import make` with helper.py next to it); it is taken off again."""
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
        here = str(Path.cwd())
        added = here not in sys.path
        if added:
            sys.path.append(here)
        try:
            found.loader.exec_module(module)
            return importlib.import_module(name)
        except BaseException:
            sys.modules.pop(top, None)
            raise
        finally:
            if added and here in sys.path:
                sys.path.remove(here)
