"""Typed results of a simulation run: frozen dataclasses, turned into the result schema of
DESIGN.md 4 only at the edge (`Result.to_json()`, the files and tables).

`to_json()` of every record writes its fields in declaration order (a field added here is a
key added to the JSON, at that place), `Events` as their counts; `tests/data/result_small.json`
holds the schema a test compares against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from torch import Tensor

from .core.errors import SparsexbarError
from .core.events import Events


def _plain(value: Any) -> Any:
    """A field's JSON value: records and events as dicts, a tuple of records as a list,
    mappings copied; anything else as it is."""
    if isinstance(value, Events):
        return value.to_dict()
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple) and value and all(isinstance(v, _Record) for v in value):
        return [v.to_json() for v in value]
    return value


class _Record:
    """`to_json()`: every field in declaration order (`OPTIONAL` ones left out when None, fields
    with metadata {"json": False} never)."""

    OPTIONAL: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if not f.metadata.get("json", True):
                continue  # not part of the schema (the logits)
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            out[f.name] = _plain(value)
        return out


@dataclass(frozen=True)
class LayerRecord(_Record):
    """One crossbar layer of a run: its shape and mapping, what it did (`events`, `cycles`:
    its busiest array's OU activations, summed over the images; `latency_ns_per_image`: its
    busiest array's time per image by the timing rule) and what `dense` does on the same
    inputs, energy and area by component (each with a `total`)."""

    name: str
    kind: str
    rows: int
    cols: int
    out_channels: int
    arrays: int
    input_signed: bool
    followed_by_relu: bool
    adc_can_clip: bool
    adc_bits: int
    events: Events
    dense_events: Events
    cycles: int
    dense_cycles: int
    dense_arrays: int
    latency_ns_per_image: float
    energy_pj: Mapping[str, float]
    dense_energy_pj: Mapping[str, float]
    area_um2: Mapping[str, float]
    dense_area_um2: Mapping[str, float]
    # timing (core/cost.py): dense's time per image on the same inputs; which unit bounds the
    # busiest array ("adc": some activation waits for its conversions, "read": none does);
    # dense's ADC bits for the layer (adc.bits auto resolves per layer)
    dense_latency_ns_per_image: float
    time_bound: str
    dense_adc_bits: int


@dataclass(frozen=True)
class Totals(_Record):
    """The layers summed (one image's latency: the layers one after another; the shared
    buffer's area once). `energy_pj_per_image` is the scheme's totals' only."""

    OPTIONAL = ("energy_pj_per_image",)

    events: Events
    cycles: int
    arrays: int
    energy_pj: Mapping[str, float]
    area_um2: Mapping[str, float]
    latency_s: float
    images_per_s: float
    images_per_s_pipelined: float
    energy_pj_per_image: float | None
    rram_adc_dac_energy_pj: float


@dataclass(frozen=True)
class VsDense(_Record):
    """The scheme against `dense` on the same run (ratios; reductions as fractions)."""

    speedup: float
    energy_efficiency: float
    rram_adc_dac_energy_efficiency: float
    area_efficiency: float
    total_area_efficiency: float
    computation_reduction: Mapping[str, float]  # adc_conversions, ou_activations


@dataclass(frozen=True)
class Accuracy(_Record):
    """Top-1 (fractions) of the simulated run, the float model and the integer reference."""

    top1: float
    float_top1: float
    quantized_top1: float


@dataclass(frozen=True)
class SchemeRecord(_Record):
    """The scheme's name and parameters; `label` (compare and demo runs): the name with the
    options as given, which keeps variants of one scheme apart; `overrides`: the config
    settings the scheme did not follow ({key: what it used instead}), when there are any."""

    OPTIONAL = ("label", "overrides")

    name: str
    parameters: Mapping[str, Any]
    label: str | None = None
    overrides: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Result(_Record):
    """One simulation run; `to_json()` gives the result schema of DESIGN.md 4, `outputs` the
    simulated logits (not part of the JSON). `input` (added to the schema, last): what the
    model takes and what was done to the data to fit it (`training.inputs.InputRecord`)."""

    OPTIONAL = ("input",)

    version: str
    model: str
    dataset: str
    num_images: int
    hardware: Mapping[str, Any]
    scheme: SchemeRecord
    accuracy: Accuracy
    layers: tuple[LayerRecord, ...]
    totals: Totals
    dense_totals: Totals
    vs_dense: VsDense
    input: Mapping[str, Any] | None = None
    outputs: Tensor | None = field(default=None, repr=False, compare=False,
                                   metadata={"json": False})

    @property
    def top1(self) -> float:
        """The simulated run's top-1 accuracy, a fraction (0..1, not a percentage)."""
        return float(self.accuracy.top1)

    def named(self, model: str | None = None, label: str | None = None) -> Result:
        """The same result with another model name and/or a scheme label (non-blank text)."""
        for what, value in (("model", model), ("label", label)):
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise SparsexbarError(f"Result.named: {what} must be non-blank text, got "
                                      f"{value!r}")
        scheme = self.scheme if label is None else replace(self.scheme, label=label)
        return replace(self, model=self.model if model is None else model, scheme=scheme)
