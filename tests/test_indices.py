"""The engine's mask indices (core/engine/indices.py) equal torch.nonzero's, in its order; its
column gather equals index_select's."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsexbar.core.engine.indices import (
    flat_above,
    nonzero_2d,
    nonzero_flat,
    rows_above,
    split_rows,
    take_columns,
)


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


DTYPES = (torch.float32, torch.float64, torch.int32, torch.uint8)


@settings(max_examples=80, deadline=None)
@given(shape=st.lists(st.integers(0, 9), min_size=1, max_size=3), dtype=st.sampled_from(DTYPES),
       threshold=st.sampled_from((-0.5, 0.0, 0.5, 3.0, 3.5, 7.25)),
       transposed=st.booleans(), seed=st.integers(0, 10_000))
def test_entries_above_equal_torch(shape: list[int], dtype: torch.dtype, threshold: float,
                                   transposed: bool, seed: int) -> None:
    """flat_above and rows_above: the entries torch's `values > threshold` marks, in
    torch.nonzero's order, also on non-contiguous views (the clip path's transposed bounds)."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 9, shape, generator=gen).to(dtype)
    if dtype.is_floating_point:
        values = values + torch.rand(shape, generator=gen, dtype=dtype).round()
    if transposed and values.dim() >= 2:
        values = values.transpose(0, 1)
    want = values > threshold
    flat = flat_above(values, threshold)
    assert flat.dtype == torch.int64
    assert torch.equal(flat, torch.nonzero(want.reshape(-1)).view(-1))
    if values.dim() >= 1 and values.shape[0]:
        rows, cols = rows_above(values, threshold)
        want_rows, want_cols = want.reshape(values.shape[0], -1).nonzero(as_tuple=True)
        assert torch.equal(rows, want_rows) and torch.equal(cols, want_cols)


@given(flat=st.lists(st.integers(0, 10**6), max_size=50), length=st.integers(1, 1000),
       wide=st.booleans())
def test_split_rows_is_divmod(flat: list[int], length: int, wide: bool) -> None:
    """int32 arithmetic where every index fits (numel < 2^31), int64 otherwise: both divmod."""
    index = torch.tensor(sorted(flat), dtype=torch.int64)
    rows, cols = split_rows(index, length, 2**31 if wide else 10**6 + 1)
    assert rows.dtype == torch.int64 and cols.dtype == torch.int64
    assert rows.tolist() == [v // length for v in sorted(flat)]
    assert cols.tolist() == [v % length for v in sorted(flat)]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.float32])
def test_take_columns_equals_index_select(dtype: torch.dtype) -> None:
    """`take_columns` (numpy's take for integer matrices on CPU) gives index_select(1, ...)
    exactly: repeated and unordered columns, a strided index, contiguous output."""
    gen = torch.Generator().manual_seed(5)
    matrix = torch.randint(0, 200, (37, 11), generator=gen).to(dtype)
    index = torch.tensor([[3, 0], [3, 10], [7, 2]])[:, 0]  # strided: rows of a (3, 2) tensor
    got = take_columns(matrix, index)
    assert got.dtype == dtype and got.is_contiguous()
    assert torch.equal(got, matrix.index_select(1, index))
