"""Ship a trained MobileNetV2 checkpoint as `mobilenetv2-fmnist`, in one step:

    .venv/bin/python scripts/ship_mobilenet.py /work/runs/mobilenetv2_fmnist \
        --demo-out out/mobilenet_demo --limit 1000

1. checks the checkpoint (`mobilenetv2`, width 0.5, Fashion-MNIST at 32x32, float16 weights);
2. copies its weights byte for byte to src/sparsexbar/assets/mobilenetv2_fmnist.safetensors and
   writes mobilenetv2_fmnist.json: its metadata, plus `classes` and `input` where absent (what
   `sparsexbar train` writes now; a checkpoint from before has `input_fit` only) and
   `accuracy.float_top1_first1000` (the first 1000 test images padded to 32x32, what
   tests/test_zoo.py checks);
3. runs scripts/mobilenet_demo.py on the first --limit test images (skipped with --no-demo,
   which reads --demo-out/summary.json if it is there);
4. fills the `{{mbv2.*}}` placeholders of docs/models.md from the metadata and the demo's
   summary.json (a placeholder with no value is left and listed).

Step 2 alone: --no-demo --no-docs. Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "models.md"
PLACEHOLDER = re.compile(r"\{\{mbv2\.([A-Za-z0-9_.\- ]+)\}\}")
ARCH_KWARGS = {"in_channels": 1, "num_classes": 10, "input_size": 32, "width": 0.5}


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def ship(src: Path) -> dict[str, Any]:
    """Steps 1 and 2; returns the shipped metadata."""
    from sparsexbar.core.errors import SparsexbarError
    from sparsexbar.training.checkpoint import (
        SHIPPED_MOBILENET_STEM,
        load_checkpoint,
        shipped_mobilenet_path,
    )
    from sparsexbar.training.data import load_dataset
    from sparsexbar.training.inputs import KNOWN_CLASSES
    from sparsexbar.training.train import evaluate

    stem = src.with_suffix("") if src.suffix in (".safetensors", ".json") else src
    weights, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    try:
        model, meta = load_checkpoint(stem)
    except SparsexbarError as exc:
        fail(str(exc))
    if meta.get("architecture") != "mobilenetv2" or meta.get("arch_kwargs") != ARCH_KWARGS:
        fail(f"{meta_path}: not a mobilenetv2 with {ARCH_KWARGS} (architecture "
             f"{meta.get('architecture')!r}, arch_kwargs {meta.get('arch_kwargs')})")
    if meta.get("dataset") != "fashion-mnist" or meta.get("dtype") != "float16":
        fail(f"{meta_path}: dataset {meta.get('dataset')!r}, dtype {meta.get('dtype')!r}; "
             "want fashion-mnist and float16 (train --half)")
    test = load_dataset("fashion-mnist", "test")
    first1000 = test.subset(0, 1000).fitted(1, 32, "pad")
    meta.setdefault("classes", list(KNOWN_CLASSES["fashion-mnist"]))
    fit = meta.get("input_fit") or {}
    meta.setdefault("input", {"channels": 1, "size": 32, "fit": fit.get("how", "pad"),
                              "scale": 1 / 255, "mean": [0.0], "std": [1.0]})
    meta["accuracy"]["float_top1_first1000"] = evaluate(model, first1000, batch_size=500)
    out = shipped_mobilenet_path()
    shutil.copyfile(weights, out)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"shipped {SHIPPED_MOBILENET_STEM}: float top-1 {meta['accuracy']['float_top1']:.4f}"
          f" (10k), {meta['accuracy']['float_top1_first1000']:.4f} (first 1000); "
          f"{out.stat().st_size / 1e6:.2f} MB")
    return meta


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def values(meta: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, str]:
    """The placeholder values, by key (docs/models.md `{{mbv2.KEY}}`)."""
    from sparsexbar.training.checkpoint import load_shipped_mobilenet, shipped_mobilenet_path

    model, _ = load_shipped_mobilenet()
    train = meta.get("train", {})
    secs = float(train.get("train_time_s", 0.0))
    history = train.get("history", [])
    out = {
        "params": f"{sum(p.numel() for p in model.parameters()):,}",
        "file_mb": f"{shipped_mobilenet_path().stat().st_size / 1e6:.2f}",
        "train_time": f"{secs:,.0f} s (about {secs / 60:.0f} min)",
        "threads": str(train.get("torch_threads", "?")),
        "precision": str(train.get("precision", "fp32")),
        "float_top1": pct(meta["accuracy"]["float_top1"]),
        "float_top1_first1000": pct(meta["accuracy"]["float_top1_first1000"]),
        "history": ", ".join(f"{pct(h['test_top1'])} after epoch {h['epoch']}"
                             for h in history if "test_top1" in h),
    }
    if summary is None:
        return out
    out["images"] = f"{summary['images']:,}"
    for key, value in summary["grouped"].items():
        out[f"grouped.{key}"] = pct(value) if key == "latency_share" else f"{value:,}"
    for label, why in summary["refused"].items():
        out[f"refused.{label}"] = why
    base = summary["runs"]["dense"]
    for label, row in summary["runs"].items():
        out.update({
            f"{label}.top1": pct(row["top1"]),
            f"{label}.float_top1": pct(row["float_top1"]),
            f"{label}.quantized_top1": pct(row["quantized_top1"]),
            f"{label}.arrays": f"{row['arrays']:,}",
            f"{label}.energy_uj": f"{row['energy_uj_per_image']:.3f}",
            f"{label}.latency_us": f"{row['latency_us']:.1f}",
            # against dense on isaac (the lossy run's own vs_dense is its own dense)
            f"{label}.speedup": f"{base['latency_us'] / row['latency_us']:.2f}x",
            f"{label}.energy_efficiency":
                f"{base['energy_uj_per_image'] / row['energy_uj_per_image']:.2f}x",
            f"{label}.clipping_layers": f"{row['clipping_layers']} of {row['layers']}",
            f"{label}.seconds": f"{row['seconds']:.0f} s",
        })
    return out


def fill_docs(vals: dict[str, str], path: Path = DOCS) -> list[str]:
    """Replace the `{{mbv2.KEY}}` placeholders of `path` with `vals`; return the keys left."""
    text = path.read_text()
    left: list[str] = []

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in vals:
            return vals[key]
        left.append(key)
        return match.group(0)

    path.write_text(PLACEHOLDER.sub(sub, text))
    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="checkpoint stem (or .safetensors/.json)")
    parser.add_argument("--demo-out", type=Path, default=Path("out/mobilenet_demo"))
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    if args.limit < 1:
        fail(f"--limit must be >= 1, got {args.limit}")
    meta = ship(args.checkpoint)
    summary_path = args.demo_out / "summary.json"
    summary = None
    if not args.no_demo:
        import mobilenet_demo

        summary = mobilenet_demo.run("mobilenetv2-fmnist", args.limit, args.batch_size,
                                     args.demo_out)
    elif summary_path.is_file():
        summary = json.loads(summary_path.read_text())
    if not args.no_docs:
        left = fill_docs(values(meta, summary))
        print(f"filled {DOCS}" + (f"; left: {', '.join(left)}" if left else ""))


if __name__ == "__main__":
    main()
