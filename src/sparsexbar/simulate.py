"""The pipeline: model + data + hardware + scheme -> Result (frontend -> mapping -> engine -> cost).

`simulate()` is the Python entry point; the CLI's `run`, `compare` and `demo` call it.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from .core.engine import EngineOptions, LayerKernel, TaskPool, exact_accumulate, run_tasks
from .core.errors import DataError, SparsexbarError, note, warn
from .core.events import Events
from .core.frontend import QuantizedModel, QuantLayer, RunStats, accuracy, quantize_model
from .core.mapping import dense_events, dense_time_ns, map_dense
from .core.runtime import keep_freed_memory
from .result import Accuracy, LayerRecord, Result, SchemeRecord, Totals, VsDense
from .schemes import LayerRun, Scheme, get_scheme
from .schemes.base import Counted
from .training.data import KNOWN_DATASETS, ImageDataset, load_dataset
from .training.inputs import (
    DEFAULT_SPEC,
    MAX_CLASSES,
    InputRecord,
    InputSpec,
    check_classes,
    class_names_problem,
    fit_to_spec,
    is_default_scaling,
    map_labels,
    model_classes,
    prepare,
    resolved,
    spec_from_meta,
    warn_float_range,
    without_unset,
)
from .training.models import LoadedModel, load_model

ProgressFn = Callable[[int, int], None]  # (images done, images total)
# A crossbar layer's call on CPU with an ideal device runs as this many image ranges side by side
# (`LayerRecorder._split`): the schemes' counting is many small operations that a second
# intra-op thread barely speeds up, a second task does.
IMAGE_TASKS = 2
# The spellings of the named data sets load_dataset takes (root= says where their files are).
NAMED_DATASETS = ("fashion-mnist", "fashionmnist", "fmnist", "cifar10", "cifar-10", "cifar100",
                  "cifar-100")


@dataclass
class Batches:
    """Data normalized for the pipeline: float images in the model's input range, int labels
    (the model's class indices), and what was done to make them so (`input`)."""

    name: str
    images: Tensor  # (N, C, H, W) float32
    labels: Tensor  # (N,) int64
    input: InputRecord | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def first(self, limit: int | None) -> Batches:
        """The first `limit` images (all with None; all, with a note, where the data holds
        fewer)."""
        if limit is not None and limit > len(self):
            note(f"the limit {limit} is above the {len(self)} images of '{self.name}': all of "
                 "them run")
        if limit is None or limit >= len(self):
            return self
        return Batches(self.name, self.images[:limit], self.labels[:limit], self.input)

    def iterate(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for a in range(0, len(self), batch_size):
            yield self.images[a : a + batch_size], self.labels[a : a + batch_size]

    def limited(self, limit: int | None) -> Batches:
        """The first `limit` images (all of them for None)."""
        if limit is None:
            return self
        return Batches(self.name, self.images[:limit], self.labels[:limit], self.input)


@dataclass(frozen=True)
class _Raw:
    """Data as read, before the model's input spec: uint8 pixels or float inputs."""

    name: str
    images: Tensor
    labels: Tensor
    dataset: ImageDataset | None = None  # the labelled data set, when there is one


# ---- resolving inputs -----------------------------------------------------------------------
CALIBRATION_IMAGES = 256  # the data's first images the input scales are calibrated on


def calibration_read_limit(limit: int | None, calibration_images: int) -> int | None:
    """How many images of the data to read for a run of `limit` that calibrates on the data's
    first `calibration_images`: the run's, or more (None: all of them)."""
    check_limit(limit)
    return None if limit is None else max(limit, calibration_images)


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit <= 0):
        raise SparsexbarError(f"--limit must be a positive whole number (an int), got "
                              f"{limit!r} ({type(limit).__name__})")


def _read_data(data: Any, limit: int | None, root: str | Path | None,
               split: str = "test") -> _Raw:
    """The data as read (first `limit` images): a data set name or folder (its `split`;
    `root`: where a named data set's files are), an ImageDataset, an (images, labels) pair, a
    Dataset or a DataLoader; anything else, or images and labels that do not go together, is
    refused."""
    check_limit(limit)
    if root is not None and (not isinstance(data, str) or data.lower().replace("_", "-")
                             not in NAMED_DATASETS):
        raise SparsexbarError(f"--root applies to a named data set ({', '.join(KNOWN_DATASETS)})"
                              f", not to {data if isinstance(data, str | Path) else 'this data'}")
    if isinstance(data, str | Path):
        name = "fashion-mnist" if str(data) == "default" else str(data)
        data = load_dataset(name, split, root=root, limit=limit)
    if isinstance(data, ImageDataset):
        ds = data.subset(0, limit)
        return _Raw(ds.name, ds.images, ds.labels, ds)
    if isinstance(data, tuple) and len(data) == 2:
        try:
            images, labels = torch.as_tensor(data[0]), torch.as_tensor(data[1])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise SparsexbarError(f"cannot use the (images, labels) pair as tensors: "
                                  f"{' '.join(str(exc).split())}") from None
        name = "tensors"
    elif isinstance(data, torch.utils.data.DataLoader | torch.utils.data.Dataset):
        images, labels = _gather(data, limit)
        name = _dataset_name(data)
    else:
        raise SparsexbarError(f"cannot use {type(data).__name__} as data (a data set name or "
                              "folder, an (images, labels) pair, a Dataset or a DataLoader)")
    images, labels = _checked_tensors(images, labels, name)
    return _Raw(name, images[:limit], labels[:limit])


def _dataset_name(data: Any) -> str:
    """A Dataset's class name, or a DataLoader's with its dataset's ('DataLoader(MyImages)'):
    what the result records as the data set."""
    if isinstance(data, torch.utils.data.DataLoader):
        return f"DataLoader({type(data.dataset).__name__})"
    return type(data).__name__


def _gather(data: Any, limit: int | None) -> tuple[Tensor, Tensor]:
    """The (images, labels) batches of a Dataset (read 256 at a time) or a DataLoader, up to
    `limit` images; what torch's batching cannot stack (PIL images, images of differing
    sizes) and unbatched items are refused with one line."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    name = type(data).__name__
    loader = isinstance(data, torch.utils.data.DataLoader)
    if loader and isinstance(data.sampler, torch.utils.data.RandomSampler):
        note(f"{name} shuffles: the images read (the first --limit, and the first "
             f"{CALIBRATION_IMAGES} the input scales are calibrated on) depend on torch's "
             "random state; seed it (torch.manual_seed) or give shuffle=False to repeat a run")
    items = data if loader else torch.utils.data.DataLoader(data, batch_size=256)
    try:
        for item in items:
            if not (isinstance(item, tuple | list) and len(item) == 2):
                got = (f"{len(item)} items" if isinstance(item, tuple | list)
                       else type(item).__name__)
                raise SparsexbarError(f"{name} must yield (images, labels) pairs, got {got}")
            x, y = torch.as_tensor(item[0]), torch.as_tensor(item[1])
            if y.dim() == 0:
                raise SparsexbarError(f"{name} yields single (unbatched) items, e.g. "
                                      "DataLoader(batch_size=None): give it a batch size, or "
                                      "pass its Dataset")
            xs.append(x)
            ys.append(y)
            if limit is not None and sum(len(t) for t in ys) >= limit:
                break
    except (TypeError, RuntimeError) as exc:
        problem = _batching_problem(exc)
        if problem is None:
            raise  # the Dataset's own failure
        raise SparsexbarError(f"{name}: {problem}") from None
    if not xs:
        raise DataError(f"data set '{type(data).__name__}' has no images")
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as exc:
        raise SparsexbarError(f"{type(data).__name__}: batches of different shapes: "
                              f"{str(exc).splitlines()[0]}") from None


def _batching_problem(exc: BaseException) -> str | None:
    """What torch's batching (default_collate) could not do, in words, or None when `exc` is
    not its failure."""
    text = str(exc)
    if "PIL" in text and "default_collate" in text:
        return ("items are PIL images: give the Dataset a transform to tensors, "
                "transforms.PILToTensor() (uint8 pixels) or transforms.ToTensor() (floats in "
                "[0, 1])")
    if "default_collate" in text:
        return f"items that torch cannot batch: {text.splitlines()[0]}"
    if "stack expects each tensor to be equal size" in text:
        return (f"images of differing sizes cannot be batched ({text.splitlines()[0]}); give "
                "the Dataset a transform to one size, or read them as an image folder")
    return None


def _checked_tensors(images: Tensor, labels: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Images (N, C, H, W) uint8 or float (channels-last (N, H, W, C) with C 1 or 3, and
    (N, H, W), are turned around with a note) and labels (N,) of class indices (below
    `MAX_CLASSES`), dense tensors holding values."""
    for what, t in (("images", images), ("labels", labels)):
        if t.is_meta:
            raise SparsexbarError(f"data set '{name}': {what} are meta tensors, which hold no "
                                  "values: give tensors of real data")
        if t.layout != torch.strided:
            raise SparsexbarError(f"data set '{name}': {what} are {t.layout} tensors: give "
                                  "dense ones (.to_dense())")
    if images.dtype == torch.bool or not (images.dtype == torch.uint8
                                          or images.is_floating_point()):
        raise SparsexbarError(f"data set '{name}': images must be uint8 pixels (0..255) or "
                              f"floats, got {images.dtype}")
    if images.dim() == 3 and images.shape[0] == 3 and labels.numel() == 1:
        raise SparsexbarError(f"data set '{name}': images of shape {tuple(images.shape)} with one "
                              "label: one (C, H, W) image needs a batch dimension "
                              "(images.unsqueeze(0))")
    if images.dim() == 3:
        images = images.unsqueeze(1)
        note(f"images of '{name}' are (N, H, W): read as one channel")
    elif images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2).contiguous()
        note(f"images of '{name}' are channels-last (N, H, W, C): read as (N, C, H, W)")
    if images.dim() != 4:
        raise SparsexbarError(f"data set '{name}': images must be (N, C, H, W), got shape "
                              f"{tuple(images.shape)}")
    if labels.dim() != 1 or labels.dtype == torch.bool or labels.is_floating_point() \
            or labels.is_complex():
        raise SparsexbarError(f"data set '{name}': labels must be class indices, whole numbers "
                              f"of shape (N,), got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) != len(images):
        raise SparsexbarError(f"data set '{name}': {len(images)} images but {len(labels)} "
                              "labels")
    if len(labels) and int(labels.min()) < 0:
        raise SparsexbarError(f"data set '{name}': labels must be >= 0, got {int(labels.min())}")
    _check_label_bound(labels, name)
    return images, labels.long()


def _check_label_bound(labels: Tensor, name: str) -> None:
    """Refuse a label of `MAX_CLASSES` or more: a stray value, not a class index (it would
    size a zoo model's classifier)."""
    if len(labels) and int(labels.max()) >= MAX_CLASSES:
        raise SparsexbarError(f"data set '{name}': labels must be class indices below "
                              f"{MAX_CLASSES}, got {int(labels.max())} (a stray value?)")


def resolve_data(data: Any, limit: int | None = None, root: str | Path | None = None) -> Batches:
    """Batches from a data set name/path, a Dataset/DataLoader or an (images, labels) pair,
    in the default input range (uint8 pixels / 255; float images as they are), not fitted to
    any model (`resolve_inputs` fits them to one)."""
    if isinstance(data, Batches):
        check_limit(limit)
        batches = data.limited(limit)
    else:
        raw = _read_data(data, limit, root)
        images, _ = prepare(raw.images, DEFAULT_SPEC, InputSpec(), raw.name)
        batches = Batches(raw.name, images, raw.labels)
    _check_batches(batches)
    return batches


def _check_batches(batches: Batches) -> None:
    if len(batches) == 0:
        raise DataError(f"data set '{batches.name}' has no images")
    _check_label_bound(batches.labels, batches.name)
    finite = torch.isfinite(batches.images).flatten(1).all(dim=1)
    if not finite.all():
        first = int((~finite).nonzero()[0, 0])
        raise DataError(f"data set '{batches.name}' contains NaN or Inf (image {first}; a run "
                        f"reads the first {CALIBRATION_IMAGES} images at least, to calibrate "
                        "its input scales)")


def resolve_inputs(model: nn.Module | str, data: Any, limit: int | None = None,
                   input_spec: InputSpec | Mapping[str, Any] | None = None,
                   classes: Sequence[str] | None = None,
                   root: str | Path | None = None,
                   split: str = "test") -> tuple[LoadedModel, Batches]:
    """The model and the data made for it, before any simulation: the data read (first
    `limit` images; a named data set's or folder's `split`), the model resolved, its input
    spec (`input_spec`, then its checkpoint's, then the defaults: `training.inputs`), the
    images fitted, scaled and normalized, the labels mapped to the model's classes
    (`classes`: its class names in output order, where its checkpoint does not say), and one
    image run through the float model, so a model that cannot take the data is refused here.
    Batches already prepared are used as they are."""
    given = without_unset(input_spec)
    model_names = list(classes) if isinstance(classes, list | tuple) else classes
    problem = None if model_names is None else class_names_problem(model_names)
    if problem is not None:
        raise SparsexbarError(f"classes {problem} (distinct class names in output order)")
    if isinstance(data, Batches):
        batches = resolve_data(data, limit)
        c, size = int(batches.images.shape[1]), int(batches.images.shape[-1])
        loaded = load_model(model, c, max(int(batches.labels.max()) + 1, 10), size)
        _probe(loaded, batches.images, size_known=True)
        return loaded, batches
    raw = _read_data(data, limit, root, split)
    if len(raw.labels) == 0:
        raise DataError(f"data set '{raw.name}' has no images")
    c, h, w = (int(d) for d in raw.images.shape[1:])
    ds = raw.dataset
    # a zoo model's outputs: the data set's classes where it declares them, else the labels'
    # (bounded by _checked_tensors: a stray huge label cannot size the classifier)
    data_classes = len(ds.classes) if ds is not None else max(int(raw.labels.max()) + 1, 10)
    loaded = load_model(model, given.channels or c, data_classes, given.size or h)
    spec = resolved(given, spec_from_meta(loaded.meta, loaded.net))
    images, fitted = prepare(raw.images, spec, given, raw.name)
    if raw.images.is_floating_point() and (spec.scale != DEFAULT_SPEC.scale
                                           or spec.mean != (0.0,) or spec.std != (1.0,)):
        warn(f"data set '{raw.name}' holds float images, used as given; the model's metadata "
             f"says its inputs are pixels x {spec.scale:g} normalized by mean {spec.mean} and "
             f"std {spec.std}: give uint8 pixels to have that applied")
    batches = Batches(raw.name, images, raw.labels)
    _check_batches(batches)
    warn_float_range(raw.images, spec, raw.name)
    outputs = _probe(loaded, images, size_known=spec.size is not None)
    labels, how, _ = _model_labels(loaded, outputs, raw.labels, ds, raw.name, model_names)
    shape = tuple(int(d) for d in images.shape[1:])
    pixels = raw.images.dtype == torch.uint8
    record = InputRecord(
        shape=(shape[0], shape[1], shape[2]), data_shape=(c, h, w), fitted=fitted,
        pixels=pixels, scale=spec.scale if pixels else None, mean=spec.mean if pixels else None,
        std=spec.std if pixels else None, labels=how)
    return loaded, Batches(raw.name, images, labels, record)


def _model_labels(loaded: LoadedModel, outputs: int, labels: Tensor, ds: ImageDataset | None,
                  name: str, given: Sequence[str] | None
                  ) -> tuple[Tensor, str, Sequence[str] | None]:
    """The data's labels as the model's class indices (`map_labels` for a data set; a
    warning where its classes and the model's differ: `check_classes`), how they were mapped,
    and the model's class names (`given`, else its checkpoint's; None when unknown)."""
    names = given
    if names is None:
        names = model_classes(loaded.meta)
    elif len(names) != outputs:
        raise SparsexbarError(f"the classes given (--classes, classes=) name {len(names)} "
                              f"classes but the model has {outputs} outputs")
    if names is not None and len(names) != outputs:
        names = None  # metadata that does not fit the model says nothing
    how = "the data's labels"
    if ds is not None:
        labels, how = map_labels(ds, names, outputs)
    check_classes(labels, outputs, None if ds is None or ds.from_folders else ds.num_classes,
                  name)
    return labels, how, names


def dataset_for_model(loaded: LoadedModel, ds: ImageDataset) -> ImageDataset:
    """`ds` made for `loaded` as `resolve_inputs` makes data, its uint8 pixels kept (training
    takes pixels / 255): fitted to the model's input (its metadata's spec, a note), one image
    run through the model, the labels mapped to its classes (an image folder's by name; a
    warning where a data set's classes are not the model's). A model whose metadata asks for
    another scaling than pixels / 255 is refused: training does not apply it."""
    spec = resolved(InputSpec(), spec_from_meta(loaded.meta, loaded.net))
    if not is_default_scaling(spec):
        raise SparsexbarError(f"model '{loaded.name}' takes pixels x {spec.scale:g} normalized "
                              f"by mean {spec.mean} and std {spec.std} (its metadata), but "
                              "fine-tuning feeds pixels / 255 without normalization")
    if len(ds) == 0:
        raise DataError(f"data set '{ds.name}' has no images")
    images, _ = fit_to_spec(ds.images, spec, ds.name)
    first, _ = prepare(images[:1], spec, InputSpec(), ds.name)
    outputs = _probe(loaded, first, size_known=spec.size is not None)
    labels, _, names = _model_labels(loaded, outputs, ds.labels, ds, ds.name, None)
    classes = ds.classes if not ds.from_folders else (
        names if names is not None else [str(i) for i in range(outputs)])
    return ImageDataset(images, labels, list(classes), ds.name)


def _probe(loaded: LoadedModel, images: Tensor, size_known: bool) -> int:
    """Run one image through the float model; its number of outputs. A model that cannot
    take the images, or does not return (batch, classes) logits, is refused naming both
    (`size_known` False: the size was the data's, so the hint says how to give another)."""
    shape = "x".join(str(int(d)) for d in images.shape[1:])
    _check_tensors(loaded)
    param = next(iter(loaded.net.parameters()), None)  # the model may live on a GPU
    try:
        with torch.no_grad():
            out = loaded.net(images[:1].to(param.device if param is not None else "cpu"))
    except (Exception, SystemExit) as exc:  # the user's model: it cannot take these inputs
        hint = ("" if size_known else " (the data's size; if the model takes another, give "
                "it, --input-size / input_spec size, and the images are fitted to it)")
        message = " ".join(str(exc).split())  # the whole message, on one line
        if len(message) > 300:
            message = message[:297] + "..."
        raise SparsexbarError(f"model '{loaded.name}' cannot take inputs of {shape}{hint}: "
                              f"{type(exc).__name__}: {message}") from None
    if (not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 1
            or out.shape[1] == 0):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise SparsexbarError(f"model '{loaded.name}' returns {got} for one {shape} image; "
                              "expected (batch, classes) logits for classification")
    return int(out.shape[1])


def _check_run_arguments(options: Any, qmodel: Any, progress: Any,
                         baseline: Mapping[str, Any] | None) -> None:
    """The run's own arguments, before any work (a wrong type failed mid-run or after it:
    AttributeError, KeyError; a baseline top-1 of NaN or 2.0 went into the result)."""
    if options is not None and not isinstance(options, EngineOptions):
        raise SparsexbarError(f"options must be an EngineOptions, got {type(options).__name__}")
    if qmodel is not None and not isinstance(qmodel, QuantizedModel):
        raise SparsexbarError(f"qmodel must be a QuantizedModel (quantize_model's), got "
                              f"{type(qmodel).__name__}")
    if progress is not None and not callable(progress):
        raise SparsexbarError(f"progress must be a function (done, total), got "
                              f"{type(progress).__name__}")
    if baseline is None:
        return
    for key in ("float_top1", "quantized_top1"):
        value = baseline.get(key) if isinstance(baseline, Mapping) else None
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0.0 <= float(value) <= 1.0):  # NaN fails the comparison too
            raise SparsexbarError(f"baseline_accuracy needs '{key}', a top-1 fraction in "
                                  f"[0, 1], got {value!r}")


def _check_calibration(calibration: Tensor, images: Tensor) -> None:
    """`calibration` is a batch of images like the run's (made for the model: the same
    channels and size), with at least one image."""
    if not isinstance(calibration, Tensor) or not calibration.is_floating_point():
        raise SparsexbarError(f"calibration must be a float tensor of images, got "
                              f"{type(calibration).__name__}"
                              + (f" of {calibration.dtype}" if isinstance(calibration, Tensor)
                                 else ""))
    if calibration.dim() != images.dim() or calibration.shape[1:] != images.shape[1:]:
        want = ", ".join(str(int(d)) for d in images.shape[1:])
        raise SparsexbarError(f"calibration images have shape {tuple(calibration.shape)}; the "
                              f"model takes (N, {want}) like the run's images")
    if calibration.shape[0] == 0:
        raise SparsexbarError("calibration holds no images")


def _check_tensors(loaded: LoadedModel) -> None:
    """The model's parameters and buffers hold float32 values: none on the meta device (shapes
    without values) and none of another float type (the engine quantizes from float32)."""
    for kind, items in (("parameter", loaded.net.named_parameters()),
                        ("buffer", loaded.net.named_buffers())):
        for name, t in items:
            if t.device.type == "meta":
                raise SparsexbarError(f"model '{loaded.name}': {kind} '{name}' is on the meta "
                                      "device (a shape without values): load its weights first")
            if t.is_floating_point() and t.dtype != torch.float32:
                raise SparsexbarError(f"model '{loaded.name}': {kind} '{name}' is "
                                      f"{str(t.dtype).removeprefix('torch.')}; the simulator "
                                      "takes float32 models (give model.float())")


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
        self._called: set[str] = set()  # layers run once (their lazy caches are built)
        # Layers run as image tasks on CPU worker threads (`_split`, the per-conversion
        # paths): the frontend then keeps the digital periphery on one intra-op thread
        # (frontend._Runner).
        self.single_thread_periphery = device.type == "cpu" and (scheme.image_tasks or any(
            not (options.exact_shortcut and k.exact_linear) for k in kernels.values()))

    def __call__(self, layer: QuantLayer, x_int: Tensor) -> Tensor:
        """The layer's integer accumulator on the batch."""
        run = self.scheme.run_layer(self.kernels[layer.name], x_int, self.options)
        self._record(layer.name, [run])
        return run.accumulator

    def dequantized(self, layer: QuantLayer, x_int: Tensor) -> Tensor:
        """The layer's real output (`QuantLayer.dequantize` of its accumulator) on the batch:
        as image tasks side by side where `_split` allows, each dequantizing its own rows
        into the output (no copy of the whole accumulator), else as `__call__`."""
        kernel = self.kernels[layer.name]
        spans = self._split(kernel, x_int)
        if len(spans) == 1:
            return layer.dequantize(self(layer, x_int))
        threads = self.options.threads or torch.get_num_threads()
        workers = min(threads, len(spans))
        inner = replace(self.options, threads=max(1, threads // workers), pool=None,
                        memory_budget_mb=self.options.memory_budget_mb / workers)
        runs: list[Counted | None] = [None] * len(spans)
        made: list[Tensor] = []  # the output, in the memory format of the first accumulator
        lock = threading.Lock()

        def output(acc: Tensor) -> Tensor:
            """The whole batch's output, made once, channels-last where the accumulators are
            (the int8 convolution's): dequantizing into it then transposes nothing."""
            with lock:
                if not made:
                    last = (acc.dim() == 4 and not acc.is_contiguous()
                            and acc.is_contiguous(memory_format=torch.channels_last))
                    made.append(torch.empty(
                        (int(x_int.shape[0]), *layer.output_shape), dtype=torch.float32,
                        device=x_int.device,
                        memory_format=torch.channels_last if last else torch.contiguous_format))
                return made[0]

        def task(i: int) -> None:
            a, b = spans[i]
            run = self.scheme.run_layer(kernel, x_int[a:b], inner)
            runs[i] = Counted(run.events, run.cycles, run.time_ns)
            layer.dequantize(run.accumulator, output(run.accumulator)[a:b])

        pool = self.options.pool.executor(workers) if self.options.pool is not None else None
        run_tasks(len(spans), task, workers, threads, pool)
        self._record(layer.name, [r for r in runs if r is not None])  # in image order
        return made[0]

    def _record(self, name: str, runs: Sequence[Counted | LayerRun]) -> None:
        """Add the counts of a call's runs (in image order) to the layer's totals."""
        self._called.add(name)
        for run in runs:
            self.events[name] = self.events[name] + run.events
            self.cycles[name] += run.cycles
            self.time_ns[name] += run.time_ns

    def _split(self, kernel: LayerKernel, x_int: Tensor) -> list[tuple[int, int]]:
        """[a, b) image ranges the layer's call runs as: IMAGE_TASKS halves on CPU with an
        ideal device (no per-call random stream) for a scheme that allows it
        (`Scheme.image_tasks`), once the layer has run once (its lazily built caches then
        exist before two threads read them); else the whole batch. The split does not depend
        on the thread count, so neither do the results (time sums are float sums in task
        order)."""
        n = int(x_int.shape[0])
        if (self.device.type != "cpu" or n < IMAGE_TASKS or not self.scheme.image_tasks
                or not kernel.mapped.hw.device.ideal
                or kernel.mapped.layer.name not in self._called):
            return [(0, n)]
        cuts = [n * i // IMAGE_TASKS for i in range(IMAGE_TASKS + 1)]
        return list(zip(cuts[:-1], cuts[1:], strict=True))

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
    calibration_images: int = CALIBRATION_IMAGES,
    options: EngineOptions | None = None,
    progress: ProgressFn | None = None,
    qmodel: QuantizedModel | None = None,
    baseline_accuracy: Accuracy | Mapping[str, float] | None = None,
    input_spec: InputSpec | Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    root: str | Path | None = None,
) -> Result:
    """Run `model` on `data` through the accelerator `hw` with `scheme`; return the Result.

    - `model`: an nn.Module, "default" (the shipped VGG-8), a shipped model's or zoo name, a
      checkpoint path (.safetensors + .json), a torch.save'd module (.pt/.pth), an ONNX file,
      or "module:factory" (a function of no arguments returning the module).
    - `data`: "default" (the embedded Fashion-MNIST test split), a data set name
      (fashion-mnist, cifar10, cifar100), an image folder, a torch Dataset or DataLoader, or
      an (images, labels) pair of tensors.
    - `hw`: a preset name, a YAML/JSON file, a HardwareConfig or a mapping of its sections;
      `overrides`: dotted config keys set on it ({"ou.rows": 9}; text is read as --set's).
    - `scheme`: a name with options as text ("comprrae:alpha=0.4", "sre+comprrae") or a
      Scheme object (run as a copy).
    - `limit`: simulate the first `limit` images (None: all); `batch_size`: images per batch;
      `device`: "cpu", "cuda" or a torch.device.

    The data is made for the model first (`resolve_inputs`): `input_spec` says what the model
    takes where its checkpoint does not (an `InputSpec` or a mapping of its fields: channels,
    size, fit, scale, mean, std), `classes` its class names in output order (to map an image
    folder's labels), `root` where a named data set's files are (cifar10). Calibration (input
    scales): `calibration` if given, else the first `calibration_images` images of the data,
    read whatever `limit` runs (a run of the first 16 images quantizes as the whole run does).
    `qmodel` reuses an already quantized model (compare runs share one); `baseline_accuracy`
    ({"float_top1", "quantized_top1"} of an earlier run with the same qmodel and data) skips
    recomputing the float and integer-reference accuracies. Bad input of any kind raises
    SparsexbarError before any simulation; doubtful numbers (a float top-1 near chance,
    class counts that differ) give a SparsexbarWarning.
    """
    keep_freed_memory()  # the engine's per-call tensors reuse memory (core/runtime.py)
    if isinstance(baseline_accuracy, Accuracy):
        baseline_accuracy = baseline_accuracy.to_json()
    _check_run_arguments(options, qmodel, progress, baseline_accuracy)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise SparsexbarError(f"--batch-size must be a positive whole number (an int), got "
                              f"{batch_size!r} ({type(batch_size).__name__})")
    config = load_config(hw, overrides)
    if qmodel is not None and (qmodel.weight_bits, qmodel.input_bits) != (
            config.numbers.weight_bits, config.numbers.input_bits):
        raise SparsexbarError(
            f"qmodel was quantized to {qmodel.weight_bits}-bit weights and {qmodel.input_bits}"
            f"-bit inputs, but the hardware has numbers.weight_bits={config.numbers.weight_bits}"
            f" and numbers.input_bits={config.numbers.input_bits}: quantize the model with the "
            "hardware's bits, or leave qmodel out")
    # A scheme object of the caller's is run as a copy: a scheme keeps per-layer choices from
    # its mapping (encoding's ADC bits, combined's techniques), which a later run of another
    # model would otherwise report as its own.
    sch = copy.deepcopy(scheme) if isinstance(scheme, Scheme) else get_scheme(scheme)
    opts = options or EngineOptions()
    dev = _device(device)
    calibration_images = _positive("calibration_images", calibration_images)
    # the calibration images are the data's first ones whatever `limit` runs: a run of 16
    # images quantizes as a run of the whole split does (it calibrated on its 16)
    calibrating = qmodel is None and calibration is None
    loaded, read = resolve_inputs(model, data, calibration_read_limit(limit, calibration_images)
                                  if calibrating else limit, input_spec, classes, root)
    batches = read.first(limit)
    net, model_name = loaded.net, loaded.name
    if calibration is not None:
        _check_calibration(calibration, batches.images)
    if qmodel is None:
        calib = calibration if calibration is not None else read.images[:calibration_images]
        qmodel = quantize_model(net, calib, config.numbers.weight_bits, config.numbers.input_bits)
    qmodel.to(dev)
    sch.check_model(qmodel.layers)
    mapped = {q.name: sch.map_layer(q, config) for q in qmodel.layers}
    kernels = {name: sch.kernel(m, dev) for name, m in mapped.items()}
    # A lossless scheme whose every conversion is provably the identity (ideal device, unit
    # ADC step, no clipping) outputs the integer-quantized network exactly (every scheme is
    # tested for it: tests/test_scheme_contract.py), so that network is not run a second time.
    simulated_is_reference = sch.lossless and all(m.exact_linear() for m in mapped.values())
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
                # the integer-quantized network: the simulated logits themselves where they
                # provably are it, else the engine's exact shortcut (the same integers as
                # run_reference's float64 convolutions, several times faster)
                reference = (logits if simulated_is_reference
                             else qmodel.run(images, exact_accumulate))
                correct["quantized_top1"] += accuracy(reference, labels)
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
    if baseline_accuracy is None:
        _warn_near_chance(accuracy_out.float_top1, n, int(outputs[0].shape[1]), model_name)
    totals, dense_totals, vs_dense = _totals(layers, config, n)
    return Result(
        version=__version__, model=model_name, dataset=batches.name, num_images=n,
        hardware=config.to_dict(),
        scheme=SchemeRecord(sch.name, sch.parameters(),
                            overrides=_overrides(sch, config, layers) or None),
        accuracy=accuracy_out, layers=tuple(layers), totals=totals, dense_totals=dense_totals,
        vs_dense=vs_dense,
        input=batches.input.to_json() if batches.input is not None else None,
        outputs=torch.cat(outputs))


def _positive(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SparsexbarError(f"{what} must be a positive whole number, got {value!r}")
    return value


def _warn_near_chance(float_top1: float, images: int, classes: int, model: str) -> None:
    """A float model within a quarter of the way from chance to perfect on 20 images or more
    is most likely given inputs it was not trained on."""
    chance = 1 / max(classes, 1)
    if images >= 20 and classes >= 2 and float_top1 < chance + (1 - chance) / 4:
        warn(f"the float model scores {float_top1:.1%} top-1, near chance "
             f"({chance:.0%}): check what inputs it expects (--input-scale, --normalize, "
             "--classes) and that it is trained")


def _overrides(scheme: Scheme, config: HardwareConfig,
               layers: list[LayerRecord]) -> dict[str, str]:
    """The config settings the scheme did not follow, each with what it used instead: the
    scheme's own (`Scheme.overridden`) and ADC bits per layer other than adc.bits."""
    out = dict(scheme.overridden(config))
    why = out.pop("adc.bits", "")
    bits = sorted({lay.adc_bits for lay in layers})
    if config.adc.bits == "auto":  # sized per layer by the rule (docs/cost.md): no override,
        if why:                    # unless the scheme took its bits from elsewhere
            out["adc.bits"] = f"{why}, not auto"
        return out
    if bits and bits != [config.adc.bits]:
        used = f"{bits[0]}" if len(bits) == 1 else f"{bits[0]}..{bits[-1]}"
        out["adc.bits"] = f"{used} per layer, not {config.adc.bits}" + (f" ({why})" if why else "")
    return out


def check_device(device: str | torch.device) -> torch.device:
    """The torch device of `device`; one this machine cannot use raises SparsexbarError."""
    return _device(device)


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
