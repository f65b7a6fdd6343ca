"""comprrae's `name:key=value` options (e.g. `comprrae:bounds=slice:beta=0.25`)."""

from __future__ import annotations

from ..options import choice, number, path
from .scheme import BOUNDS, ESTIMATES

OPTIONS = (
    number("alpha", None, "adaptive early termination on ReLU layers (lossy): stop when "
           "y_min > 0 and y_max - y_min <= alpha |A|; none: off", none=True),
    number("beta", None, "predictive negative detection (lossy), in [0, 1]; 1 or none: "
           "early negative detection only (exact)", none=True),
    choice("bounds", BOUNDS, "output", "bounds after each input cycle (output) or after "
           "each (cycle, weight slice) step (slice: tighter, exact)"),
    choice("estimate", ESTIMATES, "midpoint", "value of an output stopped by alpha"),
    path("calibration", "a `sparsexbar calibrate comprrae` file: per-layer alphas or betas "
         "and remaining-bit means (alpha or beta given beside it replace the file's)"),
)
