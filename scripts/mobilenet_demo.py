"""The shipped MobileNetV2 (`mobilenetv2-fmnist`) on the Fashion-MNIST test split padded to
32x32, the way it was trained: dense and pattern on `isaac` (lossless ADC) and dense with
OU 9x8, a 5-bit ADC and a 2-bit DAC (an ADC that clips). Writes comparison.csv, the PNG plots
and report.html to --out, and prints the numbers docs/models.md quotes.

    .venv/bin/python scripts/mobilenet_demo.py --limit 1000 --out out/mobilenet_demo
"""

from __future__ import annotations

import argparse
import time

import sparsexbar
from sparsexbar.app.report import write_comparison
from sparsexbar.core.config import load_config
from sparsexbar.core.frontend import quantize_model
from sparsexbar.training.data import load_dataset
from sparsexbar.training.models import resolve_model

RUNS = [("dense", "isaac", {}), ("pattern", "isaac", {}),
        ("dense", "isaac", {"ou.rows": 9, "ou.cols": 8, "adc.bits": 5, "dac.bits": 2})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--out", default="out/mobilenet_demo")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--model", default="mobilenetv2-fmnist")
    args = parser.parse_args()
    ds = load_dataset("fashion-mnist", "test").fitted(1, 32)  # 28 -> 32: 2-px zero padding
    images, labels = ds.to_float()[: args.limit], ds.labels[: args.limit].long()
    net, _ = resolve_model(args.model)
    results = []
    baseline = None
    for scheme, hw, overrides in RUNS:
        config = load_config(hw, overrides)
        qmodel = quantize_model(net, images[:256], config.numbers.weight_bits,
                                config.numbers.input_bits)
        start = time.perf_counter()
        res = sparsexbar.simulate(net, (images, labels), hw=hw, scheme=scheme,
                                  overrides=overrides, batch_size=args.batch_size,
                                  qmodel=qmodel, baseline_accuracy=baseline)
        baseline = baseline or res.accuracy
        label = scheme + ("" if not overrides else " ou9x8-adc5-dac2")
        data = res.named(label=label).to_json()
        results.append(data)
        acc, tot = data["accuracy"], data["totals"]
        print(f"{label}: top1 {acc['top1']:.4f} (float {acc['float_top1']:.4f}, integer "
              f"{acc['quantized_top1']:.4f}), arrays {tot['arrays']}, energy/image "
              f"{tot['energy_pj_per_image'] / 1e6:.3f} uJ, latency {tot['latency_s'] * 1e6:.1f}"
              f" us, clipping layers {sum(lay['adc_can_clip'] for lay in data['layers'])}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    paths = write_comparison(args.out, results)
    print("wrote", ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
