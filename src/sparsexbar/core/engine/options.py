"""Run-time knobs of the engine (not hardware)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .pool import TaskPool


@dataclass(frozen=True)
class EngineOptions:
    """Run-time knobs of the engine (not hardware)."""

    memory_budget_mb: float = 512.0  # bound on the big intermediates of all tasks in flight, MiB
    exact_shortcut: bool = True  # skip per-group conversion where provably lossless
    # The noisy path's per-conversion work as one compiled kernel on CPU (`fused.py`: same
    # results; needs a C++ compiler, seconds to compile once per process; falls back to the
    # eager passes with a warning). False: the eager passes only.
    compiled_noise: bool = True
    # CPU threads of the per-conversion paths (None: torch.get_num_threads()). They run image
    # tasks side by side, each task single-threaded; results do not depend on this number.
    threads: int | None = None
    # Workers shared by the layers of a run (None: each call starts its own threads).
    pool: TaskPool | None = field(default=None, compare=False, repr=False)
