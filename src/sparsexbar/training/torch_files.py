"""Models saved with `torch.save`: `--model net.pt` (or `.pth`), `simulate("net.pt", ...)`.

A whole module saved with `torch.save(model, "net.pt")` loads as it is and goes through the
same frontend as any `nn.Module`. The file is read with `weights_only=True`, like every
`torch.load` of the package: no code from the file runs. Such a file names the classes of its
modules (`mypackage.models.Net`, `torch.nn.modules.conv.Conv2d`); each is imported by that
name from the installed packages or else the current directory (as `module:factory` specs
are) and allowed only if it is an `nn.Module` class or a function of `torch.nn.functional`
(`self.act = F.relu`). Anything else it names (another function, a numpy array, any other
class) is refused, naming it.

Refused with one line that says what to give instead:
- weights only (`torch.save(model.state_dict(), ...)`, or a training checkpoint holding one):
  the architecture is not in the file;
- a TorchScript archive (`torch.jit.save`): compiled code, which the fx frontend cannot trace;
- a class that cannot be imported here (defined in the script that saved it, `__main__`, or
  in a module not on this machine), or that is not an `nn.Module`;
- any other object, or a file torch cannot read.
A model saved inside `nn.DataParallel` / `DistributedDataParallel` is unwrapped (a note says
so).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError, note
from .importing import import_module_here

TORCH_SUFFIXES = (".pt", ".pth")  # the suffixes `torch.save` files conventionally carry

# keys under which training loops commonly store a state_dict beside other things
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")

# wrappers training scripts save around the model (their `.module`), which fx cannot trace
_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)

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
    classes: list[Any] = [_allowed_global(path, name) for name in _named_globals(path)]
    try:
        with torch.serialization.safe_globals(classes):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: torch's own reason
        reason = (_one_line(exc) if zipfile.is_zipfile(path) else "not the zip archive "
                  "torch.save writes, and not a legacy torch file of tensors")
        raise CheckpointError(f"cannot read {path} as a torch.save file: {reason}") from None
    while isinstance(obj, _WRAPPERS):  # multi-GPU training wrappers: the model inside
        note(f"{path} holds a {type(obj).__name__}: the module inside it is simulated")
        obj = obj.module
    if isinstance(obj, nn.Module):
        return obj.eval()
    raise CheckpointError(f"{path} {_describe(obj)}; {_INSTEAD}")


def _named_globals(path: Path) -> list[str]:
    """The globals the file names beyond torch's weights-only set ("module.Class"); none for
    a file in torch's legacy (non-zip) format, which then loads with that set alone."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except ValueError:  # not a zip checkpoint: the weights-only load decides
        return []
    except Exception as exc:  # noqa: BLE001 - unreadable archive
        raise CheckpointError(f"cannot read {path} as a torch.save file: "
                              f"{_one_line(exc)}") from None


def _allowed_global(path: Path, qualified: str) -> Any:
    """The nn.Module class `qualified` ("package.module.Class") names, imported from the
    installed packages or the current directory, or a function of `torch.nn.functional` (a
    model may keep `F.relu` as an attribute); CheckpointError when it cannot be imported or is
    neither."""
    parts = qualified.split(".")
    found: Any = None
    error: BaseException | None = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = import_module_here(module_name)
        except ImportError as exc:
            error = error or exc
            continue
        except Exception as exc:  # noqa: BLE001 - the user's module raised on import
            raise CheckpointError(f"cannot load {path}: importing '{module_name}' (named by the "
                                  f"file) raised {_one_line(exc)}") from None
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError as exc:
            error = exc
            break
        found = obj
        break
    if found is None:
        where = ("the script that saved it (__main__)" if parts[0] == "__main__"
                 else "a module that is not importable here")
        reason = f" ({_one_line(error)})" if error is not None else ""
        raise CheckpointError(
            f"cannot load {path}: its class '{qualified}' is defined in {where}{reason}; run "
            f"from where that module is importable, or give {_OTHER_ROUTES}")
    functional = qualified.rpartition(".")[0] == "torch.nn.functional" and callable(found)
    if not (functional or (isinstance(found, type) and issubclass(found, nn.Module))):
        raise CheckpointError(
            f"{path} names '{qualified}', which is not an nn.Module class: a model file may "
            "name module classes and torch.nn.functional functions only (it is read with "
            f"weights_only=True); {_INSTEAD}")
    return found


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


def _one_line(exc: BaseException) -> str:
    """The error's first sentence, on one line."""
    text = " ".join(str(exc).split())
    if len(text) > 160 and ". " in text:
        text = text.split(". ", 1)[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
