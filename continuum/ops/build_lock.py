"""One JIT build at a time per build folder, under a lock that dies with its holder.

torch's ``cpp_extension.load`` serialises builds with a ``FileBaton``: it creates ``lock`` in
the build folder, builds, and deletes it. A build killed in between (Ctrl-C twice, OOM, a
CI timeout) leaves the file behind, and every later ``load`` waits for it forever. The
build cache is shared by every checkout of the user, so one killed build hangs them all.

``build_lock`` takes an exclusive ``fcntl.flock`` on a separate file of the build folder
first. The kernel releases a flock when its holder exits, however it exits, so a dead
builder never blocks the next one. Invariant: every continuum builder holds this flock
while it is inside ``load``, so whoever holds it knows that no live builder owns a ``lock``
baton there: a baton found under the flock is stale and is removed.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

LOCK_FILE = "continuum-build.lock"
SLOW_BUILD_S = 2.0            # a load that takes longer than this is a (re)build: say so
TORCH_BATON = "lock"          # torch.utils.cpp_extension's FileBaton in the build directory


def _holder_pid(f: IO[str]) -> str:
    """The pid the current holder wrote into the lock file (for messages only: racy)."""
    f.seek(0)
    return f.read().strip() or "unknown"


def _acquire(f: IO[str], build_dir: Path, name: str, what: str) -> None:
    """Take the flock; if another process holds it, say who and for what, then wait."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    logger.warning("waiting for another process (pid %s) that is building %s (%s) in %s; "
                   "this process goes on once that build ends", _holder_pid(f), what, name,
                   build_dir)
    fcntl.flock(f, fcntl.LOCK_EX)


def _remove_stale_baton(build_dir: Path) -> None:
    """Delete torch's baton: under the flock no live continuum builder can own it."""
    try:
        (build_dir / TORCH_BATON).unlink()
    except FileNotFoundError:
        return
    logger.warning("removed %s left by a build that was killed", build_dir / TORCH_BATON)


@contextlib.contextmanager
def build_lock(build_dir: Path, name: str, what: str, duration: str) -> Iterator[None]:
    """Hold the build folder's flock around a ``cpp_extension.load`` of extension ``name``.

    ``what`` names the build for people ("the CPU attention kernel"), ``duration`` says how
    long a first build takes; both appear in the messages logged (at warning level, so the
    command line shows them) when the build has to wait or will compile from scratch. A
    folder that already holds the library is normally a load of well under a second, but
    torch recompiles in place when a source or flag changed: if the body is still running
    after ``SLOW_BUILD_S`` a warning says so, so no build is ever silent for long. A build
    that was announced ends with an INFO line giving its time.
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / LOCK_FILE, "a+") as f:        # "a+": opening never truncates
        _acquire(f, build_dir, name, what)
        announced = threading.Event()
        timer = None
        start = time.monotonic()
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            _remove_stale_baton(build_dir)
            if not (build_dir / f"{name}.so").exists():
                logger.warning("building %s into %s (first run only, %s)", what, build_dir,
                               duration)
                announced.set()
            else:
                def slow():
                    logger.warning("rebuilding %s in %s (its sources or flags changed; once per "
                                   "change, %s)", what, build_dir, duration)
                    announced.set()
                timer = threading.Timer(SLOW_BUILD_S, slow)
                timer.daemon = True
                timer.start()
            yield
        finally:
            if timer is not None:
                timer.cancel()
            fcntl.flock(f, fcntl.LOCK_UN)
        if announced.is_set():
            logger.info("built %s in %.0f s; later starts reuse it", what, time.monotonic() - start)
