"""The schemes with a clipping ADC (the `lossy` case's settings: OU 9x8, 5-bit ADC, 2-bit DAC) on
any tree, including trees from before their bench keys existed (`sre-lossy`, ...): the cases
are built here from `BenchCase`, so a before/after pair runs the same cases.

    PYTHONPATH=$TREE/src .venv/bin/python benchmarks/lossy_cases.py --model vgg8-pattern \
        --batch-size 16 --repeats 1 --threads 1 --json OUT.json

On a current tree this equals `benchmarks/engine.py --cases lossy,sre-lossy,pattern-lossy,
encoding-lossy,combined-lossy`.
"""

from __future__ import annotations

from engine import cli  # benchmarks/engine.py, beside this script

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
    cli(CASES, __doc__ or "", model="vgg8-pattern", batch_size=16, repeats=1, threads=1)


if __name__ == "__main__":
    main()
