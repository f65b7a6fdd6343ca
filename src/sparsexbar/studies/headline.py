"""Headline rows: one per published figure, ours beside it, with numbers (issue 19).

Every row of `DIR/NAME_reproduce.json` ("headline") and of `all_reproduce.json` carries
`metric`, `published_value`, `ours_value`, `ratio` (ours / published; None where the published
value is 0), `same_direction` (ours and published on the same side of "no change"; None
where the published figure is a bound that admits "no change" itself, such as "loss < 0.2%"),
`meets_published` (ours within a published bound or range; None for a single figure),
`baseline` (what the ratio is against, in words), `model`, `test_images` (the simulated images
the energy / time / event figures come from) and the accuracy it was measured at
(`top1`, `accuracy_images`, `accuracy_how`). Rows are built from the runs of the same call;
nothing here holds a figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .published import Figure, figure

HEADLINE_COLUMNS = ("metric", "ours", "published", "ratio", "same direction",
                    "meets published", "setting", "top-1 (images)", "baseline", "model",
                    "simulated images")


def figure_ratio(ours: float | None, published: float) -> float | None:
    """ours / published; None without our figure, against 0, or for figures of opposite signs
    (a top-1 gain of +0.01 points against a loss bound of -0.2 read as a ratio of -0.05)."""
    if ours is None or published == 0 or ours * published < 0:
        return None
    return ours / published


def headline_row(study: str, key: str, ours: float | None, *, setting: str, baseline: str,
                 model: str, test_images: int, top1: float | None = None,
                 accuracy_images: int | None = None, accuracy_how: str = "",
                 note: str = "", primary: bool = True) -> dict[str, Any]:
    """The row of published figure `study.key` with our value `ours` (same unit as the
    figure's value: a ratio, a fraction or points), measured by `setting` against `baseline`;
    `primary`: the row the README's headline table shows."""
    pub = figure(study, key)
    ratio = figure_ratio(ours, pub.value)
    return {
        "study": study, "key": key, "metric": pub.metric, "unit": pub.unit,
        "published_value": pub.value, "published_text": pub.text, "published_kind": pub.kind,
        "published_low": pub.low, "published_high": pub.high,
        "ours_value": ours, "ratio": ratio, "same_direction": same_direction(pub, ours),
        "meets_published": meets_published(pub, ours),
        "within_2x": ratio is not None and 0.5 <= ratio <= 2.0,
        "setting": setting, "baseline": baseline, "model": model, "test_images": test_images,
        "top1": top1, "accuracy_images": accuracy_images, "accuracy_how": accuracy_how,
        "source": pub.source, "note": note, "primary": primary,
    }


def same_direction(pub: Figure, ours: float | None) -> bool | None:
    """Whether `ours` lies on the same side of the figure's neutral value as the published
    one (both exactly neutral counts as the same). None where the paper gives no direction:
    a bound on the side of "no change" that admits it (CompRRAE's "loss < 0.2%": a top-1
    change above -0.2, gains and no change included), or no value of ours."""
    if ours is None or _admits_neutral(pub):
        return None
    a, b = ours - pub.neutral, pub.value - pub.neutral
    return (a > 0 and b > 0) or (a < 0 and b < 0) or (a == 0 and b == 0)


def _admits_neutral(pub: Figure) -> bool:
    return ((pub.kind == "lower bound" and pub.value < pub.neutral)
            or (pub.kind == "upper bound" and pub.value > pub.neutral))


def meets_published(pub: Figure, ours: float | None) -> bool | None:
    """Whether `ours` satisfies a published bound ("> 2.9x": above it; "< x": below it) or
    lies in a published range (2x-4x, ends included); None for a single figure (a value, an
    average, a largest or an approximate one), which ours is compared with by the ratio."""
    if ours is None:
        return None
    if pub.kind == "lower bound":
        return ours > pub.value
    if pub.kind == "upper bound":
        return ours < pub.value
    if pub.kind == "range":
        assert pub.low is not None and pub.high is not None
        return pub.low <= ours <= pub.high
    return None


def verdict_cells(row: dict[str, Any]) -> tuple[str, str, str]:
    """The ratio, same-direction and meets-published cells of a headline row, the verdicts
    recomputed from `ours_value` and the published figure (`study`, `key`), so a result file
    written under an earlier rule prints with the current one: "-" where there is none."""
    pub = figure(row["study"], row["key"])
    ours = row["ours_value"]
    # a zero ratio of a negative figure prints 0.00, not -0.00
    value = figure_ratio(ours, pub.value)
    ratio = "-" if value is None else f"{value:.2f}".replace("-0.00", "0.00")

    def cell(verdict: bool | None) -> str:
        return "-" if verdict is None else "yes" if verdict else "no"

    return ratio, cell(same_direction(pub, ours)), cell(meets_published(pub, ours))


def fmt_value(value: float | None, unit: str) -> str:
    """A value as the tables print it: 1.23x, 45.6%, +0.12 pt, 71."""
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{100 * value:.1f}%"
    if unit == "pt":
        return f"{value:+.2f} pt"
    return f"{value:g}"


def _top1_cell(row: dict[str, Any]) -> str:
    if row.get("top1") is None:
        return "-"
    return f"{100 * row['top1']:.2f}% ({row['accuracy_images']})"


def headline_markdown(rows: Sequence[dict[str, Any]], title: str | None = None) -> str:
    """The rows as one Markdown table (every value printed from the row's numbers)."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(HEADLINE_COLUMNS) + " |",
              "| --- | ---: | ---: | ---: | :-: | :-: | --- | ---: | --- | --- | ---: |"]
    for r in rows:
        ratio, direction, meets = verdict_cells(r)
        lines.append(
            f"| {r['metric']} | {fmt_value(r['ours_value'], r['unit'])} | {r['published_text']} "
            f"| {ratio} | {direction} | {meets} | {r['setting']} "
            f"| {_top1_cell(r)} | {r['baseline']} | {r['model']} | {r['test_images']} |")
    return "\n".join(lines) + "\n"


def accuracy_note(rows: Sequence[dict[str, Any]]) -> str:
    """One line per distinct way accuracy was measured in `rows`."""
    seen = dict.fromkeys(r["accuracy_how"] for r in rows if r.get("accuracy_how"))
    return "".join(f"- top-1: {how}\n" for how in seen)


def vs_baseline(res: Any, base: Any) -> dict[str, float]:
    """Ratios of a scheme's run `res` against a separate baseline run `base` (both `Result`s on
    the same images): speedup (baseline latency / ours), energy efficiency (baseline energy /
    ours, all components), area efficiency (throughput per total area, relative) and the
    fraction of ADC conversions and OU activations removed."""

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("inf")

    t, b = res.totals, base.totals
    speedup = ratio(b.latency_s, t.latency_s)
    return {
        "speedup": speedup,
        "energy_efficiency": ratio(b.energy_pj["total"], t.energy_pj["total"]),
        "area_efficiency": speedup * ratio(b.area_um2["total"], t.area_um2["total"]),
        "conversion_reduction": 1 - ratio(t.events.adc_conversions, b.events.adc_conversions),
        "ou_reduction": 1 - ratio(t.events.ou_activations, b.events.ou_activations),
    }
