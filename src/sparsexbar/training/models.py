"""Model specs -> modules: an `nn.Module`, 'default' (the shipped VGG-8), a shipped model's
name ('vgg8-fmnist', 'mobilenetv2-fmnist'), a zoo name, a checkpoint path, an ONNX file
('net.onnx', `onnx_import`), a whole module saved with torch.save ('net.pt', `torch_files`)
or 'module:factory'.

'module:factory' imports `module` the way `python -m` would: from the installed packages, or
else from the current directory, without adding the current directory to `sys.path`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import SparsexbarError, warn
from . import zoo
from .checkpoint import checkpoint_files, checkpoint_name, load_checkpoint
from .importing import import_module_here
from .onnx_import import load_onnx
from .shipped import find_shipped, load_shipped, shipped_names
from .torch_files import is_torch_file, load_torch_file


@dataclass(frozen=True)
class LoadedModel:
    """A resolved model spec: the module (eval mode), its name, the checkpoint metadata
    (None for a module, a factory or a zoo architecture) and whether its weights were
    trained (False for a zoo name: fresh random weights)."""

    net: nn.Module
    name: str
    meta: Mapping[str, Any] | None = None
    trained: bool = True


def _own_copy(model: nn.Module) -> nn.Module:
    """A deep copy of the caller's module (set to eval mode, perhaps moved to a device by the
    run, while the caller's stays as it was)."""
    try:
        return copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - any attribute deepcopy cannot copy
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SparsexbarError(f"model {type(model).__name__} cannot be copied (copy.deepcopy: "
                              f"{why}); the simulator runs a copy and leaves the caller's "
                              "module as it is") from None


def load_model(model: nn.Module | str, in_channels: int = 1, num_classes: int = 10,
               input_size: int = 28) -> LoadedModel:
    """Resolve `model`: an nn.Module, 'default' (the shipped VGG-8), 'mobilenetv2-fmnist' (the
    shipped MobileNetV2), an ONNX file (`onnx_import.load_onnx`), a whole module saved with
    torch.save ('net.pt' / 'net.pth', `torch_files.load_torch_file`), a checkpoint path, a
    'module:factory' (a function of no arguments returning an nn.Module, imported from the
    installed packages or else the current directory) or a zoo name (built for inputs of
    `in_channels` x `input_size` x `input_size` and `num_classes` outputs, with untrained
    weights: a warning says so). A spec that cannot be loaded raises SparsexbarError."""
    if isinstance(model, nn.Module):  # a copy: the caller's module keeps its mode and device
        return LoadedModel(_own_copy(model).eval(), type(model).__name__)
    if not isinstance(model, str | Path):  # None, 123: it read "unknown model 'None'"
        raise SparsexbarError(f"model must be an nn.Module or text (a shipped or zoo name, a "
                              f"file, module:factory), got {type(model).__name__} {model!r}"[:300])
    spec = str(model)
    shipped = find_shipped(spec)
    if shipped is not None:
        net, meta = load_shipped(spec)
        return LoadedModel(net.eval(), shipped.name, meta)
    path = Path(spec)
    if path.suffix.lower() == ".onnx":
        return LoadedModel(load_onnx(path), path.stem)
    if is_torch_file(path):
        return LoadedModel(load_torch_file(path), path.stem)
    # a checkpoint by a file of it, or by its stem ('out/base' for base.safetensors + .json,
    # as `sparsexbar prune --out` and sweep files name them; a zoo name stays the zoo's)
    if (path.suffix in (".safetensors", ".json") or path.exists()
            or (spec not in zoo.MODELS and ":" not in spec
                and any(f.is_file() for f in checkpoint_files(path)))):
        net, meta = load_checkpoint(path)
        # named after the file, as ONNX and torch.save files are: the architecture alone
        # ('vgg8') cannot tell a dense checkpoint from its pruned one in a result
        return LoadedModel(net.eval(), checkpoint_name(path), meta)
    if ":" in spec:
        return LoadedModel(_from_factory(spec), spec)
    if spec not in zoo.MODELS:
        raise SparsexbarError(f"unknown model '{spec}': not a file, not module:factory, not a "
                              f"shipped model ({', '.join(shipped_names())}) and not a zoo "
                              f"architecture ({', '.join(sorted(zoo.MODELS))})")
    net = zoo.build_model(spec, in_channels=in_channels, num_classes=num_classes,
                          input_size=input_size)
    warn(f"model '{spec}' is the zoo architecture with untrained (random) weights: its top-1 "
         "is chance; give a checkpoint (sparsexbar train) for meaningful accuracy")
    return LoadedModel(net.eval(), spec, trained=False)


def resolve_model(model: nn.Module | str, in_channels: int = 1, num_classes: int = 10,
                  input_size: int = 28) -> tuple[nn.Module, str]:
    """An nn.Module (eval mode) and its name from a module, 'default', a shipped model's name,
    a zoo name, a checkpoint path, an ONNX file or 'module:factory' (see `load_model`)."""
    loaded = load_model(model, in_channels, num_classes, input_size)
    return loaded.net, loaded.name


def _from_factory(spec: str) -> nn.Module:
    """The module 'module:factory' returns; whatever goes wrong (the module cannot be
    imported or has a syntax error, there is no such factory, it needs arguments, it raises,
    it returns something else) is a SparsexbarError of one line naming the spec."""
    mod_name, _, factory = spec.partition(":")
    if not mod_name or not factory:
        raise SparsexbarError(f"model spec '{spec}' must be module:factory")
    try:
        module = import_module_here(mod_name)
    except ModuleNotFoundError as exc:
        raise SparsexbarError(f"cannot load model factory '{spec}': no module named "
                              f"'{exc.name or mod_name}' among the installed packages or in "
                              f"the current directory ({Path.cwd()})") from None
    except (Exception, SystemExit) as exc:  # the user's module: a syntax error, anything
        # it raises, or a sys.exit() at its top level (the CLI exited with its code, silently)
        raise SparsexbarError(f"cannot import the module of model factory '{spec}': "
                              f"{_one_line(exc)}") from None
    fn = getattr(module, factory, None)
    if fn is None or not callable(fn):
        raise SparsexbarError(f"cannot load model factory '{spec}': module '{mod_name}' has "
                              f"no function '{factory}'")
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise SparsexbarError(f"model factory '{spec}' needs arguments "
                              f"{inspect.signature(fn)}; give a function of no arguments "
                              "that returns the nn.Module") from None
    except ValueError:  # no signature (a builtin): call it and see
        pass
    try:
        net = fn()
    except (Exception, SystemExit) as exc:  # the user's code (sys.exit() included)
        raise SparsexbarError(f"model factory '{spec}' raised {_one_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise SparsexbarError(f"model factory '{spec}' did not return an nn.Module (got "
                              f"{type(net).__name__})")
    return net


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, SyntaxError) and exc.filename:
        text = f"{exc.msg} ({exc.filename}, line {exc.lineno})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
