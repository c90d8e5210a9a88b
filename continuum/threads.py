"""Thread settings for start-up work."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """At most ``n`` torch intra-op threads inside the block (process-wide; restored after).

    Used around start-up work that is memory-bound (weight casts and copies, oneDNN weight
    packing): one thread loses little on an idle machine, while on the shared 2-core test
    machine two OpenMP threads competing with other processes made it 5-10x slower (barrier
    stalls: 3.6 s instead of 0.4 s to cast the default model's weights)."""
    old = torch.get_num_threads()
    if old <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
