"""The `sparsexbar` command line. Bad input: one line on stderr naming the problem, exit code 2."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from ..core.config import PRESET_BUILDERS, load_config, preset
from ..core.errors import SparsexbarError, require_choice
from ..core.frontend import quantize_model
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
from ..simulate import resolve_data, simulate
from ..studies import all as all_study
from ..training.checkpoint import shipped_pattern_model_path
from ..training.models import resolve_model
from ..training.prune import METHODS, check_pattern_args, prune_command
from ..training.train import train_command
from .bench import BENCH_MODELS, CASES, run_benchmark
from .report import file_label, print_tables, scheme_label, write_comparison, write_result
from .sweep import (
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

HwOpt = Annotated[str, typer.Option("--hw", help="Preset name or a YAML/JSON config file.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config key, e.g. --set ou.rows=9 (repeatable).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Run only the first N images.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
ModelOpt = Annotated[str, typer.Option(
    "--model", help="'default' (shipped VGG-8), mobilenetv2-fmnist, a zoo name, a checkpoint, "
    "an ONNX file (net.onnx) or module:factory.")]
DataOpt = Annotated[str, typer.Option(
    "--data", help="'default' (embedded Fashion-MNIST test split), fashion-mnist, cifar10, "
    "cifar100 or an image-folder path.")]


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
        out[key.strip()] = value.strip()
    return out


class _Bar:
    """A rich progress bar over images, usable as simulate()'s progress callback."""

    def __init__(self, label: str, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.label = label
        self.task: Any = None

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done)


def _scheme_labels(schemes: list[str]) -> list[str]:
    """Each scheme spec's label: its canonical name with the options as given
    (`comprrae:alpha=0.4`), so that variants of one scheme stay apart. Unknown schemes raise
    (before any work); two specs whose results would share a label (and so a file name)
    are refused."""
    labels: list[str] = []
    seen: dict[str, str] = {}
    for spec in schemes:
        options = spec.partition(":")[2]
        label = get_scheme(spec).name + (f":{options}" if options else "")
        key = file_label(label)
        if key in seen:
            raise SparsexbarError(f"schemes '{seen[key]}' and '{spec}' are the same run; "
                                  "give each scheme once")
        seen[key] = spec
        labels.append(label)
    return labels


def _run_schemes(model: str, data: str, hw: str, schemes: list[str], overrides: dict[str, str],
                 limit: int | None, batch_size: int, device: str,
                 console: Console) -> list[dict[str, Any]]:
    config = load_config(hw, overrides)
    labels = _scheme_labels(schemes)
    batches = resolve_data(data, limit)
    net, model_name = resolve_model(model, int(batches.images.shape[1]),
                                    max(int(batches.labels.max()) + 1, 10),
                                    int(batches.images.shape[-1]))
    qmodel = quantize_model(net, batches.images[:256], config.numbers.weight_bits,
                            config.numbers.input_bits)
    results: list[Result] = []
    for name, label in zip(schemes, labels, strict=True):
        with _Bar(f"{name:>10}", console) as bar:
            res = simulate(net, batches, config, name, batch_size=batch_size, device=device,
                           progress=bar, qmodel=qmodel,
                           baseline_accuracy=results[0].accuracy if results else None)
        results.append(res.named(model=model_name, label=label))
    return [r.to_json() for r in results]  # the report and the files read the JSON schema


@app.command()
def run(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("out/run"),
    model: ModelOpt = "default",
    data: DataOpt = "default",
    hw: HwOpt = "isaac",
    scheme: Annotated[str, typer.Option("--scheme", help="Scheme name.")] = "dense",
    set_: SetOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "cpu",
) -> None:
    """Simulate one scheme; write result.json and layers.csv, print the tables."""
    console = _console()
    results = _run_schemes(model, data, hw, [scheme], parse_overrides(set_), limit, batch_size,
                           device, console)
    paths = write_result(out, results[0])
    print_tables(results, console)
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def compare(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("out/compare"),
    schemes: Annotated[str, typer.Option(
        "--schemes", help="Comma-separated schemes: names (dense, sre, pattern, comprrae, "
        "combined, ...) or compositions of techniques such as pattern+act+comprrae "
        "(options after ':', e.g. sre+comprrae:alpha=0.4).")] = "",
    model: ModelOpt = "default",
    data: DataOpt = "default",
    hw: HwOpt = "isaac",
    set_: SetOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "cpu",
) -> None:
    """Run several schemes on the same inputs; one table, CSV, plots and report.html."""
    names = [s.strip() for s in schemes.split(",") if s.strip()] or scheme_names()
    _compare(out, names, model, data, hw, parse_overrides(set_), limit, batch_size, device)


def _compare(out: Path, names: list[str], model: str, data: str, hw: str,
             overrides: dict[str, str], limit: int | None, batch_size: int, device: str) -> None:
    console = _console()
    results = _run_schemes(model, data, hw, names, overrides, limit, batch_size, device, console)
    paths = []
    for res in results:
        paths += write_result(out, res, prefix=f"{file_label(scheme_label(res))}_")
    paths += write_comparison(out, results)
    print_tables(results, console, per_layer=False)
    console.print(f"wrote {len(paths)} files to {out}/ (report.html, comparison.csv, "
                  "<scheme>_result.json, <scheme>_layers.csv, plots)")


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
    """'pattern' -> the shipped pattern-pruned checkpoint; anything else as given."""
    if model != "pattern":
        return model
    path = shipped_pattern_model_path()
    if not path.is_file():
        raise SparsexbarError(f"the shipped pattern-pruned model is missing: {path}")
    return str(path)


@app.command()
def presets(
    name: Annotated[str | None, typer.Argument(help="Print this preset in full.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
) -> None:
    """List the hardware presets, or print one."""
    if name is None:
        for key, (_, text) in PRESET_BUILDERS.items():
            typer.echo(f"{key:15s} {text}")
        return
    if fmt not in ("yaml", "json"):
        raise SparsexbarError(f"--format must be yaml or json, got '{fmt}'")
    cfg = preset(name)
    typer.echo(cfg.to_yaml() if fmt == "yaml" else cfg.to_json())


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", help="Zoo architecture name.")] = "vgg8",
    data: Annotated[str, typer.Option("--data", help="fashion-mnist, cifar10, cifar100.")] = (
        "fashion-mnist"),
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the train split.")] = 10,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint stem.")] = Path("out/ckpt/model"),
    batch_size: BatchOpt = 128,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed of initialization, shuffling and augmentation.")] = 0,
    limit: LimitOpt = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (cosine to 0).")] = 0.05,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help="Train at this image size: Fashion-MNIST 28 -> 32 is zero-padded "
        "(what the vgg16-fmnist models use), other changes resized.")] = None,
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32, or bf16 (autocast; weights stay float32).")] = "fp32",
    width: Annotated[float | None, typer.Option(
        "--width", help="Channel width multiplier of the zoo model (default its own).")] = None,
    half: Annotated[bool, typer.Option(
        "--half", help="Store float16 weights (accuracy measured after rounding).")] = False,
) -> None:
    """Train a zoo model; writes <out>.safetensors and <out>.json."""
    if epochs <= 0:
        raise SparsexbarError(f"--epochs must be positive, got {epochs}")
    if input_size is not None and input_size < 4:
        raise SparsexbarError(f"--input-size must be >= 4, got {input_size}")
    metrics = train_command(model, data, epochs, str(out), batch_size=batch_size, seed=seed,
                            limit=limit, lr=lr, input_size=input_size, precision=precision,
                            width=width, half=half)
    typer.echo(f"trained {model} on {data}: {metrics}")


@app.command()
def bench(
    model: Annotated[str, typer.Option(
        "--model", help="Benchmark model: vgg8, vgg8-pattern (the demo's) or vgg16.")] = "vgg8",
    batch_size: BatchOpt = 64,
    repeats: Annotated[int, typer.Option("--repeats")] = 2,
    cases: Annotated[str, typer.Option(
        "--cases", help="Comma-separated cases (default: all; see benchmarks/engine.py).")] = "",
) -> None:
    """Images/s of the engine against plain PyTorch inference of the same model (ratios)."""
    require_choice("--model", model, BENCH_MODELS)
    names = [c.strip() for c in cases.split(",") if c.strip()] or list(CASES)
    for name in names:
        require_choice("--cases item", name, CASES)
    run_benchmark(model=model, batch_size=batch_size, repeats=repeats,
                  cases=tuple(CASES[n] for n in names), console=_console())


# ---- reproduce NAME, calibrate NAME: built from the declarations -------------------------------
# Each scheme's study and calibration declare their own options and defaults (StudySpec,
# CalibrationSpec in its package, listed by the scheme registry); `reproduce all` is the one
# study that belongs to no scheme. The commands below hold no per-study code.
STUDIES: dict[str, StudySpec] = {**studies(), all_study.STUDY.name: all_study.STUDY}
CALIBRATIONS: dict[str, CalibrationSpec] = calibrations()
CALIBRATION_DATA_HELP = ("'default': images 5000.. of the embedded Fashion-MNIST test file "
                         "(the studies test on 0..4999); else a data set name whose train "
                         "split is used.")


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
    own; its values checked (`Option.check`), the spec run, its text printed."""
    defaults: dict[str, Any] = {"out": out, "model": "default", "data": "default",
                                "hw": "isaac", "batch_size": 250, "device": "cpu",
                                **spec.defaults}
    common = [
        _parameter("out", Annotated[Path, typer.Option("--out", help="Output directory.")
                                    if isinstance(spec, StudySpec) else
                                    typer.Option("--out", help="JSON file written.")],
                   defaults["out"]),
        _parameter("model", ModelOpt, defaults["model"]),
        *([_parameter("data", Annotated[str, typer.Option("--data", help=CALIBRATION_DATA_HELP)],
                      defaults["data"])] if data else []),
        _parameter("hw", HwOpt, defaults["hw"]),
        _parameter("set_", SetOpt, None),
        _parameter("batch_size", BatchOpt, defaults["batch_size"]),
        _parameter("device", DeviceOpt, defaults["device"]),
    ]
    own = [_declared(opt) for opt in spec.options]

    def command(**values: Any) -> None:
        checked = {opt.keyword: opt.check(values[opt.key]) for opt in spec.options}
        console = _console()
        args = RunArgs(out=values["out"], model=values["model"], hw=values["hw"],
                       overrides=parse_overrides(values["set_"]),
                       batch_size=values["batch_size"], device=values["device"],
                       progress=console.print, data=values.get("data", "default"))
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
    model: ModelOpt = "default",
    data: Annotated[str, typer.Option("--data", help="Data set of the checkpoint.")] = "default",
    hw: HwOpt = "isaac",
    set_: SetOpt = None,
    method: Annotated[str, typer.Option(
        "--method", help="ou-structured (blocks of one row x an OU column group's channels), "
        "unstructured, or pattern (3x3 kernels keep --k weights in one of --max-patterns "
        "patterns per layer, plus whole-kernel pruning).")] = "ou-structured",
    sparsity: Annotated[float, typer.Option("--sparsity", help="Target zero fraction.")] = 0.5,
    steps: Annotated[int, typer.Option("--steps", help="Gradual pruning steps.")] = 3,
    epochs: Annotated[int, typer.Option("--epochs", help="Fine-tuning epochs per step.")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="Fine-tuning learning rate.")] = 0.01,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint stem.")] = Path(
        "out/ckpt/pruned"),
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    split: Annotated[str, typer.Option(
        "--split", help="Fine-tuning split: train (or test, for smoke runs).")] = "train",
    k: Annotated[int, typer.Option(
        "--k", help="pattern: weights kept per 3x3 kernel (1..9).")] = 4,
    max_patterns: Annotated[str, typer.Option(
        "--max-patterns", help="pattern: patterns per layer at most: one number, or one per "
        "3x3 conv layer, comma-separated (the pattern paper's VGG-16: "
        "2,2,2,6,8,8,8,6,5,4,6,6,8).")] = "8",
    half: Annotated[bool, typer.Option(
        "--half", help="Store float16 weights (accuracy measured after rounding).")] = False,
    final_epochs: Annotated[int, typer.Option(
        "--final-epochs", help="Extra fine-tuning epochs at the final sparsity.")] = 0,
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32, or bf16 (autocast; weights stay float32).")] = "fp32",
) -> None:
    """Prune a checkpoint (magnitude or pattern) with fine-tuning; writes it and a table."""
    require_choice("--method", method, METHODS)
    require_choice("--precision", precision, ("fp32", "bf16"))
    try:
        counts = [int(v) for v in max_patterns.split(",")]
    except ValueError:
        raise SparsexbarError(f"--max-patterns must be integers separated by commas, got "
                              f"'{max_patterns}'") from None
    patterns: int | list[int] = counts[0] if len(counts) == 1 else counts
    if final_epochs < 0:
        raise SparsexbarError(f"--final-epochs must be >= 0, got {final_epochs}")
    if method == "pattern":
        check_pattern_args(k, patterns, sparsity)
    config = load_config(hw, parse_overrides(set_))
    res = prune_command(model, data, config, sparsity, method, steps, epochs, out, lr=lr,
                        limit=limit, seed=seed, tune_split=split, k=k, max_patterns=patterns,
                        half=half, final_epochs=final_epochs, precision=precision)
    typer.echo(res["markdown"].rstrip())
    typer.echo(f"top-1 {res['top1_before']:.4f} -> {res['top1_after']:.4f}; wrote "
               f"{res['checkpoint']}, {res['table_path']}")


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
        "--workers", help="Points run at once (default: the CPUs; ray: the cluster's).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="cpu or cuda for every point (overrides the file).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the points and which are done; run nothing.")] = False,
) -> None:
    """Run a design-space sweep: one simulate() per point, rows in a Parquet data set; a
    rerun skips the points already there."""
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
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    task: Any = None

    def show(report: Any, row: dict[str, Any] | None) -> None:
        nonlocal task
        if task is None:
            console.print(f"sweep {spec.name}: {report.total} points, {report.skipped} already "
                          f"in {target}, {report.to_run} to run ({backend})")
            task = progress.add_task("points", total=report.to_run)
        if row is not None and row["status"] != "ok":
            progress.console.print(f"failed {row['key'][:12]} ({row['model']}, "
                                   f"{row['scheme']}): {row['error']}")
        progress.update(task, completed=report.done,
                        description=f"ok {report.ok} failed {report.failed}"
                        + (f" crashed {len(report.crashed)}" if report.crashed else ""))

    with progress:
        report = run_sweep(spec, target, backend=backend, workers=workers, address=address,
                           device=device, progress=show)
    console.print(f"{report.ok} ok, {report.failed} failed (recorded), {report.skipped} skipped "
                  f"(already done), {len(report.crashed)} crashed in {report.wall_s:.1f} s; "
                  f"results in {target}/results; next: sparsexbar plot {target}")
    for key, message in report.crashed:
        console.print(f"crashed {key[:12]} (not recorded; a rerun retries it): {message}")
    if report.crashed:
        raise typer.Exit(1)


@app.command("plot")
def plot_command(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory (sparsexbar sweep --out).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where the PNGs and summary.csv go; default the sweep directory.")] = None,
) -> None:
    """Pareto plots (energy vs top-1, area vs throughput) and a summary table of a sweep."""
    if not sweep_dir.is_dir():
        raise SparsexbarError(f"sweep directory not found: {sweep_dir}")
    summary = summarize(sweep_dir, out)
    console = _console()
    console.print(summary_table(summary, f"sweep {sweep_dir} ({len(summary['rows'])} points)"))
    for line in failures(summary):
        console.print(f"failed {line}", markup=False, highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in summary["paths"]))


def main(argv: list[str] | None = None) -> None:
    """Entry point: SparsexbarError and usage errors -> one line on stderr, exit code 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="sparsexbar", standalone_mode=False)
    except SparsexbarError as exc:
        _fail(str(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("sparsexbar: aborted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except Exception as exc:
        # Usage errors of the (vendored) click layer carry exit_code 2 and format_message().
        if getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message"):
            _fail(" ".join(str(exc.format_message()).split()))
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


def _fail(message: str) -> None:
    print(f"sparsexbar: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
