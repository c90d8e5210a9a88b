"""Keep the process's freed activation memory mapped (glibc ``mallopt``), so a CPU step does
not fault fresh pages in for its buffers.

torch's CPU allocator is ``malloc``. glibc serves blocks over its mmap threshold (128 KiB,
rising with what is freed, up to 32 MiB) with a fresh ``mmap`` and returns them with
``munmap`` when freed, and trims the heap's top once 128 KiB of it is free. So a prefill step
at 2,048 tokens, whose linear and SiLU outputs are 4-12 MiB each, took fresh pages for nearly
every op, and a first touch costs a page fault and zeroing (dear on the test VM, whose host
backs guest memory lazily: ``silu_and_mul`` ran at 9 GB/s into fresh pages and 3x faster into
reused ones). With the threshold fixed at its maximum and trimming off, the buffers come from
the heap and are reused from step to step: two SmolLM2 prefill steps of 2,048 tokens took
1.29 s instead of 1.54 s. The cost is that the process keeps its peak activation memory
mapped after a large step, as caching allocators (and the tcmalloc vLLM recommends on CPUs)
do; it never returns less than it would have used anyway.
"""
from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3     # <malloc.h>
MMAP_THRESHOLD = 32 << 20      # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2): larger is refused
TOP_PAD = 64 << 20             # grow the heap in 64 MiB steps: fewer brk calls, each a lock of the address space
_done = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc once per process (Linux with glibc only); True if it took effect."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):        # musl and others: no mallopt, nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; a trim threshold above INT_MAX does not fit its int.
    _done = all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, TOP_PAD)))
    if not _done:
        logger.debug("mallopt refused a setting; freed CPU buffers may be unmapped as before")
    return _done
