"""Where a command's results go, checked before any work starts: an `--out` that is a file
where a directory is wanted (or a directory where a file is), or that cannot be written, is
refused with one line (SparsexbarError) instead of after the whole run. Nothing is created
by a check: writability is tried with an anonymous temporary file in the nearest folder
that exists."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..core.errors import SparsexbarError


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_from(path: Path, flag: str) -> None:
    """The folders of `path` can be made and written: the nearest existing one is a
    directory that takes a new file."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise SparsexbarError(f"{flag} {path}: {base} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        # the error is creating a file in `base` (on /proc: ENOENT, though /proc exists)
        raise SparsexbarError(f"{flag} {path} cannot be written: no file can be created in "
                              f"{base} ({exc.strerror or exc})") from None


def check_out_dir(path: str | Path, flag: str = "--out", files: Iterable[str] = ()) -> Path:
    """A directory results will be written into; `files`: the names the command writes
    there, none of which may be a directory (found after the whole run otherwise, with the
    files written before it left behind)."""
    out = Path(path)
    if str(path).strip() == "":
        raise SparsexbarError(f"{flag} must name a directory, got ''")
    if out.is_symlink() and not out.exists():
        raise SparsexbarError(f"{flag} {out} is a link to a missing folder "
                              f"({os.readlink(out)})")
    if out.exists() and not out.is_dir():
        raise SparsexbarError(f"{flag} {out} is a file, not a directory")
    for name in files:
        if (out / name).is_dir():
            raise SparsexbarError(f"{flag} {out}: {out / name} is a directory; the command "
                                  "writes a file of that name")
    _check_writable_from(out, flag)
    return out


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """A file that will be written (replaced if there)."""
    out = Path(path)
    if str(path).strip() == "" or out.name in ("", ".", ".."):
        raise SparsexbarError(f"{flag} must name a file, got '{path}'")
    if out.is_dir():
        raise SparsexbarError(f"{flag} {out} is a directory, not a file")
    _check_writable_from(out.parent, flag)
    return out


def check_out_stem(path: str | Path, suffixes: tuple[str, ...], flag: str = "--out") -> Path:
    """A checkpoint stem: `<stem><suffix>` files will be written (an existing directory is
    written into)."""
    out = Path(path)
    if out.is_dir():
        _check_writable_from(out, flag)
        return out
    for suffix in suffixes:
        check_out_file(out.with_name(out.name + suffix) if out.name else out, flag)
    return out
