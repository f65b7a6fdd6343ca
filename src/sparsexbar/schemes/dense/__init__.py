"""`dense`: the OU-based baseline with the straightforward mapping; skips nothing."""

from ..entry import BenchCase, SchemeEntry
from .scheme import DenseScheme

OU9X8_ADC5 = (("ou.rows", 9), ("ou.cols", 8), ("adc.bits", 5))

ENTRY = SchemeEntry(
    name="dense",
    scheme=DenseScheme,
    help="the OU-based baseline (ISAAC-like, straightforward mapping): skips nothing",
    bench=(
        BenchCase("lossless", "dense, isaac, lossless ADC (exact shortcut)", "dense"),
        BenchCase("ou9x8-adc5", "dense, isaac OU 9x8, ADC 5 bit (cannot clip: shortcut)",
                  "dense", OU9X8_ADC5),
        BenchCase("ou9x8-adc5-forced",
                  "dense, isaac OU 9x8, ADC 5 bit, per-group bound checks forced", "dense",
                  OU9X8_ADC5, exact_shortcut=False),
        BenchCase("lossy", "dense, isaac OU 9x8, ADC 5 bit, DAC 2 bit (clips: per-conversion)",
                  "dense", (*OU9X8_ADC5, ("dac.bits", 2))),
        BenchCase("nonideal",
                  "dense, isaac OU 9x8, ADC 5 bit, DAC 2 bit, device variation + read noise + "
                  "accumulated deviation (every active group converted)", "dense",
                  (*OU9X8_ADC5, ("dac.bits", 2), ("device.variation", "lognormal"),
                   ("device.variation_sigma", 0.05), ("device.read_noise_sigma", 0.01),
                   ("device.accumulated_deviation_sigma", 0.02))),
    ),
)

__all__ = ["DenseScheme", "ENTRY"]
