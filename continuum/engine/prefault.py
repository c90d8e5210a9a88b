"""Fault in a CPU KV cache's pages in the background, without writing to it.

The CPU KV tensors are ``calloc``'d (``cache_engine.zeros``): the OS hands their pages out on
first write, so start-up does not pay for gigabytes it may never touch. But then the first
write to each page happens inside a step: on the 2-core test machine a SmolLM2 decode step at
batch 64 spent 6 of its 46 ms in page faults while writing new tokens' K/V
(``benchmarks/decode_profile.py``), and a benchmark keeps reaching fresh pages until the block
pool has cycled once. ``MADV_POPULATE_WRITE`` (Linux 5.14+) maps the pages writable without
changing their contents, so it is safe while the engine already reads and writes the cache;
a daemon thread does it in chunks. Where the kernel lacks it, pages fault in on first write as
before (nothing else changes).

When. The engine allocates the CPU cache before it loads the weights, which runs on one thread
(``torch_threads(1)``): the thread populates at normal priority on the otherwise idle core
while the model loads, then, once the engine is ready (``Prefault.started``), drops to the
lowest priority and takes only idle time. At normal priority after start-up it finished within
seconds and throughput runs gained ~10%, but the first prefill after start-up took 12.0 s
instead of 8.7 s (``benchmarks/returning_turn.py``): it competed with the engine's OpenMP
threads. Populating everything before "ready" costs the whole zeroing in start-up (1-2 s per
GiB on the test VM, whose host backs guest memory lazily).

Order. The block pool hands out never-used blocks in id order, so the pages are populated
block-major (the same 2 MiB offset of every layer's K and V, then the next): whatever part is
done when the engine starts serving is the part it writes first.

Chunks of 2 MiB: each ``madvise`` call holds the address-space lock, which the engine needs to
map and unmap its own large buffers (64 MiB calls stalled them).
"""
from __future__ import annotations

import ctypes
import functools
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


def _populate(refs: list[weakref.ref], started: threading.Event | None = None) -> None:
    """Populate the pages of the tensors behind ``refs``, block-major (module docstring); stops
    as soon as one is freed (holding no reference between chunks, so a dropped engine's cache
    is freed). Normal priority until ``started`` is set (None: lowest priority throughout)."""
    page = mmap.PAGESIZE
    spans = []
    for ref in refs:
        t = ref()
        if t is None:
            return                              # the engine is gone, and its cache with it
        addr, nbytes = t.data_ptr(), t.numel() * t.element_size()
        del t
        spans.append((ref, -(-addr // page) * page, (addr + nbytes) // page * page))
    lowered = False
    t0, done = time.perf_counter(), 0
    for off in range(0, max((end - start for _, start, end in spans), default=0), CHUNK):
        if not lowered and (started is None or started.is_set()):
            _lowest_priority()
            lowered = True
        for ref, start, end in spans:
            if start + off >= end:
                continue
            t = ref()                           # alive for the call, released between calls
            if t is None:
                return
            n = min(CHUNK, end - start - off)
            rc = _madvise_populate(start + off, n)
            del t
            if rc != 0:
                logger.debug("KV prefault stopped: madvise errno %d", rc)
                return
            done += n
    logger.debug("KV cache prefaulted: %.2f GiB in %.1f s", done / 2**30, time.perf_counter() - t0)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _madvise_populate(addr: int, nbytes: int) -> int:
    """``madvise(MADV_POPULATE_WRITE)`` on page-aligned ``[addr, addr + nbytes)``: 0, or the errno."""
    if _libc().madvise(ctypes.c_void_p(addr), ctypes.c_size_t(nbytes), MADV_POPULATE_WRITE) == 0:
        return 0
    return ctypes.get_errno() or -1


def _lowest_priority() -> None:
    """Lowest CPU priority for the calling thread only (Linux: a thread id is a process id to
    setpriority): zeroing gigabytes of pages must not slow the engine's own threads, whose
    OpenMP barriers stall whenever a core is taken."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        pass


class Prefault:
    """The populating thread of one cache. ``started`` is set by the engine once it is ready
    to serve; from then on the thread takes only idle time."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.started = threading.Event()
        self.thread = threading.Thread(target=_populate, args=([weakref.ref(t) for t in tensors], self.started),
                                       name="kv-prefault", daemon=True)
        self.thread.start()


def prefault_in_background(tensors: list[torch.Tensor]) -> Prefault | None:
    """Start the daemon thread that populates ``tensors``' pages (CPU, Linux only); it keeps
    only weak references to them. Returns it, or None where nothing is done."""
    if not sys.platform.startswith("linux") or not tensors or tensors[0].device.type != "cpu":
        return None
    return Prefault(tensors)
