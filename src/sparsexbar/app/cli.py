"""The `sparsexbar` command line. Bad input: one line on stderr naming the problem, exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..core.errors import SparsexbarError, require_choice

if TYPE_CHECKING:  # annotations only: the CLI imports torch and the pipeline lazily
    from torch import Tensor

    from ..core.config import HardwareConfig
    from ..core.frontend import QuantizedModel

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Bit-accurate simulator of sparsity-exploiting RRAM crossbar accelerators.")

HwOpt = Annotated[str, typer.Option("--hw", help="Preset name or a YAML/JSON config file.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config key, e.g. --set ou.rows=9 (repeatable).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Run only the first N images.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
ModelOpt = Annotated[str, typer.Option(
    "--model", help="'default' (shipped VGG-8), a zoo name, a checkpoint or module:factory.")]
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
    from ..schemes import get_scheme
    from .report import file_label

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
    from ..core.config import load_config
    from ..core.frontend import quantize_model
    from ..simulate import resolve_data, resolve_model, simulate

    config = load_config(hw, overrides)
    labels = _scheme_labels(schemes)
    batches = resolve_data(data, limit)
    net, model_name = resolve_model(model, int(batches.images.shape[1]),
                                    max(int(batches.labels.max()) + 1, 10),
                                    int(batches.images.shape[-1]))
    qmodel = quantize_model(net, batches.images[:256], config.numbers.weight_bits,
                            config.numbers.input_bits)
    results: list[dict[str, Any]] = []
    for name, label in zip(schemes, labels, strict=True):
        with _Bar(f"{name:>10}", console) as bar:
            res = simulate(net, batches, config, name, batch_size=batch_size, device=device,
                           progress=bar, qmodel=qmodel,
                           baseline_accuracy=results[0]["accuracy"] if results else None)
        res.data["model"] = model_name
        result = res.to_json()
        result["scheme"]["label"] = label
        results.append(result)
    return results


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
    from .report import print_tables, write_result

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
    from ..schemes import scheme_names

    names = [s.strip() for s in schemes.split(",") if s.strip()] or scheme_names()
    _compare(out, names, model, data, hw, parse_overrides(set_), limit, batch_size, device)


def _compare(out: Path, names: list[str], model: str, data: str, hw: str,
             overrides: dict[str, str], limit: int | None, batch_size: int, device: str) -> None:
    from .report import file_label, print_tables, scheme_label, write_comparison, write_result

    console = _console()
    results = _run_schemes(model, data, hw, names, overrides, limit, batch_size, device, console)
    paths = []
    for res in results:
        paths += write_result(out, res, prefix=f"{file_label(scheme_label(res))}_")
    paths += write_comparison(out, results)
    print_tables(results, console, per_layer=False)
    console.print(f"wrote {len(paths)} files to {out}/ (report.html, comparison.csv, "
                  "<scheme>_result.json, <scheme>_layers.csv, plots)")


DEMO_SCHEMES = ("dense", "sre", "pattern", "comprrae", "encoding", "combined")


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
    """Every scheme (dense, sre, pattern, comprrae, encoding, combined) on one model and the
    embedded Fashion-MNIST test split: one table, CSV, plots and report.html."""
    _compare(out, demo_schemes(), _demo_model(model), "default", hw, {}, limit, batch_size,
             device)


def demo_schemes() -> list[str]:
    """Every registered scheme, the published ones first and the combination last."""
    from ..schemes import SCHEMES

    names = [n for n in DEMO_SCHEMES if n in SCHEMES]
    names += [n for n in SCHEMES if n not in names]  # schemes added later run too
    names.append(names.pop(names.index("combined")))
    return names


def _demo_model(model: str) -> str:
    """'pattern' -> the shipped pattern-pruned checkpoint; anything else as given."""
    if model != "pattern":
        return model
    from ..training.checkpoint import shipped_pattern_model_path

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
    from ..core.config import PRESET_BUILDERS, preset

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
) -> None:
    """Train a zoo model; writes <out>.safetensors and <out>.json."""
    from ..training.train import train_command

    if epochs <= 0:
        raise SparsexbarError(f"--epochs must be positive, got {epochs}")
    if input_size is not None and input_size < 4:
        raise SparsexbarError(f"--input-size must be >= 4, got {input_size}")
    metrics = train_command(model, data, epochs, str(out), batch_size=batch_size, seed=seed,
                            limit=limit, lr=lr, input_size=input_size, precision=precision)
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
    from .bench import BENCH_MODELS, CASES, run_benchmark

    require_choice("--model", model, BENCH_MODELS)
    names = [c.strip() for c in cases.split(",") if c.strip()] or list(CASES)
    for name in names:
        require_choice("--cases item", name, CASES)
    run_benchmark(model=model, batch_size=batch_size, repeats=repeats,
                  cases=tuple(CASES[n] for n in names), console=_console())


def _calibration_setup(model: str, data: str, hw: str, set_: list[str] | None, images: int
                       ) -> tuple[HardwareConfig, QuantizedModel, Tensor, Tensor]:
    """The calibrate commands' hardware, calibration images and labels ('default': images
    5000.. of the embedded Fashion-MNIST test file, which the studies do not test on; else
    the named data set's train split) and the model quantized on the first 256 of them."""
    from ..core.config import load_config
    from ..core.frontend import quantize_model
    from ..simulate import resolve_data, resolve_model
    from ..studies.setup import fmnist_split

    config = load_config(hw, parse_overrides(set_))
    if data == "default":
        x, y = fmnist_split("calibration", images)
    else:
        from ..training.data import load_dataset

        batches = resolve_data(load_dataset(data, "train"), images)
        x, y = batches.images, batches.labels
    net, _ = resolve_model(model, int(x.shape[1]), max(int(y.max()) + 1, 10), int(x.shape[-1]))
    qmodel = quantize_model(net, x[:256], config.numbers.weight_bits, config.numbers.input_bits)
    return config, qmodel, x, y


@app.command("calibrate-comprrae")
def calibrate_comprrae(
    out: Annotated[Path, typer.Option("--out", help="JSON file for the alphas.")] = Path(
        "out/comprrae/alphas.json"),
    model: ModelOpt = "default",
    data: Annotated[str, typer.Option(
        "--data", help="'default': images 5000.. of the embedded Fashion-MNIST test file (the "
        "studies test on 0..4999); else a data set name whose train split is used.")] = "default",
    hw: HwOpt = "isaac",
    set_: SetOpt = None,
    budget: Annotated[float, typer.Option("--budget", help="Top-1 loss allowed, points.")] = 0.2,
    images: Annotated[int, typer.Option("--images", help="Calibration images.")] = 500,
    candidates: Annotated[str | None, typer.Option(
        "--candidates", help="Comma-separated values tried per layer (default alpha: "
        "3.2,1.6,0.8,0.4,0.2,0.1; beta: 0.5,0.25,0.125,0.0625,0.03125).")] = None,
    batch_size: BatchOpt = 250,
    device: DeviceOpt = "cpu",
    estimator: Annotated[str, typer.Option(
        "--estimator", help="alpha (adaptive termination) or beta (predictive negative "
        "detection; measures the remaining-bit means too).")] = "alpha",
    criterion: Annotated[str, typer.Option(
        "--criterion", help="flips: images whose top-1 class changes vs the exact network "
        "(at most budget points of them); top1: the top-1 drop.")] = "flips",
    bounds: Annotated[str, typer.Option(
        "--bounds", help="comprrae bounds the parameters are chosen with: output or "
        "slice.")] = "output",
) -> None:
    """Pick per-layer comprrae alphas or betas for a top-1 budget on a calibration split; use
    the file with --scheme comprrae:calibration=FILE."""
    import json

    from ..core.io import atomic_write_text
    from ..schemes.comprrae import BOUNDS
    from ..schemes.comprrae.calibration import CRITERIA, ESTIMATORS, calibrate_comprrae

    if images <= 0:
        raise SparsexbarError(f"--images must be positive, got {images}")
    if budget < 0:
        raise SparsexbarError(f"--budget must be >= 0 points, got {budget}")
    require_choice("--estimator", estimator, ESTIMATORS)
    require_choice("--criterion", criterion, CRITERIA)
    require_choice("--bounds", bounds, BOUNDS)
    alphas: list[float] | None = None
    if candidates is not None:
        try:
            alphas = [float(a) for a in candidates.split(",") if a.strip()]
        except ValueError:
            raise SparsexbarError(f"--candidates must be numbers, got '{candidates}'") from None
        top = 1.0 if estimator == "beta" else float("inf")
        if not alphas or any(not 0 <= a <= top for a in alphas):
            raise SparsexbarError(f"--candidates must be numbers >= 0"
                                  f"{' and <= 1 for beta' if estimator == 'beta' else ''}, "
                                  f"got '{candidates}'")
    config, qmodel, x, y = _calibration_setup(model, data, hw, set_, images)
    console = _console()
    cal = calibrate_comprrae(qmodel, config, x, y, budget, estimator, alphas, criterion,
                             batch_size, device, progress=console.print, bounds=bounds)
    atomic_write_text(out, json.dumps(cal.to_json(), indent=2))
    console.print(f"{estimator}s: {cal.alphas if estimator == 'alpha' else cal.betas}")
    console.print(f"top-1 {100 * cal.top1:.2f}% vs exact {100 * cal.exact_top1:.2f}% on "
                  f"{cal.images} calibration images ({cal.flips} changed class); wrote {out}")


@app.command("calibrate-encoding")
def calibrate_encoding(
    out: Annotated[Path, typer.Option("--out", help="JSON file for the per-layer bits.")] = Path(
        "out/encoding/calibration.json"),
    model: ModelOpt = "default",
    data: Annotated[str, typer.Option(
        "--data", help="'default': images 5000.. of the embedded Fashion-MNIST test file (the "
        "studies test on 0..4999); else a data set name whose train split is used.")] = "default",
    hw: HwOpt = "isaac",
    set_: SetOpt = None,
    scheme: Annotated[str, typer.Option(
        "--scheme", help="Encoding spec whose ADC is calibrated, e.g. encoding or "
        "encoding:input=none:weight=none:skip=off.")] = "encoding",
    budget: Annotated[float, typer.Option("--budget", help="Top-1 loss allowed, points.")] = 0.5,
    images: Annotated[int, typer.Option("--images", help="Calibration images.")] = 200,
    min_bits: Annotated[int, typer.Option("--min-bits", help="Lowest ADC bits tried.")] = 3,
    precision: Annotated[bool, typer.Option(
        "--precision/--no-precision", help="First calibrate per-layer dynamic precision "
        "within half the budget.")] = False,
    batch_size: BatchOpt = 250,
    device: DeviceOpt = "cpu",
) -> None:
    """Pick per-layer ADC bits (and optionally dynamic precision) of the encoding scheme for a
    top-1 budget on a calibration split; use with --scheme encoding:adc_bits=FILE."""
    import json

    from ..core.io import atomic_write_text
    from ..schemes.encoding.calibration import calibrate_adc_bits, calibrate_precision, parse_scheme

    if images <= 0:
        raise SparsexbarError(f"--images must be positive, got {images}")
    if budget < 0:
        raise SparsexbarError(f"--budget must be >= 0 points, got {budget}")
    if not 1 <= min_bits <= 16:
        raise SparsexbarError(f"--min-bits must be in 1..16, got {min_bits}")
    base = parse_scheme(scheme)
    config, qmodel, x, y = _calibration_setup(model, data, hw, set_, images)
    console = _console()
    saved: dict[str, Any] = {}
    if precision:
        chosen, p_top1, p_trials = calibrate_precision(
            qmodel, config, x, y, base, budget / 2, batch_size=batch_size, device=device,
            progress=console.print)
        base = base.variant(precision=chosen)
        saved = {"precision": chosen, "precision_top1": p_top1, "precision_trials": p_trials}
    cal = calibrate_adc_bits(qmodel, config, x, y, base, budget, min_bits,
                             batch_size=batch_size, device=device, progress=console.print)
    atomic_write_text(out, json.dumps({**cal.to_json(), **saved}, indent=2))
    console.print(f"ADC bits: {cal.adc_bits} (lossless: {cal.lossless_bits})")
    console.print(f"top-1 {100 * cal.top1:.2f}% vs exact {100 * cal.reference_top1:.2f}% on "
                  f"{cal.images} calibration images; wrote {out}")


@app.command()
def reproduce(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(
        help="Which study: comprrae, sre, pattern, encoding or all.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path(
        "out/reproduce"),
    model: ModelOpt = "default",
    hw: HwOpt = "isaac",
    set_: SetOpt = None,
    test_images: Annotated[int | None, typer.Option(
        "--test-images", help="Images of the test half (0..4999) to run (default 1000; "
        "encoding: 500; pattern: 200).")] = None,
    calibration_images: Annotated[int | None, typer.Option(
        "--calibration-images", help="Images of the calibration half (5000..) for alphas, "
        "betas or bits (default 1000; encoding: 200).")] = None,
    budget: Annotated[float | None, typer.Option(
        "--budget", help="Top-1 loss allowed, points (default 0.2; encoding: 0.5).")] = None,
    batch_size: BatchOpt = 250,
    device: DeviceOpt = "cpu",
    data: Annotated[str, typer.Option(
        "--data", help="pattern: 'default' (embedded Fashion-MNIST test split), fashion-mnist "
        "or a CIFAR folder (cifar-10-batches-py).")] = "default",
    k: Annotated[int, typer.Option("--k", help="pattern: weights kept per 3x3 kernel.")] = 4,
    max_patterns: Annotated[int, typer.Option(
        "--max-patterns", help="pattern: patterns per layer at most.")] = 8,
    sparsity: Annotated[float, typer.Option(
        "--sparsity", help="pattern: target weight sparsity of the 3x3 convs.")] = 0.8,
    epochs: Annotated[int, typer.Option(
        "--epochs", help="pattern: fine-tuning epochs per pruning step.")] = 1,
    train_epochs: Annotated[int, typer.Option(
        "--train-epochs", help="pattern with a zoo --model: train it first (0: untrained, "
        "hardware figures only).")] = 0,
    deviation: Annotated[bool, typer.Option(
        "--deviation/--no-deviation", help="sre: also run the accumulated-deviation study "
        "(top-1 vs rows activated at once; table and plot).")] = True,
    deviation_images: Annotated[int, typer.Option(
        "--deviation-images", help="sre: test images of the deviation study (1..5000, at "
        "most --test-images).")] = 64,
    sparsities: Annotated[str, typer.Option(
        "--sparsities", help="all: the SRE study's OU-structured sparsities, comma-separated."
    )] = "0,0.7",
    tune_images: Annotated[int, typer.Option(
        "--tune-images", help="all: fine-tuning images per SRE pruning step.")] = 1000,
    pattern_images: Annotated[int, typer.Option(
        "--pattern-images", help="all: simulated images of the pattern study.")] = 50,
) -> None:
    """Reproduce a published study beside its figures (tables, JSON, plot); `all`: every
    study in one report with the combined scheme's row beside ours."""
    if name == "all":
        _reproduce_all(ctx, out, model, hw, set_, test_images, calibration_images, batch_size,
                       device, deviation, sparsities, tune_images, pattern_images)
        return
    if name == "pattern":  # the pattern-mapping table beside the published VGG16 figures
        from ..schemes.pattern.study import reproduce_markdown as pattern_markdown
        from ..schemes.pattern.study import reproduce_pattern

        def given(option: str) -> bool:
            source = ctx.get_parameter_source(option)
            return source is not None and source.name != "DEFAULT"

        # This study's own defaults: 200 simulated images, the paper's hardware.
        images = 200 if test_images is None else test_images
        pattern_hw = hw if given("hw") else "pattern-nvmsa"
        if images < 1:
            raise SparsexbarError(f"--test-images must be >= 1, got {images}")
        if epochs < 0 or train_epochs < 0:
            raise SparsexbarError("--epochs and --train-epochs must be >= 0")
        pattern_console = _console()
        pattern_report = reproduce_pattern(
            out, model, data, pattern_hw, parse_overrides(set_), images, k, max_patterns,
            sparsity, epochs=epochs, train_epochs=train_epochs, batch_size=min(batch_size, 100),
            device=device, progress=pattern_console.print)
        pattern_console.print(pattern_markdown(pattern_report))
        pattern_console.print(f"wrote {out}/pattern_reproduce.json, pattern_reproduce.md")
        return
    if name == "sre":  # accuracy / speedup / energy saving at several sparsities
        from ..schemes.sre.study import reproduce_markdown as sre_markdown
        from ..schemes.sre.study import reproduce_sre

        if deviation and not 0 < deviation_images <= 5000:
            raise SparsexbarError(f"--deviation-images must be in 1..5000, got {deviation_images}")
        sre_console = _console()
        sre_report = reproduce_sre(out, model, hw, parse_overrides(set_),
                                   test_images=min(test_images or 1000, 5000),
                                   batch_size=batch_size, progress=sre_console.print,
                                   deviation=deviation, deviation_images=deviation_images)
        sre_console.print(sre_markdown(sre_report))
        sre_console.print(f"wrote {out}/sre_reproduce.json, sre_reproduce.md"
                          + (", deviation_study.json, .md, .png" if deviation else ""))
        return
    if name == "encoding":  # every technique alone and combined vs dense
        from ..schemes.encoding.study import reproduce_encoding
        from ..schemes.encoding.study import reproduce_markdown as encoding_markdown

        enc_test, enc_cal, enc_budget = _study_sizes(test_images, calibration_images, budget,
                                                     (500, 200, 0.5))
        enc_console = _console()
        enc_report = reproduce_encoding(out, model, hw, parse_overrides(set_), enc_test,
                                        enc_cal, enc_budget, batch_size=batch_size,
                                        device=device, progress=enc_console.print)
        enc_console.print(encoding_markdown(enc_report))
        enc_console.print(f"wrote {out}/encoding_reproduce.json, encoding_reproduce.md, "
                          "encoding_efficiency.png")
        return
    if name != "comprrae":
        raise SparsexbarError(
            f"unknown study '{name}' (known: comprrae, sre, pattern, encoding, all)")
    comp_test, comp_cal, comp_budget = _study_sizes(test_images, calibration_images, budget,
                                                    (1000, 1000, 0.2))
    from ..schemes.comprrae.study import reproduce_comprrae, reproduce_markdown

    console = _console()
    report = reproduce_comprrae(out, model, hw, parse_overrides(set_), comp_test,
                                comp_cal, comp_budget, batch_size=batch_size,
                                device=device, progress=console.print)
    console.print(reproduce_markdown(report))
    console.print(f"wrote {out}/comprrae_reproduce.json, comprrae_reproduce.md, "
                  "comprrae_tradeoff.png")


def _study_sizes(test_images: int | None, calibration_images: int | None,
                 budget: float | None, defaults: tuple[int, int, float]
                 ) -> tuple[int, int, float]:
    """A study's test and calibration image counts and accuracy budget (points): the given
    values, else the study's defaults; counts in 1..5000 (each half of the split), budget >= 0."""
    test = defaults[0] if test_images is None else test_images
    cal = defaults[1] if calibration_images is None else calibration_images
    points = defaults[2] if budget is None else budget
    if not 0 < test <= 5000 or not 0 < cal <= 5000:
        raise SparsexbarError("--test-images and --calibration-images must be in 1..5000")
    if points < 0:
        raise SparsexbarError(f"--budget must be >= 0 points, got {points}")
    return test, cal, points


def _reproduce_all(ctx: typer.Context, out: Path, model: str, hw: str, set_: list[str] | None,
                   test_images: int | None, calibration_images: int | None, batch_size: int,
                   device: str, deviation: bool, sparsities: str, tune_images: int,
                   pattern_images: int) -> None:
    """`reproduce all`: modest defaults (a few minutes) unless the options are given."""
    from ..studies.all import report_markdown, reproduce_all

    def given(option: str) -> bool:
        source = ctx.get_parameter_source(option)
        return source is not None and source.name != "DEFAULT"

    try:
        levels = [float(v) for v in sparsities.split(",") if v.strip()]
    except ValueError:
        raise SparsexbarError(f"--sparsities must be numbers, got '{sparsities}'") from None
    if not levels or any(not 0 <= v < 1 for v in levels):
        raise SparsexbarError(f"--sparsities must be in [0, 1), got '{sparsities}'")
    images, calibration, _ = _study_sizes(test_images, calibration_images, None, (200, 250, 0.0))
    if tune_images < 1 or pattern_images < 1:
        raise SparsexbarError("--tune-images and --pattern-images must be >= 1")
    console = _console()
    report = reproduce_all(out, model, hw, parse_overrides(set_), test_images=images,
                           sre_sparsities=levels, sre_tune_images=tune_images,
                           pattern_images=pattern_images, calibration_images=calibration,
                           deviation=deviation and given("deviation"), batch_size=batch_size,
                           device=device, progress=console.print)
    console.print(report_markdown(report))
    console.print(f"wrote {out}/all_reproduce.json, .md, .html, .png and each study under "
                  f"{out}/sre, {out}/pattern, {out}/comprrae")


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
    from ..core.config import load_config
    from ..training.prune import METHODS, check_pattern_args, prune_command

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
    from .sweep import done_keys, expand_points, load_sweep, run_sweep

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
    from .sweep import failures, summarize, summary_table

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
