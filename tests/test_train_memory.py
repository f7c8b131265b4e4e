"""The trainer hands jemalloc's cached pages back to the kernel (beaverguard.training.train.release_cached_memory)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from beaverguard.training.train import release_cached_memory

JEMALLOC = sorted(glob.glob("/usr/lib/*/libjemalloc.so.2"))

CHILD = """
import numpy as np
from beaverguard.training.train import release_cached_memory

def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024

blocks = [np.ones(n) for n in range(1_000_000, 40_000_000, 3_000_000)]  # ~1.6 GB, freed below
del blocks
kept = rss_mb()
print(kept, release_cached_memory(), rss_mb())
"""


def test_without_jemalloc_there_is_nothing_to_release():
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("this process runs on jemalloc")
    assert release_cached_memory() is False


@pytest.mark.skipif(not JEMALLOC or sys.platform != "linux", reason="needs libjemalloc2 (apt-get install libjemalloc2)")
def test_under_jemalloc_that_keeps_freed_memory_the_cache_is_released():
    env = {**os.environ, "LD_PRELOAD": JEMALLOC[0], "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True).stdout
    kept, released, after = out.split()
    assert released == "True"
    assert int(kept) > 1000 and int(after) < int(kept) / 4  # freed arrays stayed mapped until the purge
