"""What a model takes, in one place: `InputSpec` (channels, size, how other images are fitted,
and how pixel values become its inputs), where it comes from (a checkpoint's metadata, the
module itself, the user) and what it does to a data set (`prepare`).

A model's input is `(pixel x scale - mean) / std`, per channel, from pixels 0..255: the zoo's
models (and every checkpoint `sparsexbar train` writes) take images in [0, 1] (scale 1/255,
mean 0, std 1); a Keras-style model trained on 0..255 takes scale 1; a torchvision-style
one scale 1/255 with its mean and std. Images (uint8 pixels: the named data sets, image
folders, uint8 tensors) are fitted to the model's channels and size (`data.fit_images`:
grey <-> RGB; zero padding when the difference is even and positive, e.g. 28x28
Fashion-MNIST -> 32x32, else a bilinear resize), then scaled and normalized. Float images
are taken as the model's inputs as they are (only fitted); a scale or normalization given
explicitly for them is refused rather than silently ignored.

Labels: a data set's own labels are class indices. An image folder's are the indices of its
sorted folder names, so they are mapped to the model's classes by name (the checkpoint's
`classes`, its data set's, or `classes=` / `--classes`), by number (folders named 0..K-1), or,
when the model's classes are unknown and the folder holds as many classes as the model has
outputs, in sorted order (the torchvision/Keras convention, said in a note); anything else is
refused.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import SparsexbarError, note, warn
from .data import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    ImageDataset,
    fit_description,
    fit_images,
)

FITS = ("auto", "pad", "resize")
PIXEL_SCALE = 1.0 / 255.0

# Class names of the data sets a checkpoint's "dataset" may name.
KNOWN_CLASSES: dict[str, list[str]] = {
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
}


MAX_INPUT_CHANNELS = 1024  # input channels and image size an InputSpec may ask for
MAX_INPUT_SIZE = 4096
# Labels are class indices below this: a larger one (a stray value, not a class) would size a
# zoo model's classifier (ImageNet-21k has 21,841 classes).
MAX_CLASSES = 32768
# Float images beyond this range, for a model taking inputs in [0, 1], give a warning.
FLOAT_RANGE = (-0.5, 1.5)
# How the model's class names are given, where each entry point takes them.
CLASSES_GIVEN = "the model's classes (--classes; a sweep file: classes:; Python: classes=)"


@dataclass(frozen=True)
class InputSpec:
    """What a model takes. Every field None means "not said": the model's metadata, the module
    itself or the data decide (`resolve_spec`).

    - `channels`, `size`: the input's C and H = W;
    - `fit`: how images of another shape are fitted: auto (zero padding when the difference is
      even and positive, else bilinear resize), pad or resize;
    - `scale`: input = pixel (0..255) x scale: 1/255 for inputs in [0, 1], 1 for 0..255;
    - `mean`, `std`: then (input - mean) / std, one value or one per channel.
    """

    channels: int | None = None
    size: int | None = None
    fit: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # bounded: the data are fitted to C x size x size before any check of the model, and
        # size=100000 asked the allocator for 80 GB (a bool is no number: True ran as 1)
        for what, value, top in (("channels", self.channels, MAX_INPUT_CHANNELS),
                                 ("size", self.size, MAX_INPUT_SIZE)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= top):
                raise SparsexbarError(f"input {what} must be a whole number from 1 to {top}, "
                                      f"got {value!r}")
        if self.fit is not None and self.fit not in FITS:
            raise SparsexbarError(f"input fit must be one of {', '.join(FITS)}, got "
                                  f"'{self.fit}'")
        if self.scale is not None and not (isinstance(self.scale, int | float)
                                           and not isinstance(self.scale, bool)
                                           and math.isfinite(self.scale) and self.scale > 0):
            raise SparsexbarError(f"input scale must be a positive number, got {self.scale!r}")
        for what in ("mean", "std"):
            values = getattr(self, what)
            if values is None:
                continue
            if hasattr(values, "tolist"):  # a numpy array or a tensor: its numbers
                values = values.tolist()
            values = tuple(values) if isinstance(values, Sequence) else (values,)
            if not values or any(isinstance(v, bool) or not isinstance(v, numbers.Real)
                                 or not math.isfinite(v) for v in values):
                raise SparsexbarError(f"input {what} must be finite numbers (one per channel, "
                                      f"or one for all), got {values!r}")
            if what == "std" and any(v <= 0 for v in values):
                raise SparsexbarError(f"input std must be positive, got {values!r}")
            object.__setattr__(self, what, tuple(float(v) for v in values))
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std) \
                and 1 not in (len(self.mean), len(self.std)):
            raise SparsexbarError(f"input mean and std differ in length ({len(self.mean)} "
                                  f"and {len(self.std)} values)")

    @property
    def normalizes(self) -> bool:
        """Whether the spec says anything about how pixels become inputs."""
        return self.scale is not None or self.mean is not None or self.std is not None

    def over(self, base: InputSpec) -> InputSpec:
        """This spec's fields, and `base`'s where this one says nothing."""
        return InputSpec(**{name: getattr(self, name) if getattr(self, name) is not None
                            else getattr(base, name) for name in _FIELDS})

    def to_json(self) -> dict[str, Any]:
        """The spec as a checkpoint's `input` block (lists for mean and std; None where
        unset); `from_json` reads it back."""
        return {"channels": self.channels, "size": self.size, "fit": self.fit,
                "scale": self.scale, "mean": list(self.mean) if self.mean else None,
                "std": list(self.std) if self.std else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "input spec") -> InputSpec:
        """The spec from a mapping of its fields (a checkpoint's `input` block, a sweep
        file's); an unknown key or a value out of range raises SparsexbarError naming
        `where`."""
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise SparsexbarError(f"{where}: unknown key(s) {', '.join(unknown)} (known: "
                                  f"{', '.join(_FIELDS)})")
        values: dict[str, Any] = {k: (tuple(v) if k in ("mean", "std") and isinstance(v, list)
                                      else v) for k, v in data.items()}
        return cls(**values)


_FIELDS = ("channels", "size", "fit", "scale", "mean", "std")
DEFAULT_SPEC = InputSpec(fit="auto", scale=PIXEL_SCALE, mean=(0.0,), std=(1.0,))


# ---- the command line's spellings ----------------------------------------------------------
def parse_scale(text: str) -> float:
    """--input-scale: a positive number or a fraction ('1/255', '1', '0.00392')."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError, OverflowError):  # OverflowError: '1e400'
        raise SparsexbarError(f"--input-scale must be a positive number or fraction (1/255: "
                              f"inputs in [0, 1]; 1: 0..255), got '{text}'") from None
    if not (math.isfinite(value) and value > 0):
        raise SparsexbarError(f"--input-scale must be positive, got '{text}'")
    return value


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """--normalize: 'MEAN,STD' (one of each, every channel) or 'M1,M2,M3/S1,S2,S3' (per
    channel), in input units (after --input-scale)."""
    def numbers(part: str) -> tuple[float, ...]:
        values = tuple(float(v) for v in part.split(","))
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(part)
        return values

    try:
        if "/" in text:
            mean_text, _, std_text = text.partition("/")
            mean, std = numbers(mean_text), numbers(std_text)
        else:
            mean_std = numbers(text)
            if len(mean_std) != 2:
                raise ValueError(text)
            mean, std = mean_std[:1], mean_std[1:]
    except ValueError:
        raise SparsexbarError(f"--normalize must be MEAN,STD or M1,M2,M3/S1,S2,S3 (numbers), "
                              f"got '{text}'") from None
    if any(v <= 0 for v in std):
        raise SparsexbarError(f"--normalize: std must be positive, got '{text}'")
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise SparsexbarError(f"--normalize: {len(mean)} means but {len(std)} stds")
    return mean, std


def class_names_problem(names: Any, minimum: int = 1) -> str | None:
    """Why `names` are not a model's class names in output order, or None when they are: a
    list (or tuple) of at least `minimum` distinct, non-blank strings. The reason reads after
    the names' source, e.g. "--classes " + "names class 'bag' twice"."""
    if not isinstance(names, list | tuple):
        return f"must be a list of class names, got {type(names).__name__}"
    if len(names) < minimum:
        return (f"must name at least {minimum} class{'es' if minimum > 1 else ''}, got "
                f"{len(names)}")
    for name in names:
        if not (isinstance(name, str) and name.strip()):
            return f"must be class names (non-blank text), got {name!r} among them"
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return f"names class {name!r} twice"
        seen.add(name)
    return None


def parse_classes(text: str) -> list[str]:
    """--classes: the model's class names in output order, comma-separated, or the name of a
    data set whose classes they are (fashion-mnist, cifar10)."""
    key = text.strip().lower()
    if key in KNOWN_CLASSES:
        return list(KNOWN_CLASSES[key])
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names):
        raise SparsexbarError(f"--classes must be class names in output order, "
                              f"comma-separated, or one of {', '.join(KNOWN_CLASSES)}, got "
                              f"'{text}'")
    problem = class_names_problem(names, minimum=2)
    if problem is not None:
        raise SparsexbarError(f"--classes {problem}: '{text}'")
    return names


# ---- where a model's spec comes from -------------------------------------------------------
def first_layer_channels(net: nn.Module) -> int | None:
    """in_channels of the module's first Conv2d (None without one)."""
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            return int(mod.in_channels)
    return None


def spec_from_meta(meta: Mapping[str, Any] | None, net: nn.Module) -> InputSpec:
    """A checkpoint's spec: its "input" entry (written by `sparsexbar train`), else what its
    "arch_kwargs" say (in_channels, input_size; `input_fit`'s how) with inputs in [0, 1], no
    normalization (every checkpoint before the entry); channels from the first conv when
    nothing says. A module without metadata: its first conv's channels."""
    inferred = InputSpec(channels=first_layer_channels(net))
    if meta is None:
        return inferred
    kwargs = meta.get("arch_kwargs") or {}
    fit = meta.get("input_fit")
    base = InputSpec(
        channels=_whole(kwargs.get("in_channels")),
        size=_whole(kwargs.get("input_size")),
        fit=fit.get("how") if isinstance(fit, Mapping) and fit.get("how") in FITS else None,
        scale=PIXEL_SCALE, mean=(0.0,), std=(1.0,))
    stored = meta.get("input")
    if "input" in meta:  # a bad one: checkpoint.read_meta refuses it first, naming the file
        if not isinstance(stored, Mapping):
            raise SparsexbarError(f"checkpoint 'input' metadata must be an object, got "
                                  f"{stored!r}")
        base = InputSpec.from_json(stored, "checkpoint 'input' metadata").over(base)
    return base.over(inferred)


def model_classes(meta: Mapping[str, Any] | None) -> list[str] | None:
    """The model's class names in output order: its checkpoint's "classes", else those of the
    data set it was trained on when that is a known one; None when unknown."""
    if meta is None:
        return None
    if "classes" in meta:  # checkpoint.read_meta refuses a bad one first, naming the file
        names = meta["classes"]
        problem = class_names_problem(names)
        if problem is not None:
            raise SparsexbarError(f"checkpoint 'classes' metadata {problem}")
        return list(names)
    dataset = str(meta.get("dataset") or "").lower()
    return list(KNOWN_CLASSES[dataset]) if dataset in KNOWN_CLASSES else None


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---- applying it -----------------------------------------------------------------------------
@dataclass(frozen=True)
class InputRecord:
    """What was done to the data (the result JSON's `input`): the model's input shape, the
    data's own, how it was fitted ('' when it was not), the scale and normalization applied
    (`pixels` False: float images used as given), and how the labels were mapped."""

    shape: tuple[int, int, int]
    data_shape: tuple[int, int, int]
    fitted: str
    pixels: bool
    scale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    labels: str

    def to_json(self) -> dict[str, Any]:
        """The result JSON's `input` block: the model's and the data's per-image shapes,
        how the images were fitted, and how pixels became inputs."""
        return {"shape": list(self.shape), "data_shape": list(self.data_shape),
                "fitted": self.fitted or None, "pixels": self.pixels, "scale": self.scale,
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None,
                "labels": self.labels}


def fit_to_spec(images: Tensor, spec: InputSpec, name: str) -> tuple[Tensor, str]:
    """`images` (N, C, H, W) fitted to the spec's channels and size (uint8 stays uint8), one
    note saying how; also the fit in words ('' when none)."""
    if images.dim() != 4:
        raise SparsexbarError(f"data set '{name}': images must be (N, C, H, W), got shape "
                              f"{tuple(images.shape)}")
    c, h, w = (int(d) for d in images.shape[1:])
    channels = spec.channels or c
    size = spec.size  # None: the data's own
    fitted = fit_description((c, h, w), channels, size, spec.fit or "auto")
    if fitted:
        images = fit_images(images, channels, size, spec.fit or "auto")
        shape = "x".join(str(int(d)) for d in images.shape[1:])
        note(f"images of '{name}' fitted to the model's input {shape}: {fitted}")
    return images, fitted


def is_default_scaling(spec: InputSpec) -> bool:
    """Whether the spec's model takes inputs in [0, 1]: pixel / 255, no normalization."""
    return spec.scale == PIXEL_SCALE and spec.mean == (0.0,) and spec.std == (1.0,)


def warn_float_range(images: Tensor, spec: InputSpec, name: str) -> None:
    """Warn when float images, used as the model's inputs as they are, lie clearly outside
    [0, 1] (below -0.5 or above 1.5: 0..255 values cast to float, most often) while the spec
    says the model takes inputs in [0, 1]."""
    if not images.is_floating_point() or not is_default_scaling(spec) or images.numel() == 0:
        return
    lo, hi = float(images.min()), float(images.max())
    if lo < FLOAT_RANGE[0] or hi > FLOAT_RANGE[1]:
        warn(f"data set '{name}' holds float images spanning {lo:g}..{hi:g}, used as the "
             "model's inputs as they are, but the model takes inputs in [0, 1] (pixels / 255, "
             "no normalization): divide 0..255 values by 255 or give uint8 pixels; if they "
             "are already its inputs (normalized), ignore this")


def prepare(images: Tensor, spec: InputSpec, given: InputSpec, name: str) -> tuple[Tensor, str]:
    """`images` (uint8 pixels or float inputs, (N, C, H, W)) fitted to `spec` and turned into
    the model's float32 inputs; also the fit in words ('' when none). `given` is what the
    user said explicitly: a scale or normalization for float images is refused."""
    images, fitted = fit_to_spec(images, spec, name)
    if images.dtype == torch.uint8:
        scale = spec.scale if spec.scale is not None else PIXEL_SCALE
        # / 255 exactly as ImageDataset.to_float and training do (x * (1/255) can differ
        # in the last bit)
        x = images.to(torch.float32)
        x = x / 255.0 if scale == PIXEL_SCALE else x * scale
        x = _normalize(x, spec, name)
    elif images.is_floating_point():
        if given.normalizes:
            raise SparsexbarError(f"data set '{name}' holds float images, used as the model's "
                                  "inputs as they are: an input scale or normalization "
                                  "applies to uint8 pixel images (0..255) only")
        x = images.to(torch.float32)
    else:
        raise SparsexbarError(f"data set '{name}': images must be uint8 pixels or floats, got "
                              f"{images.dtype}")
    return x.contiguous(), fitted


def _normalize(x: Tensor, spec: InputSpec, name: str) -> Tensor:
    mean = torch.tensor(spec.mean or (0.0,), dtype=torch.float32)
    std = torch.tensor(spec.std or (1.0,), dtype=torch.float32)
    c = int(x.shape[1])
    for what, t in (("mean", mean), ("std", std)):
        if len(t) not in (1, c):
            counts = "1 value" if c == 1 else f"1 value or {c}"
            raise SparsexbarError(f"input {what} has {len(t)} values; the model's input has "
                                  f"{c} channel{'s' if c > 1 else ''} (give {counts})")
    if bool((mean == 0).all()) and bool((std == 1).all()):
        return x
    out = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(x).all()):
        # the data was fine: the normalization overflowed float32 (a std such as 1e-300);
        # the data itself is looked at only then
        raise SparsexbarError(f"data set '{name}': the input normalization (x - mean) / std "
                              f"overflows float32 (mean {spec.mean}, std {spec.std}); give a "
                              "larger std")
    return out


def map_labels(ds: ImageDataset, classes: Sequence[str] | None, outputs: int) -> tuple[Tensor, str]:
    """The data's labels as the model's class indices, and how they were mapped (in words).

    A data set's own labels are kept (a warning when its classes and the model's differ); an
    image folder's (`from_folders`) are mapped by class name, by number or, when neither is
    known and the counts agree, in sorted order (a note); else refused."""
    if not ds.from_folders:
        if classes is not None and len(ds.classes) == len(classes) and [
                _norm(c) for c in ds.classes] != [_norm(c) for c in classes]:
            warn(f"the model's classes ({_short(classes)}) are not the classes of "
                 f"'{ds.name}' ({_short(ds.classes)}): its top-1 compares unrelated labels")
        return ds.labels, "the data set's labels"
    folders = ds.classes
    if classes is not None:
        index = {_norm(c): i for i, c in enumerate(classes)}
        target = []
        by_name = 0
        for folder in folders:
            key = _norm(folder)
            if key in index:
                target.append(index[key])
                by_name += 1
            elif folder.isdigit() and int(folder) < len(classes):
                target.append(int(folder))
            else:
                raise SparsexbarError(f"image folder class '{folder}' of '{ds.name}' is not one "
                                      f"of the model's classes ({_short(classes, 12)}); "
                                      f"rename the folder or give {CLASSES_GIVEN}")
        how = ("folder names -> the model's class names" if by_name
               else "folder numbers -> output indices")
    elif all(f.isdigit() for f in folders):
        target = [int(f) for f in folders]
        bad = [f for f, t in zip(folders, target, strict=True) if t >= outputs]
        if bad:
            raise SparsexbarError(f"image folder class '{bad[0]}' of '{ds.name}' is not an "
                                  f"output of the model (it has {outputs}: 0..{outputs - 1})")
        how = "folder numbers -> output indices"
    elif len(folders) == outputs:
        target = list(range(len(folders)))
        how = "sorted folder names -> output indices"
        note(f"labels of '{ds.name}' from its sorted folder names ({_pairs(folders)}); give "
             "--classes if the model's outputs are in another order")
    else:
        raise SparsexbarError(
            f"image folder '{ds.name}' has {len(folders)} class folders "
            f"({_short(folders)}) but the model has {outputs} outputs and no class names: name "
            f"the folders by output index (0..{outputs - 1}) or give {CLASSES_GIVEN}")
    lookup = torch.tensor(target, dtype=torch.int64)
    return lookup[ds.labels], how


def check_classes(labels: Tensor, outputs: int, data_classes: int | None, name: str) -> None:
    """Warn when the data's classes (`data_classes`: its declared count, None when it has none:
    tensors, image folders already mapped) and the model's outputs differ in number, or a
    label is beyond the model's outputs."""
    top = int(labels.max()) + 1 if len(labels) else 0
    if top > outputs:
        warn(f"data set '{name}' has labels up to {top - 1} but the model has {outputs} "
             "outputs: images of the classes it lacks count as wrong")
    elif data_classes is not None and data_classes != outputs:
        warn(f"the model has {outputs} outputs but data set '{name}' has {data_classes} "
             "classes: its top-1 is over other classes than the model was made for")


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _short(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names)} in all" if len(names) > limit else "")


def _pairs(names: Sequence[str]) -> str:
    shown = ", ".join(f"{n}={i}" for i, n in enumerate(names[:4]))
    return shown + (", ..." if len(names) > 4 else "")


def without_unset(spec: InputSpec | Mapping[str, Any] | None) -> InputSpec:
    """An InputSpec from what the API takes (an InputSpec, a mapping of its fields, None)."""
    if spec is None:
        return InputSpec()
    if isinstance(spec, InputSpec):
        return spec
    if isinstance(spec, Mapping):
        return InputSpec.from_json(spec, "input_spec")
    raise SparsexbarError(f"input_spec must be an InputSpec or a mapping, got "
                          f"{type(spec).__name__}")


def resolved(given: InputSpec, model_spec: InputSpec) -> InputSpec:
    """The spec used: what the user gave, then the model's, then the defaults."""
    return replace(given.over(model_spec).over(DEFAULT_SPEC))
