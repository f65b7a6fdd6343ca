"""The hardware description: a typed, validated parameter tree with named presets.

Every field carries its meaning, unit and source in its description. The tree loads from and
saves to YAML or JSON with an exact round trip (enums are stored by name), validates on load
with an error that names the offending field, and accepts dotted overrides
(``{"ou.rows": 9}``), as the CLI's ``--set key=value`` does.

Sources for defaults: ISAAC (Shafiee et al., ISCA 2016, Table I: 32 nm, per IMA and per
tile power and area) for the 128x128 array, 2-bit cells, 1-bit DAC, the 8-bit 1.2 GS/s SAR ADC
(Kull et al., ISSCC 2013), the DAC, cell read, shift-and-add and eDRAM energies and areas; the
SAR scaling with resolution of Saberi et al. (IEEE TCAS-I 2011) for the ADC model; the
pattern-mapping paper (Yu et al., arXiv 2010.06156) for the ``pattern-nvmsa`` preset. The
logic that the schemes add (zero detection, OU forming, index decoding, input gathering,
output routing, encoders, decoders) is not in those tables: its energies and areas are stated
assumptions, sized against ISAAC's 16-bit shift-and-add unit. docs/cost.md has the model in a
page and every constant with its source.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from .errors import ConfigError, parse_failure
from .io import atomic_write_text


class SignEncoding(str, Enum):
    """How signed weights are stored in non-negative conductances."""

    differential = "differential"
    offset = "offset"


class BitOrder(str, Enum):
    """Order in which input bit-chunks are fed to the rows."""

    msb_first = "msb_first"
    lsb_first = "lsb_first"


class Variation(str, Enum):
    """Distribution of per-cell programmed-conductance variation."""

    none = "none"
    lognormal = "lognormal"
    normal = "normal"


class ADCKind(str, Enum):
    """ADC architecture: how conversion time, energy and area scale with resolution."""

    sar = "sar"
    flash = "flash"


AUTO = "auto"
MAX_ADC_BITS = 16
AdcBits = Annotated[int, Field(ge=1, le=MAX_ADC_BITS)] | Literal["auto"]


# True while `HardwareConfig.from_dict` validates: it formats the errors itself (naming its
# source); a HardwareConfig made directly formats its own
_FORMATTED_BY_CALLER: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sparsexbar_config_formatted_by_caller", default=False)


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_types(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse what lax validation would quietly convert, for every field of every node
        (fields added later included): a boolean for a field that is not one (YAML's
        true/yes/on would become 1) and a number with a fraction for an integer field."""
        if info.field_name is None:
            return value
        kinds = _field_types(cls.model_fields[info.field_name].annotation)
        if isinstance(value, bool) and bool not in kinds:
            raise ValueError(f"must be {_describe(kinds)}, not a boolean "
                             f"({str(value).lower()})")
        if (isinstance(value, float) and int in kinds and float not in kinds
                and not (math.isfinite(value) and value.is_integer())):
            raise ValueError(f"must be a whole number, got {value}")
        if isinstance(value, str) and not _takes_text(kinds, value):  # YAML's bits: "5"
            raise ValueError(f"must be {_describe(kinds)}, not text ({value!r})")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        """A field set on a made config is checked alone (`cfg.ou.rows = 0` raises a one-line
        ConfigError); the rules between fields (an OU within its array) are checked again
        when a run loads the config (`load_config`)."""
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc, f"value set on {type(self).__name__}")) from None


def _takes_text(kinds: set[Any], value: str) -> bool:
    """Whether a field of these types takes this text: a text field, an enum (by name), or a
    literal such as adc.bits' "auto"."""
    for kind in kinds:
        if kind is str or (isinstance(kind, type) and issubclass(kind, Enum)):
            return True
        if get_origin(kind) is Literal and value in get_args(kind):
            return True
    return False


def _field_types(annotation: Any) -> set[Any]:
    """The types a field takes: its annotation, or the members of a union (`int | None`)."""
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        return set().union(*(_field_types(a) for a in get_args(annotation)))
    if get_origin(annotation) is Annotated:  # Annotated[int, Field(...)]: the int
        return {get_args(annotation)[0]}
    return {annotation}


def _describe(kinds: set[Any]) -> str:
    words = [repr(v) for k in kinds if get_origin(k) is Literal for v in get_args(k)]
    if int in kinds:
        return " or ".join(["a whole number", *words])
    if float in kinds:
        return "a number"
    if str in kinds:
        return "text"
    enums = [k for k in kinds if isinstance(k, type) and issubclass(k, Enum)]
    if enums:
        return "one of " + ", ".join(e.value for e in enums[0])
    return "a mapping" if any(isinstance(k, type) and issubclass(k, BaseModel)
                              for k in kinds) else "a value of its type"


class ArrayConfig(_Node):
    """`array.*`: the size of one crossbar array."""

    rows: int = Field(128, ge=1, le=4096,
                      description="Word lines (rows) per crossbar array (ISAAC: 128).")
    cols: int = Field(128, ge=1, le=4096,
                      description="Bit lines (columns) per crossbar array (ISAAC: 128).")


class CellConfig(_Node):
    """`cell.*`: how a weight is stored in RRAM cells (bits per cell, sign, cells per weight)."""

    bits: int = Field(2, ge=1, le=8,
                      description="Bits stored per RRAM cell (levels = 2^bits; ISAAC: 2).")
    sign: SignEncoding = Field(
        SignEncoding.differential,
        description=(
            "`differential`: a positive and a negative column per weight slice, a zero weight is "
            "zero conductance in both (weight sparsity exploitable). `offset` (ISAAC): w + "
            "2^(B-1) stored, the offset removed digitally; zeros are not zero cells."
        ),
    )
    slices: int | None = Field(
        None,
        ge=1,
        le=16,
        description=(
            "Cells (columns) per weight. None: the minimum, ceil((weight_bits-1)/bits) for "
            "differential, ceil(weight_bits/bits) for offset. A given value must cover the bits."
        ),
    )


class OUConfig(_Node):
    """`ou.*`: the Operation Unit, the rows x columns of an array activated and converted at
    once."""

    rows: int = Field(16, ge=1, description="Rows of one Operation Unit, activated together.")
    cols: int = Field(16, ge=1, description="Columns of one Operation Unit, converted together.")


class DACConfig(_Node):
    """`dac.*`: the row drivers that apply input bit-chunks, their energy and area."""

    bits: int = Field(1, ge=1, le=8,
                      description="Input bits applied per cycle (bit-serial chunk; ISAAC: 1).")
    energy_pj: float = Field(
        0.39,
        ge=0,
        description=(
            "Energy per row driven per OU activation, pJ. ISAAC: 8 x 128 1-bit DACs draw 4 mW "
            "per IMA over its 100 ns cycle: 4 mW x 100 ns / 1024."
        ),
    )
    area_um2: float = Field(
        0.166, ge=0, description="Area of one row driver/DAC, um^2 (ISAAC: 170 um^2 / 1024)."
    )


class ADCConfig(_Node):
    """`adc.*`: the column ADCs: resolution, architecture, step, count per array, and their
    energy, area and rate at a reference resolution."""

    bits: AdcBits = Field(
        "auto",
        description=(
            "ADC resolution, bits, or `auto`: per layer, the fewest bits that can never "
            "clip, (2^bits - 1) x step >= OU rows x largest cell level x largest DAC chunk, with "
            "OU rows = min(ou.rows, array.rows, the layer's rows). A scheme whose encoding "
            "narrows the range (encoding, combined) sizes below that, exactly. Sized from the "
            "ideal levels: with device variation or stuck-at-on cells a sum can exceed the "
            "range and clip."
        ),
    )
    kind: ADCKind = Field(
        ADCKind.sar,
        description=(
            "`sar`: one comparator decision per bit, conversion time bits / (ref_bits x "
            "sample_rate_gsps) (a 4-bit conversion takes half an 8-bit one); energy and area "
            "as (1 - share) x bits / ref_bits + share x 2^(bits - ref_bits) of their reference "
            "values (comparator and logic linear in bits, capacitive DAC in 2^bits). `flash`: "
            "2^bits - 1 comparators, constant time 1 / sample_rate_gsps, energy and area in "
            "(2^bits - 1) / (2^ref_bits - 1)."
        ),
    )
    step: float = Field(
        1.0,
        gt=0,
        description=(
            "Partial-sum value of one ADC LSB. value = clamp(round(p/step), 0, 2^bits-1)*step. "
            "1: integer partial sums are resolved exactly up to the range."
        ),
    )
    energy_pj: float = Field(
        1.6667,
        ge=0,
        description=(
            "Energy per conversion at `ref_bits`, pJ. ISAAC: 8 ADCs of 8 bits at 1.2 GS/s per "
            "IMA draw 16 mW (Kull et al., ISSCC 2013, scaled to 32 nm): 2 mW / 1.2 GS/s."
        ),
    )
    area_um2: float = Field(
        1200.0, ge=0, description="Area of one ADC at `ref_bits`, um^2 (ISAAC: 0.0096 mm^2 / 8)."
    )
    ref_bits: int = Field(
        8, ge=1, le=16,
        description="Resolution the energy, area and sample rate refer to (ISAAC's 8-bit ADC)."
    )
    energy_capacitive_share: float = Field(
        0.0632,
        ge=0,
        le=1,
        description=(
            "SAR: share of the conversion energy at `ref_bits` that scales with 2^bits (the "
            "capacitive DAC); the rest scales with bits. 0.0632 fits the scaling of Saberi et "
            "al. (TCAS-I 2011) applied to ISAAC's ADC, as tabulated for 4..10 bits in "
            "Accelergy's hwcomponents-library (isaac.py), within 0.4%. 1: x2 per bit (Walden)."
        ),
    )
    area_capacitive_share: float = Field(
        0.4552,
        ge=0,
        le=1,
        description=(
            "SAR: share of the area at `ref_bits` that scales with 2^bits; the rest scales with "
            "bits. 0.4552 fits the same 4..10-bit table within 0.01%."
        ),
    )
    sample_rate_gsps: float = Field(
        1.2,
        gt=0,
        description="Conversions per ns of one ADC at `ref_bits`, GS/s (ISAAC: 1.2).",
    )
    per_array: int = Field(
        1, ge=1, description="ADCs of one array; they convert an OU's columns in rounds (ISAAC: 1, "
        "8 per IMA of 8 arrays)."
    )


class NumbersConfig(_Node):
    """`numbers.*`: the integer widths of weights and inputs, and the input chunk order."""

    weight_bits: int = Field(
        8, ge=2, le=16, description="Signed weight integer bits (symmetric, per-channel scale)."
    )
    input_bits: int = Field(
        8, ge=1, le=16, description="Input magnitude bits (unsigned; signed inputs add a pass)."
    )
    bit_order: BitOrder = Field(BitOrder.lsb_first, description="Input chunk order.")


class DeviceConfig(_Node):
    """`device.*`: RRAM non-idealities (variation, read noise, stuck-at faults, accumulated
    deviation) and their seed; all off by default (an ideal device)."""

    variation: Variation = Field(Variation.none, description="Per-cell conductance variation.")
    variation_sigma: float = Field(
        0.0,
        ge=0,
        le=2,
        description=(
            "Sigma of variation, static per cell, relative to the cell's own level: "
            "normal, g = level x (1 + sigma z) clipped at 0 (beyond sigma ~0.5 the clip lowers "
            "the spread and raises the mean); lognormal, g = level x exp(sigma z) (the median "
            "is the level, the mean level x exp(sigma^2 / 2)). Zero-level cells stay 0. A "
            "seed's draws are the same z at every sigma (common random numbers)."
        ),
    )
    read_noise_sigma: float = Field(
        0.0,
        ge=0,
        le=2,
        description=(
            "Relative read noise on each column partial sum, per read: p + sigma x p x "
            "z, one independent draw per conversion."
        ),
    )
    stuck_at_off_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of cells stuck at zero conductance (SA0)."
    )
    stuck_at_on_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of cells stuck at the top level (SA1)."
    )
    accumulated_deviation_sigma: float = Field(
        0.0,
        ge=0,
        le=10,
        description=(
            "Accumulated current deviation: an additive error on each column partial "
            "sum with "
            "std sigma x (active rows in the OU activation), in units of one cell level x one "
            "input LSB. Growing linearly with the rows activated together (variance ~ n^2), it "
            "makes whole-array activation less accurate than small OUs, the reason OUs exist "
            "(SRE, ISCA 2019). Our model."
        ),
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seed of every random device effect."
    )

    @property
    def stuck_total_rate(self) -> float:
        """Fraction of cells stuck at either end."""
        return self.stuck_at_off_rate + self.stuck_at_on_rate

    @property
    def ideal(self) -> bool:
        """True when no non-ideality is enabled."""
        return (
            (self.variation == Variation.none or self.variation_sigma == 0)
            and self.read_noise_sigma == 0
            and self.stuck_at_off_rate == 0
            and self.stuck_at_on_rate == 0
            and self.accumulated_deviation_sigma == 0
        )


class EnergyConfig(_Node):
    """`energy.*`: energy per event, pJ, and leakage power (docs/cost.md)."""

    cell_read_pj: float = Field(
        0.00183,
        ge=0,
        description=(
            "Energy per cell read (an active cell on a driven row) per OU activation, pJ. "
            "ISAAC: 8 arrays of 128x128 cells draw 2.4 mW per IMA, every cell read each 100 ns "
            "cycle: 0.3 mW x 100 ns / 16384."
        ),
    )
    ou_activation_pj: float = Field(
        0.0,
        ge=0,
        description=(
            "Fixed energy per OU activation (drivers, S&H), pJ. 0: ISAAC's figures have it in "
            "the DAC and cell-read energies; `pattern-nvmsa` puts its paper's 4.8 pJ per OU "
            "operation here (docs/cost.md, \"Presets\")."
        ),
    )
    shift_add_pj: float = Field(
        0.0208,
        ge=0,
        description=(
            "Energy per shift-and-add (one per conversion), pJ. ISAAC: 4 units per IMA draw "
            "0.2 mW and add the results of 8 ADCs at 1.2 GS/s: 0.2 mW / 9.6 G/s."
        ),
    )
    index_read_pj_per_bit: float = Field(
        0.001, ge=0, description="Energy per index bit read, pJ (SRAM estimate)."
    )
    index_decode_pj_per_bit: float = Field(
        0.0013,
        ge=0,
        description=(
            "Energy to decode one index bit into a row select (SRE's kept-row indices, "
            "pattern's input and output indices), pJ. Assumption: one 2-input gate level per "
            "bit, 1/16 of ISAAC's 16-bit shift-and-add (0.0208 / 16)."
        ),
    )
    comparison_pj: float = Field(
        0.0208,
        ge=0,
        description=(
            "Energy per comparison of two words (CompRRAE's bound tests, encoding's majority "
            "vote and leading-chunk detection, pattern's per-piece fire decision), pJ. "
            "Assumption: a 16-bit comparator costs one 16-bit add (ISAAC's shift-and-add, "
            "0.0208 pJ)."
        ),
    )
    lut_read_pj: float = Field(
        0.05, ge=0, description="Energy per LUT entry read (a 16-24-bit SRAM word), pJ (estimate)."
    )
    zero_check_pj: float = Field(
        0.0013,
        ge=0,
        description=(
            "Energy to test one input chunk for zero in one cycle (SRE's activation sparsity, "
            "pattern's zero-input skipping, encoding's zero-plane detection), pJ. Assumption: a "
            "dac.bits-input OR and its latch, 1/16 of ISAAC's 16-bit shift-and-add."
        ),
    )
    ou_form_pj: float = Field(
        0.0208,
        ge=0,
        description=(
            "Energy to form one OU of active rows (SRE's dynamic packing: a running count over "
            "the rows' zero flags picks the next ou.rows active rows), pJ. Assumption: one "
            "16-bit add per formed OU (ISAAC's shift-and-add)."
        ),
    )
    gather_pj: float = Field(
        0.0208,
        ge=0,
        description=(
            "Energy to route one input word into a pattern block's rows (pattern's input "
            "preprocessing: a mux selected by the block's input index), pJ. Assumption: one "
            "16-bit add (ISAAC's shift-and-add) per word."
        ),
    )
    route_pj: float = Field(
        0.0104,
        ge=0,
        description=(
            "Energy to route one converted column result to its output channel's "
            "shift-and-add (pattern's output indexing unit: a block's columns feed several "
            "channels), pJ; one per ADC conversion. Assumption: half a 16-bit add."
        ),
    )
    encode_pj: float = Field(
        0.0013,
        ge=0,
        description=(
            "Energy to bus-invert one input chunk (an XOR per DAC bit on a driven row), pJ. "
            "Assumption: as `zero_check_pj`."
        ),
    )
    decode_pj: float = Field(
        0.0208,
        ge=0,
        description=(
            "Energy of one digital recovery (encoding: c x S' - p' for a complemented column, "
            "or a LUT constant added to an inverted group's channel), pJ. Assumption: one "
            "16-bit add (ISAAC's shift-and-add)."
        ),
    )
    buffer_read_pj_per_byte: float = Field(
        0.64,
        ge=0,
        description=(
            "Energy per byte read from the on-chip buffer, pJ. ISAAC's 64 KB eDRAM: 20.45 pJ "
            "per 256-bit access (CACTI, 32 nm)."
        ),
    )
    buffer_write_pj_per_byte: float = Field(
        0.64, ge=0, description="Energy per byte written to the on-chip buffer, pJ (as a read)."
    )
    digital_op_pj: float = Field(
        0.1, ge=0, description="Energy per digital op (add, scale, pool, compare), pJ (estimate)."
    )
    leakage_mw: float = Field(
        0.0, ge=0,
        description="Static power of the whole accelerator while it runs, mW (0: none unless set).",
    )


class AreaConfig(_Node):
    """`area.*`: area of cells, periphery, buffer and scheme logic, um^2 (docs/cost.md)."""

    cell_um2: float = Field(
        0.00153,
        ge=0,
        description=(
            "Area per cell, um^2. ISAAC: 8 arrays of 128x128 cells in 0.0002 mm^2 (32 nm)."
        ),
    )
    shift_add_um2: float = Field(
        30.0,
        ge=0,
        description=(
            "Shift-and-add logic per array, um^2. ISAAC: 4 units of 60 um^2 serve the 8 arrays "
            "of an IMA (0.00024 mm^2)."
        ),
    )
    buffer_kb: float = Field(
        64.0, ge=0, description="On-chip buffer size, KiB (ISAAC: a tile's 64 KB eDRAM)."
    )
    buffer_um2_per_kb: float = Field(
        1297.0, ge=0, description="Buffer area per KiB, um^2 (ISAAC: 0.083 mm^2 for 64 KB eDRAM)."
    )
    index_um2_per_bit: float = Field(
        0.3, ge=0, description="Index storage per bit, um^2 (SRAM, estimate)."
    )
    lut_um2_per_bit: float = Field(
        0.3, ge=0, description="LUT storage per bit, um^2 (SRAM, estimate)."
    )
    comparator_um2: float = Field(20.0, ge=0, description="One comparator, um^2 (estimate).")
    logic_unit_um2: float = Field(
        60.0,
        ge=0,
        description=(
            "One scheme logic unit per array that has it (SRE's zero detector, OU former and "
            "index decoder; pattern's input gather and output router; encoding's encoder and "
            "decoder), um^2. Assumption: the size of ISAAC's 16-bit shift-and-add unit."
        ),
    )


class TimingConfig(_Node):
    """`timing.*`: the analog read time of an OU activation (docs/cost.md, "Time")."""

    read_ns: float = Field(
        10.0,
        gt=0,
        description=(
            "Analog time of one OU activation (drive the rows, settle the bit lines, sample and "
            "hold), ns. An activation takes max(read_ns, ceil(conversions / adc.per_array) x "
            "one conversion's time). 10 ns: NeuroSim's default read pulse."
        ),
    )


class HardwareConfig(_Node):
    """The whole hardware description (DESIGN.md 2.2-2.5)."""

    def __init__(self, **data: Any) -> None:
        """As pydantic's; made in Python (`HardwareConfig(ou={"rows": 1000})`), an invalid
        value raises a one-line ConfigError (it raised pydantic's multi-line error), as
        `from_dict` does, which formats its own errors (naming the file)."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if _FORMATTED_BY_CALLER.get():
                raise
            raise ConfigError(_one_line(exc, "HardwareConfig(...)")) from None

    name: str = Field("custom", description="Label of this configuration (preset name or yours).")
    array: ArrayConfig = Field(default_factory=ArrayConfig)
    cell: CellConfig = Field(default_factory=CellConfig)
    ou: OUConfig = Field(default_factory=OUConfig)
    dac: DACConfig = Field(default_factory=DACConfig)
    adc: ADCConfig = Field(default_factory=ADCConfig)
    numbers: NumbersConfig = Field(default_factory=NumbersConfig)
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    area: AreaConfig = Field(default_factory=AreaConfig)
    timing: TimingConfig = Field(default_factory=TimingConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> HardwareConfig:
        """The rules between fields, `CROSS_FIELD_RULES` (docs/config.md lists them)."""
        for _, problem in CROSS_FIELD_RULES:
            message = problem(self)
            if message is not None:
                raise ValueError(message)
        return self

    # ---- derived quantities -------------------------------------------------------------
    @property
    def stored_bits(self) -> int:
        """Bits each weight needs in cells: magnitude bits (differential) or all bits (offset)."""
        wb = self.numbers.weight_bits
        return wb - 1 if self.cell.sign == SignEncoding.differential else wb

    @property
    def slices(self) -> int:
        """Columns (cells) per weight per polarity."""
        if self.cell.slices is not None:
            return self.cell.slices
        return math.ceil(self.stored_bits / self.cell.bits)

    @property
    def polarities(self) -> int:
        """2 for differential (positive and negative columns), 1 for offset."""
        return 2 if self.cell.sign == SignEncoding.differential else 1

    @property
    def cycles(self) -> int:
        """Input cycles per pass: ceil(input_bits / dac.bits)."""
        return math.ceil(self.numbers.input_bits / self.dac.bits)

    @property
    def adc_bits(self) -> int:
        """The ADC resolution of a resolved config (`for_layer`); `auto` unresolved raises."""
        bits = self.adc.bits
        if isinstance(bits, str):
            raise ConfigError("adc.bits is 'auto': resolve it per layer (HardwareConfig."
                              "for_layer) before asking for the ADC range")
        return bits

    @property
    def adc_max_code(self) -> int:
        """The ADC's largest output code, 2^bits - 1 (resolved adc.bits; `auto` raises)."""
        return 2**self.adc_bits - 1

    def max_chunk_partial_sum(self, rows: int) -> int:
        """Largest partial sum of one column of an OU of `rows` rows: rows x largest cell level
        x largest input chunk."""
        return rows * (2**self.cell.bits - 1) * (2**self.dac.bits - 1)

    def auto_adc_bits(self, layer_rows: int) -> int:
        """The fewest ADC bits that can never clip on a layer of `layer_rows` im2col rows:
        (2^b - 1) x step >= its largest OU partial sum (OU rows = min(ou.rows, array.rows,
        layer_rows))."""
        rows = max(1, min(self.ou.rows, self.array.rows, layer_rows))
        return bits_to_hold(self.max_chunk_partial_sum(rows), self.adc.step)

    def for_layer(self, layer_rows: int) -> HardwareConfig:
        """This config with adc.bits resolved for a layer of `layer_rows` rows (itself when
        the bits are fixed)."""
        if not isinstance(self.adc.bits, str):
            return self
        bits = self.auto_adc_bits(layer_rows)
        if bits > MAX_ADC_BITS:  # the copy below skips the field's validation
            rows = max(1, min(self.ou.rows, self.array.rows, layer_rows))
            raise ConfigError(
                f"adc.bits=auto needs {bits} bits for a layer with {layer_rows} rows (OU of "
                f"{rows} rows, {self.cell.bits}-bit cells, {self.dac.bits}-bit DAC), beyond "
                f"the {MAX_ADC_BITS} the ADC model covers: use fewer ou.rows, dac.bits or "
                "cell.bits, or a fixed adc.bits (which then clips)")
        return self.model_copy(update={"adc": self.adc.model_copy(update={"bits": bits})})

    def adc_energy_pj(self, bits: int | None = None) -> float:
        """Energy of one conversion at `bits` (default: the resolved adc.bits), pJ."""
        return self.adc.energy_pj * self._adc_scale(bits, self.adc.energy_capacitive_share)

    def adc_area_um2(self, bits: int | None = None) -> float:
        """Area of one ADC at `bits` (default: the resolved adc.bits), um^2."""
        return self.adc.area_um2 * self._adc_scale(bits, self.adc.area_capacitive_share)

    def adc_conversion_ns(self, bits: int | None = None) -> float:
        """Time of one conversion at `bits`, ns: SAR b / (ref_bits x rate), flash 1 / rate."""
        b = self.adc_bits if bits is None else bits
        if self.adc.kind == ADCKind.flash:
            return 1.0 / self.adc.sample_rate_gsps
        return b / (self.adc.ref_bits * self.adc.sample_rate_gsps)

    def _adc_scale(self, bits: int | None, share: float) -> float:
        """Energy or area at `bits` relative to `ref_bits` (see `adc.kind`)."""
        b = self.adc_bits if bits is None else bits
        ref = self.adc.ref_bits
        if self.adc.kind == ADCKind.flash:
            return (2.0**b - 1) / (2.0**ref - 1)
        return (1 - share) * b / ref + share * 2.0 ** (b - ref)

    # ---- serialization ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict with enums by name; `from_dict(to_dict())` round-trips exactly."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> HardwareConfig:
        """A config from a nested mapping (`to_dict`'s form; keys left out get isaac's values),
        validated whole; an invalid one raises a one-line ConfigError naming `source` and the
        field."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"invalid hardware {source}: a mapping of sections (array, ou, "
                              f"adc, ...) is needed, got {type(data).__name__}")
        token = _FORMATTED_BY_CALLER.set(True)
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(_one_line(exc, source)) from None
        finally:
            _FORMATTED_BY_CALLER.reset(token)

    def to_json(self) -> str:
        """The config as JSON text (enums by name), which `load_config` reads back exactly."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_yaml(self) -> str:
        """The config as YAML text (enums by name), which `load_config` reads back exactly."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write YAML (.yaml/.yml) or JSON (anything else), atomically."""
        p = Path(path)
        text = self.to_yaml() if p.suffix.lower() in (".yaml", ".yml") else self.to_json()
        atomic_write_text(p, text)

    def with_overrides(self, overrides: Mapping[str, Any]) -> HardwareConfig:
        """A copy with dotted keys set (`{"ou.rows": 9}`); unknown keys and bad values raise."""
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"overrides must map dotted config keys to values "
                              f"({{'ou.rows': 9}}), got {type(overrides).__name__}")
        data = self.to_dict()
        for key, value in overrides.items():
            if not isinstance(key, str):
                raise ConfigError(f"override keys are dotted config keys (text), got {key!r}")
            _set_dotted(data, key, value)
        return HardwareConfig.from_dict(data, source="override")


# The rules between fields that loading a config checks, in order: (the rule as docs/config.md
# states it, the error message when a config breaks it, else None). One table for both, so the
# reference cannot drift from the checks.
CROSS_FIELD_RULES: tuple[tuple[str, Callable[[HardwareConfig], str | None]], ...] = (
    ("`ou.rows` <= `array.rows`: an OU lies within its array",
     lambda hw: f"ou.rows={hw.ou.rows} is larger than array.rows={hw.array.rows}"
     if hw.ou.rows > hw.array.rows else None),
    ("`ou.cols` <= `array.cols`",
     lambda hw: f"ou.cols={hw.ou.cols} is larger than array.cols={hw.array.cols}"
     if hw.ou.cols > hw.array.cols else None),
    ("`dac.bits` <= `numbers.input_bits`: a DAC chunk is part of one input",
     lambda hw: f"dac.bits={hw.dac.bits} exceeds numbers.input_bits={hw.numbers.input_bits}"
     if hw.dac.bits > hw.numbers.input_bits else None),
    ("`cell.slices`, when given, x `cell.bits` >= the stored weight bits: "
     "`numbers.weight_bits` - 1 (`differential`) or `numbers.weight_bits` (`offset`)",
     lambda hw: f"cell.slices={hw.cell.slices} x cell.bits={hw.cell.bits} cannot hold the "
     f"{hw.stored_bits} stored weight bits ({hw.cell.sign.value} encoding)"
     if hw.cell.slices is not None and hw.cell.slices * hw.cell.bits < hw.stored_bits
     else None),
    ("`device.stuck_at_off_rate` + `device.stuck_at_on_rate` <= 1",
     lambda hw: "device.stuck_at_off_rate + device.stuck_at_on_rate exceeds 1"
     if hw.device.stuck_total_rate > 1 else None),
    # the sigma alone read as a noisy device and ran ideal, silently
    ("`device.variation_sigma` > 0 needs `device.variation` `normal` or `lognormal`",
     lambda hw: f"device.variation_sigma={hw.device.variation_sigma} is set but "
     "device.variation is none: set device.variation to normal or lognormal (or the sigma "
     "to 0)" if hw.device.variation == Variation.none and hw.device.variation_sigma > 0
     else None),
)


def bits_to_hold(bound: float, step: float = 1.0) -> int:
    """Smallest ADC bits whose range (2^b - 1) x step holds `bound` (at least 1 bit)."""
    bits = 1
    while (2**bits - 1) * step < bound:
        bits += 1
    return bits


def _field_path(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """An error location without pydantic's union-member tags ("constrained-int",
    "literal['auto']"): the config's own keys and indices only."""
    return tuple(x for x in loc if isinstance(x, int) or x.isidentifier())


def _one_line(exc: ValidationError, source: str) -> str:
    """The first invalid field of `exc` in one line. A field of a union type (ADC bits: a
    number or "auto") gets one error per member from pydantic; they are joined ("Input
    should be less than or equal to 16, or 'auto'") instead of counted as more errors."""
    errors = exc.errors()
    path = _field_path(errors[0]["loc"])
    same = [e for e in errors if _field_path(e["loc"]) == path]
    msgs = [e["msg"].removeprefix("Value error, ") for e in same]
    msg = ", or ".join([msgs[0], *(m.removeprefix("Input should be ") for m in msgs[1:])])
    loc = ".".join(str(x) for x in path)
    where = f" {loc}:" if loc else ""
    rest = len(errors) - len(same)
    extra = f" (and {rest} more)" if rest else ""
    return f"invalid hardware {source}:{where} {msg}{extra}"


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        if not isinstance(node, dict):  # 'ou.rows.x': ou.rows holds a value
            raise ConfigError(f"unknown config key '{key}' ('{'.'.join(parts[:i])}' is a "
                              "value, not a section)")
        if not part:  # 'ou..rows', '.ou', 'ou.'
            raise ConfigError(f"unknown config key '{key}' (an empty name between dots)")
        if part not in node:
            known = ", ".join(sorted(node))
            raise ConfigError(
                f"unknown config key '{key}' ('{'.'.join(parts[: i + 1])}' not in: {known})"
            )
        if i == len(parts) - 1:
            node[part] = _coerce(value)
        else:
            node = node[part]


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads YAML 1.2's exponent numbers, `1e-3`, `5E2`,
    `-2e+1`, `1.0e3`, as floats (YAML 1.1 wants a dot and a signed exponent, and read those as
    text). A quoted number (`"5"`) stays text."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """YAML text as Python values, read by `YamlLoader` (config files, sweep files, --set)."""
    return yaml.load(text, Loader=YamlLoader)  # a SafeLoader: no Python objects


def dotted(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict (`to_dict`'s form) as {dotted key: value}, in order."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _coerce(value: Any) -> Any:
    """Strings from the command line become YAML scalars: '9' -> 9, '1e-3' -> 0.001,
    'null' -> None."""
    if isinstance(value, str):
        try:
            return load_yaml(value)
        except yaml.YAMLError:
            return value
    return value


# ---- presets --------------------------------------------------------------------------------
def _isaac() -> dict[str, Any]:
    return {
        "name": "isaac",
        "array": {"rows": 128, "cols": 128},
        "cell": {"bits": 2, "sign": "differential"},
        "ou": {"rows": 16, "cols": 16},
        "dac": {"bits": 1},
        "adc": {"bits": "auto", "ref_bits": 8, "sample_rate_gsps": 1.2},
    }


def _pattern_nvmsa() -> dict[str, Any]:
    return {
        "name": "pattern-nvmsa",
        "array": {"rows": 512, "cols": 512},
        "cell": {"bits": 4, "sign": "differential"},
        "ou": {"rows": 9, "cols": 8},
        "dac": {"bits": 4, "energy_pj": 0.0182},
        "adc": {
            "bits": 8,
            "energy_pj": 1.67,
            "ref_bits": 8,
            "sample_rate_gsps": 1.2,
            "per_array": 8,
        },
        # the paper's 4.8 pJ per OU operation, charged per activation; cells not charged again.
        # 8 ADCs: one per OU column (our assumption); every activation is read-bound at 55.6 ns
        # whatever the count (docs/cost.md, "Presets")
        "energy": {"ou_activation_pj": 4.8, "cell_read_pj": 0.0},
        # the paper's 4-bit DAC converts at 18 MS/s: one OU activation per 1/18 MS/s
        "timing": {"read_ns": 1000.0 / 18.0},
    }


def _isaac_paper() -> dict[str, Any]:
    # ISAAC's own configuration (Shafiee et al., ISCA 2016): a crossbar is read whole (all 128
    # rows at once: the OU is the array), one 8-bit ADC per array converts its 128 columns in
    # one 100 ns cycle; inputs are 16-bit and fed 1 bit per cycle, weights 16-bit in 2-bit
    # cells stored with an offset (biased, ISAAC's encoding), 8 arrays per IMA, 12 IMAs per tile.
    return {
        "name": "isaac-paper",
        "array": {"rows": 128, "cols": 128},
        "cell": {"bits": 2, "sign": "offset"},
        "ou": {"rows": 128, "cols": 128},
        "dac": {"bits": 1},
        "adc": {"bits": 8, "ref_bits": 8, "sample_rate_gsps": 1.2, "per_array": 1},
        "numbers": {"weight_bits": 16, "input_bits": 16},
        "timing": {"read_ns": 100.0},
    }


def _ideal_small() -> dict[str, Any]:
    return {
        "name": "ideal-small",
        "array": {"rows": 64, "cols": 64},
        "cell": {"bits": 2},
        "ou": {"rows": 8, "cols": 8},
        "dac": {"bits": 1},
        "adc": {"bits": 6},
    }


PRESET_BUILDERS = {
    "isaac": (_isaac, "ISAAC-like with OUs: 128x128, 2-bit cells, 1-bit DAC, OU 16x16, SAR "
              "ADC 1.2 GS/s sized to need (adc.bits auto: 5-6 bits per layer)"),
    "pattern-nvmsa": (
        _pattern_nvmsa,
        "Pattern-mapping paper: 512x512, 4-bit cells, OU 9x8, 8 ADCs (8 bit) per array, DAC 4 "
        "bit, 4.8 pJ/OU op (cell reads 0), 55.6 ns read (docs/cost.md, Presets)",
    ),
    "ideal-small": (_ideal_small, "Small arrays for quick studies: 64x64, OU 8x8, 6-bit ADC"),
    "isaac-paper": (
        _isaac_paper,
        "ISAAC as published: 128x128 read whole, 1 ADC (8 bit) per array, 16-bit data, 100 ns",
    ),
}


def preset_names() -> list[str]:
    """The names of the hardware presets (`isaac`, `pattern-nvmsa`, ...), in listing order."""
    return list(PRESET_BUILDERS)


def preset(name: str) -> HardwareConfig:
    """The named preset; an unknown name raises ConfigError listing the known ones."""
    if name not in PRESET_BUILDERS:
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(PRESET_BUILDERS)})")
    return HardwareConfig.from_dict(PRESET_BUILDERS[name][0](), source=f"preset {name}")


def load_config(
    source: str | Path | HardwareConfig | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> HardwareConfig:
    """Resolve a preset name, a YAML/JSON file, a dict or a config object, then apply overrides."""
    if source is None:
        cfg = preset("isaac")
    elif isinstance(source, HardwareConfig):
        # checked again, whole: a field set on the object after it was made (`cfg.array.rows
        # = 8`) is checked alone, never against the others (an OU larger than the array ran
        # and was recorded), and the run gets its own copy
        cfg = HardwareConfig.from_dict(source.to_dict(), source="config object")
    elif isinstance(source, Mapping):
        cfg = HardwareConfig.from_dict(source)
    else:
        text_source = str(source)
        path = Path(text_source)
        if text_source in PRESET_BUILDERS:
            cfg = preset(text_source)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            if not path.is_file():
                raise ConfigError(f"hardware config file not found: {path}")
            try:  # a .json file is JSON (YAML would take a trailing comma, say)
                text = path.read_text()
                raw = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text)
            except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError,
                    RecursionError) as exc:
                raise ConfigError(f"cannot parse hardware config {path}: "
                                  f"{parse_failure(exc)}") from None
            if not isinstance(raw, dict):
                raise ConfigError(f"hardware config {path} is not a mapping")
            cfg = HardwareConfig.from_dict(raw, source=f"config {path.name}")
        else:
            raise ConfigError(
                f"unknown preset '{text_source}' (known: {', '.join(PRESET_BUILDERS)}; "
                "or give a .yaml/.json file)"
            )
    if overrides:
        cfg = cfg.with_overrides(overrides)
    return cfg


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, pydantic field) for every leaf of the tree, in order."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaf_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def describe_fields(
    model: type[BaseModel] = HardwareConfig, prefix: str = ""
) -> list[tuple[str, str]]:
    """(dotted key, description) for every leaf field: the documentation of the tree."""
    return [(key, field.description or "") for key, field in _leaf_fields(model, prefix)]


def _bounds(metadata: Iterable[Any]) -> str:
    """A field's numeric bounds (pydantic's ge/gt/le/lt metadata) as `1..16`, `>= 0`, `> 0`."""
    low = high = None
    low_word, high_word = ">=", "<="
    for item in metadata:
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attr, None)
            if bound is None:
                continue
            if attr in ("ge", "gt"):
                low, low_word = bound, word
            else:
                high, high_word = bound, word
    if low is not None and high is not None and (low_word, high_word) == (">=", "<="):
        return f" {low}..{high}"
    parts = [f"{w} {b}" for w, b in ((low_word, low), (high_word, high)) if b is not None]
    return (" " + ", ".join(parts)) if parts else ""


def valid_values(field: FieldInfo) -> str:
    """What a field accepts, from its type and its ge/gt/le/lt metadata: `integer 1..4096`,
    `number > 0`, `integer 1..16 or `auto``, `` `sar` or `flash` ``."""
    kinds: list[str] = []
    members = get_args(field.annotation) if len(_field_types(field.annotation)) > 1 else (
        field.annotation,)
    for member in members:
        metadata = list(field.metadata)
        if get_origin(member) is Annotated:  # adc.bits: Annotated[int, Field(ge=1, le=16)]
            member, *extra = get_args(member)
            metadata += [m for info in extra for m in getattr(info, "metadata", [info])]
        if member is type(None):
            kinds.append("null")
        elif get_origin(member) is Literal:
            kinds.extend(f"`{v}`" for v in get_args(member))
        elif isinstance(member, type) and issubclass(member, Enum):
            kinds.extend(f"`{e.value}`" for e in member)
        elif member in (int, float):
            kinds.append(("integer" if member is int else "number") + _bounds(metadata))
        else:
            kinds.append("text" if member is str else str(member))
    return " or ".join(kinds)


def reference_markdown() -> str:
    """docs/config.md: every field with its `isaac` default, the values it accepts and its
    description, then the rules between fields (`CROSS_FIELD_RULES`)."""
    values = dotted(preset("isaac").to_dict())
    lines = [
        "# Hardware configuration reference",
        "",
        "Generated by `sparsexbar.core.config.reference_markdown()`; a test checks it is current.",
        "Set any key with `--set key=value` (CLI) or `overrides={...}` (Python); config files are",
        "YAML or JSON (`sparsexbar presets NAME` prints a whole one). A file or mapping that",
        "leaves keys out gets the values of this table, `isaac`'s (`name`: custom). A number",
        "may be written with an exponent (`1e-3`); a quoted number in a config file",
        "(`bits: \"5\"`) is text, and refused. \"valid values\" are each field's own bounds;",
        "the rules below the table relate fields.",
        "",
        "| key | value in `isaac` | valid values | meaning, unit, source |",
        "| --- | --- | --- | --- |",
    ]
    for key, field in _leaf_fields(HardwareConfig):
        desc = (field.description or "").replace("|", "/")
        lines.append(f"| `{key}` | {values[key]} | {valid_values(field)} | {desc} |")
    lines += [
        "",
        "## Rules between fields",
        "",
        "Loading a config (a preset, a file, a mapping, `--set`) refuses one that breaks any of",
        "these, with one line naming the fields:",
        "",
        *(f"- {text}." for text, _ in CROSS_FIELD_RULES),
        "",
        "A run also refuses a layer for which `adc.bits: auto` would need more than",
        f"{MAX_ADC_BITS} bits (`HardwareConfig.for_layer`).",
    ]
    return "\n".join(lines) + "\n"
