"""Event counts (DESIGN.md 2.4). The names are part of the result schema."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Events:
    """Exact integer counts of hardware events, summed over the images run."""

    ou_activations: int = 0
    adc_conversions: int = 0
    # ADC rounds: per OU activation, ceil(its conversions / adc.per_array), summed; with the
    # conversion time they set how long the activations take (cost.ActivationTiming)
    adc_rounds: int = 0
    dac_activations: int = 0  # rows driven, summed over OU activations
    cell_reads: int = 0  # cells in activated OUs with their row driven
    shift_adds: int = 0
    index_reads: int = 0  # bits of indices read
    comparisons: int = 0
    lut_reads: int = 0
    buffer_read_bytes: int = 0
    buffer_write_bytes: int = 0
    digital_ops: int = 0
    # the logic the schemes add (docs/cost.md): zero tests of input chunks, dynamically formed
    # OUs, input words gathered into pattern blocks, column results routed to their channel,
    # input chunks bus-inverted, digital recoveries of encoded partial sums
    zero_checks: int = 0
    ou_forms: int = 0
    gathers: int = 0
    routes: int = 0
    encodes: int = 0
    decodes: int = 0

    def __add__(self, other: Events) -> Events:
        return Events(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                         for f in fields(self)})

    def scaled(self, factor: int) -> Events:
        """Every count times an integer factor (e.g. images)."""
        return Events(**{f.name: getattr(self, f.name) * factor for f in fields(self)})

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
