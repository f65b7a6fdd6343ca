"""The published figures our reproductions are compared with: one place, each with its source
(paper, and where in it), as DESIGN.md lists them. Nothing else in the code or the docs types
a published figure: the studies read it from here, and docs/README tables are generated from
the result JSON (studies.docs_tables).

Each figure says what its number is (`kind`): a single value, a bound the paper states ("> 2.9x":
the bound is the value), or a range (2x-4x: the value is the geometric middle of the range, the
ends are kept). `neutral` is the value meaning "no change" (1 for ratios, 0 for fractions removed
and for accuracy changes): `same_direction` in a row says whether ours and the published figure
lie on the same side of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SRE_SOURCE = ("Yang et al., Sparse ReRAM Engine, ISCA 2019, abstract and evaluation: speedup and "
              "energy saving of structurally pruned networks over an OU-based design exploiting "
              "no sparsity")
PATTERN_SOURCE = ("Yu et al., arXiv 2010.06156, Table (VGG16 on CIFAR-10): pattern pruning + "
                  "kernel-reordering mapping against the straightforward mapping of the same "
                  "pruned weights; energy of RRAM, ADC and DAC only")
COMPRRAE_SOURCE = ("Chen et al., CompRRAE, ASP-DAC 2019 (arXiv 1906.03180), abstract: about 70% "
                   "of computations removed, accuracy loss < 0.2%, energy efficiency > 2.9x and "
                   "throughput > 2.8x over prior RRAM accelerators (ISAAC-class)")
ENCODING_SOURCE = ("Chen et al., ASP-DAC 2018, abstract: throughput, energy efficiency and area "
                   "efficiency 2x-4x better than state-of-the-art RRAM accelerators "
                   "(ISAAC-class)")


@dataclass(frozen=True)
class Figure:
    """One published figure: `study` and `key` name it; `metric` says what it measures (with
    its unit); `value` is the number rows compare with (fractions as fractions, ratios as
    ratios, accuracy changes in points); `low`/`high` the ends of a published range."""

    study: str
    key: str
    metric: str
    value: float
    text: str
    kind: str  # "value", "max", "mean", "lower bound", "upper bound", "approx", "range"
    neutral: float
    source: str
    unit: str = "x"  # how it prints: "x" (ratio), "%" (fraction), "pt" (points), "" (count)
    low: float | None = None
    high: float | None = None


def _range(study: str, key: str, metric: str, low: float, high: float, source: str) -> Figure:
    return Figure(study, key, metric, math.sqrt(low * high), f"{low:g}x-{high:g}x", "range", 1.0,
                  source, "x", low, high)


FIGURES: tuple[Figure, ...] = (
    # SRE (DESIGN.md: up to 42.3x speedup, 13.1x on average; energy saving up to 95.4%,
    # 85.3% on average; lossless)
    Figure("sre", "speedup_max", "speedup (largest)", 42.3, "up to 42.3x", "max", 1.0,
           SRE_SOURCE),
    Figure("sre", "speedup_mean", "speedup (mean)", 13.1, "13.1x on average", "mean", 1.0,
           SRE_SOURCE),
    Figure("sre", "energy_saving_max", "energy saving (largest)", 0.954, "up to 95.4%", "max",
           0.0, SRE_SOURCE, "%"),
    Figure("sre", "energy_saving_mean", "energy saving (mean)", 0.853, "85.3% on average",
           "mean", 0.0, SRE_SOURCE, "%"),
    # Pattern mapping, VGG16 on CIFAR-10 (the closest of its three rows to our 32x32, 10-class
    # workload; the CIFAR-100 / ImageNet rows are kept in PATTERN_OTHER_ROWS)
    Figure("pattern", "sparsity", "weight sparsity of the 3x3 convs", 0.860, "86.0%", "value",
           0.0, PATTERN_SOURCE, "%"),
    Figure("pattern", "patterns_total", "patterns in all conv layers", 71.0, "71", "value", 0.0,
           PATTERN_SOURCE, ""),
    Figure("pattern", "top1_change", "top-1 change of pruning (points)", -0.09, "-0.09", "value",
           0.0, PATTERN_SOURCE, "pt"),
    Figure("pattern", "area_efficiency", "RRAM array area efficiency (arrays)", 4.67, "4.67x",
           "value", 1.0, PATTERN_SOURCE),
    Figure("pattern", "energy_efficiency", "energy efficiency (RRAM+ADC+DAC)", 2.13, "2.13x",
           "value", 1.0, PATTERN_SOURCE),
    Figure("pattern", "speedup", "speedup", 1.35, "1.35x", "value", 1.0, PATTERN_SOURCE),
    # CompRRAE
    Figure("comprrae", "computation_reduction", "computations (ADC conversions) removed", 0.70,
           "~70%", "approx", 0.0, COMPRRAE_SOURCE, "%"),
    Figure("comprrae", "top1_change", "top-1 change (points)", -0.2, "> -0.2 (loss < 0.2%)",
           "lower bound", 0.0, COMPRRAE_SOURCE, "pt"),
    Figure("comprrae", "energy_efficiency", "energy efficiency", 2.9, "> 2.9x", "lower bound",
           1.0, COMPRRAE_SOURCE),
    Figure("comprrae", "throughput", "throughput", 2.8, "> 2.8x", "lower bound", 1.0,
           COMPRRAE_SOURCE),
    # Encoding + dynamic quantization
    _range("encoding", "throughput", "throughput", 2.0, 4.0, ENCODING_SOURCE),
    _range("encoding", "energy_efficiency", "energy efficiency", 2.0, 4.0, ENCODING_SOURCE),
    _range("encoding", "area_efficiency", "area efficiency (throughput per area)", 2.0, 4.0,
           ENCODING_SOURCE),
)

# The pattern paper's other two VGG16 rows (DESIGN.md), shown beside ours in the study's table.
PATTERN_OTHER_ROWS: tuple[dict[str, float | str], ...] = (
    {"data": "CIFAR-100", "sparsity": 0.852, "patterns_total": 66, "top1_change": 0.01,
     "area_efficiency": 5.20, "energy_efficiency": 2.15, "speedup": 1.15},
    {"data": "ImageNet", "sparsity": 0.825, "patterns_total": 76, "top1_change": -0.75,
     "area_efficiency": 4.16, "energy_efficiency": 1.98, "speedup": 1.17},
)
PATTERN_PER_LAYER = (2, 2, 2, 6, 8, 8, 8, 6, 5, 4, 6, 6, 8)  # issue 16: VGG16 CIFAR-10
PATTERN_HARDWARE = ("512x512 arrays, 4-bit cells, OU 9x8, ADC 8 bit 1.67 pJ at 1.2 GS/s, DAC 4 "
                    "bit 0.0182 pJ, 4.8 pJ per OU operation")


def figure(study: str, key: str) -> Figure:
    """The published figure `key` of `study` (KeyError names it when there is none)."""
    for f in FIGURES:
        if f.study == study and f.key == key:
            return f
    raise KeyError(f"no published figure {study}.{key}")


def figures(study: str) -> list[Figure]:
    """Every published figure of `study`, in the order above."""
    return [f for f in FIGURES if f.study == study]


def as_json(study: str) -> dict[str, dict[str, object]]:
    """The study's published figures as JSON (what each study's report carries)."""
    return {f.key: {"metric": f.metric, "value": f.value, "text": f.text, "kind": f.kind,
                    "low": f.low, "high": f.high, "source": f.source} for f in figures(study)}
