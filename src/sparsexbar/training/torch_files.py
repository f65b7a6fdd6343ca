"""Models saved with `torch.save`: `--model net.pt` (or `.pth`), `simulate("net.pt", ...)`.

A whole module saved with `torch.save(model, "net.pt")` loads as it is and goes through the
same frontend as any `nn.Module`. Such a file stores the model's classes by name
(`mypackage.models.Net`): they are imported from the installed packages or else the current
directory (as `module:factory` specs are), and loading it runs that code, exactly as
`torch.load(path, weights_only=False)` does: give files you trust.

Everything else is refused with one line that says what to give instead:
- weights only (`torch.save(model.state_dict(), ...)`, or a training checkpoint holding one):
  the architecture is not in the file;
- a TorchScript archive (`torch.jit.save`): compiled code, which the fx frontend cannot trace;
- any other object, a file torch cannot read, a class that cannot be imported.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError

TORCH_SUFFIXES = (".pt", ".pth")  # the suffixes `torch.save` files conventionally carry

# keys under which training loops commonly store a state_dict beside other things
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")

_OTHER_ROUTES = ("an ONNX export (--model net.onnx) or module:factory (a function that builds "
                 "the model and loads its weights)")
_INSTEAD = f"give the whole module (torch.save(model, path)), {_OTHER_ROUTES}"


def is_torch_file(path: Path) -> bool:
    """Whether `path` names a `torch.save` file by its suffix."""
    return path.suffix.lower() in TORCH_SUFFIXES


def load_torch_file(path: Path) -> nn.Module:
    """The nn.Module a `torch.save` file holds (eval mode, on the CPU); CheckpointError (one
    line, naming the file) for anything else (see the module docstring)."""
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    if _is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript archive (torch.jit.save): its compiled "
                              f"code cannot be traced into crossbar layers; {_INSTEAD}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise CheckpointError(f"cannot read {path} as a torch.save file: "
                                  f"{_one_line(exc)}") from None
        obj = _load_pickled_objects(path)  # classes beyond tensors: a whole module
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: torch's own reason
        raise CheckpointError(f"cannot read {path} as a torch.save file: "
                              f"{_one_line(exc)}") from None
    if isinstance(obj, torch.jit.ScriptModule):
        raise CheckpointError(f"{path} holds a TorchScript module: its compiled code cannot be "
                              f"traced into crossbar layers; {_INSTEAD}")
    if isinstance(obj, nn.Module):
        return obj.eval()
    raise CheckpointError(f"{path} {_describe(obj)}; {_INSTEAD}")


def _is_torchscript(path: Path) -> bool:
    """A zip archive with TorchScript's code folder or constants (torch.jit.save)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in f"/{name}" or name.endswith("constants.pkl") for name in names)


def _describe(obj: Any) -> str:
    """What a file holds, in words, for the refusal."""
    if isinstance(obj, Mapping):
        keys = [str(k) for k in obj]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return (f"holds weights only (a state_dict of {len(keys)} tensors, e.g. "
                    f"'{keys[0]}'): the architecture is not in the file")
        stored = next((k for k in _STATE_KEYS if isinstance(obj.get(k), Mapping)), None)
        shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
        if stored is not None:
            return (f"is a training checkpoint (keys: {shown}) whose '{stored}' holds weights "
                    "only: the architecture is not in the file")
        return f"holds a dict (keys: {shown}), not an nn.Module"
    if isinstance(obj, torch.Tensor):
        return f"holds a tensor of shape {tuple(obj.shape)}, not an nn.Module"
    return f"holds a {type(obj).__name__}, not an nn.Module"


def _load_pickled_objects(path: Path) -> Any:
    """torch.load without the weights-only restriction, the file's classes imported from the
    installed packages or the current directory; an import failure names the class."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_HERE_PICKLE)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"cannot read {path} as a torch.save file: "
                              f"{_one_line(exc)}") from None
    except (AttributeError, ImportError) as exc:
        where = ("the script that saved it (__main__)" if "__main__" in str(exc)
                 else "a module that is not importable here")
        raise CheckpointError(
            f"cannot load {path}: it stores the model's class by name and that class is "
            f"defined in {where} ({_one_line(exc)}); run from where the class's module is "
            f"importable, or give {_OTHER_ROUTES}") from None
    except Exception as exc:  # noqa: BLE001 - the pickled code raised: name it
        raise CheckpointError(f"cannot load {path}: {_one_line(exc)}") from None


class _HereUnpickler(pickle.Unpickler):
    """An Unpickler that imports a class's module as `module:factory` specs are imported:
    from the installed packages, or else the current directory."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except ModuleNotFoundError as exc:
            if exc.name != module.partition(".")[0]:
                raise
            from .models import import_module_here  # models imports this module

            import_module_here(module)  # from the current directory, into sys.modules
            return super().find_class(module, name)


# torch.load's `pickle_module`: the pickle module with `_HereUnpickler` as its Unpickler
_HERE_PICKLE = ModuleType("sparsexbar_pickle", "pickle, classes imported as module:factory")
_HERE_PICKLE.__dict__.update({k: getattr(pickle, k) for k in dir(pickle)
                              if not k.startswith("__")})
_HERE_PICKLE.Unpickler = _HereUnpickler  # type: ignore[attr-defined]


def _one_line(exc: BaseException) -> str:
    """The error's first sentence, on one line."""
    text = " ".join(str(exc).split())
    if len(text) > 160 and ". " in text:
        text = text.split(". ", 1)[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
