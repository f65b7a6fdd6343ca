"""The timing rule (docs/cost.md), written out here for the loop references of the tests:
a SAR conversion of b bits takes b / (ref_bits x sample rate) ns; an OU activation converting w
columns with A ADCs per array takes max(read_ns, ceil(w / A) x one conversion)."""

from __future__ import annotations

import math

from sparsexbar.core.config import HardwareConfig


class Timing:
    """Per-activation time and ADC rounds of a layer converting with `bits` on `hw`."""

    def __init__(self, hw: HardwareConfig, bits: int) -> None:
        assert hw.adc.kind.value == "sar"
        self.read = hw.timing.read_ns
        self.conv = bits / (hw.adc.ref_bits * hw.adc.sample_rate_gsps)
        self.adcs = hw.adc.per_array

    def rounds(self, conversions: int) -> int:
        return math.ceil(conversions / self.adcs)

    def ns(self, conversions: int) -> float:
        if conversions == 0:
            return 0.0
        return max(self.read, self.rounds(conversions) * self.conv)


def layer_bits(hw: HardwareConfig, rows: int) -> int:
    """The ADC bits of a layer of `rows` im2col rows: adc.bits, or `auto` worked out here."""
    if hw.adc.bits != "auto":
        return int(hw.adc.bits)
    worst = min(hw.ou.rows, hw.array.rows, rows) * (2**hw.cell.bits - 1) * (2**hw.dac.bits - 1)
    bits = 1
    while (2**bits - 1) * hw.adc.step < worst:
        bits += 1
    return bits
