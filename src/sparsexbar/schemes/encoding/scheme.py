"""`EncodingScheme`: the encoding scheme (its switches, per-layer ADC bits and dynamic precision,
values and events) and `build_encoding` (its text options)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.cost import Storage
from ...core.engine import (
    EngineOptions,
    LayerKernel,
    accumulate,
    exact_accumulator,
    exact_from_magnitudes,
)
from ...core.errors import SparsexbarError, parse_failure, require_choice
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, column_group_widths, dense_events, map_dense
from ..base import Counted, LayerRun, Scheme, layer_listing, refuse_grouped
from ..counting import narrow_magnitudes
from .kernel import (
    EncodingKernel,
    chunk_planes,
    conversion_corrections,
    dynamic_precision,
    exact_matmul,
    executed_chunks,
    inverted_groups,
    leading_chunk,
    tile_view,
)
from .mapping import MAX_ADC_BITS, EncodingMappedLayer, encode_layer, lossless_adc_bits

INPUT_ENCODINGS = ("none", "bus-invert")


WEIGHT_ENCODINGS = ("none", "complement")


ADC_MODES = ("auto", "fixed", "lossless", "calibrated")


ROUNDINGS = ("round", "truncate")


PrecisionSpec = int | Mapping[str, int | None] | str | Path | None


# ---- the scheme --------------------------------------------------------------------------------
@dataclass
class _Tally:
    """Data-dependent counts of one batch, summed over chunks and passes."""

    per_image: Tensor  # (N, tiles) int64 executed (position, pass, chunk) per row tile
    inverted: int = 0  # (cycle, position, group) fed inverted
    clipped: int = 0  # conversions outside the ADC range (when asked for)
    extra: dict[str, int] = field(default_factory=dict)


class EncodingScheme(Scheme):
    """Data encoding + per-layer ADC resolution + dynamic quantization, each switchable.

    input_encoding: "none" | "bus-invert". weight_encoding: "none" | "complement".
    adc: "auto" (the config's rule: its fixed adc.bits, or with adc.bits auto the smallest
    exact bits of the encoded partial sums per layer) | "fixed" (the config's adc.bits, auto
    resolved as for dense) | "lossless" (smallest exact bits per layer, whatever the config
    says) | "calibrated"
    (`adc_bits`: {layer name: bits}, or a JSON file written by `calibrate encoding`).
    skip_zero_planes: skip input chunks that are zero on a whole row tile of a window.
    precision: None, or P chunks processed per window row tile from its leading nonzero chunk
    (an int for every layer, {layer name: int or None}, or a JSON file with a "precision" map);
    rounding: "round" (half up, saturating) or "truncate" for the dropped chunks.
    """

    name = "encoding"

    def __init__(self, input_encoding: str = "bus-invert", weight_encoding: str = "complement",
                 adc: str = "auto", adc_bits: Mapping[str, int] | str | Path | None = None,
                 skip_zero_planes: bool = True, precision: PrecisionSpec = None,
                 rounding: str = "round") -> None:
        require_choice("encoding input", input_encoding, INPUT_ENCODINGS)
        require_choice("encoding weight", weight_encoding, WEIGHT_ENCODINGS)
        require_choice("encoding adc", adc, ADC_MODES)
        require_choice("encoding rounding", rounding, ROUNDINGS)
        self.precision_file: str | None = None
        if isinstance(precision, str | Path):
            self.precision_file = str(precision)
            precision = load_calibration(precision, "precision")
        precision = _check_precision(precision)
        self.adc_bits_file: str | None = None
        if isinstance(adc_bits, str | Path):
            self.adc_bits_file = str(adc_bits)
            adc_bits = load_adc_bits(adc_bits)
        if adc == "calibrated" and adc_bits is None:
            raise SparsexbarError("encoding adc=calibrated needs per-layer bits (adc_bits=FILE "
                                  "from 'sparsexbar calibrate encoding')")
        if adc != "calibrated" and adc_bits is not None:
            raise SparsexbarError(f"encoding adc_bits are used only with adc=calibrated "
                                  f"(adc={adc})")
        self.layer_bits_given = _check_bits(adc_bits) if adc_bits is not None else None
        self.input_encoding = input_encoding
        self.weight_encoding = weight_encoding
        self.adc = adc
        self.skip_zero_planes = bool(skip_zero_planes)
        self.precision = precision
        self.rounding = rounding
        self.lossless = adc != "calibrated" and not self.any_precision
        self._chosen_bits: dict[str, int] = {}

    def options(self) -> dict[str, Any]:
        """input, weight, adc, adc_bits (its file), skip, precision (chunks or its file),
        rounding."""
        if self.layer_bits_given is not None and self.adc_bits_file is None:
            raise SparsexbarError("encoding adc_bits per layer have no text form (write them "
                                  "to a file and give adc_bits=FILE)")
        if isinstance(self.precision, Mapping) and self.precision_file is None:
            raise SparsexbarError("encoding precision per layer has no text form (write it to "
                                  "a file and give precision=FILE)")
        return {"input": self.input_encoding, "weight": self.weight_encoding, "adc": self.adc,
                "adc_bits": self.adc_bits_file, "skip": self.skip_zero_planes,
                "precision": self.precision_file or self.precision,
                "rounding": self.rounding}

    def parameters(self) -> dict[str, Any]:
        return {
            "input_encoding": self.input_encoding,
            "weight_encoding": self.weight_encoding,
            "adc": self.adc,
            "adc_bits_file": self.adc_bits_file,
            "layer_adc_bits": dict(self._chosen_bits),
            "skip_zero_planes": self.skip_zero_planes,
            "precision": (dict(self.precision) if isinstance(self.precision, Mapping)
                          else self.precision),
            "precision_file": self.precision_file,
            "rounding": self.rounding if self.any_precision else None,
            "window": "im2col inputs of one output position on one array row tile, per pass",
        }

    def variant(self, **changes: Any) -> EncodingScheme:
        """A copy with some constructor arguments changed."""
        args: dict[str, Any] = {
            "input_encoding": self.input_encoding, "weight_encoding": self.weight_encoding,
            "adc": self.adc, "adc_bits": self.layer_bits_given,
            "skip_zero_planes": self.skip_zero_planes, "precision": self.precision,
            "rounding": self.rounding}
        args.update(changes)
        if args["adc"] != "calibrated":
            args["adc_bits"] = None
        return EncodingScheme(**args)

    def overridden(self, hw: HardwareConfig) -> dict[str, str]:
        """adc=auto and adc=fixed follow adc.bits (auto: the rule of docs/cost.md); lossless
        overrides a fixed adc.bits, calibrated any."""
        if self.adc in ("fixed", "auto") or (self.adc == "lossless" and hw.adc.bits == "auto"):
            return {}
        how = ("adc=lossless, the fewest exact bits" if self.adc == "lossless"
               else "adc=calibrated, from its file")
        return {"adc.bits": f"{how}; encoding (adc=auto) follows adc.bits"}

    @property
    def bus_invert(self) -> bool:
        return self.input_encoding == "bus-invert"

    @property
    def weight_complement(self) -> bool:
        return self.weight_encoding == "complement"

    @property
    def any_precision(self) -> bool:
        """Some layer runs with dynamic precision."""
        if isinstance(self.precision, Mapping):
            return any(v is not None for v in self.precision.values())
        return self.precision is not None

    def layer_precision(self, name: str) -> int | None:
        """Dynamic precision of one layer (None: every chunk)."""
        if isinstance(self.precision, Mapping):
            return self.precision.get(name)
        return self.precision

    def check_model(self, layers: Sequence[QuantLayer]) -> None:
        """Refuse per-layer ADC bits or precisions (a file's or a Python mapping's) that name a
        layer the model lacks: a misspelt name or another model's file would run that layer
        with other settings than asked, silently. (A layer missing from the ADC bits is
        refused when it is mapped; one missing from the precisions runs every chunk.)"""
        names = [layer.name for layer in layers]
        tables = (("adc_bits", self.layer_bits_given, self.adc_bits_file),
                  ("precision", self.precision if isinstance(self.precision, Mapping) else None,
                   self.precision_file))
        for key, values, source in tables:
            unknown = [name for name in values or {} if name not in names]
            if unknown:
                where = f"encoding {key} file '{source}'" if source else f"encoding {key}"
                raise SparsexbarError(
                    f"{where} names layer '{unknown[0]}' but the model has no layer "
                    f"'{unknown[0]}' ({'another model' if source else 'a misspelt name'}?); "
                    f"the model's crossbar layers: {layer_listing(names)}")

    # ---- mapping ----------------------------------------------------------------------------
    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        refuse_grouped("encoding", layer, "its complemented layouts, thresholds and ADC "
                       "tables are per row tile of a groups=1 layer")
        dense = map_dense(layer, hw)
        encoded = self.bus_invert or self.weight_complement
        precision = self.layer_precision(layer.name)
        if not hw.device.ideal and (encoded or precision is not None):
            raise SparsexbarError(
                f"encoding: layer '{layer.name}': input/weight encodings and dynamic precision "
                "are modelled with an ideal device only (use input=none, weight=none, "
                "precision=none with device effects)")
        if precision is not None and precision > hw.cycles:
            raise SparsexbarError(f"encoding precision={precision} exceeds the "
                                  f"{hw.cycles} input chunks per pass")
        enc = encode_layer(dense, self.bus_invert, self.weight_complement)
        encoded_max = float(enc.bound.max()) if enc.bound.numel() else 0.0
        lossless = lossless_adc_bits(encoded_max, hw.adc.step)
        follows_config = self.adc == "fixed" or (self.adc == "auto" and hw.adc.bits != "auto")
        if follows_config:
            bits = dense.hw.adc_bits
        elif self.adc in ("auto", "lossless"):
            if lossless > MAX_ADC_BITS:
                raise SparsexbarError(f"encoding: layer '{layer.name}' needs {lossless} ADC "
                                      f"bits to be lossless (at most {MAX_ADC_BITS})")
            bits = lossless
        else:
            assert self.layer_bits_given is not None
            if layer.name not in self.layer_bits_given:
                raise SparsexbarError(f"encoding adc_bits has no entry for layer '{layer.name}'"
                                      " (calibrated for another model?)")
            bits = self.layer_bits_given[layer.name]
        self._chosen_bits[layer.name] = bits
        kwargs = {f.name: getattr(dense, f.name) for f in fields(dense) if f.init}
        kwargs["_cache"] = {}
        return EncodingMappedLayer(**kwargs, encoding=enc, layer_bits=bits,
                                   lossless_bits=lossless, encoded_max=encoded_max)

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        assert isinstance(mapped, EncodingMappedLayer)
        return EncodingKernel(mapped, device, self)

    def adc_bits(self, mapped: MappedLayer) -> int:
        if isinstance(mapped, EncodingMappedLayer):
            return mapped.layer_bits
        return mapped.hw.adc_bits

    def storage(self, mapped: MappedLayer) -> Storage:
        """LUT bits: bus-invert stores one signed recovery constant per (OU row group, output
        channel), wide enough for the layer's largest; weight complement one flag bit per
        (group, physical column). Comparators: one majority (popcount + compare) unit per
        array for bus-invert; one zero/leading-chunk detector per array row tile for dynamic
        quantization. Logic per array: a bus-invert encoder, and a decoder (the digital
        recovery) when either encoding is on."""
        if not isinstance(mapped, EncodingMappedLayer) or mapped.encoding is None:
            return Storage()
        enc = mapped.encoding
        lut = 0
        comparators = 0
        if self.bus_invert:
            consts = enc.recovery_constants(mapped.col_channel, mapped.col_weight,
                                            mapped.layer.out_channels)
            largest = int(consts.abs().max()) if consts.numel() else 0
            lut += int(consts.numel()) * (largest.bit_length() + 1)  # + sign bit
            comparators += mapped.arrays
        if self.weight_complement:
            lut += int(enc.complemented.numel())
        if self.skip_zero_planes or self.layer_precision(mapped.layer.name) is not None:
            comparators += len(mapped.row_tiles)
        units = mapped.arrays * ((1 if self.bus_invert else 0)
                                 + (1 if self.bus_invert or self.weight_complement else 0))
        return Storage(lut_bits=lut, comparators=comparators, logic_units=units)

    # ---- running ----------------------------------------------------------------------------
    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        assert isinstance(kernel, EncodingKernel)
        acc, tally = self.execute(kernel, x_int, options, count=True)
        assert tally is not None
        return LayerRun(acc, *self.events(kernel, tally, int(x_int.shape[0])))

    def execute(self, kernel: EncodingKernel, x_int: Tensor, options: EngineOptions,
                count: bool = True, count_clipped: bool = False) -> tuple[Tensor, _Tally | None]:
        """The layer's accumulator (float64) and, with `count`, its data-dependent counts.

        Values: the exact integer result (engine's exact convolution, or an exact matmul of the
        precision-transformed windows), plus the conversion corrections where the ADC can clip
        or round (ideal device); with device effects the engine converts (no encoding then).
        """
        mapped = kernel.enc_mapped
        layer = mapped.layer
        n = int(x_int.shape[0])
        tally = (_Tally(per_image=torch.zeros((n, len(mapped.row_tiles)), dtype=torch.int64))
                 if count else None)
        ideal = mapped.hw.device.ideal
        convert = ideal and not mapped.exact_linear()
        precision = kernel.precision
        walk = (precision is not None or convert
                or (count and (self.bus_invert or kernel.dynamic)))
        if not walk:
            if tally is not None:  # every chunk of every position executed
                tally.per_image += layer.positions * layer.passes * mapped.hw.cycles
            return (exact_accumulator(layer, x_int) if ideal
                    else accumulate(kernel, x_int, options)), tally
        if precision is None and not convert and tally is not None \
                and kernel.group_counts.usable:
            # only counts: from the layer's own convolution on packed chunks (no im2col)
            magnitudes = self._count_windows(kernel, x_int, tally, options)
            if not ideal:
                return accumulate(kernel, x_int, options), tally
            return (exact_from_magnitudes(layer, magnitudes, x_int) if magnitudes
                    else exact_accumulator(layer, x_int)), tally
        acc_mat: Tensor | None = None
        if precision is not None or convert:
            acc_mat = torch.zeros((n * layer.positions, layer.out_channels),
                                  dtype=torch.float64, device=x_int.device)
        narrow = torch.uint8 if layer.input_max <= 255 else torch.int32
        # magnitudes of each pass in the narrow dtype first: 1-byte windows (im2col)
        parts = ([(layer.patches(x_int.clamp(min=0).to(narrow)), 1.0),
                  (layer.patches((-x_int).clamp(min=0).to(narrow)), -1.0)]
                 if layer.input_signed else [(layer.patches(x_int.to(narrow)), 1.0)])
        positions = layer.positions
        chunk = self._images_per_chunk(kernel, positions, options, convert)
        for xi, sign in parts:  # one or two passes
            for a in range(0, n, chunk):  # chunks of whole images (memory bound)
                xc = xi[a * positions : (a + chunk) * positions]
                images = xc.shape[0] // positions
                fed, mat = self._chunk(kernel, xc, images, positions, tally, a, convert,
                                       count_clipped)
                if acc_mat is None:
                    continue
                rows = slice(a * positions, a * positions + xc.shape[0])
                if precision is not None:
                    acc_mat[rows] += sign * exact_matmul(fed.to(torch.float32),
                                                         kernel.weight_float,
                                                         kernel.col_abs_sum)
                if mat is not None:  # per output channel
                    acc_mat[rows] += sign * mat
        if precision is not None:
            assert acc_mat is not None
            return layer.fold_output(acc_mat, n), tally
        acc = exact_accumulator(layer, x_int) if ideal else accumulate(kernel, x_int, options)
        if acc_mat is not None:
            acc = acc + layer.fold_output(acc_mat, n)
        return acc, tally

    def _count_windows(self, kernel: EncodingKernel, x_int: Tensor, tally: _Tally,
                       options: EngineOptions) -> list[Tensor]:
        """The tally of inputs fed as they are (`GroupChunkCounts`), pass by pass, in chunks
        of whole images within the memory budget (per position and group: the packed sums,
        their integer copy, masks and gathered table entries, ~16 bytes). Returns the narrow
        magnitudes of the input where one chunk held every image (for the values), else []."""
        layer = kernel.enc_mapped.layer
        n = int(x_int.shape[0])
        counter = kernel.group_counts
        cycles = kernel.enc_mapped.hw.cycles
        inputs = int(x_int[0].numel()) if n else 0
        per_image = layer.positions * (counter.groups * 16 + 8) + inputs * 16
        chunk = max(1, int(options.memory_budget_mb * 2**20 // max(per_image, 1)))
        shared: list[Tensor] = []
        for a in range(0, n, chunk):  # chunks of whole images (memory bound)
            xc = x_int[a : a + chunk]
            images = int(xc.shape[0])
            parts = narrow_magnitudes(layer, xc)
            for part in parts:  # one or two passes
                inverted, executed = counter.count(part, images, self.bus_invert,
                                                   kernel.dynamic)
                tally.inverted += inverted
                if executed is not None:
                    tally.per_image[a : a + images] += executed.cpu()
                else:  # every chunk of every position executed
                    tally.per_image[a : a + images] += layer.positions * cycles
            if images == n:
                shared = parts
        return shared

    def _images_per_chunk(self, kernel: EncodingKernel, positions: int,
                          options: EngineOptions, convert: bool) -> int:
        """Whole images per chunk so the (cycles x positions x rows) intermediates and, when
        converting, the (groups x cycles x positions x columns) partial sums fit."""
        mapped = kernel.enc_mapped
        hw = mapped.hw
        rows = len(mapped.row_tiles) * hw.array.rows
        g, ou = kernel.enc.group_rows.shape
        per_position = rows * 40 + hw.cycles * g * ou * 12 + mapped.physical_cols * 24
        if convert:
            k = kernel.tables.cols.shape[1]
            per_position += hw.cycles * (rows * 5 + g * (ou * 8 + k * 8 + 16)) + g * k * 12
        per_image = positions * per_position
        return max(1, int(options.memory_budget_mb * 2**20 // max(per_image, 1)))

    def _chunk(self, kernel: EncodingKernel, xc: Tensor, images: int, positions: int,
               tally: _Tally | None, first_image: int, convert: bool,
               count_clipped: bool = False) -> tuple[Tensor, Tensor | None]:
        """One chunk of one pass, xc (m, R) magnitudes: (the values fed (m, R), the ADC
        corrections (m, Cout) float64 per output channel or None)."""
        mapped = kernel.enc_mapped
        hw = mapped.hw
        cycles, dac = hw.cycles, hw.dac.bits
        r = xc.shape[1]
        fed = xc
        lead: Tensor | None = None
        precision = kernel.precision
        if precision is not None or (tally is not None and kernel.dynamic):
            tiles = tile_view(xc, mapped.row_tiles, hw.array.rows)
            if precision is not None:
                lead = leading_chunk(tiles, dac)
                tiles = dynamic_precision(tiles.to(torch.int64), lead, precision, dac,
                                          self.rounding, mapped.layer.input_max).to(xc.dtype)
                fed = tiles.reshape(xc.shape[0], -1)[:, :r]
            if tally is not None:
                run = executed_chunks(tiles, lead, cycles, dac, self.skip_zero_planes,
                                      precision)
                per_img = run.sum(dim=0).reshape(images, positions, -1).sum(dim=1)
                tally.per_image[first_image : first_image + images] += per_img.cpu()
        elif tally is not None:
            tally.per_image[first_image : first_image + images] += positions * cycles
        mat = None
        if convert:
            top, step = mapped.layer_hw.adc_max_code, hw.adc.step
            planes = chunk_planes(fed, cycles, dac)
            mat, clipped, inverted = conversion_corrections(
                planes, kernel.tables, self.bus_invert, kernel.enc.chunk_max, xc.shape[0],
                cycles, dac, top, step, count_clipped=count_clipped and tally is not None)
            if tally is not None:
                tally.clipped += clipped
                tally.inverted += inverted
        elif tally is not None and self.bus_invert:
            tally.inverted += inverted_groups(fed, kernel.threshold_view, mapped.row_tiles,
                                              hw.array.rows, hw.ou.rows, cycles, dac)
        return fed, mat

    # ---- events -----------------------------------------------------------------------------
    def events(self, kernel: EncodingKernel, tally: _Tally, images: int) -> Counted:
        """Exact events of one batch, and per image the busiest array's OU activations and
        time, summed over the images: every executed (position, cycle) of a row tile runs its
        row groups in every column group, each converting its columns (the timing rule at
        this layer's ADC bits)."""
        mapped = kernel.enc_mapped
        hw, layer = mapped.hw, mapped.layer
        base, _ = dense_events(mapped, images)
        groups = torch.tensor(kernel.tile_groups, dtype=torch.int64)
        rows = torch.tensor(kernel.tile_rows, dtype=torch.int64)
        per_tile = tally.per_image.sum(dim=0)  # (tiles,)
        cg, cols = kernel.col_groups_total, kernel.columns
        timing = self.timing(mapped)
        widths = column_group_widths(mapped.col_tiles, hw.ou.cols)
        rounds_per_group = sum(timing.rounds(w) for tile in widths for w in tile)
        tile_ns = max(sum(timing.time_ns(w) for w in tile) for tile in widths)
        executed_groups = int((per_tile * groups).sum())  # (cycle, position, group) executed
        adc = executed_groups * cols
        comparisons = 0
        lut_reads = 0
        decodes = 0
        zero_checks = 0
        digital = base.digital_ops
        window_tiles = images * layer.positions * layer.passes * len(mapped.row_tiles)
        driven = int((per_tile * rows).sum()) * cg
        if self.bus_invert:  # a majority decision per group and cycle; a LUT add per channel
            comparisons += executed_groups
            lut_reads += tally.inverted * layer.out_channels
            decodes += tally.inverted * layer.out_channels
        if self.weight_complement:  # c x S' - p' per complemented (group, column) conversion
            pairs = torch.tensor(kernel.complemented_pairs, dtype=torch.int64)
            flagged = torch.tensor(kernel.complemented_groups, dtype=torch.int64)
            decodes += int((per_tile * (pairs + flagged)).sum())
        if self.skip_zero_planes:  # every row's chunk tested; a plane decision per tile
            comparisons += window_tiles * hw.cycles
            zero_checks += images * layer.positions * layer.passes * layer.rows * hw.cycles
        if kernel.precision is not None:
            comparisons += window_tiles
            if self.rounding == "round":
                digital += images * layer.positions * layer.passes * layer.rows
        events = Events(
            ou_activations=executed_groups * cg,
            adc_conversions=adc,
            adc_rounds=executed_groups * rounds_per_group,
            dac_activations=driven,
            cell_reads=int((per_tile * rows).sum()) * cols,
            shift_adds=adc,
            comparisons=comparisons,
            lut_reads=lut_reads,
            buffer_read_bytes=base.buffer_read_bytes,
            buffer_write_bytes=base.buffer_write_bytes,
            digital_ops=digital,
            zero_checks=zero_checks,
            encodes=driven if self.bus_invert else 0,
            decodes=decodes,
        )
        busiest_groups = (tally.per_image * groups.unsqueeze(0)).amax(dim=1).sum()
        busiest = busiest_groups * kernel.col_groups_max
        return Counted(events, int(busiest), float(busiest_groups) * tile_ns)


def _check_bits(bits: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in bits.items():
        if isinstance(value, bool) or not isinstance(value, int) or not (
                1 <= value <= MAX_ADC_BITS):
            raise SparsexbarError(f"encoding adc_bits['{name}'] must be a whole number of bits "
                                  f"in 1..{MAX_ADC_BITS}, got {value!r}")
        out[str(name)] = value
    return out


def _check_precision(precision: Any) -> int | dict[str, int | None] | None:
    values = precision.values() if isinstance(precision, Mapping) else [precision]
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SparsexbarError(f"encoding precision must be a positive number of input "
                                  f"chunks or none, got {v!r}")
    if isinstance(precision, Mapping):
        return {str(k): v for k, v in precision.items()}
    return precision  # type: ignore[no-any-return]


def load_calibration(path: str | Path, key: str) -> dict[str, Any]:
    """The per-layer map `key` ("adc_bits" or "precision") of a JSON file written by
    `sparsexbar calibrate encoding`, or a plain {layer: value} mapping."""
    p = Path(path)
    if not p.is_file():
        raise SparsexbarError(f"encoding {key} file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise SparsexbarError(f"cannot parse encoding {key} file {p}: "
                              f"{parse_failure(exc)}") from None
    if isinstance(data, dict) and isinstance(data.get(key), dict):
        data = data[key]
    if not isinstance(data, dict) or not data:
        raise SparsexbarError(f"encoding {key} file {p} holds no {{layer: value}} mapping")
    return data


def load_adc_bits(path: str | Path) -> dict[str, int]:
    """Per-layer ADC bits from a JSON file ({"adc_bits": {layer: bits}, ...} or a plain
    {layer: bits} mapping)."""
    return _check_bits(load_calibration(path, "adc_bits"))


def build_encoding(**given: Any) -> EncodingScheme:
    """The scheme from parsed text options (keys as in `options.OPTIONS`): `adc_bits=FILE`
    alone means adc=calibrated."""
    names = {"input": "input_encoding", "weight": "weight_encoding", "skip": "skip_zero_planes"}
    kwargs = {names.get(k, k): v for k, v in given.items()}
    if "adc_bits" in kwargs and "adc" not in kwargs:
        kwargs["adc"] = "calibrated"
    return EncodingScheme(**kwargs)


