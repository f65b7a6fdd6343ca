"""Speed of the `sre` and `comprrae` schemes against `dense` and plain PyTorch, in one process.

    .venv/bin/python benchmarks/schemes.py --model vgg8 --batch-size 64 --repeats 3 --threads 1
    .venv/bin/python benchmarks/schemes.py --model vgg8-full --cases dense,sre,comprrae
    .venv/bin/python benchmarks/schemes.py --clock cpu   # on a loaded machine

Models: `vgg8` is the shipped VGG-8 (width 0.25, Fashion-MNIST) on real images of the embedded
Fashion-MNIST test split (images `--offset` .. `--offset + batch-size`; calibration on the
first 256 images); `vgg8-full` is a full-width VGG-8 with random weights on the same images.

Every case runs the simulated forward pass of the same batch (`QuantizedModel.run` through
the scheme: engine, digital periphery and event counting; quantization and mapping are
set-up, not timed). The cases run round-robin `--repeats` times and the best time of each is
kept, so machine load affects all of them alike. Ratios: `x plain` against plain float32
PyTorch inference of the same model on the same images, `x dense` against the `dense` case
(isaac, lossless ADC, exact shortcut) of the same run, and `x dense-int8` against `dense`
with its exact shortcut on the int8 convolution the schemes use (`DenseInt8`, a reference:
what dense would cost if the engine took that path too). Targets (issues 4 and 6): sre joint
<= 2x dense, comprrae <= 4x dense.

Correctness guard: every lossless case must give logits equal (`torch.equal`) to `dense`'s.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from sparsexbar.core.config import load_config
from sparsexbar.core.engine import EngineOptions, LayerKernel
from sparsexbar.core.frontend import quantize_model
from sparsexbar.core.intconv import FLOAT32_EXACT, ExactLinear
from sparsexbar.core.io import atomic_write_text
from sparsexbar.core.runtime import torch_threads
from sparsexbar.schemes import LayerRun, Scheme, get_scheme
from sparsexbar.schemes.comprrae import CompRRAEScheme
from sparsexbar.schemes.counting import narrow_magnitudes
from sparsexbar.schemes.dense import DenseScheme
from sparsexbar.schemes.sre import SreScheme
from sparsexbar.simulate import LayerRecorder
from sparsexbar.training.checkpoint import load_shipped_model
from sparsexbar.training.data import embedded_fashion_mnist_dir, load_idx
from sparsexbar.training.zoo import build_model


class DenseInt8(DenseScheme):
    """`dense` whose exact shortcut runs on `ExactLinear` (the int8 convolution the schemes
    use) instead of the engine's float32 convolutions: what `dense` would cost if the engine
    took that path too, so the schemes' ratios can be read against it as well."""

    def __init__(self) -> None:
        self.ops: dict[str, ExactLinear | None] = {}

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        layer = kernel.mapped.layer
        if layer.name not in self.ops:
            built = ExactLinear(layer.kind, layer.weight_int, layer.input_max, kernel.device,
                                layer.stride, layer.padding, layer.dilation,
                                probe_shape=layer.input_shape or None)
            self.ops[layer.name] = built if built.bound < FLOAT32_EXACT else None
        op = self.ops[layer.name]
        if op is None or not kernel.exact_linear:
            return super().run_layer(kernel, x_int, options)
        parts = narrow_magnitudes(layer, x_int)
        value = op(parts[0])
        if len(parts) == 2:
            value = value - op(parts[1])
        acc = torch.empty(value.shape, dtype=torch.float64).copy_(value)
        return self.dense_run(kernel.mapped, acc, int(x_int.shape[0]))


CASES: dict[str, Callable[[], Scheme]] = {
    "dense": lambda: get_scheme("dense"),
    "dense-int8": DenseInt8,
    "sre-weight": lambda: SreScheme("weight"),
    "sre-activation": lambda: SreScheme("activation"),
    "sre": lambda: SreScheme("joint"),
    "sre-activation-word": lambda: SreScheme("activation", "word"),
    "sre-word": lambda: SreScheme("joint", "word"),
    "comprrae": lambda: CompRRAEScheme(),
    "comprrae-alpha": lambda: CompRRAEScheme(alpha=0.4),
    "comprrae-slice": lambda: CompRRAEScheme(bounds="slice"),
    "comprrae-beta": lambda: CompRRAEScheme(beta=0.125),
}
LABELS = {
    "dense": "dense (lossless, exact shortcut)",
    "dense-int8": "dense, int8 exact path (reference)",
    "sre-weight": "sre weight, bit",
    "sre-activation": "sre activation, bit",
    "sre": "sre joint, bit",
    "sre-activation-word": "sre activation, word",
    "sre-word": "sre joint, word",
    "comprrae": "comprrae END",
    "comprrae-alpha": "comprrae END + alpha 0.4",
    "comprrae-slice": "comprrae END, (bit, slice) bounds",
    "comprrae-beta": "comprrae predictive beta 0.125",
}


def _images(offset: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real Fashion-MNIST test images (float32 in [0, 1]): the batch and the calibration set."""
    folder = embedded_fashion_mnist_dir()
    images, _ = load_idx(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    x = images.to(torch.float32) / 255.0
    return x[offset : offset + count], x[:256]


def _model(name: str) -> torch.nn.Module:
    if name == "vgg8":
        net, _ = load_shipped_model()
    elif name == "vgg8-full":
        torch.manual_seed(0)
        net = build_model("vgg8", in_channels=1, num_classes=10, input_size=28, width=1.0)
    else:
        raise ValueError(f"unknown model {name}")
    return net.eval()


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def run(model: str, batch_size: int, repeats: int, offset: int, names: list[str],
        console: Console, clock_name: str = "wall") -> list[dict[str, Any]]:
    """Time every case round-robin; return one row per case."""
    clock = CLOCKS[clock_name]
    net = _model(model)
    x, calib = _images(offset, batch_size)
    hw = load_config("isaac", {})
    qmodel = quantize_model(net, calib, hw.numbers.weight_bits, hw.numbers.input_bits)
    opts = EngineOptions()
    device = torch.device("cpu")
    recorders: dict[str, LayerRecorder] = {}
    setup: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        scheme = CASES[name]()
        kernels = {q.name: scheme.kernel(scheme.map_layer(q, hw), device)
                   for q in qmodel.layers}
        recorders[name] = LayerRecorder(scheme, kernels, opts, device)
        setup[name] = time.perf_counter() - t0
    best = {name: float("inf") for name in ["plain", *names]}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        net(x)  # warm-up
        for r in range(repeats):  # round-robin: load hits every case alike
            t = clock()
            net(x)
            best["plain"] = min(best["plain"], clock() - t)
            for name in names:
                rec = recorders[name]
                t = clock()
                outputs[name] = qmodel.run(x, rec)
                best[name] = min(best[name], clock() - t)
            console.print(f"repeat {r + 1}/{repeats}: " + ", ".join(
                f"{n} {best[n]:.3f}s" for n in ["plain", *names]))
        reference = qmodel.run_reference(x)
    rows = []
    for name in names:
        rec = recorders[name]
        events = {k: sum(getattr(ev, k) for ev in rec.events.values()) // repeats
                  for k in ("ou_activations", "adc_conversions")}
        lossless = rec.scheme.lossless
        rows.append({
            "case": name, "label": LABELS[name], "model": model, "batch_size": batch_size,
            "threads": torch.get_num_threads(), "clock": clock_name, "sim_s": best[name],
            "plain_s": best["plain"],
            "x_plain": best[name] / best["plain"],
            "x_dense": best[name] / best["dense"],
            "x_dense_int8": best[name] / best["dense-int8"] if "dense-int8" in best else None,
            "images_per_s": batch_size / best[name], "setup_s": setup[name],
            "equals_reference": bool(torch.equal(outputs[name], reference)) if lossless
            else None,
            **events,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="vgg8", choices=["vgg8", "vgg8-full"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--offset", type=int, default=0, help="first test image of the batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", default="wall", choices=list(CLOCKS),
                    help="wall: elapsed time; cpu: this process's CPU time (steadier on a "
                         "loaded machine; with --threads 1 it equals the elapsed time of an "
                         "idle machine)")
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated subset of: {', '.join(CASES)} (dense always runs)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    names = ["dense", *[n for n in names if n != "dense"]]
    with torch_threads(args.threads):
        console = Console()
        rows = run(args.model, args.batch_size, args.repeats, args.offset, names, console,
                   args.clock)
        table = Table(title=f"schemes: {args.model}, batch {args.batch_size}, "
                            f"{args.threads} thread(s), best of {args.repeats} ({args.clock} time)")
        for col in ("case", "img/s", "x plain", "x dense", "x dense-int8", "OU act.", "ADC conv.",
                    "== reference"):
            table.add_column(col, justify="left" if col == "case" else "right")
        for r in rows:
            int8 = "" if r["x_dense_int8"] is None else f"{r['x_dense_int8']:.2f}"
            table.add_row(r["label"], f"{r['images_per_s']:.1f}", f"{r['x_plain']:.2f}",
                          f"{r['x_dense']:.2f}", int8, f"{r['ou_activations']:,}",
                          f"{r['adc_conversions']:,}",
                          {None: "n/a (lossy)", True: "yes", False: "NO"}[r["equals_reference"]])
        console.print(table)
        console.print(f"plain PyTorch: {args.batch_size / rows[0]['plain_s']:.1f} img/s")
        if args.json:
            atomic_write_text(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
