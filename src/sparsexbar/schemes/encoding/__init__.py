"""`encoding`: data encoding + per-layer ADC resolution + dynamic quantization (Chen et al.,
ASP-DAC 2018), our reconstruction (DESIGN.md 3.4)."""

from ..entry import BenchCase, SchemeEntry
from .options import OPTIONS
from .scheme import (
    ADC_MODES,
    INPUT_ENCODINGS,
    MAX_ADC_BITS,
    ROUNDINGS,
    WEIGHT_ENCODINGS,
    ClipTables,
    EncodingKernel,
    EncodingMappedLayer,
    EncodingScheme,
    LayerEncoding,
    build_encoding,
    chunk_planes,
    clip_tables,
    complement_weights,
    conversion_corrections,
    dynamic_precision,
    encode_layer,
    encoded_bound,
    exact_matmul,
    executed_chunks,
    group_view,
    inverted_groups,
    leading_chunk,
    load_adc_bits,
    load_calibration,
    lossless_adc_bits,
    tile_view,
)

ENTRY = SchemeEntry(
    name="encoding",
    scheme=EncodingScheme,
    help="bus-invert inputs, complemented weights, per-layer ADC bits, dynamic quantization",
    options=OPTIONS,
    build=build_encoding,
    bench=(BenchCase("encoding", "encoding, isaac, both encodings + lossless ADC + zero-plane "
                     "skip", "encoding"),),
    calibration="sparsexbar.schemes.encoding.calibration:CALIBRATION",
    study="sparsexbar.schemes.encoding.study:STUDY",
)

__all__ = ["ADC_MODES", "ClipTables", "ENTRY", "EncodingKernel", "EncodingMappedLayer",
           "EncodingScheme", "INPUT_ENCODINGS", "LayerEncoding", "MAX_ADC_BITS", "OPTIONS",
           "ROUNDINGS", "WEIGHT_ENCODINGS", "build_encoding", "chunk_planes", "clip_tables",
           "complement_weights", "conversion_corrections", "dynamic_precision", "encode_layer",
           "encoded_bound", "exact_matmul", "executed_chunks", "group_view", "inverted_groups",
           "leading_chunk", "load_adc_bits", "load_calibration", "lossless_adc_bits", "tile_view"]
