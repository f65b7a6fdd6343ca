"""pattern kernel: the engine kernel of a pattern layout plus the per-cycle flag tables that say
which units have an active row."""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

from ...core.cost import ActivationTiming
from ...core.engine import LayerKernel
from ...core.mapping import MappedLayer
from ...training.prune import KERNEL_POSITIONS
from .mapping import PatternMappedLayer, unit_levels

CODES = 2**KERNEL_POSITIONS  # nonzero-flag codes of the 9 inputs of one 3x3 kernel


CYCLES_PER_WORD = 63 // KERNEL_POSITIONS  # cycles whose codes share one int64 word
MASKS_DIRECT = 32  # up to this many distinct piece masks: counted mask by mask (OR of the
# masked positions' cycle flags, bit counts), more: by the code histogram


class PatternKernel(LayerKernel):
    """`LayerKernel` plus what counting needs: each row piece's input channel and position
    mask, and per piece its units in every array."""

    @cached_property
    def flag_tables(self) -> list[tuple[Tensor, int]]:
        """Input value -> which of its DAC chunks are nonzero, as lookup tables over all
        2^input_bits values: per group of up to CYCLES_PER_WORD cycles, an int64 table whose
        bit KERNEL_POSITIONS * j flags the group's cycle j, and the group's cycle count."""
        hw = self.mapped.hw
        cycles, dac_bits = hw.cycles, hw.dac.bits
        values = torch.arange(2**hw.numbers.input_bits, dtype=torch.int64, device=self.device)
        tables = []
        for first in range(0, cycles, CYCLES_PER_WORD):  # one or a few words
            count = min(CYCLES_PER_WORD, cycles - first)
            table = torch.zeros_like(values)
            for j in range(count):  # cycles of the word
                chunk = (values >> ((first + j) * dac_bits)) & (2**dac_bits - 1)
                table |= (chunk != 0).to(torch.int64) << (KERNEL_POSITIONS * j)
            tables.append((table, count))
        return tables

    @cached_property
    def cycle_flags(self) -> Tensor:
        """Input value -> its nonzero DAC chunks as one word, bit t for cycle t: a lookup
        table over all 2^input_bits values (uint8 up to 8 cycles, else int16 or int32)."""
        hw = self.mapped.hw
        cycles, dac_bits = hw.cycles, hw.dac.bits
        values = torch.arange(2**hw.numbers.input_bits, dtype=torch.int64, device=self.device)
        word = torch.zeros_like(values)
        for t in range(cycles):  # a handful of cycles
            word |= (((values >> (t * dac_bits)) & (2**dac_bits - 1)) != 0).to(torch.int64) << t
        dtype = torch.uint8 if cycles <= 8 else torch.int16 if cycles <= 15 else torch.int32
        return word.to(dtype)

    def flags_of(self, x: Tensor) -> Tensor:
        """`cycle_flags` of every input magnitude of x (uint8 or int32, any shape): with
        1-bit chunks and at most 8 cycles the flags are the value's own bits (x as uint8, no
        lookup), else a table gather."""
        table = self.cycle_flags
        hw = self.mapped.hw
        if hw.dac.bits == 1 and table.dtype == torch.uint8:
            return x.to(torch.uint8)
        return table.index_select(0, x.reshape(-1).to(torch.int32)).view(x.shape)

    @cached_property
    def masks(self) -> tuple[list[int], Tensor]:
        """The distinct 9-bit piece masks, and each piece's index into them."""
        masks, mask_index = torch.unique(self.piece_mask, return_inverse=True)
        return [int(m) for m in masks.tolist()], mask_index

    @cached_property
    def code_hits(self) -> tuple[Tensor, Tensor]:
        """(512 codes, distinct piece masks) float64: 1 where a code of nonzero flags meets
        the mask; and each piece's index into those masks."""
        masks, mask_index = torch.unique(self.piece_mask, return_inverse=True)
        codes = torch.arange(CODES, dtype=torch.int32, device=self.device).view(-1, 1)
        return ((codes & masks.view(1, -1)) != 0).to(torch.float64), mask_index

    @cached_property
    def group_levels(self) -> Tensor:
        """(S*G, ou, K) float32 programmed levels of every OU row group (memory-light)."""
        s, g, ou, k = self.shape
        lv = unit_levels(self.mapped.conductance, self.mapped.group_rows,
                         self.mapped.segment_cols)
        return lv.reshape(s * g, ou, k).to(self.device)

    def __init__(self, mapped: MappedLayer, device: torch.device) -> None:
        super().__init__(mapped, device)
        self.plan = mapped.plan if isinstance(mapped, PatternMappedLayer) else None
        if self.plan is None:
            return
        plan = self.plan
        rows = plan.piece_rows
        channel = plan.block_channel[plan.piece_block]
        pos = torch.where(rows >= 0, rows - channel.view(-1, 1) * KERNEL_POSITIONS,
                          torch.full_like(rows, KERNEL_POSITIONS))
        bits = torch.where(pos < KERNEL_POSITIONS, torch.ones_like(pos) << pos.clamp(
            max=KERNEL_POSITIONS - 1), torch.zeros_like(pos))
        self.piece_channel = channel.to(device)
        self.piece_mask = bits.sum(dim=1).to(torch.int32).to(device)  # 9-bit position mask
        height = plan.piece_height.to(torch.float64)
        cols = plan.piece_cols.to(torch.float64)
        units = plan.piece_units.to(torch.float64)
        # Per activated piece: OUs, conversions, driven rows, cell reads (all its units).
        self.piece_weights = torch.stack([units, cols, height * units, height * cols],
                                         dim=1).to(device)  # (Bp, 4)
        per_array = torch.zeros((plan.pieces, max(plan.arrays, 1)), dtype=torch.float64)
        per_array.index_put_((plan.unit_piece, plan.unit_array),
                             torch.ones(plan.units, dtype=torch.float64), accumulate=True)
        self.piece_arrays = per_array.to(device)  # (Bp, A): units of the piece in each array
        self._timed: dict[ActivationTiming, tuple[Tensor, Tensor]] = {}

    def piece_timing(self, timing: ActivationTiming) -> tuple[Tensor, Tensor]:
        """Per piece activation, by the timing rule: its ADC rounds (Bp,) and the time its
        units take in each array (Bp, A), ns (each unit one OU converting its columns)."""
        if timing not in self._timed:
            plan = self.plan
            assert plan is not None
            cols = [int(c) for c in plan.unit_cols.tolist()]
            unit_ns = torch.tensor([timing.time_ns(c) for c in cols], dtype=torch.float64)
            unit_rounds = torch.tensor([timing.rounds(c) for c in cols], dtype=torch.float64)
            rounds = torch.zeros(plan.pieces, dtype=torch.float64).index_add_(
                0, plan.unit_piece, unit_rounds)
            per_array = torch.zeros((plan.pieces, max(plan.arrays, 1)), dtype=torch.float64)
            per_array.index_put_((plan.unit_piece, plan.unit_array), unit_ns, accumulate=True)
            self._timed[timing] = (rounds.to(self.device), per_array.to(self.device))
        return self._timed[timing]
