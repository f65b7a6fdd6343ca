"""The `sparsexbar` console command's entry point.

The command's module (`sparsexbar.app.cli`) imports the whole package, torch among it: 1.5-2.5 s
on this project's CPU. A Ctrl-C in that time would end in Python's KeyboardInterrupt traceback,
so the import runs here, outside the package, under a guard that prints one line and exits
with 130 (128 + SIGINT), as `sparsexbar.app.cli.main` does for an interrupted command.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Import the command line (guarded against Ctrl-C) and run it with `argv` (None: the
    process's arguments)."""
    try:
        from sparsexbar.app import cli
    except KeyboardInterrupt:
        print("sparsexbar: interrupted while starting; nothing was run", file=sys.stderr,
              flush=True)
        sys.exit(130)
    cli.main(argv)
