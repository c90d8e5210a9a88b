"""Waiting in tests without assuming how fast the machine is.

Tests share two cores with whatever else runs (other test processes, Ray workers, a build),
so a wait is a poll on the state the test needs, and its deadline, ``HANG_GUARD_S``, is only
there so that a bug fails the test instead of hanging it: never a statement about speed.
It is long because the slowest thing waited for, a fresh process that imports torch and
loads a model (a Ray replica), took over 60 s on two cores busy with other work.
"""
from __future__ import annotations

import time
from collections.abc import Callable

HANG_GUARD_S = 300


def wait_for(cond: Callable[[], object], what: str | Callable[[], str]) -> None:
    """Poll ``cond`` until it is true; fail with ``what`` (or ``what()``) after the guard."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not cond():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.01)
