"""The CPU KV prefault (``engine/prefault.py``) maps the cache's pages without touching what
they hold, so it may run while the engine reads and writes the cache."""
import ctypes
import math
import mmap
import sys
import weakref

import pytest
import torch

from continuum.engine.cache_engine import zeros
from continuum.engine import prefault
from continuum.engine.prefault import _populate, prefault_in_background

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux madvise")


def _resident_pages(t: torch.Tensor) -> int:
    """Pages of ``t``'s memory that are mapped (``mincore``), so other threads allocating or
    freeing memory meanwhile (an earlier test's engine being collected) cannot move it, as
    they move the process's RSS."""
    page = mmap.PAGESIZE
    addr = t.data_ptr()
    start, end = -(-addr // page) * page, (addr + t.numel() * t.element_size()) // page * page
    n = (end - start) // page
    vec = (ctypes.c_ubyte * n)()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(end - start), vec) == 0, ctypes.get_errno()
    return sum(b & 1 for b in vec)


def test_populate_keeps_the_contents_and_maps_the_pages():
    # 64 MiB of fresh private anonymous memory (what calloc gives a large cache; calloc itself
    # may hand back memory another test freed, already mapped, so the test maps its own)
    shape = (1024, 16, 8, 256)
    area = mmap.mmap(-1, math.prod(shape) * 2, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    t = torch.frombuffer(area, dtype=torch.bfloat16).view(shape)
    t[3, 5] = 1.5                               # what the engine wrote before the thread ran
    t[1000, 0, 2] = -2.0
    pages = t.numel() * t.element_size() // mmap.PAGESIZE
    assert _resident_pages(t) <= 2 * 512          # what the two writes faulted in (<= 2 MiB each)
    _populate([weakref.ref(t)])
    assert _resident_pages(t) >= pages - 2          # every page is mapped now
    expected = torch.zeros_like(t)
    expected[3, 5] = 1.5
    expected[1000, 0, 2] = -2.0
    assert torch.equal(t, expected)


def test_background_thread_runs_once_for_cpu_tensors():
    t = zeros((8, 16, 2, 64), torch.float32, torch.device("cpu"))
    pf = prefault_in_background([t])
    assert pf is not None and pf.thread.daemon
    pf.started.set()                            # the engine is ready: lowest priority from now on
    pf.thread.join()
    assert not t.any()
    assert prefault_in_background([]) is None


def test_a_freed_cache_stops_the_thread_and_is_not_populated():
    t = zeros((1024, 16, 8, 256), torch.bfloat16, torch.device("cpu"))
    ref = weakref.ref(t)
    del t
    _populate([ref])                            # returns at once: nothing left to map


def test_pages_are_populated_block_major(monkeypatch):
    # The pool hands out never-used blocks in id order, so the same offset of every layer's
    # K and V comes before the next offset: what is done when serving starts is used first.
    calls = []
    real = prefault._madvise_populate
    monkeypatch.setattr(prefault, "_madvise_populate", lambda a, n: calls.append((a, n)) or real(a, n))
    shape = (256, 16, 8, 64)                    # 4 MiB each in bf16: two 2 MiB chunks
    ts = [zeros(shape, torch.bfloat16, torch.device("cpu")) for _ in range(3)]
    _populate([weakref.ref(t) for t in ts])
    page = mmap.PAGESIZE
    starts = [-(-t.data_ptr() // page) * page for t in ts]
    owner = [next(i for i, s in enumerate(starts) if s <= a < s + 4 * 2**20) for a, _ in calls]
    offset = [a - starts[i] for (a, _), i in zip(calls, owner)]
    assert owner[:3] == [0, 1, 2] and offset[:3] == [0, 0, 0]
    assert owner[3:6] == [0, 1, 2] and offset[3:6] == [prefault.CHUNK] * 3
    assert sum(n for _, n in calls) >= 3 * (4 * 2**20 - page)
