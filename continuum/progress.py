"""Start-up progress: one INFO log line per phase, with its elapsed time.

Loading a model has phases of a second or more (reading the file, converting a tokenizer,
dequantising weights, allocating the KV cache); logging each as it ends means no silent
wait longer than one phase. Work that may take much longer than usual (a first-time tokenizer
conversion, a kernel build) logs its own line when it starts, saying so.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator


class Phases:
    """Times named phases of one job and logs ``"<job>: <phase> (1.23 s)"`` as each ends.

    ``clock`` is injectable for tests; ``total()`` is the time since construction."""

    def __init__(self, logger: logging.Logger, job: str,
                 clock: Callable[[], float] = time.perf_counter):
        self.logger, self.job, self.clock = logger, job, clock
        self.start = clock()
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` body as phase ``name`` (no line if the body raises)."""
        t0 = self.clock()
        yield
        elapsed = self.clock() - t0
        self.timings[name] = self.timings.get(name, 0.0) + elapsed
        self.logger.info("%s: %s (%.2f s)", self.job, name, elapsed)

    def total(self) -> float:
        return self.clock() - self.start


def ensure_visible(level: int = logging.INFO) -> bool:
    """Make continuum's start-up lines visible when the application configured no logging.

    Like vLLM, the offline API (``LLM()``) shows its INFO lines on stderr by default: if
    neither the root logger nor the ``continuum`` logger has a handler, attach a stderr
    handler at ``level`` to ``continuum`` (and stop propagation, so a later
    ``logging.basicConfig`` does not print each line twice). Applications that configure
    logging keep full control; ``CONTINUUM_CONFIGURE_LOGGING=0`` turns this off.
    Returns True iff a handler was attached."""
    import os
    import sys

    pkg = logging.getLogger("continuum")
    if (os.environ.get("CONTINUUM_CONFIGURE_LOGGING", "1") == "0" or pkg.handlers
            or logging.getLogger().handlers):
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(name)s: %(message)s",
                                           "%H:%M:%S"))
    pkg.addHandler(handler)
    pkg.setLevel(level)
    pkg.propagate = False
    return True
