"""How the time of one value of a batched float32 product (`torch.bmm`) depends on its number
of columns, on the shapes of sre's dynamic packing with a clipping ADC (issue 18, part 13).

`schemes/sre/packing.py` multiplies each block's (width, ou.rows) levels with its
(ou.rows, columns) inputs: `ou.rows` 9, width 8 (one OU column group) and a batch of
thousands of blocks, the columns being positions (a chunk of them, or the slots of a block of
pairs). On this project's CPU the product's time per multiply-add changes by an order of
magnitude with the column count: it is why the packing puts the block sums and A side by side
(twice the columns), holds at least 4 slots per block of pairs and 16 positions per chunk
(chunks of sets where fewer fit). Best of `--repeats` per shape, one thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batched_products.py \\
        --json docs/results/bench/batched_products13.json
    .venv/bin/python benchmarks/batched_products.py --table \\
        docs/results/bench/batched_products13.json
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from result_table import best_seconds, repeats_and_threads_main  # benchmarks/

BATCHES = (500, 4000, 15610)  # blocks per product (15610: the shipped VGG-8's classifier.0)
COLUMNS = (1, 2, 3, 4, 5, 6, 8, 16, 32, 64)
WIDTH, OU_ROWS = 8, 9


def measure(repeats: int) -> list[dict[str, Any]]:
    """Per (batch, columns): the product's best time and its time per multiply-add."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in BATCHES:
        levels = torch.randint(0, 4, (batch, WIDTH, OU_ROWS), generator=gen).float()
        for columns in COLUMNS:
            x = torch.randint(0, 4, (batch, OU_ROWS, columns), generator=gen).float()
            torch.bmm(levels, x)  # warm-up
            seconds = best_seconds(partial(torch.bmm, levels, x), repeats)
            macs = batch * WIDTH * OU_ROWS * columns
            rows.append({"batch": batch, "width": WIDTH, "ou_rows": OU_ROWS,
                         "columns": columns, "seconds": seconds,
                         "ns_per_mac": seconds * 1e9 / macs,
                         "threads": torch.get_num_threads(), "repeats": repeats})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """ns per multiply-add, one row per batch, one column per column count."""
    columns = sorted({r["columns"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    cell = {(r["batch"], r["columns"]): r["ns_per_mac"] for r in rows}
    lines = ["| blocks x (8, 9) . (9, columns) | " + " | ".join(str(c) for c in columns) + " |",
             "| --- | " + " | ".join("---:" for _ in columns) + " |"]
    for b in batches:
        lines.append(f"| {b} | " + " | ".join(f"{cell[(b, c)]:.3f}" for c in columns) + " |")
    lines.append("\nns per multiply-add (best of "
                 f"{rows[0]['repeats']}, {rows[0]['threads']} thread(s))")
    return "\n".join(lines)


def main() -> None:
    repeats_and_threads_main(__doc__, measure, markdown)


if __name__ == "__main__":
    main()
