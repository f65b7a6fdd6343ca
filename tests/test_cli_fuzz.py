"""CLI fuzz (issue 17): every command run with malformed values of every option (and its
arguments) ends with exit code 2, exactly one line on stderr naming the input, no traceback,
and nothing written. The cases are generated from the CLI itself: a whole-number option gets
'abc', '1.5' and '-1' (every count and seed of every command is bounded below by 0 or 1), a
number 'abc', 'nan' and '-1'; text and path options take their malformed values from
`BAD_VALUES` (a new text option without an entry fails `test_every_text_option_has_bad_values`).
Then the issue's own cases, each named. Every case runs in-process in a fresh working folder
(the defaults of --out land there) whose contents are compared before and after.

Most cases fail while the arguments are parsed or checked; the few that reach a model or a
data set use tests.nets' tiny models and --limit 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from sparsexbar.app.cli import app
from sparsexbar.app.sweep import expand_points, failed_row, load_sweep, write_row
from tests.test_cli_errors import assert_one_line_error, cli

TINY = "tests.nets:tiny_fmnist_net"


# ---- the commands and their parameters, read from the CLI -----------------------------------
def _commands() -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))
        elif not cmd.hidden:  # hidden: the calibrate-NAME aliases, the same commands
            out.append((path, cmd))

    walk(typer.main.get_command(app), ())
    return out


COMMANDS = _commands()

# Valid arguments every case of a command starts from: a malformed value added to these is
# the only thing wrong, and the cheapest inputs are used should a value slip through.
BASE: dict[tuple[str, ...], list[str]] = {
    ("run",): ["--model", TINY, "--limit", "2"],
    ("compare",): ["--model", TINY, "--limit", "2", "--schemes", "dense"],
    ("demo",): ["--model", TINY, "--limit", "2"],
    ("train",): ["--model", "lenet5", "--limit", "2", "--epochs", "1"],
    ("prune",): ["--limit", "2", "--steps", "1", "--epochs", "0"],
    ("bench",): ["--repeats", "1", "--batch-size", "2", "--cases", "lossless"],
    ("sweep",): ["sweep.yaml", "--out", "sweep-out"],
    ("plot",): ["sweepdir"],
    ("presets",): [],
}
# Positional arguments: the malformed values, replacing the base's.
BAD_ARGUMENTS: dict[tuple[str, ...], list[list[str]]] = {
    ("presets",): [["nope"]],
    ("sweep",): [["missing.yaml"], ["afile"], ["adir"]],
    ("plot",): [["missing-dir"], ["afile"], ["adir"]],
}
# Malformed values of text and path options, by flag (and by (command, flag) first).
BAD_VALUES: dict[str, list[str]] = {
    "--out": ["afile", "/proc/sparsexbar-fuzz"],
    "--model": ["nope-model", "tests.nets:no_such_factory"],
    "--data": ["/nonexistent-data"],
    "--hw": ["nope-hw", "missing.yaml"],
    "--scheme": ["nope", "dense:x=1"],
    "--schemes": ["dense,nope", "comprrae:alpha=0.4:alpha=0.8"],
    "--set": ["ou.rows=true", "=3", "ou.rows", "adc.bits=yes"],
    "--device": ["tpu"],
    "--root": ["afile", "/nonexistent-root"],
    "--input-scale": ["0", "abc", "-1/255"],
    "--normalize": ["1", "a,b", "0.5,0"],
    "--input-fit": ["crop"],
    "--classes": ["x", "a,a"],
    "--format": ["xml"],
    "--precision": ["fp64"],
    "--weights": ["int4", "float8"],
    "--measure": ["vgg99"],
    "--method": ["nope"],
    "--split": ["val"],
    "--max-patterns": ["a,b", "0"],
    "--cases": ["nope"],
    "--backend": ["slurm"],
    "--address": ["auto"],
    "--candidates": ["a,b"],
    "--estimator": ["nope"],
    "--criterion": ["nope"],
    "--bounds": ["nope"],
    "--sparsities": ["a,b", "1.5", "nan"],
}
BAD_VALUES_BY_COMMAND: dict[tuple[tuple[str, ...], str], list[str]] = {
    # a file is written there: a directory, or under a file
    (("calibrate", "comprrae"), "--out"): ["adir", "afile/x.json"],
    (("calibrate", "encoding"), "--out"): ["adir", "afile/x.json"],
    (("train",), "--out"): ["afile/model", "/proc/sparsexbar-fuzz/model"],
    (("prune",), "--out"): ["afile/pruned", "/proc/sparsexbar-fuzz/pruned"],
    (("train",), "--model"): ["nope-model"],
    (("prune",), "--model"): ["nope-model"],
    (("bench",), "--model"): ["nope-model"],
    (("calibrate", "encoding"), "--scheme"): ["nope", "dense"],
    (("reproduce", "pattern"), "--data"): ["/nonexistent-data"],
    (("reproduce", "all"), "--pattern-model"): ["nope-model"],
}


def _kind(param: Any) -> Any:
    return param.type_descriptor.annotation


def _bad_values(path: tuple[str, ...], param: Any) -> list[str] | None:
    flag = param.opts[0]
    if (path, flag) in BAD_VALUES_BY_COMMAND:
        return BAD_VALUES_BY_COMMAND[(path, flag)]
    kind = _kind(param)
    if kind is int:
        return ["abc", "1.5", "-1"]
    if kind is float:
        return ["abc", "nan", "-1"]
    if kind is bool:
        return ["maybe"]  # a switch takes no value: 'maybe' is an unexpected argument
    return BAD_VALUES.get(flag)


def _generated() -> Iterator[Any]:
    for path, cmd in COMMANDS:
        base = BASE.get(path, [])
        for param in cmd.params:
            if param.name == "help":
                continue
            if param.param_type_name == "argument":
                for bad in BAD_ARGUMENTS[path]:
                    rest = [a for a in base if a not in ("sweep.yaml", "sweepdir")]
                    yield pytest.param([*path, *bad, *rest], [],
                                       id=f"{' '.join(path)} {param.name}={bad[0]}")
                continue
            flag = param.opts[0]
            for value in _bad_values(path, param) or []:
                args = [*path, *base]
                if flag in args:  # replace the base's value of this option
                    i = args.index(flag)
                    del args[i: i + 2]
                args += [flag, value]
                # the line names the option or the value (a file's name, say)
                names = [] if _kind(param) is bool else [flag, value.rstrip("/"), *(
                    part for part in re.split(r"[:,=]", value) if len(part) > 1)]
                yield pytest.param(args, names, id=f"{' '.join(path)} {flag} {value}")


# The issue's cases, each named (exit 2, one line naming the input, nothing written).
ISSUE_CASES = [
    # 1: every count option of the studies refuses what would become a slice end
    (["reproduce", "sre", "--test-images", "-5"], ["--test-images", "-5"]),
    (["reproduce", "sre", "--test-images", "0"], ["--test-images", "0"]),
    (["reproduce", "sre", "--test-images", "10001"], ["--test-images", "10001"]),
    (["reproduce", "sre", "--deviation-images", "10001"], ["--deviation-images"]),
    (["reproduce", "comprrae", "--calibration-images", "60001"], ["--calibration-images"]),
    (["reproduce", "encoding", "--test-images", "10001"], ["--test-images"]),
    (["reproduce", "all", "--sparsities", "0.5,1.5"], ["--sparsities"]),
    (["reproduce", "pattern", "--k", "10"], ["--k", "10"]),
    (["reproduce", "pattern", "--sparsity", "1.5"], ["--sparsity"]),
    (["calibrate", "encoding", "--min-bits", "17"], ["--min-bits"]),
    (["calibrate", "comprrae", "--budget", "nan"], ["--budget"]),
    # 2: YAML booleans are not numbers
    (["run", "--model", TINY, "--limit", "2", "--set", "ou.rows=true"], ["ou.rows", "boolean"]),
    (["run", "--model", TINY, "--limit", "2", "--set", "adc.bits=yes"], ["adc.bits", "boolean"]),
    (["run", "--model", TINY, "--limit", "2", "--set", "adc.step=on"], ["adc.step", "boolean"]),
    (["run", "--model", TINY, "--limit", "2", "--set", "ou.rows=9.5"], ["ou.rows", "9.5"]),
    (["run", "--model", TINY, "--limit", "2", "--hw", "rows_true.yaml"],
     ["array.rows", "boolean"]),
    # 3: a scheme option given twice
    (["compare", "--model", TINY, "--limit", "2", "--schemes", "comprrae:alpha=0.4:alpha=0.8"],
     ["alpha", "twice"]),
    # 4: a model that cannot take the data's size (not known: the hint says how to give it)
    (["run", "--model", "tests.nets:rgb32_net", "--limit", "2"], ["cannot take", "--input-size"]),
    (["run", "--model", TINY, "--limit", "2", "--input-size", "20"], ["cannot take", "20x20"]),
    # the model's own error whole, on one line, with its type (before: cut to 'forward')
    (["run", "--model", "tests.nets:raising_forward_net", "--limit", "2"],
     ["RuntimeError: forward exploded: weights not loaded"]),
    (["run", "--model", "tests.nets:zero_output_net", "--limit", "2"], ["(1, 0)", "logits"]),
    (["run", "--model", "tests.nets:meta_net", "--limit", "2"], ["'1.weight'", "meta device"]),
    (["run", "--model", "tests.nets:half_net", "--limit", "2"], ["float16", "float32"]),
    # numbers beyond float32/float64 in the input options (a traceback, and NaN blamed on
    # the data), and a channel count worded for one channel
    (["run", "--model", TINY, "--limit", "2", "--input-scale", "1e400"],
     ["--input-scale", "1e400"]),
    (["run", "--model", TINY, "--limit", "2", "--normalize", "0.5,1e-300"],
     ["normalization", "overflows", "larger std"]),
    (["run", "--model", TINY, "--limit", "2", "--normalize", "0.1,0.2,0.3/0.5,0.5,0.5"],
     ["mean has 3 values", "1 channel (give 1 value)"]),
    # sys.exit() in the user's code: named (before: the CLI exited with that code, silently)
    (["run", "--model", "tests.nets:exiting_factory", "--limit", "2"], ["SystemExit: 3"]),
    (["run", "--model", "tests.nets:exiting_forward_net", "--limit", "2"], ["SystemExit: 4"]),
    # 5: BatchNorm statistics
    (["run", "--model", "tests.nets:bn_nan_net", "--limit", "2"], ["running_mean", "NaN"]),
    (["run", "--model", "tests.nets:bn_eps0_net", "--limit", "2"], ["bn1", "eps"]),
    # 6: factories that fail, on run and in a sweep
    (["run", "--model", "tests.nets:raising_factory", "--limit", "2"], ["raised", "unreachable"]),
    (["run", "--model", "tests.nets:factory_with_argument", "--limit", "2"],
     ["needs arguments"]),
    (["run", "--model", "tests.nets:tuple_factory", "--limit", "2"], ["tuple"]),
    (["run", "--model", "broken_factory:make", "--limit", "2"], ["SyntaxError"]),
    (["run", "--model", "no_such_module_anywhere:make", "--limit", "2"], ["current directory"]),
    (["sweep", "raising_sweep.yaml", "--out", "sweep-out"], ["raised", "unreachable"]),
    (["sweep", "syntax_sweep.yaml", "--out", "sweep-out"], ["SyntaxError"]),
    # 7: bench and plot
    (["bench", "--batch-size", "0"], ["--batch-size"]),
    (["bench", "--repeats", "0"], ["--repeats"]),
    (["bench", "--batch-size", "20000", "--cases", "lossless"], ["--batch-size", "20000"]),
    (["plot", "corruptdir"], ["no readable sweep results", "1 file(s) skipped", ".parquet"]),
    # 8: outputs checked before any work
    (["run", "--model", TINY, "--limit", "2", "--out", "afile"], ["afile", "not a directory"]),
    (["run", "--model", TINY, "--limit", "2", "--out", "afile/sub"], ["afile"]),
    (["compare", "--model", TINY, "--limit", "2", "--out", "/proc/sparsexbar-fuzz"],
     ["cannot be written"]),
    (["reproduce", "sre", "--out", "afile"], ["afile"]),
    (["calibrate", "encoding", "--out", "adir"], ["adir", "directory"]),
    (["plot", "sweepdir", "--out", "afile"], ["afile"]),
    # a, b, e: what the model takes; image folders; named data sets
    (["run", "--model", TINY, "--limit", "2", "--input-scale", "0"], ["--input-scale"]),
    (["run", "--model", TINY, "--limit", "2", "--normalize", "0.5"], ["--normalize"]),
    (["run", "--model", TINY, "--data", "images", "--limit", "2"], ["class folders", "--classes"]),
    (["run", "--model", "default", "--data", "images", "--limit", "2"], ["'cat'", "classes"]),
    (["run", "--model", TINY, "--data", "cifar10", "--limit", "2"], ["cifar10", "--root"]),
    (["run", "--model", TINY, "--limit", "2", "--root", "adir"], ["--root", "named data set"]),
    (["run", "--model", TINY, "--limit", "2", "--classes", "a,b,c"], ["--classes", "10 outputs"]),
    # minor: prune quotes the target, not a per-step value
    (["prune", "--sparsity", "1.5", "--limit", "2"], ["--sparsity", "1.5"]),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder with the inputs the cases name, made current; yields it."""
    (tmp_path / "afile").write_text("a file, not a directory\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "rows_true.yaml").write_text("array:\n  rows: true\n")
    (tmp_path / "broken_factory.py").write_text("def make(:\n    pass\n")
    sweep = {"model": TINY, "data": "default", "limit": 2, "hw": "ideal-small",
             "schemes": ["dense"]}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (tmp_path / "raising_sweep.yaml").write_text(yaml.safe_dump(
        {**sweep, "model": "tests.nets:raising_factory"}))
    (tmp_path / "syntax_sweep.yaml").write_text(yaml.safe_dump(
        {**sweep, "model": "broken_factory:make"}))
    point = expand_points(load_sweep(tmp_path / "sweep.yaml"))[0]
    write_row(tmp_path / "sweepdir", failed_row(point, "recorded failure"))
    corrupt = tmp_path / "corruptdir" / "results"
    corrupt.mkdir(parents=True)
    (corrupt / f"{point.key}.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    for cls in ("cat", "dog"):  # 28x28 grey PNGs in two class folders
        folder = tmp_path / "images" / cls
        folder.mkdir(parents=True)
        _png(folder / "a.png")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("L", (28, 28), color=128).save(path)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size if p.is_file() else 0)
    return out


def _check(capsys: pytest.CaptureFixture[str], workdir: Path, args: list[str],
           fragments: list[str]) -> None:
    before = _snapshot(workdir)
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)
    assert _snapshot(workdir) == before, "the case wrote or changed files"


@pytest.mark.parametrize(("args", "names"), list(_generated()))
def test_malformed_option_values(capsys: pytest.CaptureFixture[str], workdir: Path,
                                 args: list[str], names: list[str]) -> None:
    before = _snapshot(workdir)
    code, _, err = cli(capsys, *args)
    line = assert_one_line_error(code, err)
    assert not names or any(n.lower() in line.lower() for n in names), (names, line)
    assert _snapshot(workdir) == before, "the case wrote or changed files"


@pytest.mark.parametrize(("args", "fragments"), ISSUE_CASES,
                         ids=[" ".join(a) for a, _ in ISSUE_CASES])
def test_issue_cases(capsys: pytest.CaptureFixture[str], workdir: Path, args: list[str],
                     fragments: list[str]) -> None:
    _check(capsys, workdir, args, fragments)


def test_every_text_option_has_bad_values() -> None:
    """Each text or path option of each command is fuzzed (a new one needs an entry)."""
    missing = [f"{' '.join(path)} {p.opts[0]}" for path, cmd in COMMANDS for p in cmd.params
               if p.name != "help" and p.param_type_name == "option"
               and not _bad_values(path, p)]
    assert missing == [], missing
    assert {path for path, _ in COMMANDS if any(
        p.param_type_name == "argument" for p in _command(path).params)} <= set(BAD_ARGUMENTS)


def _command(path: tuple[str, ...]) -> Any:
    return dict(COMMANDS)[path]


def test_every_option_has_help() -> None:
    """Every option of every command says what it is (`--help`)."""
    undocumented = [f"{' '.join(path)} {p.opts[0]}" for path, cmd in COMMANDS
                    for p in cmd.params if p.param_type_name == "option" and not p.help]
    assert undocumented == []


def test_command_listing_joins_wrapped_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    """`sparsexbar --help` lists each command with its first docstring paragraph as one text
    (typer keeps a docstring's line breaks there: 'demo' read '... on one model' and then
    'and the embedded ...' as a new line)."""
    import typer.main

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        listed = (cmd.short_help or cmd.help or "").split("\n\n")[0]  # what the listing shows
        assert "\n" not in listed, name
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    lines = [line.strip("│ ").rstrip() for line in out.splitlines()]
    demo = next(i for i, line in enumerate(lines) if line.startswith("demo "))
    assert not lines[demo + 1].endswith("on one model")  # the docstring's own line break


def test_run_scheme_help_lists_the_schemes(capsys: pytest.CaptureFixture[str]) -> None:
    from sparsexbar.schemes import scheme_names

    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0
    text = " ".join(out.split())
    for name in scheme_names():
        assert name in text
