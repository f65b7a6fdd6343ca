"""encoding mapping: the dense layout with complemented weight columns (per OU group), the bus-
invert thresholds, the encoded partial-sum bound and the layer ADC resolution."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.mapping import MappedLayer, gather_group_levels

MAX_ADC_BITS = 16  # the config's largest adc.bits


# ---- static encoding of one layer --------------------------------------------------------------
@dataclass
class LayerEncoding:
    """Per OU row group (G groups of the dense mapping, in row-tile order) and physical column
    (C): the stored levels and what the encodings need. Tensors on the CPU."""

    group_rows: Tensor  # (G, ou) int64 rows of each group, -1 padding
    group_tile: Tensor  # (G,) int64 row tile (array row) of each group
    real_rows: Tensor  # (G,) int64 rows of each group that exist
    stored: Tensor  # (G, ou, C) int32 stored levels (complemented where `complemented`)
    complemented: Tensor  # (G, C) bool weight complement flags
    input_threshold: Tensor  # (G,) int64 largest chunk sum fed as is: floor(n c / 2)
    bound: Tensor  # (G, C) int64 largest reachable encoded partial sum
    bus_invert: bool
    chunk_max: int  # c = 2^dac_bits - 1
    level_max: int  # 2^cell_bits - 1

    @property
    def stored_sum(self) -> Tensor:
        """(G, C) int64 S': each column's stored-level sum over each group."""
        return self.stored.sum(dim=1, dtype=torch.int64)

    def recovery_constants(self, col_channel: Tensor, col_weight: Tensor,
                           channels: int) -> Tensor:
        """(G, Cout) int64 bus-invert LUT: K = c x sum over the channel's columns of
        (+-shift weight) x S', the sign -1 where the column is stored complemented. An inverted
        group adds K x 2^(t dac) once per channel after the shift-and-add, which then
        subtracts the group's conversions instead of adding them."""
        sign = torch.where(self.complemented, -1, 1).to(torch.int64)
        shift = col_weight.to(torch.int64)  # +-2^(s cell_bits), exact
        per_col = self.chunk_max * sign * shift.unsqueeze(0) * self.stored_sum  # (G, C)
        out = torch.zeros((per_col.shape[0], channels), dtype=torch.int64)
        out.index_add_(1, col_channel, per_col)
        return out


def group_geometry(mapped: MappedLayer) -> tuple[Tensor, Tensor]:
    """(group rows (G, ou), row tile of each group (G,)) of a dense mapping."""
    if mapped.group_rows.shape[0] != 1:
        raise ValueError("encodings are defined on the dense mapping (one segment)")
    rows = mapped.group_rows[0]
    per_tile = [math.ceil((b - a) / mapped.hw.ou.rows) for a, b in mapped.row_tiles]
    tile = torch.repeat_interleave(torch.arange(len(per_tile)), torch.tensor(per_tile))
    return rows, tile


def complement_weights(levels: Tensor, real: Tensor, level_max: int,
                       enabled: bool = True) -> tuple[Tensor, Tensor]:
    """Weight complement per (group, column): levels (G, ou, C) int, real (G, ou) bool.

    A column group whose level sum exceeds half its maximum (n x level_max / 2) stores
    level_max - L on its real rows. Returns (stored levels, flags (G, C) bool).
    """
    sums = levels.sum(dim=1, dtype=torch.int64)  # (G, C)
    n = real.sum(dim=1, keepdim=True).to(torch.int64)  # (G, 1)
    flags = (2 * sums > n * level_max) if enabled else torch.zeros_like(sums, dtype=torch.bool)
    flip = flags.unsqueeze(1) & real.unsqueeze(2)
    stored = torch.where(flip, level_max - levels, levels)
    return stored, flags


def encoded_bound(stored: Tensor, real_rows: Tensor, chunk_max: int, bus_invert: bool) -> Tensor:
    """(G, C) largest partial sum any input can produce from the stored levels (G, ou, C).

    Without input encoding: c x S'. With bus-invert the encoded chunks sum to at most
    h = floor(n c / 2), so the worst case fills the largest levels first: c x (sum of the
    q = h // c largest levels) + (h mod c) x the next one.
    """
    s = stored.to(torch.int64)
    if not bus_invert:
        return chunk_max * s.sum(dim=1)
    h = (real_rows * chunk_max) // 2  # (G,)
    q = h // chunk_max
    r = h % chunk_max
    top = torch.sort(s, dim=1, descending=True).values  # (G, ou, C)
    csum = torch.nn.functional.pad(torch.cumsum(top, dim=1), (0, 0, 1, 0))  # (G, ou+1, C)
    c = s.shape[2]
    taken = torch.gather(csum, 1, q.view(-1, 1, 1).expand(-1, 1, c)).squeeze(1)
    nxt = torch.gather(torch.nn.functional.pad(top, (0, 0, 0, 1)), 1,
                       q.view(-1, 1, 1).expand(-1, 1, c)).squeeze(1)
    return chunk_max * taken + r.view(-1, 1) * nxt


def encode_layer(mapped: MappedLayer, bus_invert: bool, weight_complement: bool) -> LayerEncoding:
    """The static encoding data of a dense-mapped layer."""
    hw = mapped.hw
    rows, tile = group_geometry(mapped)
    levels = gather_group_levels(mapped.levels.to(torch.int32), rows.unsqueeze(0),
                                  mapped.segment_cols)[0]  # (G, ou, C)
    real = rows >= 0
    level_max = 2**hw.cell.bits - 1
    chunk_max = 2**hw.dac.bits - 1
    stored, flags = complement_weights(levels, real, level_max, weight_complement)
    real_rows = real.sum(dim=1).to(torch.int64)
    return LayerEncoding(
        group_rows=rows, group_tile=tile, real_rows=real_rows, stored=stored,
        complemented=flags, input_threshold=(real_rows * chunk_max) // 2,
        bound=encoded_bound(stored, real_rows, chunk_max, bus_invert),
        bus_invert=bus_invert, chunk_max=chunk_max, level_max=level_max,
    )


def lossless_adc_bits(bound: float, step: float = 1.0) -> int:
    """Smallest ADC bits whose range (2^b - 1) x step holds `bound` (>= 1 bit)."""
    bits = 1
    while (2**bits - 1) * step < bound:
        bits += 1
    return bits


# ---- mapped layer and kernel -------------------------------------------------------------------
@dataclass
class EncodingMappedLayer(MappedLayer):
    """The dense mapping (`hw` is the configured hardware, so the record's dense baseline keeps
    the configured ADC) plus the layer's encoding and its own ADC resolution."""

    encoding: LayerEncoding | None = None
    layer_bits: int = 8
    lossless_bits: int = 8
    encoded_max: float = 0.0  # largest reachable encoded partial sum

    @property
    def layer_hw(self) -> HardwareConfig:
        """The hardware this layer converts with: the config with adc.bits = layer_bits."""
        if "layer_hw" not in self._cache:
            self._cache["layer_hw"] = (self.hw if self.layer_bits == self.hw.adc.bits
                                       else self.hw.with_overrides({"adc.bits": self.layer_bits}))
        value = self._cache["layer_hw"]
        assert isinstance(value, HardwareConfig)
        return value

    def adc_can_clip(self) -> bool:
        """Some reachable encoded partial sum exceeds this layer's ADC range."""
        return self.encoded_max > (2**self.layer_bits - 1) * self.hw.adc.step

    def exact_linear(self) -> bool:
        return self.hw.device.ideal and self.hw.adc.step == 1.0 and not self.adc_can_clip()
