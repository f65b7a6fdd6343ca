"""Measured ablations (studies/ablations.py): the pattern area-efficiency rows come from the
mapping of the pruned networks; dense arrays follow the closed form of the tiling."""

from __future__ import annotations

import math

from sparsexbar.core.config import load_config
from sparsexbar.studies.ablations import pattern_area_markdown, pattern_area_rows
from sparsexbar.training import zoo


def test_pattern_area_rows_follow_the_mapping() -> None:
    rows = pattern_area_rows(widths=(0.25,), presets=("isaac",), shipped=None)
    assert len(rows) == 1
    row = rows[0]
    hw = load_config("isaac")
    net = zoo.build_model("vgg16", in_channels=1, num_classes=10, input_size=32, width=0.25)
    convs = [m for m in net.modules() if m.__class__.__name__ == "Conv2d"]
    # dense tiling: ceil(9 Cin / rows) row tiles x ceil(Cout x columns per weight / cols)
    per_weight = hw.slices * hw.polarities
    dense = sum(math.ceil(9 * c.in_channels / hw.array.rows)
                * math.ceil(c.out_channels * per_weight / hw.array.cols) for c in convs)
    assert row["conv_layers"] == len(convs) == 13
    assert row["dense_arrays"] == dense
    assert 0 < row["pattern_arrays"] < row["dense_arrays"]  # 86% zeros: fewer arrays
    assert row["area_efficiency"] == dense / row["pattern_arrays"]
    text = pattern_area_markdown({"rows": rows, "published": 4.67, "time_s": 1.0})
    assert f"| {row['dense_arrays']} | {row['pattern_arrays']} |" in text


def test_sre_speedup_rows_come_from_simulated_runs() -> None:
    """Network speedup is the run's vs_dense figure; the best layer's is the largest ratio of
    dense to sre latency over the layers, at least the network's."""
    from sparsexbar.simulate import simulate
    from sparsexbar.studies.ablations import sre_speedup_markdown, sre_speedup_rows

    rows = sre_speedup_rows("vgg8-fmnist-pattern", ou_sizes=(8,), images=2)
    res = simulate("vgg8-fmnist-pattern", "default", hw="isaac",
                   overrides={"ou.rows": 8, "ou.cols": 8}, scheme="sre", limit=2, batch_size=2)
    (row,) = rows
    assert row["network_speedup"] == res.vs_dense.speedup
    best = max(r.dense_latency_ns_per_image / r.latency_ns_per_image for r in res.layers)
    assert row["best_layer_speedup"] == best >= row["network_speedup"]
    text = sre_speedup_markdown({"rows": rows, "published": 42.3, "time_s": 1.0})
    assert f"{row['network_speedup']:.2f}x" in text
    assert row["width"] == 0.25 and "vgg8-fmnist-pattern at width 0.25 |" in text
