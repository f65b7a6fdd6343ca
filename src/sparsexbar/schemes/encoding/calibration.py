"""Encoding calibration (issue 7): per-layer ADC resolution and dynamic precision for an
accuracy budget, picked on the calibration split (studies.setup: the first images of the
Fashion-MNIST train split), never on the images they are judged on.

ADC calibration is greedy, layer by layer in execution order: for each layer, from its
lossless resolution downwards, the smallest bits whose top-1 on the calibration images stays
within `budget_points` of the reference (the exact integer network unless given), the bits
chosen for earlier layers held; the first resolution that misses the budget ends the layer's
search. Each trial runs the network bit-accurately: the trial layer converts its (encoded)
partial sums at the trial resolution, the layers already chosen return their cached
accumulators, the later ones run at their lossless resolution (exact). Every trial records how
many conversions clipped: the partial sums the calibration split actually produces decide.

Dynamic precision calibration: the smallest number of chunks P (the same in every layer) whose
top-1 on the calibration images stays within its budget of the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.engine import EngineOptions
from ...core.engine.indices import INT32_LIMIT
from ...core.errors import SparsexbarError
from ...core.frontend import QuantizedModel, QuantLayer
from ...studies.setup import calibration_setup
from ...studies.top1 import top1
from ...studies.writers import write_json
from ..entry import CalibrationSpec, RunArgs
from ..options import count, number, switch, text
from ..registry import get_scheme
from .kernel import EncodingKernel
from .mapping import EncodingMappedLayer
from .scheme import EncodingScheme

Progress = Callable[[str], None]


@dataclass
class AdcCalibration:
    """Chosen per-layer ADC bits and the measurements behind them (top-1 as fractions)."""

    adc_bits: dict[str, int]
    lossless_bits: dict[str, int]
    reference_top1: float
    lossless_top1: float
    top1: float
    budget_points: float
    images: int
    scheme: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"adc_bits": self.adc_bits, "lossless_bits": self.lossless_bits,
                "reference_top1": self.reference_top1, "lossless_top1": self.lossless_top1,
                "top1": self.top1, "budget_points": self.budget_points, "images": self.images,
                "scheme": self.scheme, "trials": self.trials}


class _Executor:
    """Runs each crossbar layer through its encoding kernel (values only); the layers in
    `frozen` keep their accumulator per batch once computed."""

    def __init__(self, scheme: EncodingScheme, kernels: dict[str, EncodingKernel],
                 options: EngineOptions) -> None:
        self.scheme = scheme
        self.kernels = kernels
        self.options = options
        self.frozen: set[str] = set()
        self.cache: dict[tuple[str, int], Tensor] = {}
        self.batch = 0
        self.clipped: dict[str, int] = {}  # per layer, since the last `_top1`

    def __call__(self, layer: QuantLayer, x_int: Tensor) -> Tensor:
        key = (layer.name, self.batch)
        if key in self.cache:
            return self.cache[key].to(torch.float64)
        kernel = self.kernels[layer.name]
        count = not kernel.enc_mapped.exact_linear()  # clipped conversions of lossy layers
        acc, tally = self.scheme.execute(kernel, x_int, self.options, count=count,
                                         count_clipped=count)
        if tally is not None:
            self.clipped[layer.name] = self.clipped.get(layer.name, 0) + tally.clipped
        if layer.name in self.frozen:
            small = bool(acc.abs().max() < INT32_LIMIT) if acc.numel() else True
            self.cache[key] = acc.to(torch.int32) if small else acc.clone()
        return acc


def _top1(qmodel: QuantizedModel, run: _Executor, images: Tensor, labels: Tensor,
          batch_size: int) -> float:
    """Top-1 with `run`, its clip counts reset and its batch index kept per batch."""
    run.clipped = {}
    return top1(qmodel, run, images, labels, batch_size,
                before_batch=lambda j: setattr(run, "batch", j))


def reference_top1(qmodel: QuantizedModel, images: Tensor, labels: Tensor,
                   batch_size: int = 250) -> float:
    """Top-1 (fraction) of the exact integer-quantized network."""
    return top1(qmodel, None, images, labels, batch_size)


def _mapped(scheme: EncodingScheme, qmodel: QuantizedModel,
            hw: HardwareConfig) -> dict[str, EncodingMappedLayer]:
    out: dict[str, EncodingMappedLayer] = {}
    for q in qmodel.layers:
        m = scheme.map_layer(q, hw)
        assert isinstance(m, EncodingMappedLayer)
        out[q.name] = m
    return out


def with_bits(mapped: EncodingMappedLayer, bits: int) -> EncodingMappedLayer:
    """The same mapped layer converting at `bits`."""
    return replace(mapped, layer_bits=bits, _cache={})


def calibrate_adc_bits(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor,
                       labels: Tensor, scheme: EncodingScheme | None = None,
                       budget_points: float = 0.5, min_bits: int = 3,
                       reference: float | None = None, batch_size: int = 250,
                       device: str | torch.device = "cpu",
                       options: EngineOptions | None = None,
                       progress: Progress | None = None) -> AdcCalibration:
    """Greedy per-layer ADC bits within `budget_points` (accuracy points) of `reference`
    (default: the exact integer network's top-1 on these images)."""
    if budget_points < 0:
        raise ValueError(f"budget must be >= 0 points, got {budget_points}")
    say = progress or (lambda _msg: None)
    dev = torch.device(device)
    qmodel.to(dev)
    images, labels = images.to(dev), labels.to(dev)
    base = (scheme or EncodingScheme()).variant(adc="lossless")
    opts = options or EngineOptions()
    mapped = _mapped(base, qmodel, hw)
    lossless = {name: m.layer_bits for name, m in mapped.items()}
    kernel_cache: dict[tuple[str, int], EncodingKernel] = {}

    def kernel(name: str, bits: int) -> EncodingKernel:
        if (name, bits) not in kernel_cache:
            k = base.kernel(with_bits(mapped[name], bits), dev)
            assert isinstance(k, EncodingKernel)
            kernel_cache[(name, bits)] = k
        return kernel_cache[(name, bits)]

    ref = reference_top1(qmodel, images, labels, batch_size) if reference is None else reference
    chosen = dict(lossless)
    run = _Executor(base, {n: kernel(n, b) for n, b in chosen.items()}, opts)
    start = _top1(qmodel, run, images, labels, batch_size)
    current = start
    floor = ref - budget_points / 100 - 1e-12
    say(f"reference top-1 {100 * ref:.2f}%, lossless ADC {100 * start:.2f}% on {len(labels)} "
        f"calibration images; budget {budget_points} points")
    trials: list[dict[str, Any]] = []
    for name in mapped:  # layers in execution order
        for bits in range(lossless[name] - 1, min_bits - 1, -1):
            run.kernels[name] = kernel(name, bits)
            top1 = _top1(qmodel, run, images, labels, batch_size)
            clipped = run.clipped.get(name, 0)
            trials.append({"layer": name, "bits": bits, "top1": top1,
                           "clipped_conversions": clipped})
            say(f"{name}: {bits}-bit ADC -> top-1 {100 * top1:.2f}% "
                f"({clipped} conversions clipped)")
            if top1 < floor:
                break
            chosen[name], current = bits, top1
        run.kernels[name] = kernel(name, chosen[name])
        run.frozen.add(name)
    return AdcCalibration(chosen, lossless, ref, start, current, budget_points, len(labels),
                          base.variant(adc="calibrated", adc_bits=chosen).parameters(), trials)


def calibrate_precision(qmodel: QuantizedModel, hw: HardwareConfig, images: Tensor,
                        labels: Tensor, scheme: EncodingScheme | None = None,
                        budget_points: float = 0.25, reference: float | None = None,
                        batch_size: int = 250, device: str | torch.device = "cpu",
                        options: EngineOptions | None = None,
                        progress: Progress | None = None) -> tuple[dict[str, int | None],
                                                                   float,
                                                                   list[dict[str, Any]]]:
    """Greedy per-layer dynamic precision (chunks) within `budget_points` of `reference`,
    lossless ADC, layers in execution order, from cycles-1 downwards until a precision misses
    the budget (None: the layer keeps every chunk). Returns (precision per layer, top-1 on
    these images with it, trials)."""
    say = progress or (lambda _msg: None)
    dev = torch.device(device)
    qmodel.to(dev)
    images, labels = images.to(dev), labels.to(dev)
    opts = options or EngineOptions()
    base = (scheme or EncodingScheme()).variant(adc="lossless", precision=None)
    ref = reference_top1(qmodel, images, labels, batch_size) if reference is None else reference
    floor = ref - budget_points / 100 - 1e-12
    kernels: dict[str, EncodingKernel] = {}
    for name, m in _mapped(base, qmodel, hw).items():
        k = base.kernel(m, dev)
        assert isinstance(k, EncodingKernel)
        kernels[name] = k
    run = _Executor(base, kernels, opts)
    chosen: dict[str, int | None] = dict.fromkeys(kernels)
    current = _top1(qmodel, run, images, labels, batch_size)
    trials: list[dict[str, Any]] = []
    for name, kernel in kernels.items():  # layers in execution order
        for p in range(hw.cycles - 1, 0, -1):
            kernel.precision = p
            top1 = _top1(qmodel, run, images, labels, batch_size)
            trials.append({"layer": name, "precision": p, "top1": top1})
            say(f"{name}: dynamic precision {p} of {hw.cycles} chunks -> top-1 "
                f"{100 * top1:.2f}% (reference {100 * ref:.2f}%)")
            if top1 < floor:
                break
            chosen[name], current = p, top1
        kernel.precision = chosen[name]
        run.frozen.add(name)
    return chosen, current, trials


def parse_scheme(spec: str) -> EncodingScheme:
    """An EncodingScheme from `encoding` or `encoding:key=value:...` (CLI)."""
    sch = get_scheme(spec)
    if not isinstance(sch, EncodingScheme):
        raise SparsexbarError(f"--scheme must be an encoding scheme spec, got '{spec}'")
    return sch


def _calibrate(args: RunArgs, scheme: str, budget: float, images: int, min_bits: int,
               precision: bool) -> str:
    """`sparsexbar calibrate encoding`: per-layer ADC bits (and dynamic precision) into
    `args.out`."""
    base = parse_scheme(scheme)
    config, qmodel, x, y = calibration_setup(args.model, args.data, args.hw, args.overrides,
                                             images, args.root)
    saved: dict[str, Any] = {}
    if precision:
        chosen, p_top1, p_trials = calibrate_precision(
            qmodel, config, x, y, base, budget / 2, batch_size=args.batch_size,
            device=args.device, progress=args.progress)
        base = base.variant(precision=chosen)
        saved = {"precision": chosen, "precision_top1": p_top1, "precision_trials": p_trials}
    cal = calibrate_adc_bits(qmodel, config, x, y, base, budget, min_bits,
                             batch_size=args.batch_size, device=args.device,
                             progress=args.progress)
    write_json(args.out, {**cal.to_json(), **saved}, newline=False)
    return (f"ADC bits: {cal.adc_bits} (lossless: {cal.lossless_bits})\n"
            f"top-1 {100 * cal.top1:.2f}% vs exact {100 * cal.reference_top1:.2f}% on "
            f"{cal.images} calibration images; wrote {args.out}")


CALIBRATION = CalibrationSpec(
    name="encoding",
    help="Pick per-layer ADC bits (and optionally dynamic precision) of the encoding scheme "
         "for a top-1 budget on a calibration split; use with --scheme encoding:adc_bits=FILE.",
    run=_calibrate,
    out="out/encoding/calibration.json",
    options=(
        text("scheme", "encoding", "Encoding spec whose ADC is calibrated, e.g. encoding or "
             "encoding:input=none:weight=none:skip=off."),
        number("budget", 0.5, "Top-1 loss allowed, points.", low=0, high=100, unit="points"),
        count("images", 200, "Calibration images: the split's first N (all of it when it "
              "holds fewer; the output says how many ran).", low=1),
        count("min_bits", 3, "Lowest ADC bits tried.", low=1, high=16),
        switch("precision", False, "First calibrate per-layer dynamic precision within half "
               "the budget."),
    ),
)


__all__ = ["AdcCalibration", "calibrate_adc_bits", "calibrate_precision", "parse_scheme",
           "reference_top1", "with_bits"]
