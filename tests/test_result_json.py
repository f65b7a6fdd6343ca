"""The result JSON schema is frozen: `Result.to_json()` of a small deterministic run equals the
stored tests/data/result_small.json (every key, in order, and every value) for each scheme.

Regenerate the file only for an intended schema change:
`python -m tests.test_result_json` (from the repository root).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from sparsexbar import simulate
from sparsexbar.core.config import preset
from sparsexbar.core.errors import SparsexbarError
from sparsexbar.core.events import Events
from sparsexbar.result import LayerRecord
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


def test_result_is_typed_and_frozen() -> None:
    """The records are frozen dataclasses; their JSON is made at the edge (`to_json`), and a
    renamed copy (`named`) changes only the model and the scheme's label."""
    hw = preset("isaac").with_overrides({"array.rows": 32, "array.cols": 32, "ou.rows": 8,
                                         "ou.cols": 8})
    data = (nets.random_images(4, 1, 8, seed=0), nets.random_labels(4, 10, seed=0))
    res = simulate(nets.tiny_cnn(1, 10, 8, 4, seed=0), data, hw, "sre")
    assert isinstance(res.layers[0], LayerRecord) and isinstance(res.totals.events, Events)
    assert res.top1 == res.accuracy.top1 == res.to_json()["accuracy"]["top1"]
    assert res.totals.energy_pj_per_image is not None
    assert res.dense_totals.energy_pj_per_image is None  # left out of dense_totals' JSON
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.model = "other"  # type: ignore[misc]
    renamed = res.named(model="m", label="sre:mode=joint")
    out = renamed.to_json()
    assert out["model"] == "m" and out["scheme"]["label"] == "sre:mode=joint"
    assert "label" not in res.to_json()["scheme"]
    assert {k: v for k, v in out.items() if k not in ("model", "scheme")} == {
        k: v for k, v in res.to_json().items() if k not in ("model", "scheme")}
    for bad in ({"model": 3}, {"model": " "}, {"label": ["sre"]}):  # JSON took them as given
        with pytest.raises(SparsexbarError, match="Result.named: (model|label) must be non-blank"):
            res.named(**bad)  # type: ignore[arg-type]


if __name__ == "__main__":
    STORED.write_text(json.dumps(small_results(), indent=1) + "\n")
    print(f"wrote {STORED}")
