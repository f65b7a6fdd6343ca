"""Process-wide state, set in one place.

- torch's intra-op thread count is process-wide: `torch_threads(n)` sets it for a block and
  restores the caller's count after it (every place that changes the count uses it);
- matplotlib's backend is process-wide: `pyplot()` selects the non-interactive Agg backend
  once, on first use, and returns `matplotlib.pyplot` (every figure is drawn through it).
  matplotlib is imported there, on first use, not at package import: it takes longer to
  import than a simulation run without figures takes to start;
- the C allocator's thresholds are process-wide: `keep_freed_memory()` sets them once
  (`simulate()` and the benchmarks call it).

The engine's worker threads are a `TaskPool` (core/engine/pool.py), a context manager that
closes its threads on exit.
"""

from __future__ import annotations

import ctypes
import functools
import sys
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


# glibc's mallopt parameters (malloc.h) and the values given (bytes): glibc's own adaptive
# thresholds at the values they converge to (the mmap threshold's largest, 32 MiB; twice that
# for trimming), from the start.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 2**25
TRIM_THRESHOLD_BYTES = 2**26


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse: blocks up to `MMAP_THRESHOLD_BYTES`
    come from the heap instead of fresh mmaps, and up to `TRIM_THRESHOLD_BYTES` of free
    memory stays at the heap's top instead of going back to the OS. Returns True where
    applied (Linux with glibc; once per process), False elsewhere (nothing changed).

    Why: the engine's per-call tensors (a few MiB each at batch 64) are freed after every
    layer. glibc's defaults adapt both thresholds to the blocks freed so far, so whether
    those tensors reuse memory or page-fault on every first touch depended on the process's
    allocation history: on the demo's model (vgg8-pattern, 64 images, one thread) processes
    took up to 15,000 minor page faults per batch, a number that varied from process to
    process, and ran dense at 35-68 ms per batch; after this call 0-2 faults and 33-40 ms
    (docs/results/bench/allocator9.json, docs/benchmarks.md issue 18 part 9). Blocks above
    32 MiB are mmapped and returned as before (larger values kept more memory: the
    full-width VGG-16 at batch 256 peaked at 6.8 GiB with 1 GiB thresholds, against 3.7 GiB
    with these and with the defaults).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's C library (absent on musl)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
