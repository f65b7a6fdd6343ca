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
        lv = _gather_group_levels(mapped.conductance.to(torch.float32), mapped.group_rows,
                                  mapped.segment_cols)
        self.group_levels = lv.reshape(s * g, ou, k).to(device)
        rows = mapped.group_rows.reshape(-1)
        r = mapped.levels.shape[0]
        self.row_index = torch.where(rows < 0, torch.full_like(rows, r), rows).to(device)
        ccols = mapped.physical_cols
        cols = mapped.segment_cols.reshape(-1)
        self.col_index = torch.where(cols < 0, torch.full_like(cols, ccols), cols).to(device)
        combine = torch.zeros((ccols + 1, mapped.layer.out_channels), dtype=torch.float64)
        combine[torch.arange(ccols), mapped.col_channel] = mapped.col_weight
        self.combine = combine.to(device)  # padding column (last row) maps to nothing
        self.cycle_weight = torch.tensor(
            [float(2 ** (t * hw.dac.bits)) for t in range(hw.cycles)], dtype=torch.float64,
            device=device,
        )
        self.exact_linear = mapped.exact_linear()
        self.seed = hw.device.seed * 7_919 + zlib.crc32(mapped.layer.name.encode())
        self.calls = 0

    def chunk_rows(self, budget_mb: float) -> int:
        """Output positions per chunk so the (groups x cycles x positions x cols) tensors fit."""
        s, g, ou, k = self.shape
        per_position = self.mapped.hw.cycles * s * g * (k * 3 + ou) * 4  # bytes, ~3 live copies
        return max(1, int(budget_mb * 2**20 // per_position))

    def accumulate(self, x_int: Tensor, options: EngineOptions) -> Tensor:
        """Integer input (N, ...) -> accumulator (N, Cout[, Ho, Wo]) float64, bit-accurately."""
        layer = self.mapped.layer
        patches = layer.patches(x_int.to(torch.float32))  # (M, R)
        if layer.input_signed:
            parts = [(patches.clamp(min=0), 1.0), ((-patches).clamp(min=0), -1.0)]
        else:
            parts = [(patches, 1.0)]
        acc = torch.zeros((patches.shape[0], layer.out_channels), dtype=torch.float64,
                          device=patches.device)
        for part, sign in parts:  # one or two passes
            acc += sign * self._accumulate_unsigned(part, options)
        return layer.fold_output(acc, x_int.shape[0])

    def _accumulate_unsigned(self, patches: Tensor, options: EngineOptions) -> Tensor:
        hw = self.mapped.hw
        s, g, ou, k = self.shape
        cycles, dac_bits = hw.cycles, hw.dac.bits
        chunk_mask = 2**dac_bits - 1
        m_total = patches.shape[0]
        step = hw.adc.step
        top = hw.adc_max_code
        dev = hw.device
        col_sums = torch.zeros((m_total, s * k), dtype=torch.float64, device=patches.device)
        chunk = self.chunk_rows(options.memory_budget_mb)
        x_long = patches.to(torch.int64)
        x_long = torch.nn.functional.pad(x_long, (0, 1))  # padding row index -> zero input
        gen: torch.Generator | None = None
        if not dev.ideal:
            gen = torch.Generator(device=patches.device)
            gen.manual_seed(self.seed + 104_729 * self.calls)
            self.calls += 1
        shifts = torch.arange(cycles, device=patches.device) * dac_bits
        for a in range(0, m_total, chunk):  # chunks of output positions (memory bound)
            xc = x_long[a : a + chunk]
            m = xc.shape[0]
            planes = (xc.unsqueeze(0) >> shifts.view(-1, 1, 1)) & chunk_mask  # (T, m, R+1)
            xg = planes[:, :, self.row_index].to(torch.float32)  # (T, m, S*G*ou)
            xg = xg.reshape(cycles * m, s * g, ou).transpose(0, 1)  # (S*G, T*m, ou)
            p = torch.bmm(xg, self.group_levels)  # (S*G, T*m, K)
            if gen is not None:
                if dev.read_noise_sigma > 0:
                    p = p * (1 + dev.read_noise_sigma * torch.randn(
                        p.shape, generator=gen, device=p.device))
                if dev.accumulated_deviation_sigma > 0:
                    active = (xg > 0).sum(dim=2, keepdim=True).to(torch.float32)
                    p = p + dev.accumulated_deviation_sigma * active.sqrt() * torch.randn(
                        p.shape, generator=gen, device=p.device)
            q = torch.round(p / step).clamp_(0, top) * step if step != 1.0 else (
                torch.round(p).clamp_(0, top))
            q = q.reshape(s, g, cycles, m, k).sum(dim=1)  # (S, T, m, K): shift-add over groups
            per_col = torch.einsum("stmk,t->msk", q.to(torch.float64), self.cycle_weight)
            col_sums[a : a + m] = per_col.reshape(m, s * k)
        phys = torch.zeros((m_total, self.mapped.physical_cols + 1), dtype=torch.float64,
                           device=patches.device)
        phys.index_add_(1, self.col_index, col_sums)
        acc = phys @ self.combine
        if self.mapped.offset:
            acc -= float(self.mapped.offset) * patches.to(torch.float64).sum(dim=1, keepdim=True)
        return acc


def accumulate(kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> Tensor:
    """The layer's accumulator: exact shortcut when provably lossless, else bit-accurate."""
    if options.exact_shortcut and kernel.exact_linear:
        return exact_accumulate(kernel.mapped.layer, x_int)
    return kernel.accumulate(x_int, options)
