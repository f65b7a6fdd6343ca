"""The pipeline: model + data + hardware + scheme -> Result (frontend -> mapping -> engine -> cost).

`simulate()` is the Python entry point; the CLI's `run`, `compare` and `demo` call it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__
from .core.config import HardwareConfig, load_config
from .core.cost import (
    activation_timing,
    area_um2,
    buffer_area_um2,
    energy_pj,
    ratio,
    rram_adc_dac_energy,
)
from .core.engine import EngineOptions, LayerKernel, TaskPool
from .core.errors import DataError, SparsexbarError
from .core.events import Events
from .core.frontend import QuantizedModel, QuantLayer, RunStats, accuracy, quantize_model
from .core.mapping import dense_events, dense_time_ns, map_dense
from .result import Accuracy, LayerRecord, Result, SchemeRecord, Totals, VsDense
from .schemes import Scheme, get_scheme
from .training.data import load_dataset
from .training.models import resolve_model

ProgressFn = Callable[[int, int], None]  # (images done, images total)


@dataclass
class Batches:
    """Data normalized for the pipeline: float images in the model's input range, int labels."""

    name: str
    images: Tensor  # (N, C, H, W) float32
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def iterate(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for a in range(0, len(self), batch_size):
            yield self.images[a : a + batch_size], self.labels[a : a + batch_size]


# ---- resolving inputs -----------------------------------------------------------------------
def resolve_data(data: Any, limit: int | None = None) -> Batches:
    """Batches from a data set name/path, a Dataset/DataLoader or an (images, labels) pair."""
    if isinstance(data, Batches):
        batches = data
    elif isinstance(data, tuple) and len(data) == 2:
        images, labels = data
        batches = Batches("tensors", _as_float_images(torch.as_tensor(images)),
                          torch.as_tensor(labels).long())
    elif isinstance(data, str | Path):
        name = "fashion-mnist" if str(data) == "default" else str(data)
        ds = load_dataset(name, "test")
        batches = Batches(ds.name, ds.to_float(), ds.labels.long())
    elif hasattr(data, "to_float") and hasattr(data, "labels"):  # data.ImageDataset
        batches = Batches(getattr(data, "name", "dataset"), data.to_float(), data.labels.long())
    elif isinstance(data, torch.utils.data.DataLoader | torch.utils.data.Dataset):
        xs, ys = [], []
        items = data if isinstance(data, torch.utils.data.DataLoader) else (
            torch.utils.data.DataLoader(data, batch_size=256))
        for x, y in items:
            xs.append(torch.as_tensor(x))
            ys.append(torch.as_tensor(y))
            if limit is not None and sum(len(t) for t in ys) >= limit:
                break
        batches = Batches(type(data).__name__, _as_float_images(torch.cat(xs)),
                          torch.cat(ys).long())
    else:
        raise SparsexbarError(f"cannot use {type(data).__name__} as data")
    if limit is not None:
        if limit <= 0:
            raise SparsexbarError(f"--limit must be positive, got {limit}")
        batches = Batches(batches.name, batches.images[:limit], batches.labels[:limit])
    if len(batches) == 0:
        raise DataError(f"data set '{batches.name}' has no images")
    if not torch.isfinite(batches.images).all():
        raise DataError(f"data set '{batches.name}' contains NaN or Inf")
    return batches


def _as_float_images(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    return x.to(torch.float32)


# ---- running --------------------------------------------------------------------------------
class LayerRecorder:
    """The executor handed to the frontend: runs each layer through its scheme, sums events.

    One pool of task workers serves every layer of every batch of the run: `options.pool`, or
    one of its own, closed by `close()` (`with LayerRecorder(...) as recorder:`)."""

    def __init__(self, scheme: Scheme, kernels: dict[str, LayerKernel], options: EngineOptions,
                 device: torch.device) -> None:
        self.scheme = scheme
        self.kernels = kernels
        self._own_pool = TaskPool() if options.pool is None else None
        self.options = options if self._own_pool is None else replace(options,
                                                                      pool=self._own_pool)
        self.device = device
        self.events: dict[str, Events] = {name: Events() for name in kernels}
        self.cycles: dict[str, int] = {name: 0 for name in kernels}
        self.time_ns: dict[str, float] = {name: 0.0 for name in kernels}
        # Layers on the per-conversion paths run as image tasks on CPU worker threads: the
        # frontend then keeps the digital periphery on one intra-op thread (frontend._Runner).
        self.single_thread_periphery = device.type == "cpu" and any(
            not (options.exact_shortcut and k.exact_linear) for k in kernels.values())

    def __call__(self, layer: QuantLayer, x_int: Tensor) -> Tensor:
        run = self.scheme.run_layer(self.kernels[layer.name], x_int, self.options)
        self.events[layer.name] = self.events[layer.name] + run.events
        self.cycles[layer.name] += run.cycles
        self.time_ns[layer.name] += run.time_ns
        return run.accumulator

    def close(self) -> None:
        """Let the recorder's own workers exit."""
        if self._own_pool is not None:
            self._own_pool.close()

    def __enter__(self) -> LayerRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def simulate(
    model: nn.Module | str,
    data: Any = "default",
    hw: str | Path | HardwareConfig | Mapping[str, Any] = "isaac",
    scheme: str | Scheme = "dense",
    limit: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
    calibration: Tensor | None = None,
    calibration_images: int = 256,
    options: EngineOptions | None = None,
    progress: ProgressFn | None = None,
    qmodel: QuantizedModel | None = None,
    baseline_accuracy: Accuracy | Mapping[str, float] | None = None,
) -> Result:
    """Run `model` on `data` through the accelerator `hw` with `scheme`; return the Result.

    Calibration (input scales): `calibration` if given, else the first `calibration_images`
    images of the data. `qmodel` reuses an already quantized model (compare runs share one);
    `baseline_accuracy` ({"float_top1", "quantized_top1"} of an earlier run with the same
    qmodel and data) skips recomputing the float and integer-reference accuracies.
    """
    if isinstance(baseline_accuracy, Accuracy):
        baseline_accuracy = baseline_accuracy.to_json()
    if batch_size <= 0:
        raise SparsexbarError(f"--batch-size must be positive, got {batch_size}")
    config = load_config(hw, overrides)
    sch = get_scheme(scheme)
    opts = options or EngineOptions()
    dev = _device(device)
    batches = resolve_data(data, limit)
    in_ch, size = int(batches.images.shape[1]), int(batches.images.shape[-1])
    num_classes = int(batches.labels.max()) + 1
    net, model_name = resolve_model(model, in_ch, max(num_classes, 10), size)
    if qmodel is None:
        calib = calibration if calibration is not None else batches.images[:calibration_images]
        qmodel = quantize_model(net, calib, config.numbers.weight_bits, config.numbers.input_bits)
    qmodel.to(dev)
    mapped = {q.name: sch.map_layer(q, config) for q in qmodel.layers}
    kernels = {name: sch.kernel(m, dev) for name, m in mapped.items()}
    stats = RunStats()
    correct = {"top1": 0, "float_top1": 0, "quantized_top1": 0}
    outputs: list[Tensor] = []
    done = 0
    with LayerRecorder(sch, kernels, opts, dev) as recorder:
        for images, labels in batches.iterate(batch_size):
            images, labels = images.to(dev), labels.to(dev)
            logits = qmodel.run(images, recorder, stats)
            if logits.dim() != 2 or logits.shape[0] != images.shape[0]:
                raise SparsexbarError(
                    f"model output has shape {tuple(logits.shape)}; expected (batch, classes) "
                    "logits for classification"
                )
            correct["top1"] += accuracy(logits, labels)
            if baseline_accuracy is None:
                correct["float_top1"] += accuracy(qmodel.run_float(images), labels)
                correct["quantized_top1"] += accuracy(qmodel.run_reference(images), labels)
            outputs.append(logits.cpu())
            done += int(images.shape[0])
            if progress is not None:
                progress(done, len(batches))
    n = len(batches)
    layers = [
        _layer_record(q, mapped[q.name], sch, recorder.events[q.name], recorder.cycles[q.name],
                      recorder.time_ns[q.name], stats.digital_ops.get(q.name, 0), n)
        for q in qmodel.layers
    ]
    accuracy_out = Accuracy(**{k: v / n for k, v in correct.items()}) if baseline_accuracy is None \
        else Accuracy(correct["top1"] / n, float(baseline_accuracy["float_top1"]),
                      float(baseline_accuracy["quantized_top1"]))
    totals, dense_totals, vs_dense = _totals(layers, config, n)
    return Result(
        version=__version__, model=model_name, dataset=batches.name, num_images=n,
        hardware=config.to_dict(), scheme=SchemeRecord(sch.name, sch.parameters()),
        accuracy=accuracy_out, layers=tuple(layers), totals=totals, dense_totals=dense_totals,
        vs_dense=vs_dense, outputs=torch.cat(outputs))


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SparsexbarError(f"unsupported device '{device}' (cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SparsexbarError("--device cuda requested but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise SparsexbarError(f"unsupported device '{device}' (cpu or cuda)")
    return dev


def _layer_record(layer: QuantLayer, mapped: Any, scheme: Scheme, events: Events, cycles: int,
                  time: float, extra_digital: int, images: int) -> LayerRecord:
    hw = mapped.hw  # adc.bits resolved for the layer
    events = events + Events(digital_ops=extra_digital)
    dense_mapped = mapped if scheme.name == "dense" else map_dense(layer, hw)
    dense_ev, dense_cycles = dense_events(dense_mapped, images)
    dense_ev = dense_ev + Events(digital_ops=extra_digital)
    dense_time = dense_time_ns(dense_mapped, images, activation_timing(dense_mapped.hw))
    adc_bits = scheme.adc_bits(mapped)
    # every activation takes at least the analog read: the busiest array's time equals its
    # activations x read_ns exactly when no activation waits for its conversions
    bound = "read" if time <= cycles * hw.timing.read_ns * (1 + 1e-9) else "adc"
    return LayerRecord(
        name=layer.name,
        kind=layer.kind,
        rows=layer.rows,
        cols=mapped.physical_cols,
        out_channels=layer.out_channels,
        arrays=mapped.arrays,
        input_signed=layer.input_signed,
        followed_by_relu=layer.followed_by_relu,
        adc_can_clip=mapped.adc_can_clip(),
        adc_bits=adc_bits,
        events=events,
        dense_events=dense_ev,
        cycles=cycles,
        dense_cycles=dense_cycles,
        dense_arrays=dense_mapped.arrays,
        latency_ns_per_image=time / images,
        energy_pj=energy_pj(events, hw, time, adc_bits),
        dense_energy_pj=energy_pj(dense_ev, hw, dense_time),
        area_um2=area_um2(mapped.arrays, hw, scheme.storage(mapped), adc_bits),
        dense_area_um2=area_um2(dense_mapped.arrays, hw),
        dense_latency_ns_per_image=dense_time / images,
        time_bound=bound,
        dense_adc_bits=dense_mapped.hw.adc_bits,
    )


def _sum_dicts(items: list[Mapping[str, float]]) -> dict[str, float]:
    """Component-wise sums, in the first item's key order (layer by layer, in order)."""
    out: dict[str, float] = {}
    for item in items:
        for k, v in item.items():
            out[k] = out.get(k, 0) + v
    return out


def _block(layers: list[LayerRecord], hw: HardwareConfig, images: int,
           dense: bool) -> Totals:
    """The layers summed: the scheme's (`dense` False) or dense's on the same inputs."""
    events = [lay.dense_events if dense else lay.events for lay in layers]
    cycles = [lay.dense_cycles if dense else lay.cycles for lay in layers]
    area = _sum_dicts([lay.dense_area_um2 if dense else lay.area_um2 for lay in layers])
    area["buffer"] = buffer_area_um2(hw)
    area["total"] += area["buffer"]
    energy = _sum_dicts([lay.dense_energy_pj if dense else lay.energy_pj for lay in layers])
    per_image_ns = [lay.dense_latency_ns_per_image if dense else lay.latency_ns_per_image
                    for lay in layers]
    latency_s = sum(per_image_ns) * 1e-9
    slowest_s = max(per_image_ns) * 1e-9
    return Totals(
        events=sum(events, Events()),
        cycles=sum(cycles),
        arrays=sum(lay.dense_arrays if dense else lay.arrays for lay in layers),
        energy_pj=energy,
        area_um2=area,
        latency_s=latency_s,
        images_per_s=1 / latency_s if latency_s > 0 else math.inf,
        images_per_s_pipelined=1 / slowest_s if slowest_s > 0 else math.inf,
        energy_pj_per_image=None if dense else energy["total"] / images,
        rram_adc_dac_energy_pj=rram_adc_dac_energy(energy),
    )


def _totals(layers: list[LayerRecord], hw: HardwareConfig,
            images: int) -> tuple[Totals, Totals, VsDense]:
    totals = _block(layers, hw, images, dense=False)
    dense = _block(layers, hw, images, dense=True)
    reduction = {
        key: 1 - ratio(getattr(totals.events, key), getattr(dense.events, key))
        for key in ("adc_conversions", "ou_activations")
    }
    vs_dense = VsDense(
        speedup=ratio(dense.latency_s, totals.latency_s),
        energy_efficiency=ratio(dense.energy_pj["total"], totals.energy_pj["total"]),
        rram_adc_dac_energy_efficiency=ratio(dense.rram_adc_dac_energy_pj,
                                             totals.rram_adc_dac_energy_pj),
        area_efficiency=ratio(dense.arrays, totals.arrays),
        total_area_efficiency=ratio(dense.area_um2["total"], totals.area_um2["total"]),
        computation_reduction=reduction,
    )
    return totals, dense, vs_dense
