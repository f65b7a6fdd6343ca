"""The result JSON schema is frozen: `Result.to_json()` of a small deterministic run equals the
stored tests/data/result_small.json (every key, in order, and every value) for each scheme.

Regenerate the file only for an intended schema change:
`python -m tests.test_result_json` (from the repository root).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sparsexbar import simulate
from sparsexbar.core.config import preset
from tests import nets

STORED = Path(__file__).resolve().parent / "data" / "result_small.json"
SCHEMES = ("dense", "sre", "pattern", "comprrae:alpha=0.4", "encoding", "combined")


def small_results() -> dict[str, Any]:
    """{scheme: result JSON} of the tiny CNN on 12 seeded images, small isaac arrays."""
    hw = preset("isaac").with_overrides({"array.rows": 32, "array.cols": 32, "ou.rows": 8,
                                         "ou.cols": 8})
    data = (nets.random_images(12, 1, 8, seed=0), nets.random_labels(12, 10, seed=0))
    model = nets.tiny_cnn(1, 10, 8, 4, seed=0)
    return {name: json.loads(json.dumps(simulate(model, data, hw, name, batch_size=5).to_json()))
            for name in SCHEMES}


def _key_paths(value: Any, path: str = "") -> list[str]:
    """Every key path in document order (lists by index)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in (f"{path}/{k}", *_key_paths(v, f"{path}/{k}"))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _key_paths(v, f"{path}[{i}]")]
    return []


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return small_results()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_result_json_equals_the_stored_one(results: dict[str, Any], scheme: str) -> None:
    stored = json.loads(STORED.read_text())[scheme]
    got = results[scheme]
    assert _key_paths(got) == _key_paths(stored)  # the same keys, in the same order
    assert got == stored


if __name__ == "__main__":
    STORED.write_text(json.dumps(small_results(), indent=1) + "\n")
    print(f"wrote {STORED}")
