"""The cost model against a published design: ISAAC's tile (Shafiee et al., ISCA 2016, Table I,
32 nm), power at full use and area by component, beside what our model gives for ISAAC's own
configuration (`isaac-paper`: 128x128 arrays read whole, one 8-bit 1.2 GS/s ADC per array, 8
arrays per IMA, 12 IMAs per tile). docs/cost.md shows the table this module writes
(`python -m sparsexbar.studies.isaac_check docs`), and the ADC model's plot.

Our side: `cost.full_use_power_mw` (every array busy with whole-array activations back to back,
timed by the timing rule) and `cost.area_um2` of the tile's 96 arrays plus the buffer. ISAAC
components our model has no counterpart for (the inter-tile network, the IMAs' input and output
registers, sample-and-hold, sigmoid and max-pool units) are listed with the reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.config import HardwareConfig, preset
from ..core.cost import area_um2, buffer_area_um2, full_use_power_mw, ratio
from ..core.io import atomic_write_text
from ..core.runtime import pyplot

ARRAYS_PER_IMA = 8
IMAS_PER_TILE = 12
ARRAYS_PER_TILE = ARRAYS_PER_IMA * IMAS_PER_TILE
TOLERANCE = 0.25  # the issue's bound: within 25%, or a stated reason

# ISAAC Table I, per tile: (component, power mW, area mm^2, our component or None). IMA rows are
# the IMA's figures x 12 IMAs; the router is shared by 4 tiles (a quarter per tile).
ISAAC_TILE: tuple[tuple[str, float, float, str | None], ...] = (
    ("ADC (8 x 12, 8 bit, 1.2 GS/s)", 16.0 * 12, 0.0096 * 12, "adc"),
    ("DAC (8 x 128 x 12, 1 bit)", 4.0 * 12, 0.00017 * 12, "dac"),
    ("memristor arrays (8 x 12, 128x128, 2 bit)", 2.4 * 12, 0.0002 * 12, "crossbar"),
    ("shift-and-add (4 x 12 in IMAs + 1)", 0.2 * 12 + 0.05, 0.00024 * 12 + 0.00006,
     "shift_add"),
    ("eDRAM buffer (64 KB)", 20.7, 0.083, "buffer"),
    ("sample-and-hold (8 x 128 x 12)", 0.01 * 12, 0.00004 * 12, None),
    ("input registers (2 KB x 12)", 1.24 * 12, 0.0021 * 12, None),
    ("output registers (256 B x 12 + 3 KB)", 0.23 * 12 + 1.68, 0.00077 * 12 + 0.0032, None),
    ("eDRAM-to-IMA bus (384 wires)", 7.0, 0.090, None),
    ("router (shared by 4 tiles)", 42.0 / 4, 0.151 / 4, None),
    ("sigmoid (2) and max-pool (1)", 0.52 + 0.4, 0.0006 + 0.00024, None),
)
ISAAC_TILE_TOTAL = (330.0, 0.372)  # mW, mm^2 (Table I)
WHY_NOT_MODELLED = {
    "sample-and-hold (8 x 128 x 12)": "folded into the ADC conversion (0.04% of the tile)",
    "input registers (2 KB x 12)": "the IMAs' input registers: our buffer feeds the rows "
                                   "directly (the words are counted once, as buffer reads)",
    "output registers (256 B x 12 + 3 KB)": "as the input registers (outputs counted once, as "
                                            "buffer writes)",
    "eDRAM-to-IMA bus (384 wires)": "no on-chip network in our model (one layer's arrays, one "
                                    "buffer)",
    "router (shared by 4 tiles)": "no inter-tile network in our model",
    "sigmoid (2) and max-pool (1)": "digital periphery, charged per op by the workload "
                                    "(`digital`), not at a fixed rate",
}
BUFFER_REASON = ("ISAAC's eDRAM figure moves every byte twice (network to eDRAM, eDRAM to "
                 "IMA) at the tile's peak rate; our model reads each input word once and "
                 "writes each output word once")


@dataclass(frozen=True)
class Row:
    """One component of the comparison: ISAAC's and our power (mW) and area (mm^2)."""

    component: str
    isaac_mw: float
    isaac_mm2: float
    ours_mw: float | None
    ours_mm2: float | None
    note: str

    @property
    def power_ratio(self) -> float | None:
        return None if self.ours_mw is None else ratio(self.ours_mw, self.isaac_mw)

    @property
    def area_ratio(self) -> float | None:
        return None if self.ours_mm2 is None else ratio(self.ours_mm2, self.isaac_mm2)


def isaac_comparison(hw: HardwareConfig | None = None) -> list[Row]:
    """Per ISAAC tile component: published power and area beside our model's for
    `isaac-paper` (or `hw`) at full use over one tile's arrays."""
    hw = hw or preset("isaac-paper")
    power = full_use_power_mw(hw, ARRAYS_PER_TILE)
    area = area_um2(ARRAYS_PER_TILE, hw)
    area_mm2 = {k: v * 1e-6 for k, v in area.items()}
    area_mm2["buffer"] = buffer_area_um2(hw) * 1e-6
    rows = []
    for name, mw, mm2, ours in ISAAC_TILE:
        if ours is None:
            rows.append(Row(name, mw, mm2, None, None, WHY_NOT_MODELLED[name]))
            continue
        row = Row(name, mw, mm2, power[ours], area_mm2[ours], "")
        off = [what for what, r in (("power", row.power_ratio), ("area", row.area_ratio))
               if r is not None and abs(r - 1) > TOLERANCE]
        note = "" if not off else (BUFFER_REASON if ours == "buffer" else
                                   f"{' and '.join(off)} outside 25%")
        rows.append(Row(name, mw, mm2, row.ours_mw, row.ours_mm2, note))
    return rows


def comparison_markdown(rows: list[Row]) -> str:
    """The comparison as a Markdown table, with the totals of what both sides model."""
    lines = ["| ISAAC tile component | ISAAC mW | ours mW | ratio | ISAAC mm^2 | ours mm^2 | "
             "ratio | note |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        lines.append(f"| {r.component} | {r.isaac_mw:.2f} | {num(r.ours_mw, '.2f')} | "
                     f"{num(r.power_ratio, '.2f')} | {r.isaac_mm2:.5f} | "
                     f"{num(r.ours_mm2, '.5f')} | {num(r.area_ratio, '.2f')} | {r.note} |")
    modelled = [r for r in rows if r.ours_mw is not None]
    both = (sum(r.isaac_mw for r in modelled), sum(r.ours_mw or 0.0 for r in modelled),
            sum(r.isaac_mm2 for r in modelled), sum(r.ours_mm2 or 0.0 for r in modelled))
    lines.append(f"| what both model | {both[0]:.2f} | {both[1]:.2f} | "
                 f"{ratio(both[1], both[0]):.2f} | {both[2]:.5f} | {both[3]:.5f} | "
                 f"{ratio(both[3], both[2]):.2f} | |")
    lines.append(f"| ISAAC tile total | {ISAAC_TILE_TOTAL[0]:.2f} | {both[1]:.2f} | "
                 f"{ratio(both[1], ISAAC_TILE_TOTAL[0]):.2f} | {ISAAC_TILE_TOTAL[1]:.5f} | "
                 f"{both[3]:.5f} | {ratio(both[3], ISAAC_TILE_TOTAL[1]):.2f} | ours: only "
                 "what we model |")
    return "\n".join(lines) + "\n"


def plot_adc_model(path: str | Path, hw: HardwareConfig | None = None) -> None:
    """Energy, area and conversion time of one ADC against its bits (SAR and flash, from `hw`'s
    reference point), with the Saberi-scaled ISAAC ADC points the SAR model is fitted to."""
    hw = hw or preset("isaac")
    flash = hw.with_overrides({"adc.kind": "flash"})
    walden = hw.with_overrides({"adc.energy_capacitive_share": 1.0,
                                "adc.area_capacitive_share": 1.0})
    bits = list(range(1, 13))
    table = {4: (0.79, 361.04), 5: (0.99, 476.91), 6: (1.20, 626.91), 7: (1.42, 845.18),
             8: (1.67, 1200.0), 9: (1.969, 1827.9), 10: (2.379, 3002.0)}
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, what, unit, fn in (
            (axes[0], "energy per conversion", "pJ", lambda c, b: c.adc_energy_pj(b)),
            (axes[1], "area", "um^2", lambda c, b: c.adc_area_um2(b)),
            (axes[2], "conversion time", "ns", lambda c, b: c.adc_conversion_ns(b))):
        ax.plot(bits, [fn(hw, b) for b in bits], "o-", label="SAR (model)")
        ax.plot(bits, [fn(flash, b) for b in bits], "s--", label="flash")
        if what != "conversion time":
            ax.plot(bits, [fn(walden, b) for b in bits], ":", label="x2 per bit (Walden)")
            idx = 0 if what.startswith("energy") else 1
            ax.plot(list(table), [v[idx] for v in table.values()], "k+", markersize=10,
                    label="ISAAC ADC, Saberi-scaled")
        ax.set_yscale("log")
        ax.set_xlabel("ADC bits")
        ax.set_ylabel(f"{what} ({unit})")
        ax.set_title(what)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("ADC model (reference: ISAAC's 8-bit SAR, 1.67 pJ, 1200 um^2, 1.2 GS/s)")
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)


BEGIN, END = "<!-- isaac-table -->", "<!-- /isaac-table -->"


def with_table(doc: str, table: str) -> str:
    """`doc` (docs/cost.md's text) with the table between its markers replaced by `table`."""
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv: list[str]) -> None:
    """`python -m sparsexbar.studies.isaac_check [docs]`: print the table; with `docs` (run
    from the repository root), also write it into docs/cost.md and draw docs/img/adc_model.png."""
    text = comparison_markdown(isaac_comparison())
    print(text)
    if argv[:1] == ["docs"]:
        doc = Path("docs") / "cost.md"
        atomic_write_text(doc, with_table(doc.read_text(), text))
        plot_adc_model(Path("docs") / "img" / "adc_model.png")


if __name__ == "__main__":
    main(sys.argv[1:])
