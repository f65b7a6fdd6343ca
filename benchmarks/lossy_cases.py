"""The schemes with a clipping ADC (the `lossy` case's settings: OU 9x8, 5-bit ADC, 2-bit DAC) on
any tree, including trees from before their bench keys existed (`sre-lossy`, ...): the cases
are built here from `BenchCase`, so a before/after pair runs the same cases.

    PYTHONPATH=$TREE/src .venv/bin/python benchmarks/lossy_cases.py --model vgg8-pattern \
        --batch-size 16 --repeats 1 --threads 1 --json OUT.json

On a current tree this equals `benchmarks/engine.py --cases lossy,sre-lossy,pattern-lossy,
encoding-lossy,combined-lossy`.
"""

from __future__ import annotations

import argparse

from sparsexbar.app.bench import run_benchmark
from sparsexbar.schemes.entry import BenchCase

CLIPPING = (("ou.rows", 9), ("ou.cols", 8), ("adc.bits", 5), ("dac.bits", 2))
CASES = {
    "lossy": BenchCase("lossy", "dense, isaac OU 9x8, ADC 5 bit, DAC 2 bit (clips: "
                       "per-conversion)", "dense", CLIPPING),
    "sre-lossy": BenchCase("sre-lossy", "sre, isaac OU 9x8, ADC 5 bit, DAC 2 bit (clips: packed "
                           "OUs converted)", "sre", CLIPPING),
    "pattern-lossy": BenchCase("pattern-lossy", "pattern, isaac OU 9x8, ADC 5 bit, DAC 2 bit "
                               "(clips)", "pattern", CLIPPING),
    "encoding-lossy": BenchCase("encoding-lossy", "encoding, isaac OU 9x8, ADC 5 bit, DAC 2 bit "
                                "(clips)", "encoding", CLIPPING),
    "combined-lossy": BenchCase("combined-lossy", "combined, isaac OU 9x8, ADC 5 bit, DAC 2 bit "
                                "(clips; comprrae dropped where it would clip)", "combined",
                                CLIPPING),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="vgg8-pattern")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    run_benchmark(args.model, args.batch_size, args.repeats, threads=args.threads,
                  json_out=args.json, cases=tuple(CASES[c] for c in names))


if __name__ == "__main__":
    main()
