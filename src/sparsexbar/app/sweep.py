"""Design-space sweeps: models x schemes x hardware points, one `simulate()` run per point.

A sweep file (YAML, see docs/sweeps.md) names the model(s), the data, the base hardware and the
scheme(s), and a `grid` of dotted config keys -> value lists (cartesian product) and/or a
`points` list of explicit override dicts. Each point is keyed by the sha256 of the canonical JSON
of everything that decides its result (model, data, limit, batch size, scheme and its resolved
parameters, the whole resolved hardware tree, the sparsexbar version). Its result row is written
atomically as `<out>/results/<key>.parquet`, so a killed sweep leaves only whole files and a
rerun skips every key already there. Points run on a local process pool (`local`) or as Ray
tasks (`ray`); the driver writes the rows either way, so both give the same table.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from .. import __version__
from ..core.config import HardwareConfig, load_config
from ..core.errors import ConfigError, SparsexbarError, require_choice
from ..core.io import atomic_write_bytes, atomic_write_text, atomic_write_with
from .report import json_safe

RESULTS_DIR = "results"
BACKENDS = ("local", "ray")

# Top-level keys of a sweep file.
SWEEP_FILE_KEYS = ("name", "model", "models", "data", "limit", "hw", "set", "scheme", "schemes",
                   "grid", "points", "batch_size", "device")

# Columns that describe how a row was computed (where, when, how long), not what it says: they
# differ between two runs of the same point and are left out when tables are compared.
RUN_INFO_COLUMNS = ("wall_s", "finished_at", "worker", "backend")

# Columns before the point's dotted parameters, in order, with their Arrow types.
HEAD_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("key", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("model", pa.string()), ("data", pa.string()), ("limit", pa.int64()),
    ("batch_size", pa.int64()), ("scheme", pa.string()), ("scheme_params", pa.string()),
    ("hw", pa.string()),
]
# Columns after the parameters: the result's numbers (null for a failed point), then its record.
METRIC_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("dataset", pa.string()), ("num_images", pa.int64()),
    ("top1", pa.float64()), ("float_top1", pa.float64()), ("quantized_top1", pa.float64()),
    ("ou_activations", pa.int64()), ("adc_conversions", pa.int64()), ("cycles", pa.int64()),
    ("arrays", pa.int64()), ("clipping_layers", pa.int64()),
    ("energy_uj_per_image", pa.float64()), ("dense_energy_uj_per_image", pa.float64()),
    ("latency_us", pa.float64()), ("images_per_s", pa.float64()),
    ("images_per_s_pipelined", pa.float64()), ("area_mm2", pa.float64()),
    ("dense_area_mm2", pa.float64()),
    ("speedup", pa.float64()), ("energy_efficiency", pa.float64()),
    ("rram_adc_dac_energy_efficiency", pa.float64()), ("area_efficiency", pa.float64()),
    ("total_area_efficiency", pa.float64()), ("adc_reduction", pa.float64()),
    ("ou_reduction", pa.float64()),
]
TAIL_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("version", pa.string()), ("hardware_json", pa.string()), ("result_json", pa.string()),
    ("wall_s", pa.float64()), ("finished_at", pa.string()), ("worker", pa.string()),
    ("backend", pa.string()),
]
FIXED_COLUMNS = dict(HEAD_COLUMNS + METRIC_COLUMNS + TAIL_COLUMNS)


class SweepFileError(SparsexbarError):
    """A sweep file that cannot be used: unreadable, unknown key, wrong type, empty grid."""


# ---- the sweep file ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SchemeSpec:
    """One scheme of the sweep: its name, the arguments given in the file, its resolved
    parameters (`Scheme.parameters()`, defaults included: what the key hashes)."""

    name: str
    arguments: dict[str, Any]
    parameters: dict[str, Any]


@dataclass
class SweepSpec:
    """A validated sweep file. `grid` and `points` hold dotted hardware overrides."""

    path: Path
    name: str
    models: list[str]
    data: str
    limit: int | None
    hw: str  # as written
    hw_source: str  # preset name, or the config file's path
    base_overrides: dict[str, Any]
    schemes: list[SchemeSpec]
    grid: dict[str, list[Any]]
    points: list[dict[str, Any]]
    batch_size: int
    device: str

    def hardware_points(self) -> list[dict[str, Any]]:
        """The override dicts: the grid's cartesian product (in file order), then `points`."""
        combos: list[dict[str, Any]] = []
        if self.grid:
            keys = list(self.grid)
            combos = [dict(zip(keys, values, strict=True))
                      for values in itertools.product(*(self.grid[k] for k in keys))]
        combos += [dict(p) for p in self.points]
        return combos or [{}]


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; any problem raises SweepFileError naming it."""
    p = Path(path)
    if not p.is_file():
        raise SweepFileError(f"sweep file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SweepFileError(f"cannot parse sweep file {p}: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise SweepFileError(f"sweep file {p} is not a mapping of keys to values")
    return parse_sweep(raw, p)


def parse_sweep(raw: Mapping[str, Any], path: Path) -> SweepSpec:
    """Validate the parsed mapping of sweep file `path` (relative paths are relative to it)."""
    where = path.name
    unknown = [k for k in raw if k not in SWEEP_FILE_KEYS]
    if unknown:
        raise SweepFileError(f"{where}: unknown key '{unknown[0]}' (known: "
                             f"{', '.join(SWEEP_FILE_KEYS)})")
    models = _one_or_list(raw, "model", "models", where, default=["default"])
    for m in models:
        if not isinstance(m, str) or not m.strip():
            raise SweepFileError(f"{where}: models must be strings, got {m!r}")
        _refuse_untrained(m, path.parent, where)
    data = _typed(raw, "data", str, where, "default")
    limit = raw.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise SweepFileError(f"{where}: limit must be a positive integer or null, got {limit!r}")
    batch_size = _typed(raw, "batch_size", int, where, 256)
    if isinstance(batch_size, bool) or batch_size <= 0:
        raise SweepFileError(f"{where}: batch_size must be a positive integer, got {batch_size!r}")
    device = _typed(raw, "device", str, where, "cpu")
    hw = _typed(raw, "hw", str, where, "isaac")
    hw_source = str(_local_path(hw, path.parent)) if hw.lower().endswith(
        (".yaml", ".yml", ".json")) else hw
    base_overrides = _overrides(raw.get("set", {}), f"{where}: set", allow_empty=True)
    try:
        base = load_config(hw_source, base_overrides)
    except ConfigError as exc:
        raise SweepFileError(f"{where}: base hardware (hw + set): {exc}") from None
    tree = base.to_dict()
    grid = _grid(raw, where)
    points_raw = raw.get("points", [])
    if "points" in raw and (not isinstance(points_raw, list) or not points_raw):
        raise SweepFileError(f"{where}: points must be a non-empty list of override mappings")
    points = [_overrides(pt, f"{where}: points[{i}]", allow_empty=False)
              for i, pt in enumerate(points_raw)]
    for key in [*base_overrides, *grid, *(k for pt in points for k in pt)]:
        _check_leaf(tree, key, where)
    schemes = [_scheme_spec(s, where) for s in
               _one_or_list(raw, "scheme", "schemes", where, default=["dense"])]
    name = _typed(raw, "name", str, where, path.stem)
    return SweepSpec(path=path, name=name, models=models, data=data, limit=limit, hw=hw,
                     hw_source=hw_source, base_overrides=base_overrides, schemes=schemes,
                     grid=grid, points=points, batch_size=batch_size, device=device)


def _typed(raw: Mapping[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    value = raw.get(key, default)
    if not isinstance(value, kind):
        raise SweepFileError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
    return value


def _one_or_list(raw: Mapping[str, Any], one: str, many: str, where: str,
                 default: list[Any]) -> list[Any]:
    if one in raw and many in raw:
        raise SweepFileError(f"{where}: give '{one}' or '{many}', not both")
    value = raw.get(many, raw.get(one, default))
    items = value if isinstance(value, list) else [value]
    if not items:
        raise SweepFileError(f"{where}: {many} is an empty list")
    return items


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _overrides(value: Any, where: str, allow_empty: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SweepFileError(f"{where} must be a mapping of config keys to values")
    if not value and not allow_empty:
        raise SweepFileError(f"{where} must be a non-empty mapping of config keys to values")
    for key, val in value.items():
        if not isinstance(key, str):
            raise SweepFileError(f"{where}: key {key!r} is not a dotted config key")
        if not _is_scalar(val):
            raise SweepFileError(f"{where}: {key} must be a single value, got {val!r}")
    return dict(value)


def _grid(raw: Mapping[str, Any], where: str) -> dict[str, list[Any]]:
    if "grid" not in raw:
        return {}
    grid = raw["grid"]
    if not isinstance(grid, dict) or not grid:
        raise SweepFileError(f"{where}: grid is empty (give dotted config keys -> value lists)")
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(key, str):
            raise SweepFileError(f"{where}: grid key {key!r} is not a dotted config key")
        if not isinstance(values, list) or not values:
            raise SweepFileError(f"{where}: grid.{key} must be a non-empty list of values, "
                                 f"got {values!r}")
        for v in values:
            if not _is_scalar(v):
                raise SweepFileError(f"{where}: grid.{key} values must be single values, "
                                     f"got {v!r}")
        out[key] = list(values)
    return out


def _check_leaf(tree: Mapping[str, Any], key: str, where: str) -> None:
    node: Any = tree
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else ""
            at = ".".join(key.split(".")[: i + 1])
            raise SweepFileError(f"{where}: unknown config key '{key}' ('{at}' not in: {known})")
        node = node[part]
    if isinstance(node, dict):
        raise SweepFileError(f"{where}: '{key}' is a section, not a field (e.g. "
                             f"{key}.{next(iter(node))})")


def _scheme_spec(item: Any, where: str) -> SchemeSpec:
    """A scheme name, or a mapping {name: ..., <constructor arguments>}."""
    from ..schemes import SCHEMES, Scheme

    if isinstance(item, str):
        name, args = item, {}
    elif isinstance(item, dict) and isinstance(item.get("name"), str):
        name, args = item["name"], {k: v for k, v in item.items() if k != "name"}
    else:
        raise SweepFileError(f"{where}: a scheme is a name or a mapping with 'name', got {item!r}")
    if name not in SCHEMES:
        raise SweepFileError(f"{where}: unknown scheme '{name}' (known: {', '.join(SCHEMES)})")
    factory: Callable[..., Scheme] = SCHEMES[name]
    try:
        scheme = factory(**args)
    except TypeError as exc:
        raise SweepFileError(f"{where}: bad arguments for scheme '{name}': {exc}") from None
    except SparsexbarError as exc:
        raise SweepFileError(f"{where}: scheme '{name}': {exc}") from None
    return SchemeSpec(name, dict(args), _jsonable(scheme.parameters()))


def _local_path(spec: str, base_dir: Path) -> Path:
    """A relative path is relative to the sweep file's directory."""
    p = Path(spec).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _model_file(spec: str, base_dir: Path) -> Path | None:
    """The checkpoint file a model spec names (relative to the sweep file), or None for
    'default' and module:factory. A stem with a .json beside it counts as that checkpoint."""
    if spec in ("default", "vgg8-fmnist"):
        return None
    p = _local_path(spec, base_dir)
    if p.suffix in (".safetensors", ".json") or p.exists():
        return p
    if p.with_name(p.name + ".json").is_file():
        return p.with_name(p.name + ".json")
    return None


def _refuse_untrained(spec: str, base_dir: Path, where: str) -> None:
    from ..training.zoo import MODELS

    if _model_file(spec, base_dir) is None and ":" not in spec and spec in MODELS:
        raise SweepFileError(
            f"{where}: model '{spec}' is an untrained zoo architecture (fresh random weights in "
            "every run, so a point's key would not identify its result); give 'default', a "
            "checkpoint or module:factory")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ---- points and keys --------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPoint:
    """One simulate() run of a sweep, ready to ship to a worker (plain, picklable values)."""

    key: str
    model: str  # as written in the sweep file
    model_source: str  # as handed to simulate() (a checkpoint as an absolute path)
    data: str
    data_source: str
    limit: int | None
    batch_size: int
    device: str
    scheme: SchemeSpec
    hw: str
    overrides: dict[str, Any]  # dotted key -> value as written (base `set`, then the point's)
    hardware: dict[str, Any] | None  # the resolved tree; None when the config is invalid
    parameters: dict[str, Any]  # every key the sweep varies -> this point's value
    config_error: str | None = None


def _leaf(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the same text for the same content, on any machine."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def point_key(payload: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a resolved point."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def _file_digest(paths: Sequence[Path]) -> str | None:
    h = hashlib.sha256()
    found = False
    for p in paths:
        if p.is_file():
            found = True
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest() if found else None


def _checkpoint_digest(path: Path) -> str | None:
    """sha256 of a checkpoint's .safetensors and .json, so new weights make new keys."""
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return _file_digest([stem.with_name(stem.name + ".json"),
                         stem.with_name(stem.name + ".safetensors")])


def expand_points(spec: SweepSpec) -> list[SweepPoint]:
    """Every point of the sweep, models x schemes x hardware points, duplicates (same key)
    removed. A hardware point that fails config validation becomes a point with `config_error`.
    """
    base_dir = spec.path.parent
    base = load_config(spec.hw_source)
    model_sources: dict[str, tuple[str, str | None]] = {}
    for m in spec.models:
        ckpt = _model_file(m, base_dir)
        model_sources[m] = (str(ckpt.resolve()), _checkpoint_digest(ckpt)) if ckpt else (m, None)
    data_path = _local_path(spec.data, base_dir)
    data_source = str(data_path.resolve()) if data_path.exists() else spec.data
    hardware_points = spec.hardware_points()
    swept = list(dict.fromkeys([*spec.base_overrides, *(k for p in hardware_points for k in p)]))
    base_tree = base.to_dict()
    resolved: list[tuple[dict[str, Any], dict[str, Any] | None, str | None, dict[str, Any]]] = []
    for point in hardware_points:
        overrides = {**spec.base_overrides, **point}
        try:
            tree: dict[str, Any] | None = base.with_overrides(overrides).to_dict()
            error = None
        except ConfigError as exc:
            tree, error = None, str(exc)
        # The value of every swept key: resolved (typed by the config) when valid, else the
        # value as written (or the base value for keys this point leaves alone).
        params = ({k: _leaf(tree, k) for k in swept} if tree is not None else
                  {k: overrides.get(k, _leaf(base_tree, k)) for k in swept})
        resolved.append((overrides, tree, error, params))
    points: dict[str, SweepPoint] = {}
    for model in spec.models:
        source, digest = model_sources[model]
        for scheme in spec.schemes:
            for overrides, tree, error, params in resolved:
                hardware_part: Any = tree if tree is not None else {
                    "invalid": {"base": base_tree, "overrides": overrides}}
                key = point_key({
                    "model": model, "model_digest": digest, "data": spec.data,
                    "limit": spec.limit, "batch_size": spec.batch_size,
                    "scheme": {"name": scheme.name, "parameters": scheme.parameters},
                    "hardware": hardware_part, "version": __version__,
                })
                points.setdefault(key, SweepPoint(
                    key=key, model=model, model_source=source, data=spec.data,
                    data_source=data_source, limit=spec.limit, batch_size=spec.batch_size,
                    device=spec.device, scheme=scheme, hw=spec.hw, overrides=overrides,
                    hardware=tree, parameters=params, config_error=error))
    return list(points.values())


# ---- one point: a row --------------------------------------------------------------------------
def _point_columns(point: SweepPoint) -> dict[str, Any]:
    return {
        "key": point.key, "model": point.model, "data": point.data, "limit": point.limit,
        "batch_size": point.batch_size, "scheme": point.scheme.name,
        "scheme_params": canonical_json(point.scheme.parameters), "hw": point.hw,
        **point.parameters,
    }


def failed_row(point: SweepPoint, error: str, wall_s: float = 0.0,
               worker: str = "driver") -> dict[str, Any]:
    """The row of a point whose run raised a user error (bad config, unsupported model...)."""
    return {
        **_point_columns(point), "status": "failed", "error": error, "version": __version__,
        "hardware_json": canonical_json(point.hardware) if point.hardware else None,
        "wall_s": wall_s, "finished_at": _now(), "worker": worker,
    }


def result_row(point: SweepPoint, result: Mapping[str, Any], wall_s: float,
               worker: str) -> dict[str, Any]:
    """The row of a finished point: its parameters and the result's headline numbers."""
    tot, dense, vs = result["totals"], result["dense_totals"], result["vs_dense"]
    n = int(result["num_images"])
    return {
        **_point_columns(point), "status": "ok", "error": None,
        "dataset": result["dataset"], "num_images": n,
        "top1": result["accuracy"]["top1"], "float_top1": result["accuracy"]["float_top1"],
        "quantized_top1": result["accuracy"]["quantized_top1"],
        "ou_activations": tot["events"]["ou_activations"],
        "adc_conversions": tot["events"]["adc_conversions"], "cycles": tot["cycles"],
        "arrays": tot["arrays"],
        "clipping_layers": sum(1 for lay in result["layers"] if lay["adc_can_clip"]),
        "energy_uj_per_image": tot["energy_pj"]["total"] / n * 1e-6,
        "dense_energy_uj_per_image": dense["energy_pj"]["total"] / n * 1e-6,
        "latency_us": tot["latency_s"] * 1e6, "images_per_s": tot["images_per_s"],
        "images_per_s_pipelined": tot["images_per_s_pipelined"],
        "area_mm2": tot["area_um2"]["total"] * 1e-6,
        "dense_area_mm2": dense["area_um2"]["total"] * 1e-6,
        "speedup": vs["speedup"], "energy_efficiency": vs["energy_efficiency"],
        "rram_adc_dac_energy_efficiency": vs["rram_adc_dac_energy_efficiency"],
        "area_efficiency": vs["area_efficiency"],
        "total_area_efficiency": vs["total_area_efficiency"],
        "adc_reduction": vs["computation_reduction"]["adc_conversions"],
        "ou_reduction": vs["computation_reduction"]["ou_activations"],
        "version": result["version"], "hardware_json": canonical_json(result["hardware"]),
        "result_json": canonical_json(json_safe(result)),
        "wall_s": wall_s, "finished_at": _now(), "worker": worker,
    }



def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class WorkerEnvironmentError(RuntimeError):
    """A worker cannot run a point for reasons of its own machine (no CUDA, the model or data
    files missing there): a crash, not a failed row, so a rerun retries the point."""


def check_device(device: str) -> None:
    """Refuse a device this machine cannot use (SparsexbarError)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise SparsexbarError(f"unsupported device '{device}' (cpu or cuda)") from None
    if kind not in ("cpu", "cuda"):
        raise SparsexbarError(f"unsupported device '{device}' (cpu or cuda)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SparsexbarError(f"device '{device}' requested but CUDA is not available here")


def load_inputs(point: SweepPoint) -> tuple[Any, Any]:
    """The point's model (nn.Module) and data (simulate.Batches), as simulate() resolves them."""
    from ..simulate import resolve_data, resolve_model

    batches = resolve_data(point.data_source, point.limit)
    net, _ = resolve_model(point.model_source, int(batches.images.shape[1]),
                           max(int(batches.labels.max()) + 1, 10), int(batches.images.shape[-1]))
    return net, batches


def run_point(point: SweepPoint) -> dict[str, Any]:
    """Run one point (in a worker): simulate() and its row.

    A user error of the point itself (its hardware, its scheme, a model the simulator cannot
    map: any SparsexbarError from simulate) gives a failed row. Not being able to load the
    model or data or use the device here raises WorkerEnvironmentError, and anything else
    propagates too: crashes, reported by the driver and not recorded.
    """
    import torch

    from ..schemes import SCHEMES, Scheme
    from ..simulate import simulate

    torch.set_num_threads(1)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    start = time.perf_counter()
    if point.config_error is not None or point.hardware is None:
        return failed_row(point, point.config_error or "invalid hardware", 0.0, worker)
    try:
        check_device(point.device)
        net, batches = load_inputs(point)
    except SparsexbarError as exc:
        raise WorkerEnvironmentError(f"on {worker}: {exc}") from None
    try:
        factory: Callable[..., Scheme] = SCHEMES[point.scheme.name]
        result = simulate(net, batches, hw=HardwareConfig.from_dict(point.hardware),
                          scheme=factory(**point.scheme.arguments), batch_size=point.batch_size,
                          device=point.device)
    except SparsexbarError as exc:
        return failed_row(point, str(exc), time.perf_counter() - start, worker)
    data = result.to_json()
    data["model"] = point.model
    return result_row(point, data, time.perf_counter() - start, worker)


# ---- the store -----------------------------------------------------------------------------------
def results_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / RESULTS_DIR


def done_keys(out_dir: str | Path) -> set[str]:
    """Keys of the points whose row file is there (whole files only: writes are atomic)."""
    folder = results_dir(out_dir)
    return {p.stem for p in folder.glob("*.parquet")} if folder.is_dir() else set()


def row_table(row: Mapping[str, Any]) -> pa.Table:
    """One row as an Arrow table: fixed columns with fixed types, parameters inferred."""
    columns: dict[str, pa.Array] = {}
    for name, kind in HEAD_COLUMNS:
        columns[name] = pa.array([row.get(name)], type=kind)
    for name in sorted(k for k in row if k not in FIXED_COLUMNS):
        columns[name] = pa.array([row[name]])
    for name, kind in METRIC_COLUMNS + TAIL_COLUMNS:
        columns[name] = pa.array([row.get(name)], type=kind)
    return pa.table(columns)


def write_row(out_dir: str | Path, row: Mapping[str, Any]) -> Path:
    """Write `results/<key>.parquet` atomically (temp file + fsync + rename)."""
    path = results_dir(out_dir) / f"{row['key']}.parquet"
    table = row_table(row)
    atomic_write_with(path, lambda f: pq.write_table(table, f))
    return path


def load_results(out_dir: str | Path) -> pa.Table:
    """Every row of a sweep directory as one Arrow table (one row per point, sorted by key).

    Parameter columns absent from some rows are null there; a parameter whose values have
    incompatible types across rows (e.g. a number and a string of a failed point) is read as
    strings.
    """
    folder = results_dir(out_dir)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise SparsexbarError(f"no sweep results in {out_dir} (expected {folder}/*.parquet)")
    tables = [pq.read_table(f) for f in files]
    kinds: dict[str, set[str]] = {}
    for t in tables:
        for f in t.schema:
            if not pa.types.is_null(f.type):
                kinds.setdefault(f.name, set()).add(_kind(f.type))
    mixed = {name for name, ks in kinds.items() if len(ks) > 1}
    if mixed:
        tables = [_cast_columns(t, mixed) for t in tables]
    table = pa.concat_tables(tables, promote_options="permissive")
    order = [n for n, _ in HEAD_COLUMNS] + sorted(
        n for n in table.column_names if n not in FIXED_COLUMNS) + [
        n for n, _ in METRIC_COLUMNS + TAIL_COLUMNS]
    table = _fill_parameters(table.select([n for n in order if n in table.column_names]))
    return table.sort_by("key")


def _fill_parameters(table: pa.Table) -> pa.Table:
    """A row from a sweep that did not vary a dotted key gets that key's value from its own
    resolved hardware (rows gathered from several sweeps then all have every parameter)."""
    trees = [json.loads(t) if t else None for t in table["hardware_json"].to_pylist()]
    for name in [n for n in table.column_names if "." in n]:
        values = table[name].to_pylist()
        missing = [i for i, v in enumerate(values) if v is None and trees[i] is not None]
        if not missing:
            continue
        as_text = pa.types.is_string(table[name].type)
        for i in missing:
            tree = trees[i]
            value = _leaf(tree, name) if tree is not None else None
            values[i] = _as_text(value) if as_text and value is not None else value
        kind = None if pa.types.is_null(table[name].type) else table[name].type
        table = table.set_column(table.column_names.index(name), name,
                                 pa.array(values, type=kind))
    return table


def _as_text(value: Any) -> str:
    """A value as Arrow's cast to string writes it (true/false for Booleans)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _kind(kind: pa.DataType) -> str:
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    return str(kind)


def _cast_columns(table: pa.Table, names: set[str]) -> pa.Table:
    for name in names & set(table.column_names):
        i = table.column_names.index(name)
        table = table.set_column(i, name, pc.cast(table[name], pa.string()))
    return table


def comparable(table: pa.Table) -> pa.Table:
    """The table without the run-info columns (where/when/how long), sorted by key: two runs
    of the same sweep, on any backend, give equal comparables."""
    keep = [n for n in table.column_names if n not in RUN_INFO_COLUMNS]
    return table.select(keep).sort_by("key")


# ---- running a sweep -------------------------------------------------------------------------
@dataclass
class SweepReport:
    """What a sweep did: points in the sweep, skipped (already in the store), run now."""

    out_dir: Path
    total: int = 0
    skipped: int = 0
    to_run: int = 0
    ok: int = 0
    failed: int = 0
    crashed: list[tuple[str, str]] = field(default_factory=list)  # (key, message)
    wall_s: float = 0.0

    @property
    def done(self) -> int:
        """Points of this run finished so far (written or crashed)."""
        return self.ok + self.failed + len(self.crashed)


ProgressFn = Callable[[SweepReport, dict[str, Any] | None], None]


def run_sweep(spec: SweepSpec | str | Path, out_dir: str | Path, backend: str = "local",
              workers: int | None = None, address: str | None = None,
              device: str | None = None, progress: ProgressFn | None = None) -> SweepReport:
    """Run every point of `spec` not yet in `out_dir`; write each row as it completes.

    `backend`: 'local' (a spawn process pool of `workers` processes, default the CPU count) or
    'ray' (Ray tasks: the connected Ray instance if `ray.init()` was called, else `address`,
    else a new local instance; `workers` caps the tasks in flight). `device` overrides the
    file's. `progress(report, row)` is called once before the first point (row None) and after
    each finished one. Only one sweep may write into a directory at a time (a lock file).
    """
    require_choice("--backend", backend, BACKENDS)
    if workers is not None and workers <= 0:
        raise SparsexbarError(f"--workers must be positive, got {workers}")
    if address is not None and backend != "ray":
        raise SparsexbarError("--address needs --backend ray")
    sweep = spec if isinstance(spec, SweepSpec) else load_sweep(spec)
    if device is not None:
        sweep.device = device
    out = Path(out_dir)
    started = time.perf_counter()
    points = expand_points(sweep)
    if backend == "local":  # before anything is written: bad input leaves no directory
        _check_inputs_here([p for p in points if p.config_error is None
                            and p.key not in done_keys(out)], sweep.device)
    with _DirectoryLock(out):
        for stale in results_dir(out).glob(".*.tmp"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        if sweep.path.is_file():  # a record of the last sweep file run into this directory
            atomic_write_text(out / "sweep.yaml", sweep.path.read_text())
        done = done_keys(out)
        todo = [p for p in points if p.key not in done]
        report = SweepReport(out, total=len(points), skipped=len(points) - len(todo),
                             to_run=len(todo))
        if progress is not None:
            progress(report, None)
        runnable = []
        for point in todo:  # invalid configs are recorded at once, no worker needed
            if point.config_error is not None:
                _record(out, report, failed_row(point, point.config_error), backend, progress)
            else:
                runnable.append(point)
        if runnable:
            runner = _run_local if backend == "local" else _run_ray
            for point, row, crash in runner(runnable, workers, address, sweep.device):
                if crash is not None:
                    report.crashed.append((point.key, crash))
                    if progress is not None:
                        progress(report, None)
                elif row.get("version") != __version__:
                    report.crashed.append((point.key, f"worker runs sparsexbar "
                                           f"{row.get('version')}, the driver {__version__}"))
                else:
                    _record(out, report, row, backend, progress)
    report.wall_s = time.perf_counter() - started
    return report


def _check_inputs_here(points: list[SweepPoint], device: str) -> None:
    """Local backend: the workers are this machine, so a device, model or data set that cannot
    be loaded here is bad input (one line, exit 2), found before any point runs."""
    if not points:
        return
    check_device(device)
    seen: set[tuple[str, str]] = set()
    for point in points:
        if (point.model_source, point.data_source) not in seen:
            seen.add((point.model_source, point.data_source))
            load_inputs(point)


def _record(out: Path, report: SweepReport, row: dict[str, Any], backend: str,
            progress: ProgressFn | None) -> None:
    row["backend"] = backend
    write_row(out, row)
    if row["status"] == "ok":
        report.ok += 1
    else:
        report.failed += 1
    if progress is not None:
        progress(report, row)


Outcome = tuple[SweepPoint, dict[str, Any], str | None]  # (point, row, crash message or None)


def _crash_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _run_local(points: list[SweepPoint], workers: int | None, address: str | None,
               device: str) -> Iterator[Outcome]:
    """A spawn process pool; yields outcomes as they complete."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    count = min(workers or os.cpu_count() or 1, len(points))
    pool = ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)
    finished_all = False
    try:
        pending: dict[Future[dict[str, Any]], SweepPoint] = {
            pool.submit(run_point, p): p for p in points}
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                point = pending.pop(fut)
                try:
                    outcome: Outcome = (point, fut.result(), None)
                except Exception as exc:  # a crash or a dead worker: retried by a rerun
                    outcome = (point, {}, _crash_message(exc))
                yield outcome
        finished_all = True
    finally:  # interrupted: drop queued points, do not wait for the running ones
        pool.shutdown(wait=finished_all, cancel_futures=True)


def _run_ray(points: list[SweepPoint], workers: int | None, address: str | None,
             device: str) -> Iterator[Outcome]:
    """Ray tasks (one CPU each, and one GPU each when `device` is cuda); at most `workers` in
    flight when given."""
    try:
        import ray
    except ImportError:
        raise SparsexbarError("the ray backend needs Ray: pip install 'sparsexbar[ray]' "
                              "(or pip install ray)") from None
    started_here = False
    if not ray.is_initialized():
        try:
            if address is not None:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SparsexbarError(f"cannot start or join Ray ({address or 'local'}): "
                                  f"{' '.join(str(exc).split())}") from None
        started_here = True
    try:
        gpus = 1 if device.startswith("cuda") else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus)(run_point)
        limit = workers or len(points)
        queue = list(points)
        in_flight: dict[Any, SweepPoint] = {}
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                point = queue.pop(0)
                in_flight[task.remote(point)] = point
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                point = in_flight.pop(ref)
                try:
                    outcome: Outcome = (point, ray.get(ref), None)
                except Exception as exc:  # RayTaskError, WorkerCrashedError, ...
                    outcome = (point, {}, _crash_message(exc))
                yield outcome
    finally:
        if started_here:
            ray.shutdown()


class _DirectoryLock:
    """An exclusive flock on `<dir>/.lock`: a second sweep into the same directory is refused."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.handle: Any = None

    def __enter__(self) -> _DirectoryLock:
        results_dir(self.out).mkdir(parents=True, exist_ok=True)
        self.handle = (self.out / ".lock").open("a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise SparsexbarError(f"another sweep is writing to {self.out} (lock "
                                  f"{self.out / '.lock'} is held)") from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


# ---- Pareto fronts, plots and the summary table ----------------------------------------------
def pareto_front(cost: Sequence[float], gain: Sequence[float]) -> list[bool]:
    """Which points no other point dominates (lower or equal cost and higher or equal gain,
    one of them strictly). Non-finite values are never on the front."""
    n = len(cost)
    order = sorted((i for i in range(n) if math.isfinite(cost[i]) and math.isfinite(gain[i])),
                   key=lambda i: (cost[i], -gain[i]))
    front = [False] * n
    best = -math.inf
    for _, group in itertools.groupby(order, key=lambda i: cost[i]):
        members = list(group)
        top = gain[members[0]]  # the group is sorted by gain, highest first
        if top > best:
            for i in members:
                front[i] = gain[i] == top
            best = top
    return front


PARETO_PLOTS = {
    # file: (x column, x label, x scale, y column, y label, y scale): x minimized, y maximized
    "pareto_energy_accuracy.png": ("energy_uj_per_image", "energy per image (uJ)", 1.0,
                                   "top1", "top-1 accuracy (%)", 100.0),
    "pareto_area_throughput.png": ("area_mm2", "area (mm2)", 1.0,
                                   "images_per_s", "throughput (images/s)", 1.0),
}


def varying_parameters(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns of the points (model, scheme, dotted keys...) whose value differs across rows."""
    names = ["model", "data", "limit", "scheme", "scheme_params", "hw"] + sorted(
        {k for r in rows for k in r if "." in k})
    return [n for n in names if len({canonical_json(r.get(n)) for r in rows}) > 1]


def _sort_value(value: Any) -> tuple[int, Any]:
    """Order mixed values: nulls, then numbers by value, then text."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, float(value))
    return (2, value if isinstance(value, str) else canonical_json(value))


def _label(row: Mapping[str, Any], names: Sequence[str]) -> str:
    parts = []
    for n in names:
        if n == "scheme_params":
            continue
        value = row.get(n)
        parts.append(str(value) if n in ("model", "scheme", "data", "hw") else f"{n}={value}")
    return " ".join(parts)


def summarize(out_dir: str | Path, plot_dir: str | Path | None = None) -> dict[str, Any]:
    """Read a sweep directory; write the Pareto PNGs and summary.csv into `plot_dir` (default
    the sweep directory). Returns the rows (with Pareto flags), varying parameters and paths."""
    table = load_results(out_dir)
    rows = table.to_pylist()
    for r in rows:
        r.pop("result_json", None)
    ok = [r for r in rows if r["status"] == "ok"]
    params = varying_parameters(rows)
    for r in rows:
        r["pareto_energy_accuracy"] = False
        r["pareto_area_throughput"] = False
    for name, (xcol, _, _, ycol, _, _) in PARETO_PLOTS.items():
        flag = name.removesuffix(".png")
        front = pareto_front([float(r[xcol]) for r in ok], [float(r[ycol]) for r in ok])
        for r, on in zip(ok, front, strict=True):
            r[flag] = on
    rows.sort(key=lambda r: tuple(_sort_value(r.get(n)) for n in [*params, "key"]))
    target = Path(plot_dir) if plot_dir is not None else Path(out_dir)
    paths: list[Path] = []
    if ok:
        for name, spec in PARETO_PLOTS.items():
            png = _pareto_png([r for r in rows if r["status"] == "ok"], params, *spec,
                              flag=name.removesuffix(".png"))
            atomic_write_bytes(target / name, png)
            paths.append(target / name)
    columns = [c for c in rows[0] if c != "hardware_json"] + ["hardware_json"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(target / "summary.csv", buf.getvalue())
    paths.append(target / "summary.csv")
    return {"rows": rows, "parameters": params, "paths": paths}


def _pareto_png(rows: list[dict[str, Any]], params: list[str], xcol: str, xlabel: str,
                xscale: float, ycol: str, ylabel: str, yscale: float, flag: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import _png

    fig, ax = plt.subplots(figsize=(7.5, 5))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["scheme"]), []).append(r)
    markers = "osD^v<>PX*"
    models = sorted({m for m, _ in groups})
    for (model, scheme), members in sorted(groups.items()):
        shown = [r for r in members if math.isfinite(r[xcol]) and math.isfinite(r[ycol])]
        xs = [r[xcol] * xscale for r in shown]
        ys = [r[ycol] * yscale for r in shown]
        label = scheme if len(models) == 1 else f"{scheme} / {model}"
        ax.scatter(xs, ys, marker=markers[models.index(model) % len(markers)], alpha=0.6,
                   label=label)
    front = sorted((r for r in rows if r[flag]), key=lambda r: r[xcol])
    if front:
        ax.step([r[xcol] * xscale for r in front], [r[ycol] * yscale for r in front],
                where="post", color="black", linewidth=1, label="Pareto front")
        ax.scatter([r[xcol] * xscale for r in front], [r[ycol] * yscale for r in front],
                   facecolors="none", edgecolors="black", s=90, linewidths=1.2)
    xs_all = [r[xcol] * xscale for r in rows if math.isfinite(r[xcol]) and r[xcol] > 0]
    log_x = bool(xs_all) and max(xs_all) > 20 * min(xs_all)
    if log_x:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if front and xs_all:
        scale = math.log10 if log_x else float
        low, high = scale(min(xs_all)), scale(max(xs_all))
        for r in front[:20]:
            x = r[xcol] * xscale
            right = high > low and x > 0 and (scale(x) - low) / (high - low) > 0.6
            ax.annotate(_label(r, params), (x, r[ycol] * yscale), fontsize=6,
                        xytext=(-4 if right else 4, -9), textcoords="offset points",
                        ha="right" if right else "left")
    ax.set_xlabel(f"{xlabel} (lower is better)")
    ax.set_ylabel(f"{ylabel} (higher is better)")
    ax.set_title(f"{ylabel} vs {xlabel}: {len(rows)} points, {len(front)} on the front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def summary_table(summary: Mapping[str, Any], title: str) -> Any:
    """A rich Table of `summarize()`'s rows: varying parameters, status, headline numbers and
    which Pareto fronts each point is on (E: energy/accuracy, A: area/throughput). Failed
    points' errors are too long for a cell: `failures()` lists them."""
    from rich.table import Table

    params = [p for p in summary["parameters"] if p != "scheme_params"]
    table = Table(title=title)
    table.add_column("key")
    for p in params:
        table.add_column(p)
    for col in ("status", "top-1 %", "energy/img uJ", "img/s", "area mm2", "speedup",
                "energy eff.", "front"):
        table.add_column(col, justify="right")
    for r in summary["rows"]:
        values = [str(r.get(p)) for p in params]
        if r["status"] != "ok":
            error = str(r.get("error") or "")
            table.add_row(r["key"][:10], *values, "failed", "", "", "", "", "", "",
                          "see below" if error else "")
            continue
        front = ("E" if r["pareto_energy_accuracy"] else "") + (
            "A" if r["pareto_area_throughput"] else "")
        table.add_row(r["key"][:10], *values, "ok", f"{100 * r['top1']:.2f}",
                      f"{r['energy_uj_per_image']:.4g}", f"{r['images_per_s']:,.0f}",
                      f"{r['area_mm2']:.4g}", f"{r['speedup']:.2f}x",
                      f"{r['energy_efficiency']:.2f}x", front)
    return table


def failures(summary: Mapping[str, Any]) -> list[str]:
    """One line per failed point: short key, model, scheme, error."""
    return [f"{r['key'][:10]} {r['model']} {r['scheme']}: {r['error']}"
            for r in summary["rows"] if r["status"] != "ok"]
