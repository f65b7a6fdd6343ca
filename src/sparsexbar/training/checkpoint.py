"""Checkpoints: ``<stem>.safetensors`` (state dict) plus ``<stem>.json`` (how to rebuild it).

The JSON holds {"format_version": 1, "architecture": zoo name, "arch_kwargs": {...},
"dataset": ..., "normalization": "none, inputs in [0,1]", "accuracy": {"float_top1": ...},
"train": {...}, "dtype": "float32" | "float16" | "int8"} and, from `sparsexbar train`,
"classes" (class names in output order), "input" (a `training.inputs.InputSpec`) and
"input_fit". Loading rebuilds the model with `zoo.build_model` and loads the weights with
``strict=True``; nothing is unpickled (safetensors only, never ``torch.load``). A field a run
uses that is malformed ("dtype", "classes" - also as many as the model's outputs - "input",
"input_fit") is refused naming the file and the field, on loading and on saving; one left out
is fine.

Weight formats (`WEIGHT_FORMATS`): float32; float16 (tensors of >= 2 dims halved); int8, the
shipped models' compact form: every Conv2d/Linear weight W (Cout, ...) stored as
q = round(W / s) in int8 with s[c] = max |W[c]| / 127 per output channel (a nonzero weight
below half a step kept as +-1), and loaded as q x s. The simulator quantizes each layer to
symmetric per-channel 8-bit integers after folding BatchNorm (a per-channel factor), so the
loaded model quantizes to the same integers q. A
tensor at least a quarter zero is stored sparse: its nonzero positions as packed bits
(numpy.packbits, row-major) and the nonzero q in that order; zeros stay exactly zero, so
sparsity and pattern sets counted from the loaded weights are those of the pruned model. The
JSON's "packed" entry lists each int8 tensor's shape and form.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn

from ..core.errors import CheckpointError, SparsexbarError, parse_failure
from . import zoo
from .assets import ASSETS_DIR
from .inputs import FITS, InputSpec, class_names_problem

FORMAT_VERSION = 1
WEIGHT_FORMATS = ("float32", "float16", "int8")
QMAX = 127
SPARSE_MIN_ZERO_FRACTION = 0.25
NORMALIZATION = "none, inputs in [0,1]"
SHIPPED_MODEL_STEM = "vgg8_fmnist"
SHIPPED_PATTERN_STEM = "vgg8_fmnist_pattern"
# The shipped MobileNetV2 (width 0.5, Fashion-MNIST padded to 32x32): the name users type
# (`--model mobilenetv2-fmnist`) and its assets stem.
SHIPPED_MOBILENET_NAME = "mobilenetv2-fmnist"
SHIPPED_MOBILENET_STEM = "mobilenetv2_fmnist"


def _stem(path: str | Path) -> Path:
    """``path`` without a .safetensors/.json suffix."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        return p.with_suffix("")
    return p


def checkpoint_files(path: str | Path) -> tuple[Path, Path]:
    """The (weights, metadata) files of the checkpoint at ``path`` (stem, .safetensors or
    .json): ``<stem>.safetensors`` and ``<stem>.json``."""
    return _files(_stem(path))


def checkpoint_name(path: str | Path) -> str:
    """The name of the checkpoint at ``path`` in results: its file stem ('runs/base.v2.json'
    -> 'base.v2')."""
    return _stem(path).name


def _files(stem: Path) -> tuple[Path, Path]:
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def default_file_mode() -> int:
    """Permissions of a newly created regular file under the process umask (0o644 for 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(dest: Path, data: bytes) -> None:
    """Write ``data`` to a temp file next to ``dest``, fsync, then rename over ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, default_file_mode())  # mkstemp creates 0600
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _crossbar_weights(model: nn.Module) -> set[str]:
    """State-dict names of the Conv2d/Linear weights (what int8 stores)."""
    return {f"{name}.weight" if name else "weight" for name, mod in model.named_modules()
            if isinstance(mod, nn.Conv2d | nn.Linear)}


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(q int8 of weight's shape, scale float32 (Cout,)): weight ~ q x scale per output
    channel, |q| <= 127, scale = max |W[c]| / 127 (1 for an all-zero channel). Zeros stay
    zero and nonzeros stay nonzero (a weight below half a step is stored as +-1): a pruned
    model keeps exactly its sparsity and kernel patterns, in the file and in the simulator's
    integers."""
    w = weight.detach().to(torch.float32).cpu()
    amax = w.reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.round(w / scale.reshape(shape)).clamp(-QMAX, QMAX)
    q = torch.where((q == 0) & (w != 0), torch.sign(w), q)
    return q.to(torch.int8), scale


def dequantize_int8(q: Tensor, scale: Tensor) -> Tensor:
    """q x scale per output channel, float32."""
    return q.to(torch.float32) * scale.to(torch.float32).reshape((-1,) + (1,) * (q.dim() - 1))


def round_model_weights(model: nn.Module, weights: str) -> None:
    """Round the model's weights in place to what a `weights` file holds (float16: every
    tensor of >= 2 dims; int8: the Conv2d/Linear weights, per channel), so that accuracy
    measured on the model is that of the file."""
    if weights not in WEIGHT_FORMATS:
        raise SparsexbarError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got "
                              f"{weights!r}")
    targets = _crossbar_weights(model)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not (t.is_floating_point() and t.dim() >= 2):
                continue
            if weights == "float16":
                t.copy_(t.to(torch.float16).to(t.dtype))
            elif weights == "int8" and name in targets:
                t.copy_(dequantize_int8(*quantize_int8(t)).to(t.dtype))


def _pack_int8(name: str, t: Tensor, tensors: dict[str, Tensor],
               packed: dict[str, Any]) -> None:
    """Store one weight in int8, dense or sparse (see the module docstring)."""
    q, scale = quantize_int8(t)
    tensors[f"{name}::scale"] = scale.contiguous()
    flat = q.reshape(-1)
    nonzero = flat != 0
    if float((~nonzero).sum()) >= SPARSE_MIN_ZERO_FRACTION * flat.numel():
        tensors[f"{name}::mask"] = torch.from_numpy(np.packbits(nonzero.numpy()))
        tensors[f"{name}::values"] = flat[nonzero].contiguous()
        form = "sparse"
    else:
        tensors[f"{name}::q"] = q.contiguous()
        form = "dense"
    packed[name] = {"shape": list(q.shape), "form": form}


def _unpack_int8(state: dict[str, Tensor], packed: Any, where: Path) -> dict[str, Tensor]:
    """The float32 state dict of an int8 checkpoint; malformed entries raise CheckpointError."""
    if not isinstance(packed, dict):
        raise CheckpointError(f"{where}: int8 checkpoint without a 'packed' table")
    out = {k: v for k, v in state.items() if "::" not in k}
    for name, info in packed.items():
        try:
            shape = tuple(int(d) for d in info["shape"])
            scale = state[f"{name}::scale"]
            if info["form"] == "sparse":
                count = int(np.prod(shape))
                bits = np.unpackbits(state[f"{name}::mask"].numpy(), count=count).astype(bool)
                values = state[f"{name}::values"]
                idx = torch.from_numpy(np.flatnonzero(bits))
                if idx.numel() != values.numel():
                    raise ValueError(f"{idx.numel()} mask bits set, {values.numel()} values")
                q = torch.zeros(count, dtype=torch.int8)
                q[idx] = values.to(torch.int8)
                q = q.reshape(shape)
            else:
                q = state[f"{name}::q"]
            if tuple(q.shape) != shape or scale.numel() != shape[0]:
                raise ValueError(f"shape {tuple(q.shape)} / {scale.numel()} scales, expected "
                                 f"{shape}")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{where}: int8 tensor {name!r} is malformed: {exc}") from None
        out[name] = dequantize_int8(q, scale)
    return out


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any],
                    half: bool = False, weights: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; returns both paths.

    ``path`` is a stem (a .safetensors/.json suffix is stripped) or an existing directory
    (the stem is then ``<dir>/<architecture>``). ``meta`` must name the zoo
    "architecture" and should hold "arch_kwargs", "dataset", "accuracy", "train".
    ``weights``: "float32" (default), "float16" (tensors with >= 2 dims halved; ``half=True``
    says the same) or "int8" (the Conv2d/Linear weights per channel, sparse where a quarter
    or more is zero; see the module docstring). 1-D tensors (biases, BatchNorm) stay float32.
    Loading restores float32.
    """
    fmt = weights or ("float16" if half else "float32")
    if fmt not in WEIGHT_FORMATS:
        raise SparsexbarError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got "
                              f"{fmt!r}")
    if "architecture" not in meta:
        raise CheckpointError("checkpoint meta needs an 'architecture' (a zoo model name)")
    p = Path(path)
    stem = p / str(meta["architecture"]) if p.is_dir() else _stem(p)

    tensors: dict[str, Tensor] = {}
    packed: dict[str, Any] = {}
    targets = _crossbar_weights(model)
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if fmt == "int8" and name in targets:
            _pack_int8(name, t, tensors, packed)
            continue
        if fmt == "float16" and t.is_floating_point() and t.dim() >= 2:
            t = t.to(torch.float16)
        tensors[name] = t.contiguous()
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "architecture": meta["architecture"],
        "arch_kwargs": dict(meta.get("arch_kwargs", {})),
        "dataset": meta.get("dataset"),
        "normalization": meta.get("normalization", NORMALIZATION),
        "accuracy": dict(meta.get("accuracy", {})),
        "train": dict(meta.get("train", {})),
        "dtype": fmt,
    }
    if packed:
        doc["packed"] = packed
    for key, value in meta.items():
        if key != "packed":
            doc.setdefault(key, value)
    weights_path, json_path = _files(stem)
    try:
        text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint meta is not JSON-serializable: {exc}") from None
    written = json.loads(text)  # what loading reads: nothing is written that it would refuse
    _check_fields(written, json_path)
    _check_outputs(written, model, json_path)
    _atomic_write(weights_path, save(tensors, metadata={"format_version": str(FORMAT_VERSION)}))
    _atomic_write(json_path, text.encode())
    return weights_path, json_path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of the checkpoint at ``path`` (stem, .json or .safetensors)."""
    _, json_path = checkpoint_files(path)
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint metadata {json_path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"corrupt checkpoint metadata {json_path}: "
                              f"{parse_failure(exc)}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("architecture"), str):
        raise CheckpointError(f"{json_path} lacks an 'architecture' string")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{json_path}: unsupported format_version {version!r} "
                              f"(this version reads {FORMAT_VERSION})")
    if not isinstance(meta.get("arch_kwargs", {}), dict):
        raise CheckpointError(f"{json_path}: 'arch_kwargs' must be an object")
    _check_fields(meta, json_path)
    return meta


def _check_fields(meta: dict[str, Any], json_path: Path) -> None:
    """Refuse, naming the file and the field, the metadata a run would otherwise ignore:
    "dtype" other than a weight format, "dataset" other than a name or null (prune reads
    it), "classes" other than distinct class names, "input" other than an input spec
    (`inputs.InputSpec`), "input_fit" other than {"how": pad or resize, ...}. A field left
    out is fine (the model's, the data's or the defaults then)."""
    if "dtype" in meta and meta["dtype"] not in WEIGHT_FORMATS:
        raise CheckpointError(f"{json_path}: 'dtype' must be one of "
                              f"{', '.join(WEIGHT_FORMATS)}, got {_short(meta['dtype'])}")
    dataset = meta.get("dataset")
    if dataset is not None and not (isinstance(dataset, str) and dataset.strip()):
        raise CheckpointError(f"{json_path}: 'dataset' must be the name of the data set the "
                              f"model was trained on (text) or null, got {_short(dataset)}")
    if "classes" in meta:
        names = meta["classes"]
        problem = (class_names_problem(names) if isinstance(names, list)
                   else f"must be a list of class names, got {_short(names)}")
        if problem is not None:
            raise CheckpointError(f"{json_path}: 'classes' {problem} (the model's class names "
                                  "in output order)")
    if "input" in meta:
        spec = meta["input"]
        if not isinstance(spec, dict):
            raise CheckpointError(f"{json_path}: 'input' must be an object (channels, size, "
                                  f"fit, scale, mean, std), got {_short(spec)}")
        try:
            InputSpec.from_json(spec, "'input'")
        except SparsexbarError as exc:
            said = str(exc) if str(exc).startswith("'input'") else f"'input': {exc}"
            raise CheckpointError(f"{json_path}: {said}") from None
    if "input_fit" in meta:
        fit = meta["input_fit"]
        if not (isinstance(fit, dict) and fit.get("how", "auto") in FITS):
            raise CheckpointError(f"{json_path}: 'input_fit' must be an object whose 'how' is "
                                  f"one of {', '.join(FITS)}, got {_short(fit)}")


def _short(value: Any, limit: int = 60) -> str:
    """A metadata value as its JSON text, cut to `limit` characters."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_outputs(meta: dict[str, Any], model: nn.Module, json_path: Path) -> None:
    """Refuse "classes" that do not name the model's outputs one for one (the model's outputs:
    its last Linear layer's, a zoo model's classifier)."""
    classes = meta.get("classes")
    last = None
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            last = mod
    if isinstance(classes, list) and last is not None and len(classes) != last.out_features:
        raise CheckpointError(f"{json_path}: 'classes' names {len(classes)} classes but the "
                              f"model has {last.out_features} outputs")


def _check_state(expected: dict[str, Tensor], got: dict[str, Tensor], where: Path) -> None:
    """Raise CheckpointError naming the first tensor missing, unexpected or mis-shaped."""
    for name, t in expected.items():
        if name not in got:
            raise CheckpointError(f"{where}: tensor {name!r} missing from checkpoint")
        if tuple(got[name].shape) != tuple(t.shape):
            raise CheckpointError(f"{where}: tensor {name!r} has shape "
                                  f"{tuple(got[name].shape)}, model expects {tuple(t.shape)}")
    for name in got:
        if name not in expected:
            raise CheckpointError(f"{where}: unexpected tensor {name!r} in checkpoint")


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the zoo model of checkpoint ``path`` (stem, .json or .safetensors), eval mode.

    Returns (model with float32 weights, metadata dict).
    """
    stem = _stem(path)
    meta = read_meta(stem)
    weights_path, _ = _files(stem)
    try:
        model = zoo.build_model(meta["architecture"], **meta.get("arch_kwargs", {}))
    except SparsexbarError as exc:
        raise CheckpointError(f"{stem}.json: cannot build model: {exc}") from None
    _check_outputs(meta, model, _files(stem)[1])
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights {weights_path} do not exist")
    try:
        state = load(weights_path.read_bytes())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {weights_path}: {exc}") from None
    if meta.get("dtype") == "int8":
        state = _unpack_int8(state, meta.get("packed"), weights_path)
    expected = model.state_dict()
    _check_state(expected, state, weights_path)
    state = {k: (v.to(expected[k].dtype) if v.is_floating_point() else v)
             for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # dtype problems not caught above
        raise CheckpointError(f"{weights_path}: {str(exc).splitlines()[0]}") from None
    return model.eval(), meta


def shipped_model_path() -> Path:
    """Path of the shipped default model's weights (VGG-8 on Fashion-MNIST, package assets)."""
    return ASSETS_DIR / f"{SHIPPED_MODEL_STEM}.safetensors"


def load_shipped_model() -> tuple[nn.Module, dict[str, Any]]:
    """The shipped default model (eval mode) and its metadata."""
    path = shipped_model_path()
    if not path.is_file():
        raise CheckpointError(f"shipped model {path} is missing from the installation")
    return load_checkpoint(path)


def shipped_pattern_model_path() -> Path:
    """Weights of the shipped pattern-pruned VGG-8 (package assets; the demo's model)."""
    return ASSETS_DIR / f"{SHIPPED_PATTERN_STEM}.safetensors"


def load_shipped_pattern_model() -> tuple[nn.Module, dict[str, Any]]:
    """The shipped pattern-pruned VGG-8 (eval mode) and its metadata."""
    path = shipped_pattern_model_path()
    if not path.is_file():
        raise CheckpointError(f"shipped pattern model {path} is missing from the installation")
    return load_checkpoint(path)


def shipped_mobilenet_path() -> Path:
    """Weights of the shipped MobileNetV2 (package assets; `--model mobilenetv2-fmnist`)."""
    return ASSETS_DIR / f"{SHIPPED_MOBILENET_STEM}.safetensors"


def load_shipped_mobilenet() -> tuple[nn.Module, dict[str, Any]]:
    """The shipped MobileNetV2 (eval mode) and its metadata."""
    path = shipped_mobilenet_path()
    if not path.is_file():
        raise CheckpointError(f"shipped model {SHIPPED_MOBILENET_NAME}: {path} is missing from "
                              "the installation")
    return load_checkpoint(path)
