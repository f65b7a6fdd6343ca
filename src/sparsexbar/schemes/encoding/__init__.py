"""`encoding`: data encoding, per-layer ADC resolution and dynamic quantization (Chen et al.,
ASP-DAC 2018; our reconstruction of DESIGN.md 3.4, documented in docs/schemes/encoding.md).

The layer keeps the straightforward (dense) mapping; each technique is switched on its own:

- Input encoding `bus-invert`: per OU row group (the rows one OU activates) and cycle, when the
  group's input chunks sum to more than half their maximum (n x c / 2, n real rows, c = 2^dac-1;
  with a 1-bit DAC: more than half of the rows hold a 1), the complemented chunks c - x are fed
  instead and the column result recovered digitally as p = c x S' - p', with S' the column's
  stored-level sum over the group (a per-(group, column) LUT). At most half the chunk mass is
  ever driven, so the largest partial sum, hence the ADC bits a lossless conversion needs, drops.
- Weight encoding `complement`: per (OU row group, physical column), when the stored levels sum
  to more than half their maximum (n x (2^cell_bits - 1) / 2), the complemented levels
  l_max - L are stored instead (a flag bit), and p = l_max x X - p' is recovered digitally, with
  X the group's input chunk sum of the cycle (a popcount). Every column group's worst-case
  partial sum then at most halves.
- ADC resolution per layer: `fixed` (the config's adc.bits), `lossless` (the smallest bits that
  hold every reachable encoded partial sum: exact), `calibrated` (given per-layer bits, e.g. from
  `sparsexbar calibrate encoding`: lossy, modelled bit-accurately).
- Dynamic quantization, per input window and array row tile (the im2col inputs one array sees
  at one output position, in one pass): `skip` zero planes (a cycle whose chunk is zero on all
  the tile's rows is not executed: lossless) and `precision P` (only the P chunks starting at the
  tile's leading nonzero chunk are processed; the lower ones are dropped by round-half-up,
  saturating within the kept chunks, or by truncation: lossy).

Values (ideal device): the exact integer result of the (precision-transformed) inputs, plus,
where the ADC can clip or round (calibrated bits, a small configured ADC, adc.step != 1), the
sign x (ADC(p') - p') of every conversion of the encoded partial sums p', which is exactly what
the digital recovery leaves of an ADC error. A non-ideal device is modelled (by the engine) only
without encodings and dynamic precision; those combinations are refused.

Modules: mapping (complemented layout, thresholds, bounds), kernel (EncodingKernel, values
and counts), scheme (EncodingScheme), options (its `name:key=value` table), calibration
(`sparsexbar calibrate encoding`), study (`sparsexbar reproduce encoding`).
"""

from ..entry import CLIPPING, BenchCase, SchemeEntry
from .kernel import (
    ClipTables,
    EncodingKernel,
    chunk_planes,
    clip_tables,
    conversion_corrections,
    dynamic_precision,
    exact_matmul,
    executed_chunks,
    group_view,
    inverted_groups,
    leading_chunk,
    tile_view,
)
from .mapping import (
    MAX_ADC_BITS,
    EncodingMappedLayer,
    LayerEncoding,
    complement_weights,
    encode_layer,
    encoded_bound,
    lossless_adc_bits,
)
from .options import OPTIONS
from .scheme import (
    ADC_MODES,
    INPUT_ENCODINGS,
    ROUNDINGS,
    WEIGHT_ENCODINGS,
    EncodingScheme,
    build_encoding,
    load_adc_bits,
    load_calibration,
)

ENTRY = SchemeEntry(
    name="encoding",
    scheme=EncodingScheme,
    help="bus-invert inputs, complemented weights, per-layer ADC bits, dynamic quantization",
    options=OPTIONS,
    build=build_encoding,
    bench=(BenchCase("encoding", "encoding, isaac, both encodings + lossless ADC + zero-plane "
                     "skip", "encoding"),
           BenchCase("encoding-lossy", "encoding, isaac OU 9x8, ADC 5 bit, DAC 2 bit (clips)",
                     "encoding", CLIPPING)),
    calibration="sparsexbar.schemes.encoding.calibration:CALIBRATION",
    study="sparsexbar.schemes.encoding.study:STUDY",
)

__all__ = ["ADC_MODES", "ClipTables", "ENTRY", "EncodingKernel", "EncodingMappedLayer",
           "EncodingScheme", "INPUT_ENCODINGS", "LayerEncoding", "MAX_ADC_BITS", "OPTIONS",
           "ROUNDINGS", "WEIGHT_ENCODINGS", "build_encoding", "chunk_planes", "clip_tables",
           "complement_weights", "conversion_corrections", "dynamic_precision", "encode_layer",
           "encoded_bound", "exact_matmul", "executed_chunks", "group_view", "inverted_groups",
           "leading_chunk", "load_adc_bits", "load_calibration", "lossless_adc_bits", "tile_view"]
