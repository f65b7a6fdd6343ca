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

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ... import __version__
from ...core.config import load_config, load_yaml
from ...core.errors import ConfigError, SparsexbarError, parse_failure
from ...schemes import SCHEMES, Scheme
from ...training.inputs import InputSpec, class_names_problem
from ...training.zoo import MODELS

# Top-level keys of a sweep file.
INT64_MAX = 2**63 - 1  # the Parquet rows store limit and batch_size as int64
SWEEP_FILE_KEYS = ("name", "model", "models", "data", "limit", "hw", "set", "scheme", "schemes",
                   "grid", "points", "batch_size", "device", "input", "classes")


class SweepFileError(SparsexbarError):
    """A sweep file that cannot be used: unreadable, unknown key, wrong type, empty grid."""


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
    input: dict[str, Any] | None = None  # what the models take (InputSpec fields), if said
    classes: list[str] | None = None  # the models' class names, if said

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
        raw = load_yaml(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise SweepFileError(f"cannot parse sweep file {p}: {parse_failure(exc)}") from None
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
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0
                              or limit > INT64_MAX):
        raise SweepFileError(f"{where}: limit must be a positive integer (at most 2^63 - 1, the "
                             f"rows' int64) or null, got {limit!r}")
    batch_size = _typed(raw, "batch_size", int, where, 256)
    if isinstance(batch_size, bool) or batch_size <= 0 or batch_size > INT64_MAX:
        raise SweepFileError(f"{where}: batch_size must be a positive integer (at most 2^63 - 1), "
                             f"got {batch_size!r}")
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
        _checkleaf(tree, key, where)
    schemes = [_scheme_spec(s, where) for s in
               _one_or_list(raw, "scheme", "schemes", where, default=["dense"])]
    name = _typed(raw, "name", str, where, path.stem)
    input_spec = raw.get("input")
    if input_spec is not None:
        if not isinstance(input_spec, dict):
            raise SweepFileError(f"{where}: input must be a mapping of channels, size, fit, "
                                 f"scale, mean, std; got {input_spec!r}")
        try:
            input_spec = InputSpec.from_json(input_spec, f"{where}: input").to_json()
        except SweepFileError:
            raise
        except SparsexbarError as exc:  # from_json names the key itself, mostly
            message = str(exc)
            raise SweepFileError(message if message.startswith(where)
                                 else f"{where}: input: {message}") from None
        input_spec = {k: v for k, v in input_spec.items() if v is not None}
    classes = raw.get("classes")
    problem = None if classes is None else class_names_problem(classes, minimum=2)
    if problem is not None:
        raise SweepFileError(f"{where}: classes {problem} (the models' class names, in "
                             "output order)")
    return SweepSpec(path=path, name=name, models=models, data=data, limit=limit, hw=hw,
                     hw_source=hw_source, base_overrides=base_overrides, schemes=schemes,
                     grid=grid, points=points, batch_size=batch_size, device=device,
                     input=input_spec or None, classes=classes)


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


def _checkleaf(tree: Mapping[str, Any], key: str, where: str) -> None:
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
    if isinstance(item, str):
        name, args = item, {}
    elif isinstance(item, dict) and isinstance(item.get("name"), str):
        name, args = item["name"], {k: v for k, v in item.items() if k != "name"}
    else:
        raise SweepFileError(f"{where}: a scheme is a name or a mapping with 'name', got {item!r}")
    if name not in SCHEMES:
        hint = ""
        if ":" in name or "=" in name:  # the command line's 'comprrae:alpha=0.4'
            base, _, opts = name.partition(":")
            pairs = ", ".join(f"{k}: {v}" for k, _, v in
                              (o.partition("=") for o in opts.split(",") if o))
            hint = (f"; a sweep file gives a scheme's options as a mapping: "
                    f"{{name: {base}{', ' + pairs if pairs else ''}}}")
        raise SweepFileError(f"{where}: unknown scheme '{name}' (known: {', '.join(SCHEMES)})"
                             f"{hint}")
    factory: Callable[..., Scheme] = SCHEMES[name].scheme
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
    input: dict[str, Any] | None = None  # InputSpec fields the sweep file gives
    classes: list[str] | None = None


def leaf(tree: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key of a nested mapping."""
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
        params = ({k: leaf(tree, k) for k in swept} if tree is not None else
                  {k: overrides.get(k, leaf(base_tree, k)) for k in swept})
        resolved.append((overrides, tree, error, params))
    points: dict[str, SweepPoint] = {}
    for model in spec.models:
        source, digest = model_sources[model]
        for scheme in spec.schemes:
            for overrides, tree, error, params in resolved:
                hardware_part: Any = tree if tree is not None else {
                    "invalid": {"base": base_tree, "overrides": overrides}}
                payload: dict[str, Any] = {
                    "model": model, "model_digest": digest, "data": spec.data,
                    "limit": spec.limit, "batch_size": spec.batch_size,
                    "scheme": {"name": scheme.name, "parameters": scheme.parameters},
                    "hardware": hardware_part, "version": __version__,
                }
                # only when given, so that the keys of sweeps without them do not change
                if spec.input:
                    payload["input"] = spec.input
                if spec.classes:
                    payload["classes"] = spec.classes
                key = point_key(payload)
                points.setdefault(key, SweepPoint(
                    key=key, model=model, model_source=source, data=spec.data,
                    data_source=data_source, limit=spec.limit, batch_size=spec.batch_size,
                    device=spec.device, scheme=scheme, hw=spec.hw, overrides=overrides,
                    hardware=tree, parameters=params, config_error=error,
                    input=spec.input, classes=spec.classes))
    return list(points.values())
