"""encoding's `name:key=value` options (e.g. `encoding:input=none:adc=calibrated:adc_bits=F`)."""

from __future__ import annotations

from ..options import choice, count, path, switch
from .scheme import ADC_MODES, INPUT_ENCODINGS, ROUNDINGS, WEIGHT_ENCODINGS

OPTIONS = (
    choice("input", INPUT_ENCODINGS, "bus-invert", "input encoding: bus-invert inverts a "
           "window's chunk when more than half its rows are 1"),
    choice("weight", WEIGHT_ENCODINGS, "complement", "weight encoding: complement stores a "
           "column's levels complemented when that lowers its partial sums"),
    choice("adc", ADC_MODES, "auto", "ADC bits per layer: auto (the config's adc.bits; with "
           "adc.bits auto, the fewest exact bits of the encoded sums), fixed (adc.bits), "
           "lossless (the fewest exact bits, whatever adc.bits says), calibrated "
           "(adc_bits=FILE)"),
    path("adc_bits", "per-layer ADC bits, a `sparsexbar calibrate encoding` file (implies "
         "adc=calibrated)"),
    switch("skip", True, "skip input chunks that are zero on a whole row tile of a window"),
    count("precision", None, "dynamic precision: input chunks processed per window from its "
          "leading nonzero chunk, or a calibration file; none: every chunk", none=True,
          file=True),
    choice("rounding", ROUNDINGS, "round", "how dynamic precision drops chunks"),
)
