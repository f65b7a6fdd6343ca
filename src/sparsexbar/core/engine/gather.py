"""Inputs of OU row groups without im2col: weighted group sums at every output position
(`GroupSums`, depthwise convolutions) and flat indices of a group's rows at a position
(`RowGather`, gathers from a padded, flattened input chunk)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..frontend import QuantLayer
from .exact import exact_dtype
from .indices import INT32_LIMIT

SLOTS_LOOPED = 4  # up to this many depthwise filters per input channel: one conv each


class GroupSums:
    """s[n, b, pos] = sum_j weight[b, j] * x[n, rows[b, j] at output position pos]: a weighted
    sum of every OU row group's inputs at every output position, without im2col.

    Conv layers: the rows of a group are cut into pieces by input channel; every piece is a
    depthwise filter, and the filters of one input channel get distinct slots (pieces of one
    channel in different groups). Slot j of every channel is one depthwise convolution
    (groups = Cin), its outputs added into their groups with index_add. Linear layers: a
    gather of the group rows. Values are small integers: exact in float32 on CPU.
    """

    def __init__(self, layer: QuantLayer, rows: Tensor, weight: Tensor,
                 device: torch.device) -> None:
        self.layer = layer
        self.device = device
        self.dtype = exact_dtype(device)
        self.groups = int(rows.shape[0])
        rows = rows.cpu()
        weight = weight.cpu().to(torch.float64)
        if layer.kind == "linear":
            r = layer.rows
            self.conv_maps = int(rows.numel())  # the gathered (groups x ou) inputs
            self.rows_padded = torch.where(rows < 0, torch.full_like(rows, r), rows).to(device)
            self.weight = weight.to(device=device, dtype=self.dtype)
            return
        cin = layer.in_channels  # rows index the full im2col rows (every group's)
        kh, kw = layer.kernel_size
        kk = kh * kw
        b_count = self.groups
        valid = (rows >= 0) & (weight != 0)
        b_idx, j_idx = valid.nonzero(as_tuple=True)
        row = rows[b_idx, j_idx]
        chan, tap = torch.div(row, kk, rounding_mode="floor"), row % kk
        key = chan * b_count + b_idx  # pieces sorted by channel, then group
        uniq, inverse = torch.unique(key, return_inverse=True)
        piece_chan = torch.div(uniq, b_count, rounding_mode="floor")
        piece_group = uniq % b_count
        counts = torch.bincount(piece_chan, minlength=cin)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(uniq.numel()) - first[piece_chan]
        self.slots = max(1, int(counts.max())) if counts.numel() else 1
        filters = torch.zeros((self.slots, cin, kk), dtype=torch.float64)
        filters[slot[inverse], chan, tap] = weight[b_idx, j_idx]
        target = torch.full((self.slots, cin), b_count, dtype=torch.int64)  # b_count: dump
        target[slot, piece_chan] = piece_group
        self.cin = cin
        self.conv_maps = cin * (1 if self.slots <= SLOTS_LOOPED else self.slots)
        if self.slots <= SLOTS_LOOPED:
            self.filters = [filters[j].reshape(cin, 1, kh, kw).to(device=device, dtype=self.dtype)
                            for j in range(self.slots)]
            self.targets = [target[j].to(device) for j in range(self.slots)]
        else:  # one depthwise convolution with `slots` filters per channel (channel-major)
            self.filters = [filters.permute(1, 0, 2).reshape(cin * self.slots, 1, kh, kw).to(
                device=device, dtype=self.dtype)]
            self.targets = [target.t().reshape(-1).to(device)]

    def __call__(self, x: Tensor) -> Tensor:
        """x: (N, Cin, H, W) or (N, R) -> (N, groups, positions) in `self.dtype`."""
        layer = self.layer
        n = int(x.shape[0])
        x = x.to(self.dtype)
        if layer.kind == "linear":
            xp = F.pad(x.reshape(n, -1), (0, 1))  # padding row -> 0
            return (xp[:, self.rows_padded] * self.weight).sum(dim=2).unsqueeze(2)
        out: Tensor | None = None
        for filt, target in zip(self.filters, self.targets, strict=True):  # <= 4 slots
            y = F.conv2d(x, filt, None, layer.stride, layer.padding, layer.dilation,
                         groups=self.cin)
            y = y.reshape(n, y.shape[1], -1)
            if out is None:
                out = torch.zeros((n, self.groups + 1, y.shape[2]), dtype=self.dtype,
                                  device=x.device)
            out.index_add_(1, target, y)
        assert out is not None
        return out[:, : self.groups]


class RowGather:
    """Flat indices of the rows of an OU group at an output position, in a flattened, padded
    input chunk: the value of row j of group b at (image n, position pos) is
    flat[n * image_stride + position_base[pos] + row_offset[b, j]]. `flat` ends with one
    image of zeros: a padding slot's base (`tail`) reads zeros there. Padding rows (-1) read
    offset 0 and must meet a zero level."""

    def __init__(self, layer: QuantLayer, rows: Tensor, input_shape: tuple[int, ...],
                 device: torch.device) -> None:
        self.layer = layer
        rows = rows.clamp(min=0)
        if layer.kind == "linear":
            self.image_stride = int(layer.rows)
            self.position_base = torch.zeros(1, dtype=torch.int64, device=device)
            self.row_offset = rows.to(device)
            self.row_offset32 = self.row_offset.to(torch.int32)
            self.pad: tuple[int, int, int, int] = (0, 0, 0, 0)
            return
        cin, h, w = (int(v) for v in input_shape)
        kh, kw = layer.kernel_size
        ph, pw = layer.padding
        sh, sw = layer.stride
        dh, dw = layer.dilation
        hp, wp = h + 2 * ph, w + 2 * pw
        ho = (hp - dh * (kh - 1) - 1) // sh + 1
        wo = (wp - dw * (kw - 1) - 1) // sw + 1
        chan = torch.div(rows, kh * kw, rounding_mode="floor")
        tap = rows % (kh * kw)
        i, j = torch.div(tap, kw, rounding_mode="floor"), tap % kw
        self.row_offset = (chan * hp * wp + i * dh * wp + j * dw).to(device)
        oy = torch.arange(ho).view(-1, 1)
        ox = torch.arange(wo).view(1, -1)
        self.position_base = (oy * sh * wp + ox * sw).reshape(-1).to(device)
        self.image_stride = cin * hp * wp
        self.pad = (pw, pw, ph, ph)
        self.row_offset32 = self.row_offset.to(torch.int32)

    def flat(self, x: Tensor) -> Tensor:
        """A chunk of inputs (N, ...) -> its padded, flattened float32 copy + one zero image."""
        n = int(x.shape[0])
        out = torch.zeros((n + 1) * self.image_stride, dtype=torch.float32, device=x.device)
        if self.layer.kind == "linear":
            out[: n * self.image_stride] = x.reshape(-1)
        else:  # the image inside its zero border, written in place (no padded copy)
            pw, _, ph, _ = self.pad
            c, h, w = (int(v) for v in x.shape[1:])
            padded = out.view(n + 1, c, h + 2 * ph, w + 2 * pw)
            padded[:n, :, ph : ph + h, pw : pw + w] = x
        return out

    def position_bases(self, n: int) -> Tensor:
        """(n * P,) flat index of every (image, position)'s first row, for a chunk of n; int32
        (half the memory traffic of the gathers) when the chunk's flat copy allows it."""
        images = torch.arange(n, device=self.position_base.device).unsqueeze(1)
        bases = (images * self.image_stride + self.position_base.unsqueeze(0)).reshape(-1)
        return bases.to(torch.int32) if (n + 1) * self.image_stride < INT32_LIMIT else bases

    def packed_values(self, flat: Tensor, base: Tensor, block_group: Tensor) -> Tensor:
        """(blocks, size) slot bases, (blocks,) group of each block -> (blocks, size, ou)."""
        offsets = self.row_offset32 if base.dtype == torch.int32 else self.row_offset
        index = base.unsqueeze(2) + offsets.index_select(0, block_group).unsqueeze(1)
        return flat.index_select(0, index.reshape(-1)).reshape(index.shape)
