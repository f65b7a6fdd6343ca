"""core/runtime.py: `keep_freed_memory` does what it says (freed blocks reused without page
faults at steady state), measured in a fresh process, as it is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A fresh process, after keep_freed_memory(), allocates, fills and frees three 12 MiB tensors
# twenty times and reports the minor page faults of every round. With glibc's adaptive
# defaults whether later rounds fault depends on the allocation history (in some processes
# every round faults, in others none: docs/benchmarks.md, issue 18 part 9).
PROBE = """
import json, resource, torch
from sparsexbar.core.runtime import keep_freed_memory
applied = keep_freed_memory()
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(3 * 2**20, dtype=torch.float32).fill_(1.0) for _ in range(3)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "again": keep_freed_memory(), "faults": faults}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_reuses_freed_blocks() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=True, timeout=120)
    result = json.loads(done.stdout)
    assert result["applied"] is True and result["again"] is True  # applied, once per process
    pages = 3 * 12 * 2**20 // 4096
    faults = result["faults"]
    assert faults[0] >= pages // 2  # the first round touches fresh memory
    assert max(faults[-5:]) < pages // 100  # later rounds reuse the kept blocks
