"""The shipped MobileNetV2 (`mobilenetv2-fmnist`) on the embedded Fashion-MNIST test split,
fitted to 32x32 by the checkpoint's input spec (2-px zero padding, the way it was trained):
every scheme on `isaac` (dense and pattern map its depthwise layers; sre, comprrae, encoding
and combined refuse them in one line, recorded) and dense with OU 9x8, a 5-bit ADC and a 2-bit
DAC (an ADC that clips). Writes each run's result JSON, comparison.csv, the PNG plots,
report.html and summary.json (what docs/models.md quotes; scripts/ship_mobilenet.py fills
the page from it) to --out.

    .venv/bin/python scripts/mobilenet_demo.py --limit 1000 --out out/mobilenet_demo
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import sparsexbar
from sparsexbar.app.report import summary_row, write_comparison
from sparsexbar.core.config import load_config
from sparsexbar.core.errors import SparsexbarError
from sparsexbar.core.frontend import quantize_model
from sparsexbar.simulate import resolve_inputs

LOSSY = {"ou.rows": 9, "ou.cols": 8, "adc.bits": 5, "dac.bits": 2}
# (label, scheme, overrides) on isaac
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("dense", "dense", {}), ("pattern", "pattern", {}), ("sre", "sre", {}),
    ("comprrae", "comprrae", {}), ("encoding", "encoding", {}), ("combined", "combined", {}),
    ("dense ou9x8-adc5-dac2", "dense", LOSSY)]


def grouped_packing(result: dict[str, Any], grouped: set[str]) -> dict[str, float]:
    """The grouped (depthwise) layers of a result (names in `grouped`): how many, the arrays
    they take packed block-diagonally, the arrays their block-diagonal matrices would take
    tiled whole like a dense layer's (the zeros between the groups stored), all layers'
    arrays, and the grouped layers' share of the latency per image (a fraction)."""
    hw = result["hardware"]["array"]
    layers = [lay for lay in result["layers"] if lay["name"] in grouped]
    whole = sum(math.ceil(lay["rows"] / hw["rows"]) * math.ceil(lay["cols"] / hw["cols"])
                for lay in layers)
    latency = sum(lay["latency_ns_per_image"] for lay in result["layers"])
    return {"layers": len(layers), "arrays": sum(lay["arrays"] for lay in layers),
            "arrays_unpacked": whole,
            "arrays_all_layers": sum(lay["arrays"] for lay in result["layers"]),
            "latency_share": sum(lay["latency_ns_per_image"] for lay in layers) / latency}


def run(model: str, limit: int, batch_size: int, out: Path) -> dict[str, Any]:
    """Every run of RUNS; returns (and writes) summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    loaded, batches = resolve_inputs(model, "default", limit)
    results: list[dict[str, Any]] = []
    refused: dict[str, str] = {}
    rows: dict[str, dict[str, Any]] = {}
    baseline = None
    qmodels: dict[str, Any] = {}
    for label, scheme, overrides in RUNS:
        config = load_config("isaac", overrides)
        key = json.dumps(overrides, sort_keys=True)
        if key not in qmodels:
            qmodels[key] = quantize_model(loaded.net, batches.images[:256],
                                          config.numbers.weight_bits, config.numbers.input_bits)
        start = time.perf_counter()
        try:
            res = sparsexbar.simulate(loaded.net, batches, config, scheme,
                                      batch_size=batch_size, qmodel=qmodels[key],
                                      baseline_accuracy=baseline)
        except SparsexbarError as exc:
            refused[label] = str(exc)
            print(f"{label}: refused: {exc}", flush=True)
            continue
        baseline = baseline or res.accuracy
        data = res.named(model=loaded.name, label=label).to_json()
        (out / f"{label.replace(' ', '_')}.json").write_text(json.dumps(data, indent=1) + "\n")
        results.append(data)
        row = summary_row(data)
        row["seconds"] = time.perf_counter() - start
        row["clipping_layers"] = sum(lay["adc_can_clip"] for lay in data["layers"])
        row["layers"] = len(data["layers"])
        rows[label] = row
        print(f"{label}: top1 {row['top1']:.4f} (float {row['float_top1']:.4f}, integer "
              f"{row['quantized_top1']:.4f}), arrays {row['arrays']}, energy/image "
              f"{row['energy_uj_per_image']:.3f} uJ, latency {row['latency_us']:.1f} us, "
              f"clipping layers {row['clipping_layers']}, {row['seconds']:.0f} s", flush=True)
    grouped = {q.name for q in next(iter(qmodels.values())).layers if q.groups > 1}
    paths = write_comparison(out, results, refused)
    summary = {"model": loaded.name, "images": len(batches.labels), "hw": "isaac",
               "lossy_overrides": LOSSY, "runs": rows, "refused": refused,
               "grouped": grouped_packing(results[0], grouped)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("wrote", ", ".join(str(p) for p in [*paths, out / "summary.json"]))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--out", default="out/mobilenet_demo")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--model", default="mobilenetv2-fmnist")
    args = parser.parse_args()
    run(args.model, args.limit, args.batch_size, Path(args.out))


if __name__ == "__main__":
    main()
