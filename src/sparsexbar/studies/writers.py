"""Writing a study's (and a run's) files: JSON with inf/nan as strings, Markdown, PNG figures;
every file written atomically (readers see the old file or the whole new one)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from ..core.io import atomic_write_bytes, atomic_write_text
from ..core.runtime import pyplot


def json_safe(obj: Any) -> Any:
    """Replace inf/nan floats by strings so the JSON is standard."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def uniform_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with one key set, in first-seen order: a key some rows lack is None there
    (a study's rows added keys per setting: readers of the JSON met missing keys)."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return [{k: row.get(k) for k in keys} for row in rows]


def write_json(path: str | Path, data: Any, newline: bool = True) -> None:
    """`data` as indented JSON (`newline`: with a final newline)."""
    atomic_write_text(path, json.dumps(data, indent=2) + ("\n" if newline else ""))


def write_text(path: str | Path, text: str) -> None:
    atomic_write_text(path, text)


def png_bytes(fig: Any, dpi: int = 110) -> bytes:
    """A figure as PNG bytes (tight layout); the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def save_png(fig: Any, path: str | Path, dpi: int = 120) -> None:
    """Write a figure (already laid out) as a PNG file; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
