"""The `sparsexbar` command line. Bad input: one line on stderr naming the problem, exit code 2,
found before any heavy work (outputs included: an `--out` that cannot be written is refused
first). Warnings and notes of the run (a model near chance, images fitted to the model): one
line each on stderr. Ctrl-C: one line, exit code 130, no partial files (writes are atomic)."""

from __future__ import annotations

import csv
import inspect
import json
import math
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from .. import __version__
from ..core.config import PRESET_BUILDERS, load_config, preset, preset_names
from ..core.errors import SparsexbarError, SparsexbarNote, SparsexbarWarning, require_choice
from ..core.frontend import quantize_model
from ..core.io import atomic_write_text
from ..core.runtime import torch_threads
from ..result import Result
from ..schemes import (
    CalibrationSpec,
    Option,
    RunArgs,
    StudySpec,
    calibrations,
    demo_schemes,
    get_scheme,
    scheme_names,
    studies,
)
from ..simulate import (
    CALIBRATION_IMAGES,
    calibration_read_limit,
    check_device,
    dataset_for_model,
    resolve_inputs,
    simulate,
)
from ..studies import all as all_study
from ..studies.shipped_models import measure_shipped, shipped_markdown, shipped_table
from ..training.checkpoint import WEIGHT_FORMATS, shipped_pattern_model_path
from ..training.inputs import FITS, InputSpec, parse_classes, parse_normalize, parse_scale
from ..training.prune import METHODS, check_pattern_args, prune_command
from ..training.shipped import SHIPPED, find_shipped, shipped_names
from ..training.train import PRECISIONS, train_command
from .bench import BENCH_MODELS, CASES, check_bench_args, run_benchmark
from .outputs import check_out_dir, check_out_file, check_out_stem
from .report import (
    COMPARISON_FILES,
    file_label,
    print_tables,
    scheme_label,
    write_comparison,
    write_result,
)
from .sweep import (
    BACKENDS,
    done_keys,
    expand_points,
    failures,
    load_sweep,
    run_sweep,
    summarize,
    summary_table,
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Bit-accurate simulator of sparsity-exploiting RRAM crossbar accelerators.")


# ---- option values checked when parsed (a usage error: one line, exit 2) --------------------
def _finite(low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False) -> Callable[[float | None], float | None]:
    """A callback refusing NaN, infinities and values outside [low, high] (open ends as
    given): click's ranges let NaN through."""
    def check(value: float | None) -> float | None:
        if value is None:
            return None
        bad = not math.isfinite(value)
        if low is not None:
            bad = bad or value < low or (low_open and value == low)
        if high is not None:
            bad = bad or value > high or (high_open and value == high)
        if bad:
            lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}, "
            hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
            where = (f"in {lo}{hi}" if low is not None and high is not None else
                     f"{'>' if low_open else '>='} {low:g}" if low is not None else
                     f"{'<' if high_open else '<='} {high:g}" if high is not None else
                     "finite")
            raise typer.BadParameter(f"must be a number {where}, got {value}")
        return value

    return check


def _whole(low: int, high: int | None = None) -> Callable[[int | None], int | None]:
    """A callback refusing whole numbers outside [low, high], naming the value."""
    def check(value: int | None) -> int | None:
        if value is not None and (value < low or (high is not None and value > high)):
            where = f"in {low}..{high}" if high is not None else f">= {low}"
            raise typer.BadParameter(f"must be {where}, got {value}")
        return value

    return check


def _weight_format(weights: str | None, half: bool) -> str:
    """The checkpoint's weight format from --weights and --half (= --weights float16); both,
    disagreeing, are refused (one was ignored before)."""
    if weights is not None:
        require_choice("--weights", weights, WEIGHT_FORMATS)
        if half and weights != "float16":
            raise SparsexbarError(f"--half means --weights float16, but --weights {weights} is "
                                  "given too; give one")
        return weights
    return "float16" if half else "float32"


def _one_of(*allowed: int) -> Callable[[int | None], int | None]:
    """A callback refusing whole numbers other than `allowed`, naming the value."""
    def check(value: int | None) -> int | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"must be {' or '.join(map(str, allowed))}, got {value}")
        return value

    return check


def _comma_list(flag: str, text: str | None, every: list[str], what: str) -> list[str]:
    """The items of a comma-separated option, `every` when it is not given; an empty value
    or an empty item is refused (',' ran every item before)."""
    if text is None:
        return every
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise SparsexbarError(f"{flag} is empty: give {what} separated by commas, or leave "
                              f"{flag} out for every one")
    if not all(items):
        raise SparsexbarError(f"{flag} '{text}' has an empty item (two commas in a row, or "
                              "one at an end)")
    return items


def _given(value: str | None) -> str | None:
    """A callback refusing an empty or blank text value ('--data ""' read the current folder
    as an image folder)."""
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


def _on_command_line(ctx: typer.Context, *names: str) -> list[str]:
    """The options among `names` (parameter names) that the user gave, as spelled on the
    command line ('max_patterns' -> '--max-patterns'); defaults are not given. The source is
    compared by name: typer's click layer has its own ParameterSource enum."""
    given = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":
            given.append("--" + name.replace("_", "-"))
    return given


SEED_MAX = 2**31 - 1  # seeds of torch, numpy and device.seed alike: 0 .. 2^31 - 1
SIZE_MAX = 1024  # image sizes a model may take, pixels a side (a larger one: a typo, or GiBs)


def _scheme_help() -> str:
    return ("Scheme: " + ", ".join(scheme_names()) + ", or a composition such as "
            "pattern+act+comprrae; options after ':' (sre:mode=weight, comprrae:alpha=0.4).")


HwOpt = Annotated[str, typer.Option("--hw", callback=_given, help="Preset name ("
                                    + ", ".join(preset_names()) + ") or a YAML/JSON config "
                                    "file.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config key, e.g. --set ou.rows=9 (repeatable).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", callback=_whole(1),
                                              help="Run only the first N images.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", callback=_whole(1),
                                       help="Images per batch.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
ModelOpt = Annotated[str, typer.Option(
    "--model", callback=_given,
    help="'default' (shipped VGG-8), mobilenetv2-fmnist (shipped MobileNetV2), a "
    "zoo name (untrained), a checkpoint (its .safetensors or .json, or their stem; results "
    "name it by the stem), a whole module saved with torch.save (net.pt / net.pth; its "
    "classes imported like module:factory), an ONNX file (net.onnx) or "
    "module:factory (a function of no arguments returning the nn.Module; the module is "
    "imported from the installed packages or the current directory).")]
DataOpt = Annotated[str, typer.Option(
    "--data", callback=_given,
    help="'default' (embedded Fashion-MNIST test split), fashion-mnist, cifar10 or "
    "cifar100 (with --root), a CIFAR folder or an image folder (one sub-folder per class).")]
RootOpt = Annotated[Path | None, typer.Option(
    "--root", help="Folder of a named data set's files (cifar10: the folder holding "
    "cifar-10-batches-py, or that folder).")]
ScaleOpt = Annotated[str | None, typer.Option(
    "--input-scale", help="What the model takes per pixel value 0..255: 1/255 (inputs in "
    "[0, 1], the default of checkpoints without this), or 1 (0..255).")]
NormalizeOpt = Annotated[str | None, typer.Option(
    "--normalize", help="(input - MEAN) / STD after the scale: MEAN,STD or per channel "
    "M1,M2,M3/S1,S2,S3 (default: the checkpoint's, else none).")]
SizeOpt = Annotated[int | None, typer.Option(
    "--input-size", callback=_whole(1, SIZE_MAX), help="Image size the model takes (default: its "
    "checkpoint's, else the data's); other sizes are fitted.")]
ChannelsOpt = Annotated[int | None, typer.Option(
    "--input-channels", callback=_one_of(1, 3), help="Channels the model takes, 1 or 3 "
    "(default: its checkpoint's or first conv's).")]
FitOpt = Annotated[str | None, typer.Option(
    "--input-fit", help="How images of another size are fitted: auto (zero padding when the "
    "difference is even and positive, else resize), pad or resize.")]
ClassesOpt = Annotated[str | None, typer.Option(
    "--classes", help="The model's class names in output order, comma-separated, or "
    "fashion-mnist / cifar10 (maps an image folder's class folders; default: the "
    "checkpoint's).")]


def _check_root(root: Path | None) -> None:
    """Refuse a --root that is not a folder."""
    if root is not None and not root.is_dir():
        raise SparsexbarError(f"--root {root} is not a folder")


@dataclass(frozen=True)
class InputOptions:
    """What the model takes, from the command line (None: not given)."""

    spec: InputSpec
    classes: list[str] | None
    root: Path | None


def _input_options(scale: str | None, normalize: str | None, size: int | None,
                   channels: int | None, fit: str | None, classes: str | None,
                   root: Path | None) -> InputOptions:
    if fit is not None:
        require_choice("--input-fit", fit, FITS)
    if channels is not None and channels not in (1, 3):
        raise SparsexbarError(f"--input-channels must be 1 or 3, got {channels}")
    mean, std = parse_normalize(normalize) if normalize is not None else (None, None)
    spec = InputSpec(channels=channels, size=size, fit=fit,
                     scale=parse_scale(scale) if scale is not None else None, mean=mean, std=std)
    _check_root(root)
    return InputOptions(spec, parse_classes(classes) if classes is not None else None, root)


def _print_version(value: bool) -> None:
    """`--version`: the package's version, then exit 0."""
    if value:
        typer.echo(f"sparsexbar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    threads: Annotated[int | None, typer.Option(
        "--threads", callback=_whole(1, 1024),
        help="torch's intra-op threads for the whole command (default: torch's own, one per "
             "core). On a shared machine give the free cores: OpenMP threads beside another "
             "busy process spin-wait, measured ~10x the CPU time on 2 cores "
             "(docs/benchmarks.md).")] = None,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print sparsexbar's version and exit.")] = False,
) -> None:
    """Bit-accurate simulator of sparsity-exploiting RRAM crossbar accelerators."""
    if threads is not None:
        ctx.with_resource(torch_threads(threads))  # restored when the command ends


def _console() -> Console:
    """A console that keeps the tables readable when output is piped to a file."""
    return Console(width=None if sys.stdout.isatty() else 160)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """['a.b=1', ...] -> {'a.b': '1'}; a malformed item raises naming it."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SparsexbarError(f"--set expects key=value, got '{item}'")
        if key.strip() in out:
            raise SparsexbarError(f"--set gives '{key.strip()}' twice")
        out[key.strip()] = value.strip()
    return out


class _Bar:
    """A rich progress bar over images, usable as simulate()'s progress callback; shown
    from the first image on (a run refused before it leaves no empty bar)."""

    def __init__(self, label: str, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.label = label
        self.task: Any = None

    def __enter__(self) -> _Bar:
        _flush_notes()  # the checks are done: what they noted is shown before the work
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:  # started by the first image: a run refused before has none
            self.progress.stop()

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done)


def _scheme_labels(schemes: list[str]) -> list[str]:
    """Each scheme spec's label: its canonical name with the options as given
    (`comprrae:alpha=0.4`), so that variants of one scheme stay apart. Unknown schemes raise
    (before any work); two specs whose results would share a label (and so a file name), or
    that resolve to the same options (`sre` and `sre:mode=joint`, its default), are
    refused."""
    labels: list[str] = []
    seen: dict[str, str] = {}
    for spec in schemes:
        options = spec.partition(":")[2]
        scheme = get_scheme(spec)
        label = scheme.name + (f":{options}" if options else "")
        resolved = scheme.name + ":" + json.dumps(scheme.options(), sort_keys=True, default=str)
        for key in (file_label(label), resolved):
            if key in seen:
                raise SparsexbarError(f"schemes '{seen[key]}' and '{spec}' are the same run; "
                                      "give each scheme once")
        seen[file_label(label)] = seen[resolved] = spec
        labels.append(label)
    return labels


@dataclass
class _Runs:
    """The results of a comparison (as JSON) and the schemes that did not run, with why."""

    results: list[dict[str, Any]]
    failed: dict[str, str]


# Files a comparison writes per scheme; those of schemes not in the new run are removed.
PER_SCHEME_FILES = ("_result.json", "_layers.csv")
FAILED_FILE = "failed.json"
RUN_FILES = ("result.json", "layers.csv")  # what `run` writes (write_result, no prefix)


def _run_schemes(model: str, data: str, hw: str, schemes: list[str], overrides: dict[str, str],
                 limit: int | None, batch_size: int, device: str, console: Console,
                 inputs: InputOptions, out: Path, keep_going: bool) -> _Runs:
    """Check everything (config, schemes, device, output directory, model and data), then run
    each scheme. `keep_going`: a scheme that refuses the run (SparsexbarError) is recorded and
    the others run; else it ends the command."""
    config = load_config(hw, overrides)
    labels = _scheme_labels(schemes)
    check_device(device)
    files = sorted(_comparison_files(labels)) if keep_going else list(RUN_FILES)
    check_out_dir(out, files=files)
    # calibrated on the data's first images whatever --limit runs (as simulate() does)
    loaded, read = resolve_inputs(model, data, calibration_read_limit(limit, CALIBRATION_IMAGES),
                                  inputs.spec, inputs.classes, inputs.root)
    batches = read.first(limit)
    qmodel = quantize_model(loaded.net, read.images[:CALIBRATION_IMAGES],
                            config.numbers.weight_bits, config.numbers.input_bits)
    results: list[Result] = []
    failed: dict[str, str] = {}
    width = max(len(name) for name in schemes)  # the bars in line
    for name, label in zip(schemes, labels, strict=True):
        try:
            with _Bar(f"{name:>{width}}", console) as bar:
                res = simulate(loaded.net, batches, config, name, batch_size=batch_size,
                               device=device, progress=bar, qmodel=qmodel,
                               baseline_accuracy=results[0].accuracy if results else None)
        except SparsexbarError as exc:
            if not keep_going:
                raise
            failed[label] = str(exc)
            console.print(f"{label}: did not run: {exc}", markup=False, highlight=False)
            continue
        results.append(res.named(model=loaded.name, label=label))
    return _Runs([r.to_json() for r in results], failed)  # the report reads the JSON schema


@app.command()
def run(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("out/run"),
    model: ModelOpt = "default",
    data: DataOpt = "default",
    hw: HwOpt = "isaac",
    scheme: Annotated[str, typer.Option("--scheme", help=_scheme_help())] = "dense",
    set_: SetOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "cpu",
    root: RootOpt = None,
    input_scale: ScaleOpt = None,
    normalize: NormalizeOpt = None,
    input_size: SizeOpt = None,
    input_channels: ChannelsOpt = None,
    input_fit: FitOpt = None,
    classes: ClassesOpt = None,
) -> None:
    """Simulate one scheme; write result.json and layers.csv, print the tables."""
    console = _console()
    inputs = _input_options(input_scale, normalize, input_size, input_channels, input_fit,
                            classes, root)
    runs = _run_schemes(model, data, hw, [scheme], parse_overrides(set_), limit, batch_size,
                        device, console, inputs, out, keep_going=False)
    paths = write_result(out, runs.results[0])
    print_tables(runs.results, console)
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def compare(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("out/compare"),
    schemes: Annotated[str | None, typer.Option(
        "--schemes", help="Comma-separated schemes (default: every registered one: "
        + ", ".join(scheme_names()) + ") or compositions of techniques such as "
        "pattern+act+comprrae (options after ':', e.g. sre+comprrae:alpha=0.4).")] = None,
    model: ModelOpt = "default",
    data: DataOpt = "default",
    hw: HwOpt = "isaac",
    set_: SetOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "cpu",
    root: RootOpt = None,
    input_scale: ScaleOpt = None,
    normalize: NormalizeOpt = None,
    input_size: SizeOpt = None,
    input_channels: ChannelsOpt = None,
    input_fit: FitOpt = None,
    classes: ClassesOpt = None,
) -> None:
    """Run several schemes on the same inputs; one table, CSV, plots and report.html. A scheme
    that refuses the run (e.g. sre's activation modes on a noisy device) is recorded in
    failed.json and the table, the others run, and the command exits with code 2. The files
    of an earlier comparison in --out are replaced (other files there are kept)."""
    names = _comma_list("--schemes", schemes, scheme_names(), "scheme names")
    inputs = _input_options(input_scale, normalize, input_size, input_channels, input_fit,
                            classes, root)
    _compare(out, names, model, data, hw, parse_overrides(set_), limit, batch_size, device,
             inputs)




def _compare(out: Path, names: list[str], model: str, data: str, hw: str,
             overrides: dict[str, str], limit: int | None, batch_size: int, device: str,
             inputs: InputOptions | None = None) -> None:
    console = _console()
    inputs = inputs or InputOptions(InputSpec(), None, None)
    runs = _run_schemes(model, data, hw, names, overrides, limit, batch_size, device, console,
                        inputs, out, keep_going=True)
    if not runs.results:
        raise SparsexbarError("no scheme ran: " + "; ".join(
            f"{label}: {why}" for label, why in runs.failed.items()))
    # the earlier comparison's files go before any of this one's is written: an interrupt
    # while writing leaves part of this run, never a mix of two runs
    _remove_earlier_comparison(out, [scheme_label(r) for r in runs.results] + list(runs.failed),
                               console)
    paths = []
    for res in runs.results:
        paths += write_result(out, res, prefix=f"{file_label(scheme_label(res))}_")
    if runs.failed:
        atomic_write_text(out / FAILED_FILE, json.dumps(runs.failed, indent=2) + "\n")
        paths.append(out / FAILED_FILE)
    paths += write_comparison(out, runs.results, runs.failed)
    print_tables(runs.results, console, per_layer=False, failed=runs.failed)
    console.print(f"wrote {len(paths)} files to {out}/ (report.html, comparison.csv, "
                  "<scheme>_result.json, <scheme>_layers.csv, plots)")
    if runs.failed:
        raise SparsexbarError(
            f"{len(runs.failed)} of {len(names)} schemes did not run ("
            + "; ".join(f"{label}: {why}" for label, why in runs.failed.items())
            + f"); the others' results are in {out}/")


def _comparison_files(labels: Iterable[str]) -> set[str]:
    """The names a comparison of the schemes `labels` writes in its directory."""
    return {f"{file_label(label)}{suffix}" for label in labels
            for suffix in PER_SCHEME_FILES} | {*COMPARISON_FILES, FAILED_FILE}


def _remove_earlier_comparison(out: Path, labels_now: Sequence[str], console: Console) -> None:
    """Remove what an earlier comparison wrote in `out`: its comparison.csv, plots,
    report.html and failed.json, and the per-scheme files of the schemes its comparison.csv
    and failed.json name (files of other names, a user's own `baseline_result.json`, stay).
    Those of schemes this run (`labels_now`) does not write again are named on the console."""
    labels: set[str] = set()
    try:
        with (out / "comparison.csv").open(newline="") as f:
            labels |= {row.get("scheme") or "" for row in csv.DictReader(f)}
    except (OSError, csv.Error, UnicodeDecodeError):
        pass  # none, or not readable: its per-scheme files are not known
    try:
        earlier = json.loads((out / FAILED_FILE).read_text())
        if isinstance(earlier, dict):
            labels |= {str(k) for k in earlier}
    except (OSError, ValueError):
        pass
    gone = sorted(p for p in (out / n for n in _comparison_files(labels - {""}))
                  if p.is_file())
    for p in gone:
        p.unlink(missing_ok=True)
    rewritten = _comparison_files(labels_now)
    stale = [p.name for p in gone if p.name not in rewritten]
    if stale:
        console.print(f"removed {len(stale)} files of an earlier comparison in {out}/: "
                      + ", ".join(stale), markup=False, highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("out/demo"),
    limit: LimitOpt = None,
    batch_size: BatchOpt = 250,
    device: DeviceOpt = "cpu",
    hw: HwOpt = "isaac",
    model: Annotated[str, typer.Option(
        "--model", help="The one model every scheme runs: 'pattern' (the shipped "
        "pattern-pruned VGG-8), 'default' (the shipped VGG-8) or any --model spec.")] = "pattern",
) -> None:
    """Every registered scheme (dense, sre, pattern, comprrae, encoding, combined) on one model
    and the embedded Fashion-MNIST test split: one table, CSV, plots and report.html."""
    _compare(out, demo_schemes(), _demo_model(model), "default", hw, {}, limit, batch_size,
             device)


def _demo_model(model: str) -> str:
    """'pattern' -> the shipped pattern-pruned model by its name (results then say
    'vgg8-fmnist-pattern', not its architecture); anything else as given."""
    if model != "pattern":
        return model
    path = shipped_pattern_model_path()
    if not path.is_file():
        raise SparsexbarError(f"the shipped pattern-pruned model is missing: {path}")
    return next(m.name for m in SHIPPED if m.path == path)


@app.command()
def presets(
    name: Annotated[str | None, typer.Argument(help="Print this preset in full.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
) -> None:
    """List the hardware presets, or print one."""
    if fmt not in ("yaml", "json"):
        raise SparsexbarError(f"--format must be yaml or json, got '{fmt}'")
    if name is None:  # the list: a table, or (--format json) a JSON object name -> text
        if fmt == "json":
            typer.echo(json.dumps({key: text for key, (_, text) in PRESET_BUILDERS.items()},
                                  indent=2))
            return
        for key, (_, text) in PRESET_BUILDERS.items():
            typer.echo(f"{key:15s} {text}")
        return
    cfg = preset(name)
    typer.echo(cfg.to_yaml() if fmt == "yaml" else cfg.to_json())


@app.command("models")
def models_command(
    markdown: Annotated[bool, typer.Option(
        "--markdown", help="Print the list as a Markdown table (docs/models.md).")] = False,
    measure: Annotated[str | None, typer.Option(
        "--measure", help="Simulate this shipped model (or 'all') with dense on isaac over "
        "the test split and record its accuracies in its metadata.")] = None,
    limit: LimitOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="With --measure: where the runs' result JSON go (default "
        "out/models).")] = None,
) -> None:
    """List the shipped models: data, input size, weight sparsity and accuracies (float,
    8-bit integer-quantized, simulated dense on isaac), from their metadata."""
    if measure is None and (out is not None or limit is not None):
        raise SparsexbarError("--out and --limit are options of --measure")
    if measure is not None:
        out = out if out is not None else Path("out/models")
        names = shipped_names() if measure == "all" else [measure]
        for name in names:
            if find_shipped(name) is None or name not in shipped_names():
                raise SparsexbarError(f"--measure: unknown shipped model '{name}' (shipped: "
                                      f"{', '.join(shipped_names())})")
        check_out_dir(out)
        for name in names:
            with _Bar(name, _console()) as bar:
                acc = measure_shipped(name, out, limit=limit, progress=bar)
            typer.echo(f"{name}: simulated dense top-1 {acc['simulated_dense_top1']:.4f} "
                       f"on {acc['simulated_images']} images")
    rows, head, cells = shipped_table()
    if markdown:
        typer.echo(shipped_markdown().rstrip())
        return
    table = Table(title="shipped models (sparsexbar --model NAME)")
    for h in head:
        table.add_column(h, justify="right" if h.endswith(("%", "MB")) or h == "sparsity"
                         else "left", overflow="fold")
    for c in cells:
        table.add_row(*c)
    _console().print(table)
    for r in rows:
        typer.echo(f"{r['name']}: {r['description']}")


LR_MAX = 100.0  # learning rates above it diverge at once (and 1e308 overflowed float32)
PositiveLr = Annotated[float, typer.Option(
    "--lr", help="Peak learning rate (cosine to 0).",
    callback=_finite(0, LR_MAX, low_open=True))]
SeedOpt = Annotated[int, typer.Option(
    "--seed", callback=_whole(0, SEED_MAX),
    help="Seed of initialization, shuffling and augmentation.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="fp32, or bf16 (autocast; weights stay float32).")]
WeightsOpt = Annotated[str | None, typer.Option(
    "--weights", help="File format of the weights: float32 (default), float16 or int8 "
    "(per-channel int8, pruned tensors sparse: the shipped models' form); accuracy is "
    "measured on what the file holds.")]
CHECKPOINT_FILES = (".safetensors", ".json")


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", help="Zoo architecture name.")] = "vgg8",
    data: Annotated[str, typer.Option(
        "--data", callback=_given,
        help="fashion-mnist, cifar10, cifar100 (with --root) or a folder.")] = (
        "fashion-mnist"),
    epochs: Annotated[int, typer.Option("--epochs", callback=_whole(1),
                                        help="Passes over the train split.")] = 10,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint stem.")] = Path("out/ckpt/model"),
    batch_size: BatchOpt = 128,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    lr: PositiveLr = 0.05,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", callback=_whole(4, SIZE_MAX),
        help="Train at this image size: Fashion-MNIST 28 "
        "-> 32 is zero-padded (what the vgg16-fmnist models use), other changes resized.")] = None,
    precision: PrecisionOpt = "fp32",
    root: RootOpt = None,
    weights: WeightsOpt = None,
    width: Annotated[float | None, typer.Option(
        "--width", callback=_finite(0.0, 4.0, low_open=True),
        help="Channel width multiplier of the zoo model, in (0, 4] (default its own; the "
        "vgg16-fmnist models use 1).")] = None,
    half: Annotated[bool, typer.Option(
        "--half", help="Store float16 weights (= --weights float16; accuracy measured after "
        "rounding).")] = False,
) -> None:
    """Train a zoo model; writes <out>.safetensors and <out>.json (with the classes and the
    input spec the model takes)."""
    require_choice("--precision", precision, PRECISIONS)
    weights = _weight_format(weights, half)
    check_out_stem(out, CHECKPOINT_FILES)
    _check_root(root)
    metrics = train_command(model, data, epochs, str(out), batch_size=batch_size, seed=seed,
                            limit=limit, lr=lr, input_size=input_size, precision=precision,
                            root=root, weights=weights, width=width)
    typer.echo(f"trained {model} on {data}: {metrics}")


@app.command()
def bench(
    model: Annotated[str, typer.Option(
        "--model", help="Benchmark model: " + ", ".join(BENCH_MODELS) + " (vgg8-pattern: the "
        "demo's; vgg16: random weights, shape only).")] = "vgg8",
    batch_size: BatchOpt = 64,
    repeats: Annotated[int, typer.Option(
        "--repeats", callback=_whole(1),
        help="Timed runs of each case (the fastest is reported).")] = 2,
    cases: Annotated[str | None, typer.Option(
        "--cases", help="Comma-separated cases (default: all): " + ", ".join(CASES) + ".")
    ] = None,
) -> None:
    """Images/s of the engine against plain PyTorch inference of the same model (ratios)."""
    require_choice("--model", model, BENCH_MODELS)
    names = _comma_list("--cases", cases, list(CASES), "case names")
    for name in names:
        require_choice("--cases item", name, CASES)
    check_bench_args(model, batch_size, repeats)
    run_benchmark(model=model, batch_size=batch_size, repeats=repeats,
                  cases=tuple(CASES[n] for n in names), console=_console())


# ---- reproduce NAME, calibrate NAME: built from the declarations -------------------------------
# Each scheme's study and calibration declare their own options and defaults (StudySpec,
# CalibrationSpec in its package, listed by the scheme registry); `reproduce all` is the one
# study that belongs to no scheme. The commands below hold no per-study code.
STUDIES: dict[str, StudySpec] = {**studies(), all_study.STUDY.name: all_study.STUDY}
CALIBRATIONS: dict[str, CalibrationSpec] = calibrations()
CALIBRATION_DATA_HELP = ("'default': the first images of the Fashion-MNIST train split (the "
                         "studies test on the embedded test file); else a data set name (its "
                         "files in --root) or a folder, whose train split is used, fitted to "
                         "the model as `run` fits data.")


def _named_group(kind: str, known: Callable[[], list[str]]) -> type[TyperGroup]:
    """A command group that refuses an unknown name with one line naming the known ones."""

    class Named(TyperGroup):
        def get_command(self, ctx: Any, name: str) -> Any:
            command = super().get_command(ctx, name)
            if command is None and not name.startswith("-"):
                raise SparsexbarError(f"unknown {kind} '{name}' (known: {', '.join(known())})")
            return command

    return Named


def _parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


def _declared(opt: Option) -> inspect.Parameter:
    """A typer option from a declared Option: `--key` (a switch: `--key/--no-key`)."""
    flags = (f"{opt.flag}/--no-{opt.flag[2:]}",) if opt.kind == "switch" else (opt.flag,)
    return _parameter(opt.key, Annotated[opt.python_type, typer.Option(*flags, help=opt.help)],
                      opt.default)


def _command(spec: StudySpec | CalibrationSpec, out: Path, data: bool) -> Callable[..., None]:
    """The command of a study or calibration: the common options (--out, --model, [--data,]
    --hw, --set, --batch-size, --device; their defaults as the spec says), then the spec's
    own; its values checked (`Option.check`), the output and the device checked, the spec run,
    its text printed."""
    defaults: dict[str, Any] = {"out": out, "model": "default", "data": "default",
                                "hw": "isaac", "batch_size": 250, "device": "cpu",
                                **spec.defaults}
    study = isinstance(spec, StudySpec)
    common = [
        _parameter("out", Annotated[Path, typer.Option("--out", help="Output directory.")
                                    if study else
                                    typer.Option("--out", help="JSON file written.")],
                   defaults["out"]),
        _parameter("model", ModelOpt, defaults["model"]),
        *([_parameter("data", Annotated[str, typer.Option("--data", callback=_given,
                                                          help=CALIBRATION_DATA_HELP)],
                      defaults["data"]), _parameter("root", RootOpt, None)] if data else []),
        _parameter("hw", HwOpt, defaults["hw"]),
        _parameter("set_", SetOpt, None),
        _parameter("batch_size", BatchOpt, defaults["batch_size"]),
        _parameter("device", DeviceOpt, defaults["device"]),
    ]
    own = [_declared(opt) for opt in spec.options]

    def command(**values: Any) -> None:
        checked = {opt.keyword: opt.check(values[opt.key]) for opt in spec.options}
        overrides = parse_overrides(values["set_"])
        load_config(values["hw"], overrides)  # a bad config: refused before any work
        check_device(values["device"])
        _check_root(values.get("root"))
        if study:
            check_out_dir(values["out"])
        else:
            check_out_file(values["out"])
        console = _console()
        args = RunArgs(out=values["out"], model=values["model"], hw=values["hw"],
                       overrides=overrides, batch_size=values["batch_size"],
                       device=values["device"], progress=console.print,
                       data=values.get("data", "default"), root=values.get("root"))
        console.print(spec.run(args, **checked))

    params = [*common, *own]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = spec.name
    return command


reproduce_app = typer.Typer(
    cls=_named_group("study", lambda: list(STUDIES)), no_args_is_help=True,
    help="Reproduce a published study beside its figures (tables, JSON, plot); `all`: every "
    "study in one report with the combined scheme's row beside ours.")
for _study in STUDIES.values():
    reproduce_app.command(_study.name, help=_study.help)(
        _command(_study, Path("out/reproduce"), data=False))
app.add_typer(reproduce_app, name="reproduce")

calibrate_app = typer.Typer(
    cls=_named_group("calibration", lambda: list(CALIBRATIONS)), no_args_is_help=True,
    help="Calibrate a scheme's lossy parameters for a top-1 budget on a calibration split; "
    "the JSON file it writes is a scheme option.")
for _cal in CALIBRATIONS.values():
    _run = _command(_cal, Path(_cal.out), data=True)
    calibrate_app.command(_cal.name, help=_cal.help)(_run)
    # the first spelling of these commands, kept as an alias
    app.command(f"calibrate-{_cal.name}", help=f"Alias of `calibrate {_cal.name}`.",
                hidden=True)(_run)
app.add_typer(calibrate_app, name="calibrate")


@app.command()
def prune(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(
        "--model", help="A shipped model (vgg16-fmnist, ...; 'default': the shipped VGG-8) or "
        "a checkpoint to prune.")] = "default",
    data: Annotated[str, typer.Option(
        "--data", callback=_given,
        help="Data set of the checkpoint (default: the one it was trained on).")] = (
        "default"),
    hw: HwOpt = "isaac",
    set_: SetOpt = None,
    method: Annotated[str, typer.Option(
        "--method", help="ou-structured (blocks of one row x an OU column group's channels), "
        "unstructured, or pattern (3x3 kernels keep --k weights in one of --max-patterns "
        "patterns per layer, plus whole-kernel pruning).")] = "ou-structured",
    sparsity: Annotated[float, typer.Option(
        "--sparsity", help="Target zero fraction, in [0, 1).",
        callback=_finite(0, 1, high_open=True))] = 0.5,
    steps: Annotated[int, typer.Option("--steps", callback=_whole(1),
                                       help="Gradual pruning steps.")] = 3,
    epochs: Annotated[int, typer.Option("--epochs", callback=_whole(0),
                                        help="Fine-tuning epochs per step.")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="Fine-tuning learning rate.",
                                      callback=_finite(0, LR_MAX, low_open=True))] = 0.01,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint stem.")] = Path(
        "out/ckpt/pruned"),
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    split: Annotated[str, typer.Option(
        "--split", help="Fine-tuning split: train (or test, for smoke runs).")] = "train",
    k: Annotated[int, typer.Option(
        "--k", callback=_whole(1, 9), help="pattern: weights kept per 3x3 kernel (1..9).")] = 4,
    max_patterns: Annotated[str, typer.Option(
        "--max-patterns", help="pattern: patterns per layer at most: one number, or one per "
        "3x3 conv layer, comma-separated (the pattern paper's VGG-16: "
        "2,2,2,6,8,8,8,6,5,4,6,6,8).")] = "8",
    half: Annotated[bool, typer.Option(
        "--half", help="Store float16 weights (accuracy measured after rounding).")] = False,
    final_epochs: Annotated[int, typer.Option(
        "--final-epochs", callback=_whole(0),
        help="Extra fine-tuning epochs at the final sparsity.")] = 0,
    precision: PrecisionOpt = "fp32",
    root: RootOpt = None,
    weights: WeightsOpt = None,
    tune_images: Annotated[int | None, typer.Option(
        "--tune-images", callback=_whole(1), help="Fine-tune on the first N images of the "
        "split only (default: all); the test split stays whole.")] = None,
) -> None:
    """Prune a checkpoint (magnitude or pattern) with fine-tuning; writes it and a table."""
    require_choice("--method", method, METHODS)
    pattern_only = _on_command_line(ctx, "k", "max_patterns")
    if method != "pattern" and pattern_only:
        verb, pronoun = ("applies", "it") if len(pattern_only) == 1 else ("apply", "them")
        raise SparsexbarError(f"{' and '.join(pattern_only)} {verb} to --method pattern only "
                              f"(got --method {method}); leave {pronoun} out")
    weights = _weight_format(weights, half)
    require_choice("--precision", precision, PRECISIONS)
    require_choice("--split", split, ("train", "test"))
    try:
        counts = [int(v) for v in max_patterns.split(",")]
    except ValueError:
        raise SparsexbarError(f"--max-patterns must be integers separated by commas, got "
                              f"'{max_patterns}'") from None
    patterns: int | list[int] = counts[0] if len(counts) == 1 else counts
    check_pattern_args(k, patterns, sparsity)  # checked whatever the method
    config = load_config(hw, parse_overrides(set_))
    if out.name.endswith(".sparsity.md"):  # the table's own name: its stem, as for the others
        out = out.with_name(out.name.removesuffix(".sparsity.md"))
    check_out_stem(out, CHECKPOINT_FILES + (".sparsity.md",))
    _check_root(root)
    res = prune_command(model, data, config, sparsity, method, steps, epochs, out, lr=lr,
                        limit=limit, seed=seed, tune_split=split, k=k, max_patterns=patterns,
                        half=half, final_epochs=final_epochs, precision=precision, root=root,
                        weights=weights, tune_images=tune_images, prepare=dataset_for_model)
    typer.echo(res["markdown"].rstrip())
    typer.echo(f"top-1 {res['top1_before']:.4f} -> {res['top1_after']:.4f}; wrote "
               f"{res['checkpoint']}, {res['meta_path']}, {res['table_path']}")


@app.command("sweep")
def sweep_command(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep file (YAML): see docs/sweeps.md.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Sweep directory (results/*.parquet); default out/sweep/<stem>.")] = None,
    backend: Annotated[str, typer.Option(
        "--backend", help="local (a process pool on this machine) or ray.")] = "local",
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster to join (e.g. auto, HOST:6379); default: a local "
        "Ray instance.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", callback=_whole(1), help="Points run at once (default: the CPUs; ray: the "
        "cluster's).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="cpu or cuda for every point (overrides the file).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the points and which are done; run nothing.")] = False,
) -> None:
    """Run a design-space sweep: one simulate() per point, rows in a Parquet data set; a
    rerun skips the points already there (a corrupt row file is run again)."""
    require_choice("--backend", backend, BACKENDS)
    spec = load_sweep(sweep_file)
    target = out if out is not None else Path("out/sweep") / sweep_file.stem
    console = _console()
    if dry_run:
        done = done_keys(target)
        for p in expand_points(spec):
            state = "done" if p.key in done else ("invalid" if p.config_error else "to run")
            params = " ".join(f"{k}={v}" for k, v in p.overrides.items())
            console.print(f"{p.key[:12]}  {state:8s} {p.model} {p.scheme.name} {params}")
        return
    check_out_dir(target)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    task: Any = None

    def show(report: Any, row: dict[str, Any] | None) -> None:
        nonlocal task
        if task is None:
            _flush_notes()
            console.print(f"sweep {spec.name}: {report.total} points, {report.skipped} already "
                          f"in {target}, {report.to_run} to run ({backend})")
            progress.start()  # here, not before: a sweep refused first leaves no empty bar
            task = progress.add_task("points", total=report.to_run)
        if row is not None and row["status"] != "ok":
            progress.console.print(f"failed {row['key'][:12]} ({row['model']}, "
                                   f"{row['scheme']}): {row['error']}", markup=False,
                                   highlight=False)
        progress.update(task, completed=report.done,
                        description=f"ok {report.ok} failed {report.failed}"
                        + (f" crashed {len(report.crashed)}" if report.crashed else ""))

    try:
        report = run_sweep(spec, target, backend=backend, workers=workers, address=address,
                           device=device, progress=show)
    finally:
        if task is not None:
            progress.stop()
    console.print(f"{report.ok} ok, {report.failed} failed (recorded), {report.skipped} skipped "
                  f"(already done), {len(report.crashed)} crashed in {report.wall_s:.1f} s; "
                  f"results in {target}/results; next: sparsexbar plot {target}")
    for key, message in report.crashed:
        console.print(f"crashed {key[:12]} (not recorded; a rerun retries it): {message}",
                      markup=False, highlight=False)
    if report.crashed:
        raise typer.Exit(1)


@app.command("plot")
def plot_command(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory (sparsexbar sweep --out).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where the PNGs and summary.csv go; default the sweep directory.")] = None,
) -> None:
    """Pareto plots (energy vs top-1, area vs throughput) and a summary table of a sweep."""
    if sweep_dir.is_file():
        raise SparsexbarError(f"{sweep_dir} is a file; plot takes a sweep directory "
                              "(sparsexbar sweep --out)")
    if not sweep_dir.is_dir():
        raise SparsexbarError(f"sweep directory not found: {sweep_dir}")
    check_out_dir(out if out is not None else sweep_dir)
    summary = summarize(sweep_dir, out)
    console = _console()
    console.print(summary_table(summary, f"sweep {sweep_dir} ({len(summary['rows'])} points)"))
    for line in failures(summary):
        console.print(f"failed {line}", markup=False, highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in summary["paths"]))


# Warnings and notes wait here until the work starts (the first progress bar) or the command
# ends, so that bad input found after a note still gives one line on stderr, the error's.
_PENDING: list[str] = []


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """SparsexbarWarning / SparsexbarNote: one line for stderr (held until `_flush_notes`);
    other warnings as Python shows them."""
    if issubclass(category, SparsexbarWarning):
        kind = "note" if issubclass(category, SparsexbarNote) else "warning"
        text = " ".join(str(message).split())
        _PENDING.append(f"sparsexbar: {kind}: {text}")
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


def _flush_notes() -> None:
    """Print the held warnings and notes on stderr."""
    while _PENDING:
        print(_PENDING.pop(0), file=sys.stderr, flush=True)



def _listing_helps(group: typer.Typer) -> None:
    """Give every command of `group` declared by its docstring a one-line listing help: its
    first paragraph with the line breaks joined. Typer's command listing (`sparsexbar
    --help`) keeps a docstring's line breaks, so a wrapped docstring read "on one model" /
    "and the embedded ..." in two broken lines; its own help page joins them."""
    for info in group.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        if info.short_help is None and "\n" in doc.split("\n\n")[0]:
            info.short_help = " ".join(doc.split("\n\n")[0].split())


_listing_helps(app)

_PYTHON_SHOWWARNING = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    """Entry point: SparsexbarError and usage errors -> one line on stderr, exit code 2;
    Ctrl-C -> one line, exit code 130; warnings of the run -> one line each."""
    command = typer.main.get_command(app)
    _PENDING.clear()
    _TERMINATED.clear()
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, a batch system's time limit) ends the command as Ctrl-C does: the
        # temporary file of a write in progress is removed, one line, exit 143 (it exited
        # silently and left `.NAME.tmp` files)
        signal.signal(signal.SIGTERM, _on_terminate)
    repeated = _repeated_option(command, sys.argv[1:] if argv is None else list(argv))
    if repeated:
        _fail(repeated)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", SparsexbarWarning)
            warnings.showwarning = _show_warning
            code = command.main(args=argv, prog_name="sparsexbar", standalone_mode=False)
        if code == 130:  # typer's return for Ctrl-C (KeyboardInterrupt) without standalone mode
            _interrupted()
        _flush_notes()
    except SparsexbarError as exc:
        _PENDING.clear()
        _fail(str(exc))
    except typer.Exit as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            _interrupted()
        _flush_notes()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except Exception as exc:
        # Usage errors of the (vendored) click layer carry exit_code 2 and format_message().
        if getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message"):
            _fail(" ".join(str(exc.format_message()).split()) or _missing_command(exc))
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


def _repeated_option(command: Any, argv: list[str]) -> str:
    """The line refusing an option of one value given twice (`run --scheme sre --scheme
    pattern` ran pattern alone: click keeps the last), else ''. Options that take several
    (`--set`) and flags may repeat; each command of the path (`sparsexbar --threads 2 run
    ...`) is checked for its own options."""
    seen: dict[str, int] = {}
    options = _single_valued(command)
    k = 0
    while k < len(argv) and argv[k] != "--":
        token = argv[k]
        sub = getattr(command, "commands", {}).get(token)
        if sub is not None:  # the next command of the path
            command, options = sub, _single_valued(sub)
            k += 1
            continue
        opt = token.split("=", 1)[0] if token.startswith("--") else token
        if opt in options:
            name = options[opt]
            seen[name] = seen.get(name, 0) + 1
            k += 1 if "=" in token else 2  # the option and its value
            continue
        k += 1
    twice = [name for name, n in seen.items() if n > 1]
    if not twice:
        return ""
    return (f"option {twice[0]} given {seen[twice[0]]} times: it takes one value (give it "
            "once)")


def _single_valued(command: Any) -> dict[str, str]:
    """Every spelling of a command's options that take one value -> the option's name."""
    names: dict[str, str] = {}
    for param in getattr(command, "params", []):
        if getattr(param, "multiple", True) or getattr(param, "is_flag", True) \
                or getattr(param, "count", False):
            continue
        for opt in param.opts:
            if opt.startswith("-"):
                names[opt] = param.opts[-1]
    return names


def _missing_command(exc: Exception) -> str:
    """The line for a group run without its command (click printed the group's help and
    raised an error with no message): which commands it takes."""
    ctx = getattr(exc, "ctx", None)
    group: Any = getattr(ctx, "command", None)
    names = [n for n in group.list_commands(ctx) if not getattr(
        group.get_command(ctx, n), "hidden", False)] if hasattr(group, "list_commands") else []
    path = getattr(ctx, "command_path", "sparsexbar")
    return f"{path} needs a command" + (f": one of {', '.join(names)}" if names else "")


_TERMINATED: list[bool] = []  # set by the SIGTERM handler of this process's command


def _on_terminate(signum: int, frame: object) -> None:
    _TERMINATED.append(True)
    raise KeyboardInterrupt


def _interrupted() -> None:
    _PENDING.clear()
    how, code = ("terminated (SIGTERM)", 143) if _TERMINATED else ("interrupted", 130)
    print(f"sparsexbar: {how}; no file is half-written (each is written whole or not at "
          "all; files written before the signal stay)", file=sys.stderr, flush=True)
    sys.exit(code)


def _fail(message: str) -> None:
    print(f"sparsexbar: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
