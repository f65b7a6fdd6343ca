"""How much of each scheme's time is the exact linear maps it must evaluate: the floor of
its design on this machine, against the dense exact shortcut (issue 18, part 12).

Every scheme here evaluates its values and counts through `intconv.ExactLinear` (oneDNN's
u8 x s8 convolution on CPU where exact, else float32): dense once per layer (the exact
shortcut); comprrae once per input cycle visited (the running sums A_t of its early
termination); sre, pattern, encoding and combined once per layer for the values plus the
counting convolutions of their packed input planes (several cycles per call). This script
runs each case as `benchmarks/engine.py` times it (the simulated forward pass of the batch,
`LayerRecorder`, best of `--repeats`, cases alternating round by round in one process) and
times every `ExactLinear` call inside it. `linear x dense` is the time of a case's linear
maps over the dense case's whole time: a ratio the case cannot go below without evaluating
fewer or cheaper linear maps, whatever the rest of its code does.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/linear_floor.py --model vgg8-pattern \\
        --batch-size 64 --repeats 5 --json docs/results/bench/linear_floor12.json
    .venv/bin/python benchmarks/linear_floor.py --table docs/results/bench/linear_floor12.json

Linear layers' int8 matrix products (`intconv.exact_int_mm`) are not `ExactLinear` calls and
count as the rest (the shipped VGG-8's two classifier layers: a small part of a batch).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from result_table import add_options, run_or_show  # benchmarks/, beside this script

from sparsexbar.app.bench import CASES, _model_and_inputs, prepared_case
from sparsexbar.core.intconv import ExactLinear
from sparsexbar.core.runtime import keep_freed_memory, torch_threads
from sparsexbar.simulate import LayerRecorder

DEFAULT_CASES = ("lossless", "pattern", "encoding", "sre", "comprrae", "combined")


class LinearTimer:
    """Wall time and count of `ExactLinear` calls while installed (`with`)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._original: Callable[..., torch.Tensor] | None = None

    def __enter__(self) -> LinearTimer:
        original = ExactLinear.__call__
        timer = self

        def timed(op: ExactLinear, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            start = time.perf_counter()
            out = original(op, x, scale)
            timer.seconds += time.perf_counter() - start
            timer.calls += 1
            return out

        self._original = original
        ExactLinear.__call__ = timed  # type: ignore[method-assign, assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._original is not None
        ExactLinear.__call__ = self._original  # type: ignore[method-assign]

    def reset(self) -> None:
        """Zero the time and count."""
        self.seconds, self.calls = 0.0, 0


def measure(model: str, batch_size: int, repeats: int, keys: list[str]) -> list[dict[str, Any]]:
    """Per case: the fastest run's whole time, its linear maps' time and calls, and plain
    PyTorch's best time of the same batch, cases alternating round by round."""
    keep_freed_memory()
    net, x = _model_and_inputs(model, batch_size)
    prepared = {k: prepared_case(CASES[k], net, x) for k in keys}
    best: dict[str, tuple[float, float, int]] = {}
    plain = float("inf")
    with torch.no_grad(), LinearTimer() as timer:
        recorders = {k: LayerRecorder(p[1], p[2], p[3], torch.device("cpu")).__enter__()
                     for k, p in prepared.items()}
        for k, p in prepared.items():  # warm-up: first calls build caches
            p[0].run(x, recorders[k])
        net(x)
        for _ in range(repeats):  # rounds: every case once, in turn
            start = time.perf_counter()
            net(x)
            plain = min(plain, time.perf_counter() - start)
            for k, p in prepared.items():
                timer.reset()
                start = time.perf_counter()
                p[0].run(x, recorders[k])
                wall = time.perf_counter() - start
                if k not in best or wall < best[k][0]:
                    best[k] = (wall, timer.seconds, timer.calls)
        for rec in recorders.values():
            rec.__exit__(None, None, None)
    dense = best[keys[0]][0]
    rows = []
    for k in keys:
        wall, linear, calls = best[k]
        rows.append({"key": k, "label": CASES[k].label, "model": model,
                     "batch_size": batch_size, "repeats": repeats,
                     "threads": torch.get_num_threads(), "sim_s": wall, "linear_s": linear,
                     "linear_calls": calls, "rest_s": wall - linear, "plain_s": plain,
                     "x_plain": wall / plain, "x_dense": wall / dense,
                     "linear_x_dense": linear / dense, "rest_x_dense": (wall - linear) / dense})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as the table of docs/benchmarks.md."""
    lines = ["| case | ms per batch | x dense | linear maps (calls) | ms | x dense "
             "| the rest, ms | x dense |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['key']} | {r['sim_s'] * 1e3:.1f} | {r['x_dense']:.2f} "
                     f"| {r['linear_calls']} | {r['linear_s'] * 1e3:.1f} "
                     f"| {r['linear_x_dense']:.2f} | {r['rest_s'] * 1e3:.1f} "
                     f"| {r['rest_x_dense']:.2f} |")
    plain = rows[0]["plain_s"]
    lines.append(f"\nplain PyTorch: {plain * 1e3:.1f} ms per batch; dense (`{rows[0]['key']}`)"
                 f" {rows[0]['x_plain']:.2f}x plain")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg8-pattern")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help="bench case keys, the dense reference first")
    add_options(parser)
    args = parser.parse_args()

    def run() -> list[dict[str, Any]]:
        keys = args.cases.split(",")
        unknown = [k for k in keys if k not in CASES]
        if unknown:
            parser.error(f"unknown case '{unknown[0]}' (known: {', '.join(CASES)})")
        with torch_threads(args.threads):
            return measure(args.model, args.batch_size, args.repeats, keys)

    run_or_show(args, run, markdown)


if __name__ == "__main__":
    main()
