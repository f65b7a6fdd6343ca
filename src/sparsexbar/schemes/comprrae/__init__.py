"""`comprrae`: output-sparsity prediction and early termination (CompRRAE, Chen et al.,
ASP-DAC 2019), our reconstruction (DESIGN.md 3.3)."""

from .scheme import (
    BOUNDS,
    ESTIMATES,
    AlphaSpec,
    BetaSpec,
    CompKernel,
    CompRRAEScheme,
    RemainingMean,
    load_calibration,
    slice_major,
)

__all__ = ["BOUNDS", "ESTIMATES", "AlphaSpec", "BetaSpec", "CompKernel", "CompRRAEScheme",
           "RemainingMean", "load_calibration", "slice_major"]
