"""Fault in a CPU KV cache's pages in the background, without writing to it.

The CPU KV tensors are ``calloc``'d (``cache_engine.zeros``): the OS hands their pages out on
first write, so start-up does not pay for gigabytes it may never touch. But then the first
write to each page happens inside a decode step: on the 2-core test machine a SmolLM2 decode
step at batch 64 spent 6 of its 46 ms in page faults while writing new tokens' K/V
(``benchmarks/decode_profile.py``), and a benchmark keeps reaching fresh pages until the block
pool has cycled once. ``MADV_POPULATE_WRITE`` (Linux 5.14+) maps the pages writable without
changing their contents, so it is safe while the engine already reads and writes the cache;
a daemon thread does it in chunks after start-up. Where the kernel lacks it, pages fault in on
first write as before (nothing else changes).

The thread runs at the lowest CPU priority, in 2 MiB calls, so it takes only idle time: at
normal priority it finished within seconds and throughput runs gained ~10%, but the first
prefill after start-up took 12.0 s instead of 8.7 s (``benchmarks/returning_turn.py``), and in
64 MiB calls it held the address-space lock long enough to stall the engine's own mappings.
"""
from __future__ import annotations

import ctypes
import logging
import mmap
import os
import sys
import threading
import time
import weakref

import torch

logger = logging.getLogger(__name__)

MADV_POPULATE_WRITE = 23          # <linux/mman.h>, Linux >= 5.14
CHUNK = 2 << 20                   # per madvise call: each holds the address-space lock, which the engine
                                  # needs to map and unmap its own large buffers


def _populate(refs: list[weakref.ref]) -> None:
    """Populate the pages of the tensors behind ``refs``, a chunk at a time; stops as soon as
    one is freed (holding no reference between chunks, so a dropped engine's cache is freed)."""
    # Lowest CPU priority for this thread only (Linux: a thread id is a process id to
    # setpriority): zeroing gigabytes of pages must not slow the engine's own threads, whose
    # OpenMP barriers stall whenever a core is taken.
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        pass
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    t0, done = time.perf_counter(), 0
    for ref in refs:
        t = ref()
        if t is None:
            return                              # the engine is gone, and its cache with it
        addr, nbytes = t.data_ptr(), t.numel() * t.element_size()
        del t
        start, end = -(-addr // page) * page, (addr + nbytes) // page * page
        for a in range(start, end, CHUNK):
            t = ref()                           # alive for the call, released between calls
            if t is None:
                return
            rc = libc.madvise(ctypes.c_void_p(a), ctypes.c_size_t(min(CHUNK, end - a)),
                              MADV_POPULATE_WRITE)
            del t
            if rc != 0:
                logger.debug("KV prefault stopped: madvise errno %d", ctypes.get_errno())
                return
            done += min(CHUNK, end - a)
    logger.debug("KV cache prefaulted: %.2f GiB in %.1f s", done / 2**30, time.perf_counter() - t0)


def prefault_in_background(tensors: list[torch.Tensor]) -> threading.Thread | None:
    """Start the daemon thread that populates ``tensors``' pages (CPU, Linux only); it keeps
    only weak references to them. Returns the thread, or None where nothing is done."""
    if not sys.platform.startswith("linux") or not tensors or tensors[0].device.type != "cpu":
        return None
    th = threading.Thread(target=_populate, args=([weakref.ref(t) for t in tensors],),
                          name="kv-prefault", daemon=True)
    th.start()
    return th
