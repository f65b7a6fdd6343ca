"""Where the package's shipped files are (src/sparsexbar/assets): the embedded Fashion-MNIST
test split and the shipped models' weights and metadata."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
