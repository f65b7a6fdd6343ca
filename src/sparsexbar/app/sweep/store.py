"""A sweep's result store: one row per point in `<out>/results/<key>.parquet`, written
atomically, so a killed sweep leaves only whole files; the rows' columns and how a finished
(or failed) point becomes a row; reading the store back as one table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ... import __version__
from ...core.errors import SparsexbarError, warn
from ...core.io import atomic_write_with
from ...result import Result
from ...studies.writers import json_safe
from .spec import SweepPoint, canonical_json, leaf

RESULTS_DIR = "results"

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


def result_row(point: SweepPoint, result: Result, wall_s: float,
               worker: str) -> dict[str, Any]:
    """The row of a finished point: its parameters and the result's headline numbers (and the
    whole result as canonical JSON)."""
    tot, dense, vs = result.totals, result.dense_totals, result.vs_dense
    n = int(result.num_images)
    return {
        **_point_columns(point), "status": "ok", "error": None,
        "dataset": result.dataset, "num_images": n,
        "top1": result.accuracy.top1, "float_top1": result.accuracy.float_top1,
        "quantized_top1": result.accuracy.quantized_top1,
        "ou_activations": tot.events.ou_activations,
        "adc_conversions": tot.events.adc_conversions, "cycles": tot.cycles,
        "arrays": tot.arrays,
        "clipping_layers": sum(1 for lay in result.layers if lay.adc_can_clip),
        "energy_uj_per_image": tot.energy_pj["total"] / n * 1e-6,
        "dense_energy_uj_per_image": dense.energy_pj["total"] / n * 1e-6,
        "latency_us": tot.latency_s * 1e6, "images_per_s": tot.images_per_s,
        "images_per_s_pipelined": tot.images_per_s_pipelined,
        "area_mm2": tot.area_um2["total"] * 1e-6,
        "dense_area_mm2": dense.area_um2["total"] * 1e-6,
        "speedup": vs.speedup, "energy_efficiency": vs.energy_efficiency,
        "rram_adc_dac_energy_efficiency": vs.rram_adc_dac_energy_efficiency,
        "area_efficiency": vs.area_efficiency,
        "total_area_efficiency": vs.total_area_efficiency,
        "adc_reduction": vs.computation_reduction["adc_conversions"],
        "ou_reduction": vs.computation_reduction["ou_activations"],
        "version": result.version, "hardware_json": canonical_json(result.hardware),
        "result_json": canonical_json(json_safe(result.to_json())),
        "wall_s": wall_s, "finished_at": _now(), "worker": worker,
    }



def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def results_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / RESULTS_DIR


def done_keys(out_dir: str | Path) -> set[str]:
    """Keys of the points whose row file is there and is a row of that point (writes are
    atomic, but a file may have been damaged or replaced since: a corrupt or foreign file is
    not done, so its point runs again and the file is replaced)."""
    folder = results_dir(out_dir)
    if not folder.is_dir():
        return set()
    return {p.stem for p in folder.glob("*.parquet") if row_file_problem(p) is None}


def row_file_problem(path: Path) -> str | None:
    """Why `path` is not a sweep row file (None when it is one): unreadable or corrupt
    Parquet, not one row, or not the row of the key its name says."""
    try:
        table = pq.read_table(path, columns=["key", "status"])
    except (OSError, ValueError, pa.ArrowException) as exc:  # corrupt, foreign, unreadable
        return f"not a sweep row file ({' '.join(str(exc).split())[:200]})"
    if table.num_rows != 1:
        return f"not a sweep row file ({table.num_rows} rows)"
    if table["key"][0].as_py() != path.stem:
        return "not a sweep row file (its key is not its name)"
    return None


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
    """Every row of a sweep directory as one Arrow table (one row per point, sorted by key);
    a file that is not a row (corrupt, foreign) is skipped with a warning.

    Parameter columns absent from some rows are null there; a parameter whose values have
    incompatible types across rows (e.g. a number and a string of a failed point) is read as
    strings.
    """
    folder = results_dir(out_dir)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    tables = []
    skipped: list[str] = []
    versions: dict[str, int] = {}
    for f in files:
        problem = row_file_problem(f)
        if problem is None:
            try:
                table = pq.read_table(f)
            except (OSError, ValueError, pa.ArrowException) as exc:
                problem = f"unreadable ({' '.join(str(exc).split())[:200]})"
            else:
                problem = _column_problem(table)
                if problem is None:
                    tables.append(table)
                    version = table["version"][0].as_py() if "version" in table.column_names \
                        else None
                    versions[str(version)] = versions.get(str(version), 0) + 1
                    continue
        skipped.append(f"{f}: {problem}")
        warn(f"skipped {f}: {problem}; a rerun of the sweep recomputes its point")
    other = {v: n for v, n in versions.items() if v != __version__}
    if other:  # rows of another sparsexbar: their figures may come from another model
        warn(f"{sum(other.values())} row(s) of {folder} come from sparsexbar "
             f"{', '.join(sorted(other))} (this is {__version__}); their figures may differ "
             "from a run of this version")
    if not tables and skipped:  # the one-line error replaces the warnings: name them here
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise SparsexbarError(f"no readable sweep results in {out_dir}: {len(skipped)} file(s) "
                              f"skipped, {skipped[0]}{more}")
    if not tables:
        raise SparsexbarError(f"no sweep results in {out_dir} (expected {folder}/*.parquet)")
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


def _column_problem(table: pa.Table) -> str | None:
    """Why a row table is not a row of this format (None when it is): a fixed column (the
    point's fields, the metrics, the record) of another type, e.g. a top-1 stored as text
    (`plot` failed on it with a traceback)."""
    for name, kind in FIXED_COLUMNS.items():
        if name in table.column_names:
            got = table.schema.field(name).type
            if got != kind and not pa.types.is_null(got):
                return f"not a sweep row file (column '{name}' is {got}, not {kind})"
    return None


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
            value = leaf(tree, name) if tree is not None else None
            values[i] = _as_text(value) if as_text and value is not None else value
        kind = None if pa.types.is_null(table[name].type) else table[name].type
        try:
            column = pa.array(values, type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # a filled value of another type than the sweep's own (adc.bits 'auto' from the
            # hardware of rows beside a sweep of adc.bits 4, 5, 8): read as strings, as
            # load_results reads a parameter of mixed types
            column = pa.array([None if v is None else _as_text(v) for v in values],
                              type=pa.string())
        table = table.set_column(table.column_names.index(name), name, column)
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
