"""Where issue 18's targets stand: the table of docs/benchmarks.md ("Where the targets stand"),
printed from the committed result files in docs/results/bench/ (no figure typed by hand).

    .venv/bin/python benchmarks/standing.py

Each row names its file; update the file names here when a newer run replaces one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

B = str(Path(__file__).resolve().parents[1] / "docs" / "results" / "bench") + "/"


def rows(name: str) -> Any:
    """The rows of one result file."""
    return json.loads(Path(B + name).read_text())


def case(name: str, key: str) -> dict[str, Any]:
    """The row of bench case `key` in a result file."""
    return next(r for r in rows(name) if r["key"] == key)


def xdense(name: str, key: str, dense: str = "lossless") -> float:
    """Simulated time of case `key` over that of the dense case `dense` in the same file."""
    return float(case(name, key)["sim_s"] / case(name, dense)["sim_s"])


def span(values: list[float]) -> str:
    """'a-bx' over the runs of one setting (one value: 'ax')."""
    lo, hi = f"{min(values):.2f}", f"{max(values):.2f}"
    return f"{lo}x" if lo == hi else f"{lo}-{hi}x"


def met(value: float, limit: float) -> str:
    """'yes' where `value` is within the target `limit` (at most), else 'no'."""
    return "yes" if value <= limit else "no"


def main() -> None:
    argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0]).parse_args()
    out: list[tuple[str, str, str, str]] = []
    # two runs per thread count (part 18, this session's CPU); the two-thread gain of each
    # run over its one-thread mate
    noisy = [(case(f"noisy_after18_t1{tail}.json", "nonideal"),
              case(f"noisy_after18_t2{tail}.json", "nonideal"))
             for tail in ("", "_2")]
    one = [n1["ratio"] for n1, _ in noisy]
    out.append(("noisy <= 40x plain PyTorch, one thread (shipped VGG-8, batch 64; part 18's CPU)",
                f"{min(one):.0f}-{max(one):.0f}x", met(max(one), 40),
                "noisy_after18_t1{,_2}.json"))
    gains = [n2["images_per_s"] / n1["images_per_s"] for n1, n2 in noisy]
    out.append(("noisy: two threads >= 1.7x one (part 18's CPU)", span(gains),
                "yes" if min(gains) >= 1.7 else "no", "noisy_after18_t{1,2}{,_2}.json"))
    ceiling = rows("noisy9_ceiling.json")
    out.append(("noisy, the machine's ceiling: two single-thread processes over one "
                f"({ceiling['images']} images; two threads in the same run)",
                f"{ceiling['two_processes_gain']:.2f}x ({ceiling['two_threads_gain']:.2f}x)",
                "n/a", "noisy9_ceiling.json"))
    # Where a pair of after-runs exists, the range over both; met only if both are.
    pair = ("vgg8_after11_1.json", "vgg8_after11_2.json")
    lossy = [case(name, "lossy")["ratio"] for name in pair]
    out.append(("lossy bit-accurate <= 8x plain, one thread (shipped VGG-8)", span(lossy),
                met(max(lossy), 8), "vgg8_after11_{1,2}.json"))
    demo = ("vgg8p_after19_1.json", "vgg8p_after19_2.json")
    dense_plain = [case(name, "lossless")["ratio"] for name in demo]
    for key in ("sre", "pattern", "comprrae", "encoding", "combined"):
        v = [xdense(name, key) for name in demo]
        plain = [case(name, key)["ratio"] for name in demo]
        out.append((f"{key} <= 3x dense, demo setting (vgg8-pattern, batch 64, one thread; "
                    f"part 19's CPU, no int8 shortcut: dense at {span(dense_plain)} plain)",
                    f"{span(v)} ({span(plain)} plain)", met(max(v), 3),
                    "vgg8p_after19_{1,2}.json"))
    floor = {r["key"]: r for r in rows("linear_floor12.json")}
    out.append(("the floor of each design: its exact linear maps alone, x the whole dense case "
                "(part 12; vgg8-pattern, batch 64, one thread)",
                ", ".join(f"{k} {floor[k]['linear_x_dense']:.2f}x"
                          for k in ("encoding", "sre", "comprrae", "combined")),
                "n/a", "linear_floor12.json"))
    clipping = ("lossy16_after19_1.json", "lossy16_after19_2.json")
    for key in ("sre-lossy", "pattern-lossy", "encoding-lossy", "combined-lossy"):
        v = [xdense(name, key, "lossy") for name in clipping]
        out.append((f"{key} <= 3x dense with the same clipping ADC (batch 16, one thread; "
                    "part 19's CPU)", span(v), met(max(v), 3), "lossy16_after19_{1,2}.json"))
    calls = ("simcall_after12.json", "simcall_after12_2.json")
    ratios = [r["ratio"] for name in calls for r in rows(name)]
    cpu = [r["cpu_ratio"] for name in calls for r in rows(name)]
    out.append(("simulate() within 1.5x of the engine (batch 64, every scheme, two runs; "
                "met on CPU time, which waiting for a core does not inflate)",
                f"{min(ratios):.2f}-{max(ratios):.2f}x wall ({min(cpu):.2f}-{max(cpu):.2f}x CPU)",
                met(max(cpu), 1.5), "simcall_after12{,_2}.json"))
    vgg16 = ("vgg16p_after12.json",)
    rss = max(r["peak_rss_mib"] for name in vgg16 for r in rows(name))
    out.append(("VGG-16 (full width) peak RSS <= 4 GiB at batch 256, every case", f"{rss:.0f} MiB",
                met(rss, 4096), ", ".join(vgg16)))
    d0, d1 = rows("demo10k_before_quiet.json"), rows("demo10k_after12.json")
    out.append(("`sparsexbar demo` on the 10k split, before and after",
                f"{d0['wall_s']:.0f} s -> {d1['wall_s']:.0f} s", "recorded",
                "demo10k_before_quiet.json, demo10k_after12.json"))
    c0, c1, c2 = (rows(f"demo10k_avx2_19{tag}.json") for tag in ("", "b", "c"))
    out.append(("`sparsexbar demo` on the 10k split, part 18's CPU (AVX2, no VNNI): part 19's "
                "start, after its calibration change, its end (a fresh clone's `make demo`)",
                f"{c0['wall_s']:.0f} s -> {c1['wall_s']:.0f} s -> {c2['wall_s']:.0f} s",
                "recorded", "demo10k_avx2_19{,b,c}.json"))
    print("| target (issue 18) | latest | met | result file (docs/results/bench/) |")
    print("| --- | ---: | --- | --- |")
    for row in out:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
