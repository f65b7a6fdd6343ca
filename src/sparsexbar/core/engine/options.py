"""Run-time knobs of the engine (not hardware)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import SparsexbarError
from .pool import TaskPool


@dataclass(frozen=True)
class EngineOptions:
    """Run-time knobs of the engine (not hardware)."""

    memory_budget_mb: float = 512.0  # bound on the big intermediates of all tasks in flight, MiB
    exact_shortcut: bool = True  # skip per-group conversion where provably lossless
    # The noisy path's per-conversion work as one compiled C loop on CPU (`native.py`: same
    # results; needs a C compiler, under a second to build once per machine; falls back to
    # the eager passes with a warning). False: the eager passes only.
    compiled_noise: bool = True
    # CPU threads of the per-conversion paths (None: torch.get_num_threads()). They run image
    # tasks side by side, each task single-threaded; results do not depend on this number.
    threads: int | None = None
    # Workers shared by the layers of a run (None: each call starts its own threads).
    pool: TaskPool | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse values the engine cannot use (a NaN budget failed mid-run; 0, negative or
        fractional threads were taken silently)."""
        budget = self.memory_budget_mb
        if (isinstance(budget, bool) or not isinstance(budget, (int, float))
                or not math.isfinite(budget) or budget <= 0):
            raise SparsexbarError(f"EngineOptions.memory_budget_mb must be a positive number "
                                  f"(MiB), got {budget!r}")
        threads = self.threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise SparsexbarError(f"EngineOptions.threads must be a whole number >= 1 or None "
                                  f"(torch's thread count), got {threads!r}")
        for name in ("exact_shortcut", "compiled_noise"):
            if not isinstance(getattr(self, name), bool):
                raise SparsexbarError(f"EngineOptions.{name} must be True or False, got "
                                      f"{getattr(self, name)!r}")
