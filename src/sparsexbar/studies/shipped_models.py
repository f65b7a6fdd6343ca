"""`sparsexbar models --measure`: the shipped models' accuracies measured by the simulator and
recorded in their metadata, so `sparsexbar models` and docs/models.md show figures from a run:
float top-1, the 8-bit integer-quantized network's, and a simulated `dense` run on `isaac`
(lossless ADCs sized to need: it must equal the integer-quantized top-1) over the test split.
Each run's result JSON is written beside (`<out>/<name>_dense.json`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.io import atomic_write_text
from ..simulate import simulate
from ..training.checkpoint import read_meta
from ..training.data import fashion_mnist
from ..training.shipped import SHIPPED, describe, find_shipped, load_shipped
from ..training.train import evaluate


def width_phrase(widths: Sequence[float | None] | None) -> str:
    """How a result's models are described by width: " at width W" from the widths it recorded
    (None entries: not a zoo model), "" when none is known, and for a result that recorded no
    widths (written before they were recorded, when the shipped VGG-16s were half width)
    " at half width" with a pointer to docs/models.md."""
    if widths is None:
        return ' at half width (docs/models.md, "Width")'
    shown = sorted({f"{w:g}" for w in widths if w is not None})
    return f" at width {', '.join(shown)}" if shown else ""


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


def model_card(name: str) -> str:
    """A shipped model's card (Markdown) from its metadata: how it was made (command, epochs,
    wall time, threads), its accuracies and file size, and pruning figures where pruned."""
    model = find_shipped(name)
    assert model is not None, name
    meta = read_meta(model.path)
    acc, train, pruning = meta.get("accuracy", {}), meta.get("train", {}), meta.get("pruning")
    rows = [("architecture", f"`{meta.get('architecture')}` {json.dumps(meta.get('arch_kwargs'))}"),
            ("data", f"{meta.get('dataset')}" + (f", input {json.dumps(meta['input'])}"
                                                  if meta.get("input") else ""))]
    if pruning:
        rows += [("pruned from", f"`{pruning.get('parent')}`, method {pruning.get('method')}, "
                  f"target {pruning.get('sparsity')}, {pruning.get('steps')} steps x "
                  f"{pruning.get('epochs_per_step')} epochs + {pruning.get('final_epochs') or 0}"
                  f" final, on {pruning.get('tune_images'):,} {pruning.get('tune_split')} "
                  f"images"),
                 ("weight sparsity", _pct(pruning.get("weight_sparsity",
                                                      pruning.get("sparsity")))),
                 ("patterns per 3x3 conv layer", ", ".join(
                     str(c) for c in pruning.get("summary", {}).get("patterns_per_layer", []))
                  + (f" ({pruning['summary']['patterns_total']} in all; 3x3 convs "
                     f"{100 * pruning['summary']['pattern_layers_sparsity']:.2f}% sparse)"
                     if "patterns_total" in pruning.get("summary", {}) else "")),
                 ("prune wall time", f"{float(pruning.get('prune_time_s', 0)):,.0f} s on "
                  f"{_threads(pruning.get('torch_threads'))}"),
                 ("top-1 before -> after", f"{100 * float(pruning['top1_before']):.2f}% -> "
                  f"{100 * float(pruning['top1_after']):.2f}%")]
    elif train:
        history = train.get("history", [])
        rows += [("training", f"{train.get('epochs')} epochs on {train.get('train_images'):,} "
                  f"images, batch {train.get('batch_size')}, lr {train.get('lr')} cosine, "
                  f"precision {train.get('precision', 'fp32')}, seed {train.get('seed')}"),
                 ("training wall time", f"{float(train.get('train_time_s', 0)):,.0f} s on "
                  f"{_threads(train.get('torch_threads'))}"),
                 ("test top-1 per epoch", ", ".join(
                     f"{100 * float(h['test_top1']):.2f}" for h in history
                     if "test_top1" in h))]
    rows += [("float top-1 (10k test)", _pct(acc.get("float_top1"))),
             ("8-bit integer-quantized top-1 (10k test)", _pct(acc.get(
                 "quantized_top1", acc.get("simulated_quantized_top1")))),
             ("simulated dense top-1", _pct(acc.get("simulated_dense_top1")) + (
                 f" on {acc['simulated_images']:,} images ({acc.get('simulated_hardware')})"
                 if acc.get("simulated_images") else "")),
             ("file", f"{model.path.stat().st_size / 2**20:.2f} MiB ({meta.get('dtype')})")]
    lines = [f"| `{name}` | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _threads(count: Any) -> str:
    return f"{count} thread" if count == 1 else f"{count} threads"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}%"


def current_doc(text: str) -> str:
    """docs/models.md's text with its generated blocks (the models table, each model card
    between ``<!-- card:NAME -->`` markers) made current."""
    def put(text: str, begin: str, end: str, block: str) -> str:
        if begin not in text:
            return text
        i, j = text.index(begin) + len(begin), text.index(end)
        return text[:i] + block + text[j:]

    text = put(text, "<!-- models-table -->\n", "<!-- /models-table -->", shipped_markdown())
    for model in SHIPPED:
        if model.path.is_file():
            text = put(text, f"<!-- card:{model.name} -->\n", f"<!-- /card:{model.name} -->",
                       model_card(model.name))
    return text


def update_models_doc(path: str | Path) -> None:
    """Rewrite docs/models.md's generated blocks (`current_doc`)."""
    doc = Path(path)
    atomic_write_text(doc, current_doc(doc.read_text()))


if __name__ == "__main__":  # python -m sparsexbar.studies.shipped_models docs/models.md
    import sys

    update_models_doc(sys.argv[1] if len(sys.argv) > 1 else "docs/models.md")
