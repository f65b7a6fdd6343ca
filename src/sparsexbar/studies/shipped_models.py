"""`sparsexbar models --measure`: the shipped models' accuracies measured by the simulator and
recorded in their metadata, so `sparsexbar models` and docs/models.md show figures from a run:
float top-1, the 8-bit integer-quantized network's, and a simulated `dense` run on `isaac`
(lossless ADCs sized to need: it must equal the integer-quantized top-1) over the test split.
Each run's result JSON is written beside (`<out>/<name>_dense.json`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.io import atomic_write_text
from ..simulate import simulate
from ..training.checkpoint import read_meta
from ..training.data import fashion_mnist
from ..training.shipped import SHIPPED, describe, find_shipped, load_shipped
from ..training.train import evaluate


def measure_shipped(name: str, out_dir: str | Path, limit: int | None = None,
                    hw: str = "isaac", batch_size: int = 200,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Simulate shipped model `name` with `dense` on `hw` over the embedded Fashion-MNIST test
    split (its first `limit` images), write the result JSON under `out_dir` and record
    float / quantized / simulated top-1 in the model's metadata (its .json, atomically).
    Returns the accuracy entry written."""
    model = find_shipped(name)
    assert model is not None, name
    res = simulate(model.name, "default", hw=hw, scheme="dense", limit=limit,
                   batch_size=batch_size, progress=progress)
    out = Path(out_dir)
    atomic_write_text(out / f"{model.name}_dense.json",
                      json.dumps(res.to_json(), indent=1) + "\n")
    json_path = model.path.with_suffix(".json")
    meta = read_meta(json_path)
    acc = dict(meta.get("accuracy", {}))
    net, _ = load_shipped(model.name)
    first = fashion_mnist("test").subset(0, 1000)
    kwargs = meta.get("arch_kwargs", {})
    if int(kwargs.get("input_size", 28)) != 28:  # as the model was trained (28 -> 32: padded)
        first = first.fitted(int(kwargs.get("in_channels", 1)), int(kwargs["input_size"]))
    acc.update({
        "float_top1_first_1000": evaluate(net, first),
        "simulated_dense_top1": res.accuracy.top1,
        "simulated_float_top1": res.accuracy.float_top1,
        "simulated_quantized_top1": res.accuracy.quantized_top1,
        "simulated_images": res.num_images,
        "simulated_hardware": hw,
    })
    meta["accuracy"] = acc
    atomic_write_text(json_path, json.dumps(meta, indent=2) + "\n")
    return acc


def shipped_table() -> tuple[list[dict[str, Any]], list[str], list[list[str]]]:
    """(rows of `describe`, header, cells) of `sparsexbar models`: the shipped models in this
    installation with their data, input, sparsity and accuracies (%), from their metadata."""
    rows = [describe(m) for m in SHIPPED if m.path.is_file()]

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * float(v):.2f}"

    head = ["name", "architecture", "data", "input", "sparsity", "float %", "8-bit %",
            "simulated %", "weights", "MB"]
    cells = [[r["name"], str(r["architecture"]), str(r["data"]), r["input"],
              f"{100 * r['sparsity']:.1f}%", pct(r["float_top1"]), pct(r["quantized_top1"]),
              pct(r["simulated_top1"]) + (
                  f" ({r['simulated_images']:,} img)" if r["simulated_images"]
                  not in (None, r["test_images"]) else ""),
              str(r["weights"]), f"{r['file_mb']:.1f}"]
             for r in rows]
    return rows, head, cells


def shipped_markdown() -> str:
    """`sparsexbar models --markdown`: the table docs/models.md holds between its
    ``<!-- models-table -->`` markers (tests/test_shipped.py checks it is current)."""
    _, head, cells = shipped_table()
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"
