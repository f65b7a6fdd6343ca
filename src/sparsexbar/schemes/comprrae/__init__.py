"""`comprrae`: output-sparsity prediction and early termination (CompRRAE, Chen et al., ASP-DAC
2019; our reconstruction, DESIGN.md 3.3, docs/schemes/comprrae.md).

Inputs are fed most significant chunk first (always, whatever `numbers.bit_order` says). The
work of an output is cut into steps: one per input cycle (`bounds="output"`, default) or, with
`bounds="slice"`, one per (cycle, weight slice), slices most significant first within a cycle
(the columns are laid out slice-major so that one OU column group holds one slice). After each
step every output keeps its running sum A (over all arrays of the output) and bounds on what
the remaining steps can add: with P_c / N_c the sums of the positive / negative integer weights
of output channel c (a per-layer LUT) and R_t the largest value the input bits after cycle t
can take, y_max = A + P_c R_t and y_min = A + N_c R_t (signed inputs, two interleaved passes:
A +- (P_c - N_c) R_t); `slice` adds the lower slices of the current cycle, bounded by their own
positive / negative sums (LUT entries per slice) times the largest chunk. Outputs are compared
in the real domain, acc x input_scale x weight_scale[c] + bias[c], exactly as
`QuantLayer.dequantize` computes it.

- Early negative detection (END), layers followed by ReLU only: dequantize(y_max) < 0 -> the
  output is negative whatever comes, its ReLU is 0; the column stops and returns A (which
  dequantizes to a negative value, A <= y_max), so the network output is bit-for-bit dense's.
- Predictive negative detection (`beta` < 1, lossy): with mu the expected remaining
  contribution, (P_c + N_c) x lambda_t x R_t (lambda_t: the mean of the input bits still to
  come as a fraction of R_t, measured per layer on calibration images, `remaining_mean`; 0
  without), the output is predicted negative when dequantize(A + floor((1 - beta) mu +
  beta (y_max - A))) < 0; it stops and returns min(A, the largest accumulator that dequantizes
  below 0), so its ReLU is 0. beta = 1 is END.
- Adaptive early termination (`alpha`, lossy), ReLU layers only: dequantize(y_min) > 0 and
  y_max - y_min <= alpha |A| (accumulator units) -> stop, return floor((y_max + y_min) / 2)
  (`estimate="midpoint"`, default: A plus the middle of what the rest can add), A + floor(mu)
  (`"expected"`) or A (`"running"`).
- Events: an output channel that stops after e steps skips the conversions of its columns in
  the remaining steps (polarities x slices per step and OU row group per array, / slices with
  `slice`); an OU activation is skipped only when every column of its column group belongs to
  a stopped output (or slice); one LUT read and one comparison (two with alpha) per output per
  step checked (after every step but the last, until the output stops), and one digital
  multiply-add per check for the predictive threshold. Layers not followed by ReLU run exactly
  as `dense`.

Values are exact: needs the conversions to be the identity (`MappedLayer.exact_linear()`);
a layer followed by ReLU whose ADC can clip (or a non-ideal device) is refused.

Modules: kernel (CompKernel, the slice-major layout), scheme (CompRRAEScheme), options (its
`name:key=value` table), calibration (`sparsexbar calibrate comprrae`), study
(`sparsexbar reproduce comprrae`).
"""

from ..entry import BenchCase, SchemeEntry
from .kernel import CompKernel, slice_major
from .options import OPTIONS
from .scheme import (
    BOUNDS,
    ESTIMATES,
    AlphaSpec,
    BetaSpec,
    CompRRAEScheme,
    RemainingMean,
    build_comprrae,
    load_calibration,
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
