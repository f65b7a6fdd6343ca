"""Cost: events + config -> energy per component, latency, area (DESIGN.md 2.5). Pure functions.

Units: energy pJ, time ns (seconds in the result's totals), area um^2. 1 mW x 1 ns = 1 pJ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import HardwareConfig
from .events import Events

ENERGY_COMPONENTS = ("adc", "dac", "crossbar", "shift_add", "index", "comparator", "lut",
                     "buffer", "digital", "leakage")


@dataclass(frozen=True)
class Storage:
    """Extra on-chip storage and logic a scheme adds to a layer (beyond arrays and periphery)."""

    index_bits: int = 0
    lut_bits: int = 0
    comparators: int = 0


def energy_pj(events: Events, hw: HardwareConfig, time_ns: float,
              adc_bits: int | None = None) -> dict[str, float]:
    """Energy of a set of events by component, plus leakage over `time_ns`; adds `total`."""
    e = hw.energy
    parts = {
        "adc": events.adc_conversions * hw.adc_energy_pj(adc_bits),
        "dac": events.dac_activations * hw.dac.energy_pj,
        "crossbar": events.cell_reads * e.cell_read_pj
        + events.ou_activations * e.ou_activation_pj,
        "shift_add": events.shift_adds * e.shift_add_pj,
        "index": events.index_reads * e.index_read_pj_per_bit,
        "comparator": events.comparisons * e.comparison_pj,
        "lut": events.lut_reads * e.lut_read_pj,
        "buffer": events.buffer_read_bytes * e.buffer_read_pj_per_byte
        + events.buffer_write_bytes * e.buffer_write_pj_per_byte,
        "digital": events.digital_ops * e.digital_op_pj,
        "leakage": e.leakage_mw * time_ns,
    }
    parts["total"] = sum(parts.values())
    return parts


def rram_adc_dac_energy(energy: Mapping[str, float]) -> float:
    """Energy of the crossbar, ADCs and DACs only (the pattern-mapping paper's metric), pJ."""
    return energy["crossbar"] + energy["adc"] + energy["dac"]


def latency_ns(cycles: int, hw: HardwareConfig) -> float:
    """Time of `cycles` OU activations of the busiest array, ns."""
    return cycles * hw.ou_cycle_ns


def area_um2(arrays: int, hw: HardwareConfig, storage: Storage = Storage(),
             adc_bits: int | None = None) -> dict[str, float]:
    """Area of one layer's arrays with their periphery and the scheme's storage; adds `total`."""
    a = hw.area
    parts = {
        "crossbar": arrays * hw.array.rows * hw.array.cols * a.cell_um2,
        "adc": arrays * hw.adc.per_array * hw.adc_area_um2(adc_bits),
        "dac": arrays * hw.array.rows * hw.dac.area_um2,
        "shift_add": arrays * a.shift_add_um2,
        "index": storage.index_bits * a.index_um2_per_bit,
        "lut": storage.lut_bits * a.lut_um2_per_bit,
        "comparator": storage.comparators * a.comparator_um2,
    }
    parts["total"] = sum(parts.values())
    return parts


def buffer_area_um2(hw: HardwareConfig) -> float:
    """The shared on-chip buffer, um^2 (counted once in the totals)."""
    return hw.area.buffer_kb * hw.area.buffer_um2_per_kb


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 1.0 when both are zero, inf when only the denominator is."""
    if denominator == 0:
        return 1.0 if numerator == 0 else float("inf")
    return numerator / denominator
