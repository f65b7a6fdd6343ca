"""Models saved with torch.save (`--model net.pt`, `training/torch_files.py`): a whole module
runs like the module itself; weights only, TorchScript, other objects, unreadable files and
classes that cannot be imported are refused with one line and exit code 2."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from sparsexbar.core.errors import CheckpointError
from sparsexbar.training.models import load_model
from sparsexbar.training.torch_files import load_torch_file
from tests.nets import tiny_fmnist_net
from tests.test_cli_errors import assert_one_line_error, cli

# torch.jit.trace (the TorchScript file) warns about its own deprecation
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::torch.jit.TracerWarning")

RUN = ["--data", "default", "--limit", "6", "--batch-size", "4"]


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_whole_module_runs_like_the_module_itself(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    """The class lives in an importable module (tests.nets): the loaded module has the same
    weights, and a run gives the same result file as the factory's module, field for field
    (but the model's name)."""
    net = tiny_fmnist_net()
    path = tmp_path / "tiny.pt"
    torch.save(net, path)
    loaded = load_torch_file(path)
    assert type(loaded) is type(net) and not loaded.training
    assert _same_state(loaded, net)
    assert load_model(str(path)).name == "tiny"

    results = {}
    for spec, out in ((str(path), "from_file"), ("tests.nets:tiny_fmnist_net", "from_factory")):
        code, _, err = cli(capsys, "run", "--model", spec, *RUN, "--out", str(tmp_path / out))
        assert code == 0, err
        results[out] = json.loads((tmp_path / out / "result.json").read_text())
    a, b = results["from_file"], results["from_factory"]
    assert a["model"] != b["model"]  # the file's stem, the factory's spec
    assert {k: v for k, v in a.items() if k != "model"} == {
        k: v for k, v in b.items() if k != "model"}
    assert a["totals"]["events"]["ou_activations"] > 0


def test_a_class_from_the_current_directory_is_imported(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Classes are imported like module:factory specs: from the current directory when no
    installed package has them; elsewhere the refusal names the module."""
    name = "sxb_cwd_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent('''
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(1, 2, 3)
                self.fc = torch.nn.Linear(2 * 26 * 26, 10)
            def forward(self, x):
                return self.fc(torch.relu(self.conv(x)).flatten(1))
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    net = module.Net()
    torch.save(net, tmp_path / "net.pt")
    monkeypatch.delitem(sys.modules, name)
    sys.path.remove(str(tmp_path))  # importable from the current directory only
    loaded = load_torch_file(tmp_path / "net.pt")
    assert type(loaded).__name__ == "Net" and _same_state(loaded, net)

    monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(CheckpointError, match=f"'{name}.Net' is defined in a module that is "
                       f"not importable here .*No module named '{name}'"):
        load_torch_file(tmp_path / "net.pt")


def test_a_class_of_the_saving_script_is_refused_naming_main(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    local = type("ScriptNet", (torch.nn.Module,), {"__module__": "__main__"})
    main.ScriptNet = local  # type: ignore[attr-defined]
    torch.save(local(), tmp_path / "script.pt")
    del main.ScriptNet  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match=r"'__main__.ScriptNet' is defined in the script "
                       r"that saved it \(__main__\)"):
        load_torch_file(tmp_path / "script.pt")


def _write(kind: str, path: Path) -> None:
    net = tiny_fmnist_net()
    if kind == "state_dict":
        torch.save(net.state_dict(), path)
    elif kind == "training":
        torch.save({"epoch": 3, "state_dict": net.state_dict(), "best": 0.9}, path)
    elif kind == "torchscript":
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 28, 28)), path)
    elif kind == "tensor":
        torch.save(torch.zeros(3, 4), path)
    elif kind == "truncated":
        torch.save(net, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "garbage":
        path.write_bytes(b"\x00not a torch file" * 8)


REFUSED = [
    ("state_dict", ["weights only", "state_dict of", "conv1.weight", "module:factory"]),
    ("training", ["training checkpoint", "epoch, state_dict, best", "'state_dict'",
                  "weights only"]),
    ("torchscript", ["TorchScript", "torch.jit.save", "onnx"]),
    ("tensor", ["tensor of shape (3, 4)", "not an nn.Module"]),
    ("truncated", ["cannot read", "torch.save file"]),
    ("garbage", ["cannot read", "torch.save file"]),
]


@pytest.mark.parametrize(("kind", "fragments"), REFUSED, ids=[k for k, _ in REFUSED])
def test_files_that_are_not_a_whole_module_are_refused(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path, kind: str,
                                                       fragments: list[str]) -> None:
    path = tmp_path / f"{kind}.pth"
    _write(kind, path)
    code, _, err = cli(capsys, "run", "--model", str(path), *RUN, "--out", str(tmp_path / "o"))
    line = assert_one_line_error(code, err, str(path), *fragments)
    assert "Traceback" not in err, line
    assert not (tmp_path / "o").exists()


def test_a_missing_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "absent.pt"
    code, _, err = cli(capsys, "run", "--model", str(missing), *RUN)
    assert_one_line_error(code, err, str(missing), "does not exist")


def test_a_module_with_an_unsupported_layer_is_refused_by_the_frontend(tmp_path: Path) -> None:
    """A loaded module goes through the same frontend as any other: an LSTM is named."""
    from sparsexbar import simulate
    from sparsexbar.core.errors import SparsexbarError
    from tests.nets import lstm_net

    torch.save(lstm_net(), tmp_path / "lstm.pt")
    with pytest.raises(SparsexbarError, match="LSTM"):
        simulate(str(tmp_path / "lstm.pt"), "default", limit=2)


class _Payload:
    """An object whose unpickling would call a function of the file's choosing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "ran"))  # type: ignore[return-value]


def test_a_file_naming_anything_but_module_classes_is_refused_and_runs_nothing(
        tmp_path: Path) -> None:
    """The file is read with weights_only=True: a global that is not an nn.Module class (here
    a function its unpickling would call) is refused by name before anything is loaded."""
    marker = tmp_path / "marker"
    net = tiny_fmnist_net()
    net.payload = _Payload(marker)  # type: ignore[assignment]
    torch.save(net, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"names '(pathlib.Path|builtins.getattr)', "
                       r"which is not an nn.Module class"):
        load_torch_file(tmp_path / "evil.pt")
    assert not marker.exists()
    net = tiny_fmnist_net()
    net.ratio = __import__("fractions").Fraction(1, 3)  # type: ignore[assignment]
    torch.save(net, tmp_path / "fraction.pt")
    with pytest.raises(CheckpointError, match="'fractions.Fraction', which is not an nn.Module"):
        load_torch_file(tmp_path / "fraction.pt")


def test_a_data_parallel_wrapper_is_unwrapped_with_a_note(tmp_path: Path) -> None:
    """Training scripts often save the model inside nn.DataParallel (which fx cannot trace):
    the module inside is loaded, and a note says so."""
    from sparsexbar.core.errors import SparsexbarNote

    net = tiny_fmnist_net()
    torch.save(torch.nn.DataParallel(net), tmp_path / "dp.pt")
    with pytest.warns(SparsexbarNote, match="holds a DataParallel: the module inside"):
        loaded = load_torch_file(tmp_path / "dp.pt")
    assert type(loaded) is type(net) and _same_state(loaded, net)


class _FunctionalNet(torch.nn.Module):
    """Keeps its activation as an attribute: F.relu, a torch.nn.functional function."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(2 * 26 * 26, 10)
        self.act = torch.nn.functional.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def test_a_functional_attribute_is_allowed_and_other_functions_are_not(tmp_path: Path) -> None:
    net = _FunctionalNet()
    torch.save(net, tmp_path / "functional.pt")
    loaded = load_torch_file(tmp_path / "functional.pt")
    assert loaded.act is torch.nn.functional.relu and _same_state(loaded, net)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), net(x))
    net.act = torch.relu  # pickled through builtins.getattr: refused
    torch.save(net, tmp_path / "torch_relu.pt")
    with pytest.raises(CheckpointError, match="which is not an nn.Module class"):
        load_torch_file(tmp_path / "torch_relu.pt")
