"""Cost: events + config -> energy per component, time, area (DESIGN.md 2.5, docs/cost.md).
Pure functions.

Units: energy pJ, time ns (seconds in the result's totals), area um^2. 1 mW x 1 ns = 1 pJ.

Timing rule (one rule for every scheme): an OU activation converts its live columns with the
array's `adc.per_array` ADCs in ceil(conversions / ADCs) rounds of one conversion each
(`HardwareConfig.adc_conversion_ns` at the layer's ADC bits) and takes
    max(timing.read_ns, rounds x conversion time);
an array's activations run one after another, the arrays of a layer in parallel, so a layer
takes as long as its busiest array; layers run one after another per image (pipelined: one
image per slowest layer). Skipped OUs, terminated columns and fewer ADC bits all shorten time
through this rule. The schemes count what it needs exactly (`ActivationTiming.time_ns` of each
activation's conversion count, summed per array).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import HardwareConfig
from .events import Events

ENERGY_COMPONENTS = ("adc", "dac", "crossbar", "shift_add", "index", "comparator", "lut",
                     "zero_detect", "ou_forming", "gather", "routing", "encoder", "decoder",
                     "buffer", "digital", "leakage")
AREA_COMPONENTS = ("crossbar", "adc", "dac", "shift_add", "index", "lut", "comparator",
                   "logic")


@dataclass(frozen=True)
class Storage:
    """Extra on-chip storage and logic a scheme adds to a layer (beyond arrays and periphery):
    index and LUT bits, comparators, and logic units (zero detectors, OU formers, index
    decoders, gather and routing units, encoders, decoders: `area.logic_unit_um2` each)."""

    index_bits: int = 0
    lut_bits: int = 0
    comparators: int = 0
    logic_units: int = 0

    def __add__(self, other: Storage) -> Storage:
        return Storage(self.index_bits + other.index_bits, self.lut_bits + other.lut_bits,
                       self.comparators + other.comparators,
                       self.logic_units + other.logic_units)


@dataclass(frozen=True)
class TimingShape:
    """What a timing rule reduces to over conversion counts 1..most (`ActivationTiming.shape`):
    `time_ns`, the one time of every activation that converts (read-bound everywhere, the
    usual case), else None; `rounds`: "conversions" (one ADC per array: a round per
    conversion), "one" (an ADC for every column: one round per activation), else "table".
    Where they hold, counts need no per-activation lookups: time = time_ns x activations,
    rounds = conversions or activations, exactly."""

    time_ns: float | None
    rounds: str


@dataclass(frozen=True)
class ActivationTiming:
    """The time of one OU activation as a function of its conversions (the timing rule).

    `read_ns`: the analog read (timing.read_ns); `conversion_ns`: one conversion at the layer's
    ADC bits; `adcs`: ADCs per array. An activation with no conversion does not happen (0)."""

    read_ns: float
    conversion_ns: float
    adcs: int

    def rounds(self, conversions: int) -> int:
        """ADC rounds of an activation converting `conversions` columns."""
        return -(-conversions // self.adcs)

    def time_ns(self, conversions: int) -> float:
        """Time of an activation converting `conversions` columns, ns (0 when none)."""
        if conversions <= 0:
            return 0.0
        return max(self.read_ns, self.rounds(conversions) * self.conversion_ns)

    def table(self, most: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """(time ns, rounds) of activations converting 0..most columns, float64 (most + 1,):
        index them with a conversion count to get each activation's time and rounds."""
        counts = range(most + 1)
        return (torch.tensor([self.time_ns(c) for c in counts], dtype=torch.float64,
                             device=device),
                torch.tensor([self.rounds(c) for c in counts], dtype=torch.float64,
                             device=device))

    def shape(self, most: int) -> TimingShape:
        """What the rule reduces to over activations converting 1..`most` columns."""
        times = {self.time_ns(c) for c in range(1, most + 1)}
        return TimingShape(times.pop() if len(times) == 1 else None,
                           "conversions" if self.adcs == 1 else
                           "one" if self.adcs >= most else "table")

    def bound(self, conversions: int) -> str:
        """Which unit sets the time of an activation converting `conversions` columns:
        "adc" (the conversions) or "read" (the analog read)."""
        return "adc" if self.rounds(conversions) * self.conversion_ns > self.read_ns else "read"


def activation_timing(hw: HardwareConfig, adc_bits: int | None = None) -> ActivationTiming:
    """The timing rule of a layer converting with `adc_bits` (default: hw's resolved bits)."""
    return ActivationTiming(hw.timing.read_ns, hw.adc_conversion_ns(adc_bits),
                            hw.adc.per_array)


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
        "index": events.index_reads * (e.index_read_pj_per_bit + e.index_decode_pj_per_bit),
        "comparator": events.comparisons * e.comparison_pj,
        "lut": events.lut_reads * e.lut_read_pj,
        "zero_detect": events.zero_checks * e.zero_check_pj,
        "ou_forming": events.ou_forms * e.ou_form_pj,
        "gather": events.gathers * e.gather_pj,
        "routing": events.routes * e.route_pj,
        "encoder": events.encodes * e.encode_pj,
        "decoder": events.decodes * e.decode_pj,
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
        "logic": storage.logic_units * a.logic_unit_um2,
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


def full_use_power_mw(hw: HardwareConfig, arrays: int) -> dict[str, float]:
    """Power by component of `arrays` arrays all busy with whole OU activations back to back
    (every row of an OU driven, every column converted), mW: per activation ou.rows DAC drives,
    ou.rows x ou.cols cell reads, ou.cols conversions and shift-adds, and the input words it
    consumes from the buffer (ou.rows words per `cycles` activations) and the outputs it
    writes (ou.cols / (slices x polarities) words per `cycles` activations), over the
    activation's time by the timing rule. The comparison with ISAAC's table (docs/cost.md)."""
    timing = activation_timing(hw)
    rows, cols = hw.ou.rows, hw.ou.cols
    t_ns = timing.time_ns(cols)
    word = math.ceil(hw.numbers.input_bits / 8)
    per_channel = hw.slices * hw.polarities
    events = Events(
        ou_activations=1, adc_conversions=cols, adc_rounds=timing.rounds(cols),
        dac_activations=rows, cell_reads=rows * cols, shift_adds=cols)
    energy = energy_pj(events, hw, 0.0)
    buffer = (rows * word * hw.energy.buffer_read_pj_per_byte
              + cols / per_channel * word * hw.energy.buffer_write_pj_per_byte) / hw.cycles
    out = {k: v * arrays / t_ns for k, v in energy.items() if k not in ("total", "leakage")}
    out["buffer"] = buffer * arrays / t_ns
    out["total"] = sum(out.values())
    return out
