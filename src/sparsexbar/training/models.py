"""Model specs -> modules: an `nn.Module`, 'default' (the shipped VGG-8), a shipped model's
name ('vgg8-fmnist', 'mobilenetv2-fmnist'), a zoo name, a checkpoint path, an ONNX file
('net.onnx', `onnx_import`) or 'module:factory'.

'module:factory' imports `module` the way `python -m` would: from the installed packages, or
else from the current directory, without adding the current directory to `sys.path`.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from ..core.errors import SparsexbarError
from . import zoo
from .assets import ASSETS_DIR
from .checkpoint import load_checkpoint, load_shipped_model
from .onnx_import import load_onnx

# Shipped models besides the default VGG-8: name -> checkpoint stem in the package assets.
SHIPPED = {"mobilenetv2-fmnist": "mobilenetv2_fmnist"}


def resolve_model(model: nn.Module | str, in_channels: int = 1, num_classes: int = 10,
                  input_size: int = 28) -> tuple[nn.Module, str]:
    """An nn.Module (eval mode) and its name from a module, 'default', a shipped model's name,
    a zoo name, a checkpoint path, an ONNX file or 'module:factory'."""
    if isinstance(model, nn.Module):
        return model.eval(), type(model).__name__
    spec = str(model)
    if spec in ("default", "vgg8-fmnist"):
        net, _ = load_shipped_model()
        return net.eval(), "vgg8-fmnist"
    if spec in SHIPPED:
        net, _ = load_checkpoint(ASSETS_DIR / f"{SHIPPED[spec]}.safetensors")
        return net.eval(), spec
    path = Path(spec)
    if path.suffix.lower() == ".onnx":
        return load_onnx(path), path.stem
    if path.suffix in (".safetensors", ".json") or path.exists():
        net, meta = load_checkpoint(path)
        return net.eval(), str(meta.get("architecture", path.stem))
    if ":" in spec:
        mod_name, _, factory = spec.partition(":")
        try:
            fn = getattr(import_module_here(mod_name), factory)
        except (ImportError, AttributeError) as exc:
            raise SparsexbarError(f"cannot load model factory '{spec}': {exc}") from None
        net = fn()
        if not isinstance(net, nn.Module):
            raise SparsexbarError(f"model factory '{spec}' did not return an nn.Module")
        return net.eval(), spec
    net = zoo.build_model(spec, in_channels=in_channels, num_classes=num_classes,
                          input_size=input_size)
    return net.eval(), spec


def import_module_here(name: str) -> ModuleType:
    """`importlib.import_module(name)`; when its top-level package is not importable, that
    package is loaded from the current directory (as `python -m` would find it) and `name`
    imported through it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.partition(".")[0]
        if exc.name != top or top in sys.modules:
            raise
        found = importlib.machinery.PathFinder.find_spec(top, [str(Path.cwd())])
        if found is None or found.loader is None:
            raise
        module = importlib.util.module_from_spec(found)
        sys.modules[top] = module
        try:
            found.loader.exec_module(module)
        except BaseException:
            del sys.modules[top]
            raise
        return importlib.import_module(name)
