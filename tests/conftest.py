"""Shared test set-up: the hypothesis profile and one intra-op thread. (`tests.nets:<factory>`
resolves as a `--model module:factory` spec because the tests run from the repository root:
`training.models` imports such a module from the current directory.)"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from sparsexbar.core.runtime import torch_threads

# Tests choose their own max_examples; this profile only removes flakiness sources (no deadline;
# in CI a fixed example sequence, so a red run is reproducible; locally, fresh examples).
settings.register_profile(
    "sparsexbar", deadline=None, derandomize=bool(os.environ.get("CI")), print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("sparsexbar")


@pytest.fixture(scope="session", autouse=True)
def one_intra_op_thread() -> Iterator[None]:
    """Small tensors: extra intra-op threads only spin-wait and contend on a shared 2-core
    machine (measured: 5x the CPU time and wall time of this suite with 2 threads under
    load)."""
    with torch_threads(1):
        yield


def pytest_configure(config: pytest.Config) -> None:
    """Warnings of runs on random test models (float top-1 near chance, untrained zoo models)
    are expected here; tests that check a warning catch it with pytest.warns, and the CLI
    shows them through its own filter."""
    config.addinivalue_line("filterwarnings",
                            "ignore::sparsexbar.core.errors.SparsexbarWarning")
