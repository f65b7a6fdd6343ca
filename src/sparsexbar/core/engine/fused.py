"""The noisy ADC's per-conversion work as one compiled CPU kernel (`torch.compile`, Inductor).

`noise.noisy_adc` evaluates every conversion of a slice (up to 2^18-2^19 partial sums) in
about a dozen eager passes: the counter hash, the quantile-bucket gather, the standard
deviation, the midpoint value, its rounding, the bound check and the clamp. Compiled, the
same arithmetic is one loop that reads each partial sum once and writes its code and its gap
(|v - round(v)| + s x NARROW / step, the bucket check's left side); the flagged conversions
(`noise._flagged`) and their refinement stay as they are. Measured in docs/benchmarks.md
(issue 18, part 14).

The codes are the eager path's: a conversion whose bucket gives one code is that code in
both; where the compiled float32 arithmetic rounds differently from the eager passes (a
fused multiply-add, another order), the gap differs by a few ulps, far below the bound
check's slack (`noise.MARGIN`), so a conversion is at worst flagged in one path and not the
other, and a flagged conversion's refined code is the code every z of its bucket gives
(tests/test_noise.py compares both paths code for code, and whole noisy calls). The hash's
int32 products wrap as in torch's eager kernels: Inductor's vector lanes multiply modulo
2^32; its scalar tail loops (column counts not a multiple of the vector width) rely on the C++
compiler's two's-complement products, which the tests' odd column counts check.

CPU only (`usable`): elsewhere the eager path runs (on CUDA, Inductor would need Triton).
Compiling needs a C++ compiler; the first call of each variant per process takes seconds
(Inductor's on-disk cache makes later processes faster). Where compiling fails, the eager
path runs and a warning says why, once per process. The kernels are compiled single-
threaded (`cpp.threads`: 1): the engine's tasks run one per worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import warn
from .noise import mix32_

Head = Callable[..., None]


def _buckets(keys: Tensor, mix: Tensor, shift: Tensor) -> Tensor:
    """(rows, k) int32 quantile buckets, the entries of `noise.bucket_indices` one column at a
    time: bits `shift` .. `shift` + 15 of mix32(key ^ mix), with `noise.column_lanes`' per-
    column pair constant `mix` and lane shift (0 or 16); no interleaved intermediate."""
    h = mix32_(keys.unsqueeze(1) ^ mix.unsqueeze(0))
    return (h >> shift.unsqueeze(0)) & 0xFFFF


def _finish(p: Tensor, sigma: Tensor, z: Tensor, params: Tensor, code: Tensor,
            gap: Tensor) -> None:
    """Write the codes and gaps into `code` and `gap` (the caller's reused buffers: no fresh
    memory to fault in per slice), from the partial sums, their standard deviations and
    midpoint draws; params (read, top, step, NARROW / step) a float32 tensor (no
    recompiling per value)."""
    top, step, narrow = params[1], params[2], params[3]
    v = (p + sigma * z) / step
    rounded = torch.round(v)
    gap.copy_((v - rounded).abs() + sigma * narrow)
    code.copy_(rounded.clamp(min=0).minimum(top) * step)


def head_with_deviation(p: Tensor, keys: Tensor, mix: Tensor, shift: Tensor, deviation: Tensor,
                        mid: Tensor, params: Tensor, code: Tensor, gap: Tensor) -> None:
    """s = sqrt((read x p)^2 + deviation^2), deviation (rows, 1): see `noise.noisy_adc`."""
    z = mid[_buckets(keys, mix, shift)]
    read = params[0]
    sigma = torch.sqrt(deviation * deviation + (read * read) * (p * p))
    _finish(p, sigma, z, params, code, gap)


def head_read_only(p: Tensor, keys: Tensor, mix: Tensor, shift: Tensor, mid: Tensor,
                   params: Tensor, code: Tensor, gap: Tensor) -> None:
    """s = read x p: see `noise.noisy_adc`."""
    z = mid[_buckets(keys, mix, shift)]
    _finish(p, p * params[0], z, params, code, gap)


class CompiledHeads:
    """The compiled heads of this process, per variant ("deviation", "read"); None where
    compiling failed (then the eager path runs). Compiled on first use, under a lock."""

    _heads: ClassVar[dict[str, Head | None]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _failed: ClassVar[list[str]] = []

    @staticmethod
    def usable(device: torch.device) -> bool:
        """Whether the compiled head applies on `device` (CPU only)."""
        return device.type == "cpu"

    @classmethod
    def head(cls, with_deviation: bool) -> Head | None:
        """The compiled head of the variant (None once compiling failed in this process)."""
        key = "deviation" if with_deviation else "read"
        if key in cls._heads:
            return cls._heads[key]
        with cls._lock:
            if key not in cls._heads:
                fn = head_with_deviation if with_deviation else head_read_only
                # cpp_wrapper: the compiled call releases the GIL (two tasks run side by
                # side); compiled in this process (no compile worker processes)
                cls._heads[key] = torch.compile(
                    fn, dynamic=True,
                    options={"cpp_wrapper": True, "cpp.threads": 1, "compile_threads": 1})
        return cls._heads[key]

    @classmethod
    def run(cls, with_deviation: bool, *args: Tensor) -> tuple[Tensor, Tensor] | None:
        """Run the head on `args` (its last two: the code and gap buffers it fills) and
        return (code, gap); None where it cannot run (compiling failed: warned once per
        process, and the caller runs the eager path)."""
        compiled = cls.head(with_deviation)
        if compiled is None:
            return None
        try:
            with torch.no_grad():  # one guard set whatever the calling thread's grad mode
                compiled(*args)
            return args[-2], args[-1]
        except Exception as error:  # noqa: BLE001 - any compiler failure: the eager path
            key = "deviation" if with_deviation else "read"
            with cls._lock:
                cls._heads[key] = None
                if not cls._failed:
                    first = str(error).strip().splitlines()
                    cls._failed.append(first[0] if first else type(error).__name__)
                    warn("the noisy path's compiled kernel is unavailable "
                         f"({cls._failed[0][:200]}); running the eager path (same results, "
                         "slower). EngineOptions(compiled_noise=False) skips the attempt.")
            return None
