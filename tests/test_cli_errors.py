"""The CLI on bad input (DESIGN.md 4): exit code 2 and exactly one line on stderr naming the
problem, never a traceback. In-process through `sparsexbar.app.cli.main` (capsys), and once through
the installed `sparsexbar` script. Plus `presets` and a tiny happy-path `run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparsexbar.core.config import HardwareConfig, preset

ROOT = Path(__file__).resolve().parent.parent


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    from sparsexbar.app.cli import main

    capsys.readouterr()  # drop anything printed before
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, (code, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.strip(), err
    for frag in fragments:
        assert frag.lower() in line.lower(), (frag, line)
    return line


def need_data_and_models() -> None:
    """`run` needs a data set (and resolving a model imports the zoo and checkpoints)."""
    data = pytest.importorskip("sparsexbar.training.data")
    pytest.importorskip("sparsexbar.training.zoo")
    pytest.importorskip("sparsexbar.training.checkpoint")
    if not hasattr(data, "load_dataset"):
        pytest.skip("sparsexbar.training.data.load_dataset not there yet")


# ---- errors found before any data is read ----------------------------------------------------
EARLY_ERRORS = [
    # an option of one value given twice ran the last silently
    (["run", "--scheme", "sre", "--scheme", "pattern"], ["--scheme", "2 times", "one value"]),
    (["--threads", "1", "run", "--limit=3", "--limit", "4"], ["--limit", "2 times"]),
    (["--threads", "1", "--threads", "2", "models"], ["--threads", "2 times"]),
    (["reproduce", "pattern", "--k", "3", "--k=4"], ["--k", "2 times"]),
    (["--threads", "0", "models"], ["--threads", "1..1024", "0"]),
    (["--threads", "two", "models"], ["--threads", "integer"]),
    (["run", "--hw", "nope"], ["nope", "preset"]),
    (["run", "--set", "ou.rows=999"], ["ou.rows", "array.rows"]),
    (["run", "--set", "ou.cols=999"], ["ou.cols", "array.cols"]),
    (["run", "--set", "adc.bits=0"], ["adc.bits"]),
    (["run", "--set", "cell.bits=0"], ["cell.bits"]),
    (["run", "--set", "dac.bits=-1"], ["dac.bits"]),
    (["run", "--set", "numbers.input_bits=40"], ["numbers.input_bits"]),
    (["run", "--set", "numbers.weight_bits=0"], ["numbers.weight_bits"]),
    (["run", "--set", "cell.slices=1"], ["cell.slices"]),
    (["run", "--set", "cell.sign=ones"], ["cell.sign"]),
    (["run", "--set", "ou.rows=nine"], ["ou.rows"]),
    (["run", "--set", "foo.bar=1"], ["foo.bar"]),
    (["run", "--set", "ou.depth=3"], ["ou.depth"]),
    (["run", "--set", "ou.rows.x=8"], ["ou.rows.x", "'ou.rows' is a value"]),
    (["run", "--set", "ou..rows=8"], ["ou..rows", "empty name"]),
    (["run", "--input-channels", "2"], ["--input-channels", "1 or 3", "2"]),
    (["run", "--set", "ou.rows"], ["--set", "ou.rows"]),
    (["run", "--set", "=3"], ["--set"]),
    (["run", "--scheme", "nope"], ["scheme", "nope"]),
    (["compare", "--schemes", "dense,nope"], ["scheme", "nope"]),
    (["run", "--hw", "/nonexistent/hw.yaml"], ["/nonexistent/hw.yaml"]),
    (["run", "--limit", "abc"], ["--limit"]),
    (["run", "--bogus-option"], ["--bogus-option"]),
    (["nosuchcommand"], ["nosuchcommand"]),
    (["presets", "nope"], ["nope"]),
    (["presets", "isaac", "--format", "xml"], ["--format", "xml"]),
    # empty values and numbers too large (before: all schemes ran, the current folder was
    # read as an image folder, or a traceback after the run started)
    (["compare", "--schemes", ","], ["--schemes", "empty"]),
    (["compare", "--schemes", " "], ["--schemes", "empty"]),
    (["compare", "--schemes", "sre,,dense"], ["--schemes", "empty item"]),
    (["run", "--data", ""], ["--data", "empty"]),
    (["run", "--model", " "], ["--model", "empty"]),
    (["run", "--hw", ""], ["--hw", "empty"]),
    (["train", "--data", ""], ["--data", "empty"]),
    (["run", "--input-size", "100000"], ["--input-size", "1..1024", "100000"]),
    (["train", "--input-size", "5000"], ["--input-size", "4..1024", "5000"]),
    (["train", "--lr", "1e308"], ["--lr", "(0, 100]"]),
    (["prune", "--lr", "1e308"], ["--lr", "(0, 100]"]),
    (["train", "--seed", "99999999999999999999"], ["--seed", "0..2147483647"]),
    (["prune", "--seed", "2147483648"], ["--seed", "0..2147483647"]),
    # contradictory or empty options (one was ignored, or every case ran)
    (["train", "--half", "--weights", "float32"], ["--half", "--weights float32"]),
    (["prune", "--half", "--weights", "int8"], ["--half", "--weights int8"]),
    (["bench", "--cases", ","], ["--cases", "empty"]),
    (["calibrate", "comprrae", "--budget", "1000"], ["--budget", "0..100", "1000"]),
    (["calibrate", "encoding", "--budget", "101"], ["--budget", "0..100"]),
]


@pytest.mark.parametrize(("args", "fragments"), EARLY_ERRORS,
                         ids=[" ".join(args) for args, _ in EARLY_ERRORS])
def test_bad_input_gives_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                             args: list[str], fragments: list[str]) -> None:
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)


def test_union_field_error_names_the_field_and_every_accepted_form(
        capsys: pytest.CaptureFixture[str]) -> None:
    """ADC bits are a number or "auto": pydantic's per-member errors become one message on
    the field itself (no "constrained-int" tag, no "(and 1 more)")."""
    code, _, err = cli(capsys, "run", "--set", "adc.bits=40")
    line = assert_one_line_error(code, err, "adc.bits:", "less than or equal to 16", "'auto'")
    assert "constrained" not in line and "more)" not in line, line
    code, _, err = cli(capsys, "run", "--set", "adc.bits=abc")
    line = assert_one_line_error(code, err, "adc.bits:", "whole number", "'auto'", "'abc'")
    assert "literal" not in line, line


def test_set_takes_numbers_with_an_exponent(capsys: pytest.CaptureFixture[str]) -> None:
    """`--set energy.leakage_mw=1e-3` was refused as "not text ('1e-3')" (YAML 1.1): it is
    the number, and the run gets as far as the next problem, the OU larger than the array."""
    code, _, err = cli(capsys, "run", "--set", "energy.leakage_mw=1e-3", "--set",
                       "area.buffer_kb=5E2", "--set", "ou.rows=999")
    line = assert_one_line_error(code, err, "ou.rows=999 is larger than array.rows=128")
    assert "leakage_mw" not in line and "buffer_kb" not in line, line


def test_config_file_that_is_not_valid_yaml(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("array: [1, 2\nou: {rows: 3\n")
    code, _, err = cli(capsys, "run", "--hw", str(bad))
    assert_one_line_error(code, err, "bad.yaml")
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("array:\n  rows: 4\n\tcols: 3\n")
    code, _, err = cli(capsys, "run", "--hw", str(tabs))
    assert_one_line_error(code, err, "tabs.yaml")


def test_config_file_that_is_not_a_mapping_or_invalid(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    code, _, err = cli(capsys, "run", "--hw", str(listing))
    assert_one_line_error(code, err, "list.yaml", "mapping")
    invalid = tmp_path / "inv.json"
    invalid.write_text(json.dumps({"array": {"rows": 8}, "ou": {"rows": 16}}))
    code, _, err = cli(capsys, "run", "--hw", str(invalid))
    assert_one_line_error(code, err, "ou.rows")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    code, _, err = cli(capsys, "run", "--hw", str(binary))
    assert_one_line_error(code, err, "bin.yaml")


@pytest.mark.parametrize(("name", "args"), [
    ("hw.yaml", ["run", "--hw", "{f}"]),
    ("sweep.yaml", ["sweep", "{f}"]),
    ("bits.json", ["run", "--scheme", "encoding:adc_bits={f}"]),
    ("alphas.json", ["run", "--scheme", "comprrae:calibration={f}"]),
    ("net.json", ["run", "--model", "{f}"]),
])
def test_files_nested_beyond_the_stack_are_refused(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path, name: str,
                                                   args: list[str]) -> None:
    """'[[[[...]]]]' 100,000 deep: one line naming the file (before: Python's recursion limit
    in a traceback of thousands of lines)."""
    path = tmp_path / name
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text(f"model: {deep}" if name == "sweep.yaml" else deep)
    code, _, err = cli(capsys, *[a.format(f=path) for a in args], "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, str(path), "nested too deeply")
    assert not (tmp_path / "o").exists()


def test_error_through_the_installed_script() -> None:
    script = Path(sys.executable).parent / "sparsexbar"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "sparsexbar.app.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*cmd, "run", "--set", "ou.rows=999"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert_one_line_error(proc.returncode, proc.stderr, "ou.rows", "array.rows")


def test_ctrl_c_while_the_command_starts_is_one_line() -> None:
    """A Ctrl-C while the command imports the package (torch: 1.5-2.5 s) printed Python's
    KeyboardInterrupt traceback (15-26 lines, exit -2): the console entry (`sparsexbar_entry`)
    imports it under a guard. The interrupt is raised deterministically here, by an import
    hook when torch is looked up, as a Ctrl-C in that window raises it."""
    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "        return None\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "import sparsexbar_entry\n"
        "sparsexbar_entry.main(['presets'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 130, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ["sparsexbar: interrupted while starting; nothing was run"]


def _default_sigint() -> None:
    """In the child before exec: SIGINT at its default action, as a shell starts a command."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_early_through_the_installed_script() -> None:
    """The real signal, 0.3 s after the installed script starts (its imports take longer):
    exit 130 and one line, whichever of the entry's guard or the command's own handler
    catches it."""
    import signal
    import time

    script = Path(sys.executable).parent / "sparsexbar"
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    proc = subprocess.Popen([str(script), "presets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            stdin=subprocess.DEVNULL, preexec_fn=_default_sigint)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("sparsexbar: interrupted"), err


# ---- presets ------------------------------------------------------------------------------------
def test_presets_lists_the_published_designs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "presets")
    assert code == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "isaac" in names and "pattern-nvmsa" in names


def test_presets_list_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`presets --format json` without a name prints the list as JSON (it printed the text
    table, which a JSON consumer failed on)."""
    import json

    code, out, _ = cli(capsys, "presets", "--format", "json")
    assert code == 0
    from sparsexbar.core.config import preset_names

    assert list(json.loads(out)) == preset_names()


@pytest.mark.parametrize("name", ["isaac", "pattern-nvmsa"])
def test_presets_prints_a_loadable_config(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = cli(capsys, "presets", name, "--format", "json")
    assert code == 0 and err == ""
    assert HardwareConfig.from_dict(json.loads(out)) == preset(name)
    code, out, err = cli(capsys, "presets", name)  # YAML by default
    assert code == 0
    assert HardwareConfig.from_dict(yaml.safe_load(out)) == preset(name)


# ---- errors that need a data set (the model is resolved after the data) ----------------------
@pytest.mark.parametrize(
    ("factory", "fragments"),
    [
        ("unsupported_net", ["GELU"]),
        ("lstm_net", ["LSTM"]),
        ("nan_net", ["NaN"]),
        ("not_a_module", ["not_a_module"]),
        ("no_such_factory", ["no_such_factory"]),
    ],
)
def test_bad_models_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                factory: str, fragments: list[str]) -> None:
    need_data_and_models()
    code, _, err = cli(capsys, "run", "--model", f"tests.nets:{factory}", "--data", "default",
                       "--limit", "2", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_missing_and_corrupt_checkpoints_are_refused(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    need_data_and_models()
    from sparsexbar.training import checkpoint, zoo

    common = ["--data", "default", "--limit", "2", "--out", str(tmp_path / "out")]
    missing = tmp_path / "absent.safetensors"
    code, _, err = cli(capsys, "run", "--model", str(missing), *common)
    assert_one_line_error(code, err, "absent")
    # Garbage weights with no metadata beside them.
    garbage = tmp_path / "x.safetensors"
    garbage.write_bytes(os.urandom(64))
    code, _, err = cli(capsys, "run", "--model", str(garbage), *common)
    assert_one_line_error(code, err, "x.")
    # A real checkpoint whose weights file is then overwritten with garbage, or truncated.
    model = zoo.build_model("lenet5")
    checkpoint.save_checkpoint(tmp_path / "net", model, {"architecture": "lenet5"})
    weights = tmp_path / "net.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"\x00" * 8 + os.urandom(100))
    code, _, err = cli(capsys, "run", "--model", str(weights), *common)
    assert_one_line_error(code, err, "net.safetensors")
    weights.write_bytes(good[: len(good) // 2])
    code, _, err = cli(capsys, "run", "--model", str(weights), *common)
    assert_one_line_error(code, err, "net.safetensors")
    (tmp_path / "net.json").write_text("{not json")
    weights.write_bytes(good)
    code, _, err = cli(capsys, "run", "--model", str(weights), *common)
    assert_one_line_error(code, err, "net.json")
    assert not (tmp_path / "out").exists()


def test_missing_and_corrupt_data_are_refused(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    need_data_and_models()
    model = ["--model", "tests.nets:tiny_fmnist_net", "--out", str(tmp_path / "out")]
    code, _, err = cli(capsys, "run", "--data", "/nonexistent", *model)
    assert_one_line_error(code, err, "/nonexistent")
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(os.urandom(200))
    code, _, err = cli(capsys, "run", "--data", str(tmp_path / "images"), *model)
    assert_one_line_error(code, err, "a.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "run", "--data", str(empty), *model)
    assert_one_line_error(code, err, "empty")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flag", "value"), [("--limit", "0"), ("--limit", "-3"),
                                             ("--batch-size", "0"), ("--batch-size", "-1")])
def test_non_positive_limit_and_batch_size_are_refused(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path, flag: str,
                                                       value: str) -> None:
    need_data_and_models()
    args = ["run", "--model", "tests.nets:tiny_fmnist_net", "--data", "default",
            "--out", str(tmp_path / "out"), flag, value]
    if flag == "--batch-size":
        args += ["--limit", "2"]
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, flag.lstrip("-").split("-")[0])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", ["meta", "tpu"])
def test_unknown_device_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   device: str) -> None:
    need_data_and_models()
    code, _, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--data",
                       "default", "--limit", "2", "--device", device,
                       "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, device)


def test_output_directory_that_is_a_file_is_refused(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    need_data_and_models()
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a directory")
    code, _, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--data",
                       "default", "--limit", "2", "--out", str(blocker))
    assert_one_line_error(code, err, "out")
    assert blocker.read_text() == "a file, not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(("command", "blocked"), [
    (["run"], "result.json"), (["run"], "layers.csv"),
    (["compare", "--schemes", "dense,sre"], "sre_layers.csv"),
    (["compare", "--schemes", "dense,sre"], "report.html"),
])
def test_output_file_that_is_a_directory_is_refused_before_the_run(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str],
        blocked: str) -> None:
    """A directory where a result file goes: refused before any work, naming that path
    (before: after the whole run, naming a temporary file, with the files written before it
    left behind)."""
    out = tmp_path / "out"
    (out / blocked).mkdir(parents=True)
    code, _, err = cli(capsys, *command, "--model", "tests.nets:tiny_fmnist_net", "--hw",
                       "ideal-small", "--limit", "2", "--out", str(out))
    assert_one_line_error(code, err, str(out / blocked), "is a directory")
    assert [p.name for p in out.iterdir()] == [blocked]


def test_output_link_to_a_missing_folder_is_refused(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone" / "dir")
    code, _, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--limit", "2",
                       "--out", str(link))
    assert_one_line_error(code, err, str(link), "link to a missing folder")


def test_atomic_write_onto_a_directory_names_the_target(tmp_path: Path) -> None:
    from sparsexbar.core.io import atomic_write_text

    (tmp_path / "result.json").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_text(tmp_path / "result.json", "{}")
    assert info.value.filename == str(tmp_path / "result.json")
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left


def test_run_happy_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    need_data_and_models()
    hw = tmp_path / "hw.yaml"
    preset("isaac").with_overrides({"array.rows": 64, "array.cols": 64, "ou.rows": 8}).save(hw)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "run", "--model", "tests.nets:tiny_fmnist_net", "--data",
                            "default", "--limit", "8", "--batch-size", "3", "--hw", str(hw),
                            "--set", "ou.cols=4", "--set", "energy.leakage_mw=1e-3",
                            "--out", str(out))
    assert code == 0, err
    assert "Traceback" not in err
    result = json.loads((out / "result.json").read_text())
    assert result["num_images"] == 8
    assert result["model"] == "tests.nets:tiny_fmnist_net"
    assert result["hardware"]["ou"] == {"rows": 8, "cols": 4}
    assert result["hardware"]["energy"]["leakage_mw"] == 0.001
    assert result["accuracy"]["top1"] == result["accuracy"]["quantized_top1"]
    lines = (out / "layers.csv").read_text().splitlines()
    assert len(lines) == 1 + len(result["layers"]) == 4
    assert sorted(p.name for p in out.iterdir()) == ["layers.csv", "result.json"]


@pytest.mark.parametrize(("args", "names"), [
    ((), ("sparsexbar needs a command: one of run, compare",)),
    (("reproduce",), ("sparsexbar reproduce needs a command: one of sre, pattern",)),
    (("calibrate",), ("sparsexbar calibrate needs a command: one of comprrae, encoding",)),
])
def test_a_group_without_its_command_names_the_commands(capsys: pytest.CaptureFixture[str],
                                                        args: tuple[str, ...],
                                                        names: tuple[str, ...]) -> None:
    """A group run bare prints its help (stdout) and one line naming its commands (it printed
    'sparsexbar: error: ' with nothing after it); hidden aliases are not offered."""
    code, out, err = cli(capsys, *args)
    line = assert_one_line_error(code, err, *names)
    assert "Usage" in out and "calibrate-comprrae" not in line


def test_an_out_where_no_file_can_be_made_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """/proc exists but takes no new file: the line says that, not that /proc is missing."""
    code, _, err = cli(capsys, "run", "--limit", "2", "--out", "/proc/sparsexbar-x")
    assert_one_line_error(code, err, "--out /proc/sparsexbar-x cannot be written",
                          "no file can be created in /proc")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from sparsexbar import __version__

    code, out, err = cli(capsys, "--version")
    assert (code, out.strip(), err) == (0, f"sparsexbar {__version__}", "")


def test_the_title_names_overridden_hardware(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    """A preset with overrides is named with them in the titles; the same preset without
    overrides by its name alone."""
    code, out, err = cli(capsys, "run", "--limit", "3", "--set", "ou.rows=9", "--set",
                         "ou.cols=8", "--out", str(tmp_path / "a"))
    assert code == 0 and err == "", err
    assert "hardware isaac with ou.rows=9, ou.cols=8" in out
    code, out, err = cli(capsys, "run", "--limit", "3", "--out", str(tmp_path / "b"))
    assert code == 0 and "- isaac (3 images)" in out and "isaac with" not in out


def test_hardware_label() -> None:
    from sparsexbar.app.report import hardware_label

    hw = preset("isaac").to_dict()
    assert hardware_label(hw) == "isaac"
    hw["adc"]["bits"] = 5
    hw["device"]["seed"] = 3
    assert hardware_label(hw) == "isaac with adc.bits=5, device.seed=3"
    hw["name"] = "mine"
    assert hardware_label(hw) == "mine"


def test_a_limit_above_the_data_notes_it() -> None:
    """A limit larger than the data runs all of it, with a note (it ran silently)."""
    import torch

    import sparsexbar
    from sparsexbar.core.errors import SparsexbarNote
    from tests import nets

    x = nets.random_images(4, 1, 8, seed=1)
    y = torch.tensor([0, 1, 2, 3])
    with pytest.warns(SparsexbarNote, match="the limit 10 is above the 4 images"):
        res = sparsexbar.simulate(nets.tiny_cnn(), (x, y), limit=10)
    assert res.to_json()["num_images"] == 4
