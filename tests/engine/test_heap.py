"""engine/heap.py: glibc keeps freed CPU buffers mapped once an engine starts."""
import platform
import sys

import pytest

from continuum.engine.heap import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc mallopt")
def test_keep_freed_memory_takes_effect_and_is_idempotent():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
