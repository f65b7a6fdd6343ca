"""`dense`: the OU-based baseline with the straightforward mapping; skips nothing."""

from ..entry import CLIPPING, OU9X8_ADC5, BenchCase, SchemeEntry
from .scheme import DenseScheme

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
                  "dense", CLIPPING),
        BenchCase("nonideal",
                  "dense, isaac OU 9x8, ADC 5 bit, DAC 2 bit, device variation + read noise + "
                  "accumulated deviation (every active group converted)", "dense",
                  (*CLIPPING, ("device.variation", "lognormal"),
                   ("device.variation_sigma", 0.05), ("device.read_noise_sigma", 0.01),
                   ("device.accumulated_deviation_sigma", 0.02))),
        BenchCase("variation",
                  "dense, isaac OU 9x8, ADC 5 bit, DAC 2 bit, programmed variation only (every "
                  "active group converted, no draws: the noisy path's floor)", "dense",
                  (*CLIPPING, ("device.variation", "lognormal"),
                   ("device.variation_sigma", 0.05))),
    ),
)

__all__ = ["DenseScheme", "ENTRY"]
