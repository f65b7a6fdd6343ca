"""The noisy path's per-conversion work (`noise.noisy_adc`), eager passes against the compiled
loop (`core/engine/native.py`; part 14's files measured the `torch.compile` kernel it
replaced), in ns per conversion on slices of the engine's shapes (issue 18, parts 14, 18).

One slice: `rows` OU slots x `k` columns of float32 partial sums (non-negative, up to 45),
their slots' int32 keys and accumulated-deviation standard deviations, read noise 0.02, a
5-bit ADC; each variant's codes are checked equal to the eager ones. Best of `--repeats`
after a warm-up call (the first compiled call builds or loads the loop: timed apart,
`first_call_s`), one
thread unless `--threads`.

    .venv/bin/python benchmarks/noisy_head.py --json docs/results/bench/noisy_head18.json
    .venv/bin/python benchmarks/noisy_head.py --table docs/results/bench/noisy_head18.json
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch
from result_table import best_seconds, repeats_and_threads_main  # benchmarks/

from sparsexbar.core.engine import noise
from sparsexbar.core.engine.native import NativeHead
from sparsexbar.core.runtime import keep_freed_memory

SHAPES = ((1024, 256), (2048, 256), (512, 512), (256, 2048))  # (slots, columns) per slice
READ, DEVIATION, TOP = 0.02, 0.3, 31.0


def convert(p: torch.Tensor, keys: torch.Tensor, deviation: torch.Tensor | None,
            ws: noise.Workspace, compiled: noise.NativeKernel | None) -> torch.Tensor:
    """One slice's codes (`noise.noisy_adc`), eager (`compiled` None) or compiled."""
    return noise.noisy_adc(p, keys, READ, deviation, TOP, 1.0, ws, noise.margin(90), None,
                           compiled)


def measure(repeats: int) -> list[dict[str, Any]]:
    """Per shape and variant (with / without the per-row deviation): eager and compiled
    ns per conversion, and whether their codes are equal."""
    keep_freed_memory()
    with torch.no_grad():
        return _measure(repeats)


def _measure(repeats: int) -> list[dict[str, Any]]:
    """`measure` without its set-up."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for slots, k in SHAPES:
        p = torch.rand((slots, k), generator=gen) * 45
        keys = torch.randint(-2**31, 2**31 - 1, (slots,), generator=gen,
                             dtype=torch.int64).to(torch.int32)
        deviation = torch.rand((slots, 1), generator=gen) * DEVIATION
        ws = noise.Workspace(slots * k, p.device)
        for variant, dev in (("read noise + deviation", deviation), ("read noise", None)):
            call = partial(convert, p, keys, dev, ws)
            eager = call(None).clone()
            start = time.perf_counter()
            compiled = call(NativeHead.run).clone()
            first = time.perf_counter() - start
            t_eager = best_seconds(partial(call, None), repeats)
            t_compiled = best_seconds(partial(call, NativeHead.run), repeats)
            rows.append({"slots": slots, "columns": k, "variant": variant,
                         "eager_ns": t_eager * 1e9 / p.numel(),
                         "compiled_ns": t_compiled * 1e9 / p.numel(),
                         "first_call_s": first, "equal": bool(torch.equal(eager, compiled)),
                         "threads": torch.get_num_threads(), "repeats": repeats})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """One row per (shape, variant): ns per conversion, eager and compiled, and their ratio."""
    lines = ["| slots x columns | s | eager ns/conversion | compiled ns/conversion | "
             "compiled / eager | codes equal |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['slots']} x {r['columns']} | {r['variant']} | "
                     f"{r['eager_ns']:.2f} | {r['compiled_ns']:.2f} | "
                     f"{r['compiled_ns'] / r['eager_ns']:.2f} | "
                     f"{'yes' if r['equal'] else 'NO'} |")
    lines.append(f"\nbest of {rows[0]['repeats']}, {rows[0]['threads']} thread(s); first "
                 f"compiled call (compiling) {max(r['first_call_s'] for r in rows):.1f} s "
                 "at most")
    return "\n".join(lines)


def main() -> None:
    repeats_and_threads_main(__doc__, measure, markdown)


if __name__ == "__main__":
    main()
