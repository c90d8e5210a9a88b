"""The CPU KV prefault (``engine/prefault.py``) maps the cache's pages without touching what
they hold, so it may run while the engine reads and writes the cache."""
import sys
import weakref

import pytest
import torch

from continuum.engine.cache_engine import zeros
from continuum.engine.prefault import _populate, prefault_in_background

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux madvise")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_populate_keeps_the_contents_and_maps_the_pages():
    # 64 MiB: above glibc's largest mmap threshold, so calloc maps fresh, unpopulated pages
    t = zeros((1024, 16, 8, 256), torch.bfloat16, torch.device("cpu"))
    t[3, 5] = 1.5                               # what the engine wrote before the thread ran
    t[1000, 0, 2] = -2.0
    before = _rss_bytes()
    _populate([weakref.ref(t)])
    assert _rss_bytes() - before >= 0.9 * t.numel() * t.element_size()   # the pages are mapped
    expected = torch.zeros_like(t)
    expected[3, 5] = 1.5
    expected[1000, 0, 2] = -2.0
    assert torch.equal(t, expected)


def test_background_thread_runs_once_for_cpu_tensors():
    t = zeros((8, 16, 2, 64), torch.float32, torch.device("cpu"))
    th = prefault_in_background([t])
    assert th is not None and th.daemon
    th.join()
    assert not t.any()
    assert prefault_in_background([]) is None


def test_a_freed_cache_stops_the_thread_and_is_not_populated():
    t = zeros((1024, 16, 8, 256), torch.bfloat16, torch.device("cpu"))
    ref = weakref.ref(t)
    del t
    before = _rss_bytes()
    _populate([ref])                            # returns at once: nothing left to map
    assert _rss_bytes() - before < 1 << 20
