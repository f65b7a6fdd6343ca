"""Process-wide state, set in one place.

- torch's intra-op thread count is process-wide: `torch_threads(n)` sets it for a block and
  restores the caller's count after it (every place that changes the count uses it);
- matplotlib's backend is process-wide: `pyplot()` selects the non-interactive Agg backend
  once, on first use, and returns `matplotlib.pyplot` (every figure is drawn through it).
  matplotlib is imported there, on first use, not at package import: it takes longer to
  import than a simulation run without figures takes to start.

The engine's worker threads are a `TaskPool` (core/engine/pool.py), a context manager that
closes its threads on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside the block, the caller's count after."""
    outer = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(outer)


_PYPLOT: ModuleType | None = None


def pyplot() -> ModuleType:
    """`matplotlib.pyplot` with the Agg backend (selected once, before pyplot is imported)."""
    global _PYPLOT
    if _PYPLOT is None:
        import matplotlib  # heavy and only needed for figures: imported on first use

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        _PYPLOT = plt
    return _PYPLOT
