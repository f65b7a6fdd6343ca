"""What early negative detection (END) could remove with other bounds and input scales: the
analysis behind docs/schemes/comprrae.md ("Why END removes 9%, not ~70%").

For every layer followed by ReLU of the shipped VGG-8 (exact network, real test images), the
fraction of conversions END removes (per output: cycles after the first one at which y_max
dequantizes below 0, out of all cycles; layers weighted by their dense conversions) when what
the remaining input bits can add is bounded by:

- `output`: P_c x R_t (the scheme's default, `bounds="output"`);
- `position max`: P_c x min(R_t, the largest input of the output's window) (one max per
  position, shared by the channels);
- `group max`: sum over OU row groups g of P_c,g x min(R_t, max_g x) (a max detector per
  group and a per-(channel, group) LUT: G multiply-adds per check);
- `group max, per cycle`: sum_g P_c,g x max_g (x mod 2^shift_t) (the max of the bits still to
  come, per group and cycle);
- `(bit, slice)`: the scheme's `bounds="slice"` (per slice step; counted per slice);
- `oracle`: sum_r max(w_rc, 0) x (x_r mod 2^shift_t), every row's own remaining bits (the
  tightest bound from the weights' signs; as costly as the computation itself);
- `ceiling`: every output that ends negative stopped after the first cycle.

And END (`output` bounds) with the input scale of every layer set at a percentile of its
calibration inputs instead of their maximum (`--percentiles`), with the quantized network's
top-1 on the same images. float64 matrix products on im2col patches: a study, not the engine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/comprrae_bounds.py --images 100
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import Tensor

from sparsexbar.core.config import preset
from sparsexbar.core.frontend import QuantizedModel, QuantLayer, accuracy, quantize_model
from sparsexbar.core.runtime import torch_threads
from sparsexbar.studies.setup import fmnist_split
from sparsexbar.training.models import resolve_model

BOUNDS = ("output", "position max", "group max", "group max, per cycle", "(bit, slice)",
          "oracle", "ceiling")


def _layer_inputs(qmodel: QuantizedModel, images: Tensor) -> dict[str, Tensor]:
    inputs: dict[str, Tensor] = {}

    def keep(layer: QuantLayer, x_int: Tensor) -> Tensor:
        inputs[layer.name] = x_int
        return layer.reference_accumulate(x_int).to(torch.float64)

    qmodel.run(images, keep)
    return inputs


def removed_by_bound(layer: QuantLayer, x_int: Tensor, cycles: int, ou_rows: int,
                     array_rows: int, cell_bits: int, slices: int) -> dict[str, float]:
    """Fraction of the layer's conversions END removes with each bound (unsigned inputs,
    1-bit DAC)."""
    pat = layer.patches(x_int).to(torch.int64)  # (M, R)
    w = layer.matrix().to(torch.int64)  # (R, Cout)
    wf = w.to(torch.float64)
    wpos = wf.clamp(min=0)
    pos = wpos.sum(0)
    final = pat.to(torch.float64) @ wf
    scale = (layer.weight_scale * layer.input_scale).to(torch.float64)
    bias = layer.bias.to(torch.float64)

    def negative(acc: Tensor) -> Tensor:
        return acc * scale + bias < 0

    rows = pat.shape[1]
    groups = [(g, min(g + ou_rows, b)) for a in range(0, rows, array_rows)
              for b in [min(a + array_rows, rows)] for g in range(a, b, ou_rows)]
    gmax = torch.stack([pat[:, a:b].amax(1) for a, b in groups], 1).to(torch.float64)
    gpos = torch.stack([wpos[a:b].sum(0) for a, b in groups], 0)  # (G, Cout)
    pmax = pat.amax(1, keepdim=True).to(torch.float64)
    stop = {k: torch.full(final.shape, float(cycles), dtype=torch.float64)
            for k in BOUNDS[:4] + ("oracle",)}
    for t in range(cycles - 1):  # after cycle t, MSB first
        shift = cycles - 1 - t
        rem = 2**shift - 1
        trunc = (pat >> shift) << shift
        low = (pat - trunc).to(torch.float64)
        acc = trunc.to(torch.float64) @ wf
        y_max = {
            "output": acc + pos * rem,
            "position max": acc + pos * pmax.clamp(max=rem),
            "group max": acc + gmax.clamp(max=rem) @ gpos,
            "group max, per cycle": acc + torch.stack(
                [low[:, a:b].amax(1) for a, b in groups], 1) @ gpos,
            "oracle": acc + low @ wpos,
        }
        for key, value in y_max.items():
            fire = negative(value) & (stop[key] == cycles)
            stop[key][fire] = t + 1
    out = {k: float((cycles - v).sum()) / (cycles * v.numel()) for k, v in stop.items()}
    # (bit, slice): slices most significant first within a cycle, the lower ones bounded by
    # their positive parts
    mag, sign = w.abs(), torch.sign(w)
    part = [(sign * ((mag >> (s * cell_bits)) & (2**cell_bits - 1)) * 2 ** (s * cell_bits))
            .to(torch.float64) for s in range(slices)]
    below = [sum((part[z] for z in range(s)), torch.zeros_like(wf)).clamp(min=0).sum(0)
             for s in range(slices)]
    steps = cycles * slices
    stop_s = torch.full(final.shape, float(steps), dtype=torch.float64)
    acc = torch.zeros_like(final)
    for t in range(cycles):
        shift = cycles - 1 - t
        bit = ((pat >> shift) & 1).to(torch.float64)
        for j, s in enumerate(range(slices - 1, -1, -1)):
            acc = acc + (bit @ part[s]) * 2**shift
            step = t * slices + j
            if step == steps - 1:
                break
            fire = negative(acc + pos * (2**shift - 1) + below[s] * 2**shift) & (stop_s == steps)
            stop_s[fire] = step + 1
    out["(bit, slice)"] = float((steps - stop_s).sum()) / (steps * stop_s.numel())
    out["ceiling"] = float(negative(final).to(torch.float64).mean()) * (cycles - 1) / cycles
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=100, help="test images (0..)")
    ap.add_argument("--percentiles", default="0.9999,0.999,0.99",
                    help="input-scale percentiles tried besides the maximum")
    ap.add_argument("--accuracy-images", type=int, default=500,
                    help="test images for the top-1 of each input scale")
    args = ap.parse_args()
    with torch_threads(1):
        hw = preset("isaac")
        net, _ = resolve_model("default")
        x_cal, _ = fmnist_split("calibration", 256)
        x, _ = fmnist_split("test", args.images)
        qmodel = quantize_model(net, x_cal, 8, 8)
        inputs = _layer_inputs(qmodel, x)
        totals: dict[str, float] = dict.fromkeys(BOUNDS, 0.0)
        weight_total = 0.0
        print("| layer | " + " | ".join(BOUNDS) + " |")
        print("| --- | " + " | ".join("---:" for _ in BOUNDS) + " |")
        for layer in qmodel.layers:
            if not layer.followed_by_relu:
                continue
            got = removed_by_bound(layer, inputs[layer.name], hw.cycles, hw.ou.rows,
                                   hw.array.rows, hw.cell.bits, hw.slices)
            weight = layer.positions * layer.out_channels * math.ceil(layer.rows / hw.ou.rows)
            weight_total += weight
            for key in BOUNDS:
                totals[key] += got[key] * weight
            print(f"| {layer.name} | " + " | ".join(f"{100 * got[k]:.1f}%" for k in BOUNDS) + " |")
        print("| network | " + " | ".join(f"{100 * totals[k] / weight_total:.1f}%" for k in BOUNDS)
              + " |")
        print()
        _input_scales(net, x_cal, args)


def _input_scales(net: Any, x_cal: Tensor, args: argparse.Namespace) -> None:
    """END (`output` bounds) and top-1 with every input scale at a percentile."""
    hw = preset("isaac")
    x, y = fmnist_split("test", max(args.images, args.accuracy_images))
    print("| input scale | top-1 % (quantized) | END removes |")
    print("| --- | ---: | ---: |")
    for pct in [None] + [float(p) for p in args.percentiles.split(",") if p.strip()]:
        qmodel = quantize_model(net, x_cal, 8, 8)
        if pct is not None:
            reals = {name: v.to(torch.float64) * qmodel.layer(name).input_scale
                     for name, v in _layer_inputs(qmodel, x_cal[:128]).items()}
            gen = torch.Generator().manual_seed(0)
            for layer in qmodel.layers:
                v = reals[layer.name].abs().flatten()
                v = v[v > 0]
                sample = v[torch.randperm(len(v), generator=gen)[:1_000_000]]
                layer.input_scale = float(torch.quantile(sample, pct)) / layer.input_max
        correct = 0
        for a in range(0, len(y), 250):  # batches of images
            correct += accuracy(qmodel.run_reference(x[a : a + 250]), y[a : a + 250])
        inputs = _layer_inputs(qmodel, x[: args.images])
        removed = weight_total = 0.0
        for layer in qmodel.layers:
            if layer.followed_by_relu:
                got = removed_by_bound(layer, inputs[layer.name], hw.cycles, hw.ou.rows,
                                       hw.array.rows, hw.cell.bits, hw.slices)
                weight = layer.positions * layer.out_channels * math.ceil(layer.rows / hw.ou.rows)
                removed += got["output"] * weight
                weight_total += weight
        label = "maximum" if pct is None else f"{100 * pct:g}th percentile"
        print(f"| {label} | {100 * correct / len(y):.2f} | {100 * removed / weight_total:.1f}% |")


if __name__ == "__main__":
    main()
