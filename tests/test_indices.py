"""The engine's mask indices (core/engine/indices.py) equal torch.nonzero's, in its order."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsexbar.core.engine.indices import nonzero_2d, nonzero_flat


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 40), cols=st.integers(0, 40), density=st.floats(0.0, 1.0),
       transposed=st.booleans(), seed=st.integers(0, 10_000))
def test_indices_equal_torch_nonzero(rows: int, cols: int, density: float, transposed: bool,
                                     seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand((rows, cols), generator=gen) < density
    if transposed:  # a non-contiguous view, as the encoding path passes
        mask = mask.t()
    want_rows, want_cols = mask.nonzero(as_tuple=True)
    got_rows, got_cols = nonzero_2d(mask)
    assert got_rows.dtype == torch.int64 and got_cols.dtype == torch.int64
    assert torch.equal(got_rows, want_rows) and torch.equal(got_cols, want_cols)
    flat = nonzero_flat(mask)
    assert flat.dtype == torch.int64
    assert torch.equal(flat, torch.nonzero(mask.reshape(-1)).view(-1))


def test_indices_of_all_and_none() -> None:
    assert nonzero_flat(torch.zeros(7, dtype=torch.bool)).numel() == 0
    assert torch.equal(nonzero_flat(torch.ones(5, dtype=torch.bool)), torch.arange(5))
    rows, cols = nonzero_2d(torch.ones((2, 3), dtype=torch.bool))
    assert rows.tolist() == [0, 0, 0, 1, 1, 1] and cols.tolist() == [0, 1, 2, 0, 1, 2]
