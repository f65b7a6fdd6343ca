"""core/runtime.py: `keep_freed_memory` changes what it says (freed blocks reused, no page
faults on reallocation) and only that; measured in fresh processes, as it is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A fresh process allocates, fills and frees a 64 MiB tensor twenty times and reports the minor
# page faults of every round (glibc's defaults mmap every block above 32 MiB afresh, so each
# round faults on every page; with the memory kept, the first rounds fault and, once the
# block stays in the heap, the later ones do not).
PROBE = """
import json, resource, sys, torch
from sparsexbar.core.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20, dtype=torch.float32).fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "again": keep_freed_memory() if applied else False,
                  "faults": faults}))
"""


def _probe(mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          check=True, timeout=120)
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_reuses_freed_blocks() -> None:
    tuned, default = _probe("tuned"), _probe("default")
    assert tuned["applied"] is True and tuned["again"] is True  # applied, once per process
    pages = 64 * 2**20 // 4096
    default_faults = default["faults"]
    tuned_faults = tuned["faults"]
    assert isinstance(default_faults, list) and isinstance(tuned_faults, list)
    # defaults: every round touches fresh pages; kept memory: none in the last rounds
    assert min(default_faults) >= pages // 2
    assert max(tuned_faults[-5:]) < pages // 100
