"""The package's imports run one way (docs/concepts.md, "The tree"):

    core  <-  training  <-  schemes (engine side)  <-  simulate  <-  studies
          <-  schemes/<name>/study.py, calibration.py (experiment side)  <-  app

- core imports nothing of the package outside core;
- training imports only core;
- a scheme's engine side (everything under schemes/ but `study.py` and `calibration.py`)
  imports only core, training and schemes; its experiment side may also import simulate and
  studies; no scheme module imports app;
- the compositions (schemes/combined) use only the other schemes' packages' public names;
- simulate imports neither studies nor app; studies import no app;
- imports sit at module level, but for the few listed here (optional or heavy modules);
- nothing edits sys.path.
Read from the source with `ast`, so a new module is checked by existing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "sparsexbar"
LAYERS = ("core", "training", "schemes", "simulate", "studies", "app")
EXPERIMENT = ("study.py", "calibration.py")
# Function-level imports that stay, and why (docs/concepts.md lists them too).
LOCAL_IMPORTS = {
    ("core/runtime.py", "matplotlib"): "heavy, and only figures need it: pyplot() loads it",
    ("core/runtime.py", "matplotlib.pyplot"): "after the backend is chosen, once",
    ("app/plotting.py", "matplotlib.ticker"): "after pyplot() chose the backend",
    ("app/sweep/run.py", "ray"): "optional dependency (sparsexbar[ray]), one backend only",
    ("training/data.py", "PIL"): "optional: image folders only",
}


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """(absolute module, imported names, at module level) of every import of a module;
    TYPE_CHECKING blocks (annotations only) are left out."""
    tree = ast.parse(path.read_text())
    package = _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]
    out: list[tuple[str, list[str], bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, [], top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (child.level - 1)]
                    base = ".".join([*parts, *([base] if base else [])])
                out.append((base, [a.name for a in child.names], top))
            else:
                nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                    | ast.ClassDef | ast.Lambda)
                visit(child, top and not nested)

    visit(tree, True)
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "sparsexbar" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import reaches: `from sparsexbar import simulate` is the module."""
    if module == "sparsexbar":
        return [f"sparsexbar.{n}" for n in names if n in LAYERS or n == "simulate"]
    if module.count(".") == 1 and module.split(".")[1] in LAYERS:  # from sparsexbar.studies
        return [f"{module}.{n}" for n in names] or [module]
    return [module]


ALLOWED = {
    "core": {"core"},
    "training": {"core", "training"},
    "schemes": {"core", "training", "schemes"},
    "simulate": {"core", "training", "schemes", "simulate"},
    "studies": {"core", "training", "schemes", "simulate", "studies"},
    "app": set(LAYERS),
}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_one_way(path: Path) -> None:
    rel = path.relative_to(SRC)
    layer = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    if layer not in ALLOWED:
        return  # the package's __init__: the public API, at the top
    allowed = set(ALLOWED[layer])
    if layer == "schemes" and path.name in EXPERIMENT:
        allowed |= {"simulate", "studies"}
    for module, names, _ in _imports(path):
        for target in _targets(module, names):
            got = _layer(target)
            assert got is None or got in allowed, f"{rel} imports {target} ({got})"


def test_combined_uses_only_the_public_api_of_the_other_schemes() -> None:
    others = {p.name for p in (SRC / "schemes").iterdir() if (p / "__init__.py").is_file()}
    others.discard("combined")
    for path in sorted((SRC / "schemes" / "combined").rglob("*.py")):
        for module, names, _ in _imports(path):
            parts = module.split(".")
            if parts[:2] == ["sparsexbar", "schemes"] and len(parts) > 2 and parts[2] in others:
                assert len(parts) == 3, f"{path.name} reaches into {module}"
                assert not any(n.startswith("_") for n in names), (path.name, module, names)


def test_imports_sit_at_module_level() -> None:
    found = {}
    for path in _modules():
        rel = str(path.relative_to(SRC))
        for module, _, top in _imports(path):
            if not top:
                found[(rel, module)] = LOCAL_IMPORTS.get((rel, module), "not listed")
    assert {k: v for k, v in found.items() if v == "not listed"} == {}
    assert set(found) == set(LOCAL_IMPORTS)  # the list holds no stale entry


def test_nothing_edits_sys_path() -> None:
    for folder in ("src", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for needle in ("sys.path.insert", "sys.path.append", "sys.path[", "sys.path +="):
                assert needle not in text or path == Path(__file__), f"{path}: {needle}"
