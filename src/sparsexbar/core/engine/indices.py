"""Indices of the True entries of a mask, or of the entries above a threshold, as
`torch.nonzero` gives them (ascending, row-major), faster on CPU through numpy:

- `np.flatnonzero` on the mask's zero-copy array: a (13056, 20) mask with 10% True, 146 us
  against 614 us for `torch.nonzero` on the flat mask and 787 us with `as_tuple`;
- comparisons into bool: numpy's are SIMD, torch's (2.13, CPU) are not: a (950272,) float32
  tensor against a scalar 76 us in numpy, 412 us in torch;
- bool tensors themselves: a mask made by a comparison and converted (`(x != 0).to(float32)`)
  costs ~6-10x a comparison written straight into a tensor of the wanted dtype
  (`nonzero_as`, `above_as`): (8, 64, 28, 28) int32, 469 against 78 us;
- the row/column split in int32 floor division by a scalar (numpy divides by an invariant
  integer with a multiply): 41 us against 375 us for `np.divmod` of int64 (190k indices).

(this project's CPU, one thread.) The clip paths find their candidates and clipping
conversions this way. Elsewhere (CUDA) the torch operations.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

INT32_LIMIT = 2**31


def nonzero_flat(mask: Tensor) -> Tensor:
    """(n,) int64 ascending flat (row-major) indices of the True entries of a bool tensor."""
    if mask.device.type != "cpu":
        return torch.nonzero(mask.reshape(-1)).view(-1)
    return torch.from_numpy(np.flatnonzero(mask.numpy()))


def nonzero_2d(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, cols) int64 of the True entries of a 2-D bool tensor, in row-major order: what
    `mask.nonzero(as_tuple=True)` gives."""
    if mask.device.type != "cpu" or mask.numel() == 0:
        rows, cols = mask.nonzero(as_tuple=True)
        return rows, cols
    return split_rows(nonzero_flat(mask), int(mask.shape[1]), mask.numel())


def flat_above(values: Tensor, threshold: float) -> Tensor:
    """(n,) int64 ascending flat indices, row-major over `values`' shape (any strides), of
    the entries greater than `threshold`, compared in the dtype torch would compare them in
    (`torch.result_type`: an integer tensor against a fractional threshold in float32)."""
    if values.device.type != "cpu":
        return torch.nonzero((values > threshold).reshape(-1)).view(-1)
    dtype = torch.result_type(values, threshold)
    array = (values if values.dtype == dtype else values.to(dtype)).numpy()
    return torch.from_numpy(np.flatnonzero(array > np.asarray(threshold, dtype=array.dtype)))


def rows_above(values: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(rows, cols) int64 of the entries of `values` greater than `threshold`, ascending:
    rows index the first dimension, cols the row-major flat index over the others."""
    row_length = int(values[0].numel()) if values.shape[0] else 1
    return split_rows(flat_above(values, threshold), row_length, values.numel())


def take_columns(matrix: Tensor, index: Tensor) -> Tensor:
    """matrix[:, index] of a 2-D tensor, contiguous: `index_select(1, index)`, through numpy's
    `take` for an integer matrix on CPU (torch 2.13's gather along the columns is vectorized
    for floating types only: a (50176, 48) uint8 or int32 matrix, 96 columns, 9.5-10.6 ms
    against numpy's 2.6-2.7 ms; float32 1.6 against 2.8 ms, kept in torch)."""
    if matrix.device.type != "cpu" or matrix.is_floating_point() or matrix.dim() != 2:
        return matrix.index_select(1, index)
    array = np.take(matrix.numpy(), index.numpy(), axis=1)
    return torch.from_numpy(array)


def split_rows(flat: Tensor, row_length: int, numel: int,
               narrow: bool = False) -> tuple[Tensor, Tensor]:
    """divmod of int64 flat indices (into a tensor of `numel` entries) by `row_length`:
    (rows, cols) int64, or with `narrow` int32 where every index fits (torch's int64
    elementwise arithmetic runs ~5x slower than int32's on this project's CPU: 120 against
    20-28 us per 200k additions). On CPU the division runs in int32 where every index fits."""
    if flat.device.type != "cpu" or numel >= INT32_LIMIT:
        rows = torch.div(flat, row_length, rounding_mode="floor")
        cols = flat - rows * row_length
        if narrow and numel < INT32_LIMIT:
            return rows.to(torch.int32), cols.to(torch.int32)
        return rows, cols
    small = flat.numpy().astype(np.int32)
    length = np.int32(row_length)
    rows_np = small // length
    cols_np = small - rows_np * length
    if narrow:
        return torch.from_numpy(rows_np), torch.from_numpy(cols_np)
    return torch.from_numpy(rows_np.astype(np.int64)), torch.from_numpy(cols_np.astype(np.int64))


def nonzero_as(values: Tensor, dtype: torch.dtype) -> Tensor:
    """[values != 0] as 0/1 in `dtype`, compared straight into a tensor of that dtype (no
    bool tensor)."""
    return torch.ne(values, 0, out=torch.empty(values.shape, dtype=dtype, device=values.device))


def above_as(values: Tensor, threshold: float, dtype: torch.dtype) -> Tensor:
    """[values > threshold] as 0/1 in `dtype`, compared straight into a tensor of that dtype
    (no bool tensor)."""
    return torch.gt(values, threshold,
                    out=torch.empty(values.shape, dtype=dtype, device=values.device))
