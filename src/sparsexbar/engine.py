"""Engine: bit-serial, OU-granular execution of a mapped layer with the ADC and device model.

For every input chunk (cycle) t, segment s, OU row group g and column k, the partial sum is
    p = sum over the group's rows of conductance[row, col] * chunk_t[row]
and the ADC returns clamp(round(p / step), 0, 2^bits - 1) * step (DESIGN.md 2.3). Shift-and-add
combines cycles (x 2^(t*dac_bits)), slices and polarities (x +-2^(s*cell_bits)), then the
offset of the `offset` encoding is removed digitally.

Vectorization (after NeuroSim V1.5): all cycles x row groups x columns of a chunk of output
positions go through one batched matmul (`torch.bmm` over row groups); the only Python loops
are over chunks of positions (to bound memory) and over the handful of input cycles/passes.

Exact shortcut: when the conversions are provably the identity (ideal device, unit step, and no
reachable partial sum above the ADC range), the per-group conversion is skipped and the layer is
one integer convolution, done in float32 with the input split into bit pieces small enough that
every partial sum stays below 2^24 (so float32 arithmetic is exact).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .frontend import QuantLayer
from .mapping import MappedLayer, _gather_group_levels

FLOAT32_EXACT = 2**24


@dataclass(frozen=True)
class EngineOptions:
    """Run-time knobs of the engine (not hardware)."""

    memory_budget_mb: float = 512.0  # bound on the big intermediates of one chunk, MiB
    exact_shortcut: bool = True  # skip per-group conversion where provably lossless


def exact_accumulate(layer: QuantLayer, x_int: Tensor) -> Tensor:
    """sum_r W[r, c] * x[r] exactly, via float32 linear ops on bit pieces of |x|; float64 out."""
    if x_int.device.type != "cpu":
        # cuDNN may pick TF32, Winograd or FFT algorithms, which are not exact: use float64.
        return layer.reference_accumulate(x_int).to(torch.float64)
    w = layer.weight_int.to(x_int.device)
    col_abs_sum = float(w.reshape(w.shape[0], -1).abs().sum(dim=1).max()) if w.numel() else 0.0
    x_max = float(x_int.abs().max()) if x_int.numel() else 0.0
    wf = w.to(torch.float32)
    if col_abs_sum * x_max < FLOAT32_EXACT:
        return layer.linear_op(x_int.to(torch.float32), wf).to(torch.float64)
    piece_bits = max(1, int(math.floor(math.log2(FLOAT32_EXACT / max(col_abs_sum, 1.0) + 1))))
    while col_abs_sum * (2**piece_bits - 1) >= FLOAT32_EXACT and piece_bits > 1:
        piece_bits -= 1
    if col_abs_sum * (2**piece_bits - 1) >= FLOAT32_EXACT:  # a single weight column too large
        return layer.reference_accumulate(x_int).to(torch.float64)
    mag = x_int.abs().to(torch.int64)
    sign = torch.sign(x_int).to(torch.float32)
    total_bits = max(1, int(x_max).bit_length())
    acc: Tensor | None = None
    for j in range(math.ceil(total_bits / piece_bits)):  # 2 pieces for 8-bit inputs
        piece = ((mag >> (j * piece_bits)) & (2**piece_bits - 1)).to(torch.float32) * sign
        part = layer.linear_op(piece, wf).to(torch.float64) * float(2 ** (j * piece_bits))
        acc = part if acc is None else acc + part
    assert acc is not None
    return acc


class LayerKernel:
    """Per-layer state of the bit-accurate path: grouped conductances and combine matrices."""

    def __init__(self, mapped: MappedLayer, device: torch.device) -> None:
        self.mapped = mapped
        self.device = device
        hw = mapped.hw
        s, g, ou = mapped.group_rows.shape
        k = mapped.segment_cols.shape[1]
        self.shape = (s, g, ou, k)
        self.cycle_weight = torch.tensor(
            [float(2 ** (t * hw.dac.bits)) for t in range(hw.cycles)], dtype=torch.float64,
            device=device,
        )
        self.exact_linear = mapped.exact_linear()
        self.max_partial_sum = mapped.max_partial_sum()
        self.seed = hw.device.seed * 7_919 + zlib.crc32(mapped.layer.name.encode())
        self.calls = 0

    # The tensors of the per-conversion path are built on first use: layers that take the
    # exact shortcut never pay for them (memory and set-up time).
    @cached_property
    def group_levels(self) -> Tensor:
        """(S*G, ou, K) float32 programmed levels of every OU row group."""
        s, g, ou, k = self.shape
        lv = _gather_group_levels(self.mapped.conductance, self.mapped.group_rows,
                                  self.mapped.segment_cols)
        return lv.reshape(s * g, ou, k).to(self.device)

    @cached_property
    def row_bound(self) -> Tensor:
        """(S*G, ou, 1): per group row, the largest level over the segment's columns."""
        s, g, ou, _ = self.shape
        return self.group_levels.amax(dim=2, keepdim=True).reshape(s * g, ou, 1)

    @cached_property
    def row_active(self) -> Tensor:
        """(S*G, ou, 1): 1 for real rows, 0 for padding (finds groups with an active input)."""
        s, g, ou, _ = self.shape
        return (self.mapped.group_rows >= 0).to(torch.float32).reshape(s * g, ou, 1).to(
            self.device)

    @cached_property
    def row_index(self) -> Tensor:
        rows = self.mapped.group_rows.reshape(-1)
        r = self.mapped.levels.shape[0]
        return torch.where(rows < 0, torch.full_like(rows, r), rows).to(self.device)

    @cached_property
    def col_index(self) -> Tensor:
        ccols = self.mapped.physical_cols
        cols = self.mapped.segment_cols.reshape(-1)
        return torch.where(cols < 0, torch.full_like(cols, ccols), cols).to(self.device)

    @cached_property
    def combine(self) -> Tensor:
        """(Ccols+1, Cout) float64: physical column -> output channel, with its shift and sign;
        the last row (padding column) maps to nothing."""
        mapped = self.mapped
        ccols = mapped.physical_cols
        combine = torch.zeros((ccols + 1, mapped.layer.out_channels), dtype=torch.float64)
        combine[torch.arange(ccols), mapped.col_channel] = mapped.col_weight
        return combine.to(self.device)

    def chunk_rows(self, budget_mb: float) -> int:
        """Output positions per chunk so the (groups x cycles x positions x cols) tensors fit."""
        s, g, ou, k = self.shape
        per_position = self.mapped.hw.cycles * s * g * (k * 3 + ou) * 4  # bytes, ~3 live copies
        return max(1, int(budget_mb * 2**20 // per_position))

    def accumulate(self, x_int: Tensor, options: EngineOptions) -> Tensor:
        """Integer input (N, ...) -> accumulator (N, Cout[, Ho, Wo]) float64, bit-accurately.

        Ideal device: the exact integer result plus, for every (cycle, position, OU group)
        whose partial sums could leave the ADC's identity range (bound check below), the
        difference ADC(p) - p of each of its columns. Non-ideal device: ADC(p) of every
        OU group with a nonzero input (a group with no active row reads 0).
        """
        layer = self.mapped.layer
        ideal = self.mapped.hw.device.ideal
        patches = layer.patches(x_int.to(torch.float32))  # (M, R)
        if layer.input_signed:
            parts = [(patches.clamp(min=0), 1.0), ((-patches).clamp(min=0), -1.0)]
        else:
            parts = [(patches, 1.0)]
        acc = torch.zeros((patches.shape[0], layer.out_channels), dtype=torch.float64,
                          device=patches.device)
        for part, sign in parts:  # one or two passes
            acc += sign * self._column_sums(part, ideal, options) @ self.combine
            if self.mapped.offset and not ideal:
                acc -= sign * float(self.mapped.offset) * part.to(torch.float64).sum(
                    dim=1, keepdim=True)
        out = layer.fold_output(acc, x_int.shape[0])
        if ideal:
            out = out + exact_accumulate(layer, x_int)
        return out

    def _column_sums(self, patches: Tensor, ideal: bool, options: EngineOptions) -> Tensor:
        """Per physical column (M, Ccols+1), float64: sum over cycles and OU groups of the
        conversion results (non-ideal) or of their deviations from the partial sums (ideal)."""
        hw = self.mapped.hw
        s, g, ou, k = self.shape
        cycles, dac_bits = hw.cycles, hw.dac.bits
        step, top, dev = hw.adc.step, hw.adc_max_code, hw.device
        # A group's partial sums are all reproduced exactly by the ADC when their bound is at
        # most `threshold` (integer p <= top with unit step); otherwise the group is a candidate.
        threshold = float(top) if (ideal and step == 1.0) else 0.0
        bound_levels = self.row_bound if ideal else self.row_active
        m_total = patches.shape[0]
        device = patches.device
        # float32 sums are exact while every |sum| stays below 2^24 (ideal: integer values).
        # Bound on any |sum|: each term is at most the largest partial sum, weighted by its
        # cycle's shift, summed over all cycles and all G groups of a segment.
        max_term = self.max_partial_sum * float(self.cycle_weight.sum()) * g
        acc_dtype = torch.float32 if ideal and max_term < FLOAT32_EXACT else torch.float64
        cycle_weight = self.cycle_weight.to(acc_dtype)
        block = 256
        col_sums = torch.zeros((m_total * s, k), dtype=acc_dtype, device=device)
        chunk = self.chunk_rows(options.memory_budget_mb)
        x_long = torch.nn.functional.pad(patches.to(torch.int64), (0, 1))  # padding row -> 0
        gen: torch.Generator | None = None
        if not ideal:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed + 104_729 * self.calls)
            self.calls += 1
        shifts = torch.arange(cycles, device=device) * dac_bits
        for a in range(0, m_total, chunk):  # chunks of output positions (memory bound)
            xc = x_long[a : a + chunk]
            m = xc.shape[0]
            planes = (xc.unsqueeze(0) >> shifts.view(-1, 1, 1)) & (2**dac_bits - 1)
            xg = planes[:, :, self.row_index].to(torch.float32)  # (T, m, S*G*ou)
            xg = xg.reshape(cycles * m, s * g, ou).transpose(0, 1)  # (S*G, T*m, ou)
            bound = torch.bmm(xg, bound_levels).squeeze(2)  # (S*G, T*m)
            mask = bound > threshold
            counts = mask.sum(dim=1)
            n_cand = int(counts.sum())
            if n_cand == 0:
                continue
            sg_idx, tm_idx = mask.nonzero(as_tuple=True)  # sorted by group
            # Pack candidates into blocks of `block` rows that share one OU group, so one bmm
            # evaluates them all and padding is at most one partial block per group.
            start = torch.cumsum(counts, 0) - counts
            rank = torch.arange(n_cand, device=device) - start[sg_idx]
            blocks_per_group = torch.div(counts + block - 1, block, rounding_mode="floor")
            first_block = torch.cumsum(blocks_per_group, 0) - blocks_per_group
            block_id = first_block[sg_idx] + torch.div(rank, block, rounding_mode="floor")
            slot = rank % block
            n_blocks = int(blocks_per_group.sum())
            block_group = torch.repeat_interleave(
                torch.arange(s * g, device=device), blocks_per_group)
            packed = torch.zeros((n_blocks, block, ou), dtype=torch.float32, device=device)
            packed[block_id, slot] = xg[sg_idx, tm_idx]
            p_blocks = torch.bmm(packed, self.group_levels[block_group])  # (blocks, block, K)
            t_idx = torch.div(tm_idx, m, rounding_mode="floor")
            rows = (a + tm_idx - t_idx * m) * s + torch.div(sg_idx, g, rounding_mode="floor")
            weight = cycle_weight[t_idx]
            if ideal and step == 1.0:
                # ADC(p) - p = -(p - top) where p > top, else 0: only clipped entries matter.
                # Padding slots hold p = 0 and never clip.
                hit_b, hit_slot, hit_col = (p_blocks > float(top)).nonzero(as_tuple=True)
                if hit_b.numel() == 0:
                    continue
                cand_of = torch.zeros((n_blocks, block), dtype=torch.int64, device=device)
                cand_of[block_id, slot] = torch.arange(n_cand, device=device)
                cand = cand_of[hit_b, hit_slot]
                excess = p_blocks[hit_b, hit_slot, hit_col] - float(top)
                values = -excess.to(acc_dtype) * weight[cand]
                col_sums.index_put_((rows[cand], hit_col), values, accumulate=True)
                continue
            p = p_blocks[block_id, slot]  # (n_cand, K)
            if gen is not None:
                if dev.read_noise_sigma > 0:
                    p = p * (1 + dev.read_noise_sigma * torch.randn(
                        p.shape, generator=gen, device=device))
                if dev.accumulated_deviation_sigma > 0:
                    active = (packed[block_id, slot] > 0).sum(dim=1, keepdim=True)
                    # std grows linearly with the rows activated together (variance ~ n^2),
                    # so fewer, larger activations accumulate more error than many small ones.
                    p = p + dev.accumulated_deviation_sigma * active.to(torch.float32) * (
                        torch.randn(p.shape, generator=gen, device=device))
            q = torch.round(p / step).clamp_(0, top) * step
            value = (q - p) if ideal else q
            col_sums.index_add_(0, rows, value.to(acc_dtype) * weight[:, None])
        per_col = col_sums.to(torch.float64).reshape(m_total, s * k)
        phys = torch.zeros((m_total, self.mapped.physical_cols + 1), dtype=torch.float64,
                           device=device)
        phys.index_add_(1, self.col_index, per_col)
        return phys


def accumulate(kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> Tensor:
    """The layer's accumulator: exact shortcut when provably lossless, else bit-accurate."""
    if options.exact_shortcut and kernel.exact_linear:
        return exact_accumulate(kernel.mapped.layer, x_int)
    return kernel.accumulate(x_int, options)
