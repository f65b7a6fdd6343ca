"""The noisy ADC's per-conversion work as one small C function, built once per machine.

`noise.noisy_adc` evaluates every conversion of a slice (up to 2^18-2^19 partial sums). In
eager torch that is about a dozen passes over the slice (the counter hash, the quantile-bucket
gather, the standard deviation, the midpoint value, its rounding, the bound check, the clamp,
the search for the conversions to refine). `sx_noisy_head` does it in one loop over blocks of
a slot's columns that stay in the L1 cache: it reads each partial sum once, writes its code,
and appends the flat index of each conversion whose bucket cannot decide its code (the
refinements, `noise.Refinements`, run as before). Measured in docs/benchmarks.md (issue 18,
part 18, this project's AVX2 CPU): a slice's whole `noisy_adc` call 0.63-0.78x the eager
passes' time, where the `torch.compile` kernel it replaces took 1.23-1.86x (a generic gather
and int64 index arithmetic per conversion).

Same codes as the eager passes (tests/test_noise.py compares them code for code): the same
hash, buckets and float32 operations in the same order; only the check's left side
|v - round(v)| + s x NARROW / step may differ from torch's by an ulp where torch fuses a
multiply-add, far below the check's slack (`noise.MARGIN`), so a conversion is at worst
refined in one path and not in the other, and a refined code is the code every z of its
bucket gives.

Built with the machine's C compiler (`cc`, `gcc` or `clang`; `-O3 -march=native`, no
contraction of multiply-adds) into a per-user folder of the system's temporary directory
(mode 0700; one others can write into is not used), named by a hash of the source, the flags
and the CPU, and loaded with ctypes, which releases the GIL during the call (the engine's two
image tasks run side by side). Where no compiler works, the eager passes run and one warning
per process says why. CPU tensors only.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import warn

SOURCE = r"""
#include <stdint.h>
#include <math.h>
#define BLOCK 128 /* columns per block (even: a hash gives a column pair) */

static inline uint32_t mix32(uint32_t x) {  /* noise.mix32_: lowbias32's core */
    x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; return x;
}

/* Codes of the (rows, k) partial sums p; mode 0: s = read p; 1: s = sqrt(dev^2 + (rr p) p);
   2: s = dev (dev: one per row). v = p + z s (divided by step where `divide`), z the
   midpoint of the bucket of mix32(key ^ mix[j / 2]) (low 16 bits for even j, high for odd);
   code = clamp(rint(v), 0, top) (times step where `divide`). The flat index of every
   conversion with not (|v - rint(v)| + alpha w <= limit) (w = p in mode 0, s otherwise; NaN
   included) goes to `flagged`, ascending; returns their number. */
int64_t sx_noisy_head(const float* p, const int32_t* keys, const int32_t* mix,
                      const float* dev, const float* mid, int64_t rows, int64_t k,
                      int32_t mode, float read, float rr, float alpha, float step,
                      int32_t divide, float top, float limit, float* code,
                      int64_t* flagged) {
    int64_t nflag = 0;
    float z[BLOCK], s[BLOCK], g[BLOCK];
    for (int64_t r = 0; r < rows; ++r) {
        const uint32_t key = (uint32_t)keys[r];
        const float d = mode ? dev[r] : 0.0f;
        const float d2 = d * d;
        for (int64_t j0 = 0; j0 < k; j0 += BLOCK) {
            const int64_t n = (k - j0 < BLOCK) ? k - j0 : BLOCK;
            const float* pr = p + r * k + j0;
            float* cr = code + r * k + j0;
            for (int64_t j = 0; j < n; j += 2) {
                const uint32_t h = mix32(key ^ (uint32_t)mix[(j0 + j) >> 1]);
                z[j] = mid[h & 0xFFFFu];
                if (j + 1 < n) z[j + 1] = mid[h >> 16];
            }
            if (mode == 0) {
                for (int64_t j = 0; j < n; ++j) s[j] = read * pr[j];
            } else if (mode == 1) {
                for (int64_t j = 0; j < n; ++j) s[j] = sqrtf(d2 + (rr * pr[j]) * pr[j]);
            } else {
                for (int64_t j = 0; j < n; ++j) s[j] = d;
            }
            const float* w = mode == 0 ? pr : s;
            int any = 0;
            for (int64_t j = 0; j < n; ++j) {
                float v = pr[j] + z[j] * s[j];
                if (divide) v = v / step;
                const float rd = rintf(v);
                g[j] = fabsf(v - rd) + alpha * w[j];
                float c = rd < 0.0f ? 0.0f : rd;
                c = c > top ? top : c;
                cr[j] = divide ? c * step : c;
                any |= !(g[j] <= limit);
            }
            if (any) {
                for (int64_t j = 0; j < n; ++j)
                    if (!(g[j] <= limit)) flagged[nflag++] = r * k + j0 + j;
            }
        }
    }
    return nflag;
}
"""

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC")
PORTABLE_FLAGS = tuple(f for f in FLAGS if f != "-march=native")  # where -march=native fails
COMPILERS = ("cc", "gcc", "clang")
_P, _F, _I32, _I64 = ctypes.c_void_p, ctypes.c_float, ctypes.c_int32, ctypes.c_int64
_ARGTYPES: list[Any] = [_P, _P, _P, _P, _P, _I64, _I64, _I32, _F, _F, _F, _F, _I32, _F, _F, _P, _P]


def _cpu_signature() -> str:
    """What `-march=native` depends on: the machine, and the CPU's model and flags."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            parts += [line for line in f if line.startswith(("model name", "flags"))][:2]
    except OSError:
        pass
    return "\n".join(parts)


def build(compilers: tuple[str, ...] = COMPILERS, folder: Path | None = None) -> ctypes.CDLL:
    """The compiled library, from `folder` (default: `sparsexbar-<uid>` in the system's
    temporary directory) if built there before for this source, compiler and CPU, else
    compiled now (atomically renamed into place). Raises RuntimeError naming the reason
    where no compiler of `compilers` is found or works."""
    found = [path for name in compilers if (path := shutil.which(name))]
    if not found:
        raise RuntimeError(f"no C compiler found (looked for {', '.join(compilers)})")
    folder = _private(folder or Path(tempfile.gettempdir()) / f"sparsexbar-{os.getuid()}")
    errors = []
    cpu = _cpu_signature()
    for compiler in found:
        for flags in (FLAGS, PORTABLE_FLAGS):
            tag = hashlib.sha256("\0".join([SOURCE, compiler, *flags, cpu]).encode()
                                 ).hexdigest()[:16]
            target = folder / f"noisy_head-{tag}.so"
            if not target.exists():
                error = _compile(compiler, flags, folder, target)
                if error:
                    errors.append(error)
                    continue
            lib = ctypes.CDLL(str(target))
            lib.sx_noisy_head.argtypes = _ARGTYPES
            lib.sx_noisy_head.restype = _I64
            return lib
    raise RuntimeError("; ".join(errors))


def _private(folder: Path) -> Path:
    """`folder`, made if missing (mode 0700), where only this user can write; else (another
    user made it first in the shared temporary directory, or others may write into it, so a
    library found there could be anyone's) a fresh private folder, used this once."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return Path(tempfile.mkdtemp(prefix="sparsexbar-"))
    return folder


def _compile(compiler: str, flags: tuple[str, ...], folder: Path, target: Path) -> str:
    """Compile SOURCE into `target` (through a temporary file: another process loading it
    meanwhile never sees half a library); '' on success, else why not (one line)."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        source, lib = Path(tmp) / "noisy_head.c", Path(tmp) / "noisy_head.so"
        source.write_text(SOURCE)
        try:
            done = subprocess.run([compiler, *flags, str(source), "-o", str(lib)],
                                  capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as error:
            return f"{compiler}: {error}"
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
            return f"{compiler} {' '.join(flags[:2])}: {first[:200]}"
        os.replace(lib, target)
    return ""


class NativeHead:
    """The compiled per-conversion kernel of this process: built on first use, under a
    lock; after a failure (warned once per process) `run` returns None and the caller runs
    the eager passes."""

    _lib: ClassVar[ctypes.CDLL | None] = None
    _failed: ClassVar[list[str]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def library(cls) -> ctypes.CDLL | None:
        """The loaded library, or None once building it failed in this process."""
        if cls._lib is None and not cls._failed:
            with cls._lock:
                if cls._lib is None and not cls._failed:
                    try:
                        cls._lib = build()
                    except (RuntimeError, OSError) as error:
                        cls._failed.append(str(error).strip() or type(error).__name__)
                        warn("the noisy path's compiled kernel is unavailable "
                             f"({cls._failed[0][:200]}); running the eager passes (same "
                             "results, slower). EngineOptions(compiled_noise=False) skips "
                             "the attempt.")
        return cls._lib

    @staticmethod
    def usable(p: Tensor) -> bool:
        """Whether the kernel applies to partial sums `p`: contiguous float32 on the CPU."""
        return p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()

    @classmethod
    def run(cls, p: Tensor, keys: Tensor, mix: Tensor, deviation: Tensor | None,
            mid: Tensor, read: float, top: float, step: float, alpha: float, limit: float,
            code: Tensor, flagged: Tensor) -> Tensor | None:
        """Fill `code` (rows, k) with the codes of `p` (rows, k) and return the flat indices
        of the conversions to refine (int64, a view of `flagged`), or None where the
        kernel is unavailable or the inputs are not its layout. `deviation` (rows, 1) or
        None; `alpha`: the check's coefficient (read x NARROW / step without a deviation,
        NARROW / step with one); `limit`: its bound (see `noise.noisy_adc`)."""
        lib = cls.library() if cls.usable(p) else None
        if lib is None:
            return None
        rows, k = (int(v) for v in p.shape)
        keys = keys.to(torch.int32).contiguous()
        if deviation is None:
            mode, dev_ptr = 0, None
        else:
            deviation = deviation.to(torch.float32).contiguous()
            mode, dev_ptr = (1 if read > 0 else 2), deviation.data_ptr()
        # ctypes rounds each float argument to float32 as torch rounds a Python scalar
        count = lib.sx_noisy_head(p.data_ptr(), keys.data_ptr(), mix.data_ptr(), dev_ptr,
                                  mid.data_ptr(), rows, k, mode, read, read * read, alpha, step,
                                  int(step != 1.0), top, limit, code.data_ptr(),
                                  flagged.data_ptr())
        return flagged[:count]
