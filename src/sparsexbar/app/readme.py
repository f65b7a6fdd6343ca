"""The README's demo section, generated from the result files of a `sparsexbar demo` run
(never typed by hand).

`python -m sparsexbar.app.readme out/demo [ROOT]` (ROOT: the repository, by default the current
folder) copies the run's per-scheme result JSON (without the
per-layer records) to docs/results/demo.json, its energy plot to
docs/img/demo_energy_by_component.png, and rewrites the README between the markers
``<!-- demo-table -->`` and ``<!-- /demo-table -->``. `tests/test_docs.py` checks that the
README's block is what `demo_markdown` makes of docs/results/demo.json.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import SparsexbarError
from ..core.io import atomic_write_text
from .report import _si, scheme_label, summary_row

BEGIN, END = "<!-- demo-table -->", "<!-- /demo-table -->"
SUMMARY_KEYS = ("version", "model", "dataset", "num_images", "hardware", "scheme", "accuracy",
                "totals", "dense_totals", "vs_dense")


def _hardware_text(hw: dict[str, Any], results: Sequence[dict[str, Any]]) -> str:
    """'isaac (128x128 arrays, 2-bit cells, OU 16x16, 1-bit DAC, SAR ADC 6-7 bits (auto))'."""
    adc = hw["adc"]
    bits = adc["bits"]
    if bits == "auto":
        per_layer = sorted({int(layer["adc_bits"]) for r in results[:1] for layer in r["layers"]
                            if "adc_bits" in layer})
        span = (f"{per_layer[0]}" if len(per_layer) == 1 else
                f"{per_layer[0]}-{per_layer[-1]}") if per_layer else "auto"
        adc_text = f"{adc['kind'].upper()} ADC of {span} bits (auto: the fewest that never clip)"
    else:
        adc_text = f"{adc['kind'].upper()} ADC of {bits} bits"
    return (f"`{hw['name']}` ({hw['array']['rows']}x{hw['array']['cols']} arrays, "
            f"{hw['cell']['bits']}-bit cells, OU {hw['ou']['rows']}x{hw['ou']['cols']}, "
            f"{hw['dac']['bits']}-bit DAC, {adc_text}, {hw['timing']['read_ns']:g} ns "
            "analog read)")


def demo_markdown(results: Sequence[dict[str, Any]]) -> str:
    """The README's demo paragraph and table for a demo's results (dense first)."""
    first = results[0]
    acc = first["accuracy"]
    model = first["model"]
    who = ("The shipped pattern-pruned VGG-8 (`vgg8-fmnist-pattern`)"
           if model == "vgg8-fmnist-pattern" else f"The model `{model}`")
    lines = [
        f"{who} on the embedded {first['dataset']} test split "
        f"({first['num_images']:,} images), hardware {_hardware_text(first['hardware'], results)}, "
        "every scheme in its lossless setting, so top-1 is the integer-quantized network's for "
        f"all (float top-1 {100 * acc['float_top1']:.2f}%). Speed-up and energy efficiency are "
        "against `dense` on the same hardware:",
        "",
        "| scheme | top-1 % | OU activations | ADC conversions | energy/image | latency/image "
        "| images/s | area | speedup | energy eff. |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for res in results:
        r = summary_row(res)
        latency = res["totals"]["latency_s"]  # per image, images one after another
        lines.append(
            f"| {scheme_label(res)} | {100 * r['top1']:.2f} | {_si(r['ou_activations'], '')} | "
            f"{_si(r['adc_conversions'], '')} | {r['energy_uj_per_image']:.1f} uJ | "
            f"{_si(latency, 's')} | {r['images_per_s']:,.0f} | {r['area_mm2']:.3f} mm2 | "
            f"{r['speedup']:.2f}x | {r['energy_efficiency']:.2f}x |")
    return "\n".join(lines) + "\n"


def load_demo(path: Path) -> list[dict[str, Any]]:
    """The results stored by `store_demo` (a JSON list, dense first)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SparsexbarError(f"cannot read demo results {path}: {exc}") from None
    if not isinstance(data, list) or not data:
        raise SparsexbarError(f"{path}: expected a non-empty list of results")
    return data


def demo_results(out_dir: Path) -> list[dict[str, Any]]:
    """A demo directory's per-scheme results in the order of its comparison.csv."""
    csv = out_dir / "comparison.csv"
    if not csv.is_file():
        raise SparsexbarError(f"{out_dir} holds no comparison.csv: run `sparsexbar demo` first")
    order = [line.split(",")[0] for line in csv.read_text().splitlines()[1:] if line]
    by_label: dict[str, dict[str, Any]] = {}
    for path in sorted(out_dir.glob("*_result.json")):
        res = json.loads(path.read_text())
        by_label[scheme_label(res)] = res
    missing = [label for label in order if label not in by_label]
    if missing:
        raise SparsexbarError(f"{out_dir}: no result JSON for {', '.join(missing)}")
    return [by_label[label] for label in order]


def replace_block(text: str, block: str) -> str:
    """`text` with what lies between the demo markers replaced by `block`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SparsexbarError(f"README has no {BEGIN} ... {END} block")
    return text[:start + len(BEGIN)] + "\n" + block + text[end:]


def update_docs(out_dir: Path, root: Path) -> None:
    """Store a demo run's summaries and plot under docs/ and rewrite the README block.
    `root`: the repository (its README.md with the demo markers, docs/results/, docs/img/),
    checked before anything is written."""
    readme = root / "README.md"
    for needed in (readme, root / "docs" / "results", root / "docs" / "img"):
        if not needed.exists():
            raise SparsexbarError(f"{root.resolve()} is not the repository's root (no {needed}): "
                                  "run from it or give it, python -m sparsexbar.app.readme "
                                  "OUT_DIR ROOT")
    text = readme.read_text()
    replace_block(text, "")  # the markers are there
    if not (out_dir / "energy_by_component.png").is_file():
        raise SparsexbarError(f"{out_dir} holds no energy_by_component.png: not a demo run's "
                              "folder")
    results = demo_results(out_dir)
    summaries = [{k: r[k] for k in SUMMARY_KEYS if k in r} for r in results]
    for summary, full in zip(summaries, results, strict=True):  # the ADC bits per layer
        summary["layers"] = [{"name": layer["name"], "adc_bits": layer["adc_bits"]}
                             for layer in full["layers"] if "adc_bits" in layer]
    store = root / "docs" / "results" / "demo.json"
    atomic_write_text(store, json.dumps(summaries, indent=1) + "\n")
    shutil.copyfile(out_dir / "energy_by_component.png",
                    root / "docs" / "img" / "demo_energy_by_component.png")
    atomic_write_text(readme, replace_block(text, demo_markdown(summaries)))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    out_dir = Path(args[0]) if args else Path("out/demo")
    root = Path(args[1]) if len(args) > 1 else Path(".")
    try:
        update_docs(out_dir, root)
    except SparsexbarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"README.md demo block, docs/results/demo.json and docs/img updated from {out_dir}")


if __name__ == "__main__":
    main()
