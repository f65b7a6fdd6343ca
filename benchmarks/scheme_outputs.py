"""Save, then compare, every scheme's logits, events and cycles on the same real images: a
check that a speed change left the results bit for bit unchanged (or a comparison of two
source trees: run `save` with PYTHONPATH pointing at each tree's `src`).

    .venv/bin/python benchmarks/scheme_outputs.py save --out /tmp/new.pt --images 128
    PYTHONPATH=/path/to/other/src .venv/bin/python benchmarks/scheme_outputs.py save \\
        --out /tmp/old.pt --images 128
    .venv/bin/python benchmarks/scheme_outputs.py compare /tmp/old.pt /tmp/new.pt

Models: `vgg8` (the shipped model) or `vgg8-full` (full width, random weights, seed 0); the
images are the embedded Fashion-MNIST test images `--offset` onwards, calibration on the first
256. Schemes: dense, sre (3 modes x 2 granularities), comprrae (END; alpha 0.4 and 1.6
midpoint; alpha 0.4 running).
"""

from __future__ import annotations

import argparse
import io
from typing import Any

import torch

from sparsexbar.core.config import load_config
from sparsexbar.core.engine import EngineOptions
from sparsexbar.core.frontend import quantize_model
from sparsexbar.core.io import atomic_write_bytes
from sparsexbar.core.runtime import torch_threads
from sparsexbar.schemes import Scheme, get_scheme
from sparsexbar.schemes.comprrae import CompRRAEScheme
from sparsexbar.schemes.sre import SreScheme
from sparsexbar.simulate import LayerRecorder
from sparsexbar.training.checkpoint import load_shipped_model
from sparsexbar.training.data import embedded_fashion_mnist_dir, load_idx
from sparsexbar.training.zoo import build_model


def schemes() -> dict[str, Scheme]:
    out: dict[str, Scheme] = {
        "dense": get_scheme("dense"), "comprrae": CompRRAEScheme(),
        "comprrae-a0.4": CompRRAEScheme(alpha=0.4), "comprrae-a1.6": CompRRAEScheme(alpha=1.6),
        "comprrae-a0.4-running": CompRRAEScheme(alpha=0.4, estimate="running")}
    for mode in ("weight", "activation", "joint"):
        for gran in ("bit", "word"):
            out[f"sre-{mode}-{gran}"] = SreScheme(mode, gran)
    return out


def save(model: str, images: int, offset: int, path: str) -> None:
    import sparsexbar

    print(f"sparsexbar from {sparsexbar.__file__}")
    folder = embedded_fashion_mnist_dir()
    data, _ = load_idx(folder / "t10k-images-idx3-ubyte.gz",
                       folder / "t10k-labels-idx1-ubyte.gz")
    x = data[offset : offset + images].to(torch.float32) / 255
    if model == "vgg8":
        net, _ = load_shipped_model()
    else:
        torch.manual_seed(0)
        net = build_model("vgg8", in_channels=1, num_classes=10, input_size=28, width=1.0)
    net.eval()
    hw = load_config("isaac", {})
    qmodel = quantize_model(net, data[:256].to(torch.float32) / 255, 8, 8)
    result: dict[str, Any] = {}
    for name, scheme in schemes().items():
        kernels = {q.name: scheme.kernel(scheme.map_layer(q, hw), torch.device("cpu"))
                   for q in qmodel.layers}
        rec = LayerRecorder(scheme, kernels, EngineOptions(), torch.device("cpu"))
        with torch.no_grad():
            logits = qmodel.run(x, rec)
        result[name] = {"logits": logits,
                        "events": {k: v.to_dict() for k, v in rec.events.items()},
                        "cycles": dict(rec.cycles)}
        print(f"{name}: done")
    buffer = io.BytesIO()
    torch.save(result, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def compare(a_path: str, b_path: str) -> bool:
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    same = True
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: only in one file")
            same = False
            continue
        logits = torch.equal(a[name]["logits"], b[name]["logits"])
        events = a[name]["events"] == b[name]["events"]
        cycles = a[name]["cycles"] == b[name]["cycles"]
        same &= logits and events and cycles
        print(f"{name:24s} logits equal {logits}, events equal {events}, cycles equal {cycles}")
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save")
    s.add_argument("--out", required=True)
    s.add_argument("--model", default="vgg8", choices=["vgg8", "vgg8-full"])
    s.add_argument("--images", type=int, default=128)
    s.add_argument("--offset", type=int, default=1000)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args()
    with torch_threads(1):
        if args.command == "save":
            save(args.model, args.images, args.offset, args.out)
        elif not compare(args.a, args.b):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
