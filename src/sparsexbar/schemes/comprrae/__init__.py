"""`comprrae`: output-sparsity prediction and early termination (CompRRAE, Chen et al.,
ASP-DAC 2019), our reconstruction (DESIGN.md 3.3)."""

from ..entry import BenchCase, SchemeEntry
from .options import OPTIONS
from .scheme import (
    BOUNDS,
    ESTIMATES,
    AlphaSpec,
    BetaSpec,
    CompKernel,
    CompRRAEScheme,
    RemainingMean,
    build_comprrae,
    load_calibration,
    slice_major,
)

ENTRY = SchemeEntry(
    name="comprrae",
    scheme=CompRRAEScheme,
    help="CompRRAE: MSB-first early negative detection (exact), adaptive early termination "
         "and predictive negative detection (lossy)",
    options=OPTIONS,
    build=build_comprrae,
    bench=(BenchCase("comprrae", "comprrae, isaac, early negative detection (MSB-first, exact)",
                     "comprrae"),),
    calibration="sparsexbar.schemes.comprrae.calibration:CALIBRATION",
    study="sparsexbar.schemes.comprrae.study:STUDY",
)

__all__ = ["AlphaSpec", "BOUNDS", "BetaSpec", "CompKernel", "CompRRAEScheme", "ENTRY", "ESTIMATES",
           "OPTIONS", "RemainingMean", "build_comprrae", "load_calibration", "slice_major"]
