"""Importing a user's module by name: from the installed packages, or else the current
directory, as `python -m` would find it (`module:factory` model specs, the classes a
`torch.save` file names)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType


def import_module_here(name: str) -> ModuleType:
    """`importlib.import_module(name)`; when its top-level package is not importable, that
    package is loaded from the current directory (as `python -m` would find it) and `name`
    imported through it. While it loads, top-level modules are also looked for in the current
    directory (after the installed packages), so the modules it imports from beside itself
    are found too (`from helper import make` with helper.py next to it)."""
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
        finder = _HereFinder(str(Path.cwd()))
        sys.meta_path.append(finder)  # last: the installed packages come first
        try:
            found.loader.exec_module(module)
            return importlib.import_module(name)
        except BaseException:
            sys.modules.pop(top, None)
            raise
        finally:
            sys.meta_path.remove(finder)


class _HereFinder(importlib.abc.MetaPathFinder):
    """Finds top-level modules in one folder (the current directory), for the imports of a
    module loaded from there, as `python -m` would; the import path itself is not edited."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if path is not None:  # a submodule: its package's own path finds it
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [self.folder])
