"""The JIT build lock: dies with its holder, clears torch's stale baton, says what it waits for.

Holders are subprocesses driven over pipes (a flock is per open file, so a second process is
what a real concurrent build is); every wait is on an event or a pipe, never on a clock.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

from continuum.ops import build
from continuum.ops.build_lock import LOCK_FILE, TORCH_BATON, build_lock
from tests.polling import HANG_GUARD_S

# Takes the lock, creates torch's baton as a build would, reports "locked", then releases
# when a line arrives on stdin (or never, if it is killed first).
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from continuum.ops.build_lock import TORCH_BATON, build_lock
    d = Path(sys.argv[1])
    with build_lock(d, "ext", "a test build", "no time"):
        (d / TORCH_BATON).touch()
        print("locked", flush=True)
        sys.stdin.readline()
        (d / TORCH_BATON).unlink()
""")


@pytest.fixture
def holder(tmp_path: Path):
    """A subprocess holding the build lock of ``tmp_path``; yields the Popen."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "locked"
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(HANG_GUARD_S)


class _Seen(logging.Handler):
    """Sets ``event`` when a record containing ``needle`` is logged."""

    def __init__(self, needle: str):
        super().__init__()
        self.needle, self.event, self.messages = needle, threading.Event(), []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.needle in record.getMessage():
            self.event.set()


@pytest.fixture
def seen_waiting():
    h = _Seen("waiting for another process")
    log = logging.getLogger("continuum.ops.build_lock")
    log.addHandler(h)
    yield h
    log.removeHandler(h)


def test_a_killed_holder_does_not_block_the_next_build(tmp_path, holder, seen_waiting):
    holder.send_signal(signal.SIGKILL)
    holder.wait(HANG_GUARD_S)
    assert (tmp_path / TORCH_BATON).exists()              # what made torch wait forever
    with build_lock(tmp_path, "ext", "a test build", "no time"):
        assert not (tmp_path / TORCH_BATON).exists()
    assert not seen_waiting.event.is_set(), seen_waiting.messages   # the first try got it


def test_a_stale_torch_baton_is_removed_under_the_lock(tmp_path):
    (tmp_path / TORCH_BATON).touch()
    with build_lock(tmp_path, "ext", "a test build", "no time"):
        assert not (tmp_path / TORCH_BATON).exists()
        assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())


def test_a_second_builder_says_what_it_waits_for_then_gets_the_lock(tmp_path, holder, seen_waiting):
    acquired = threading.Event()

    def second_builder():
        with build_lock(tmp_path, "ext", "a test build", "no time"):
            acquired.set()

    t = threading.Thread(target=second_builder, daemon=True)
    t.start()
    assert seen_waiting.event.wait(HANG_GUARD_S)
    (msg,) = [m for m in seen_waiting.messages if "waiting" in m]
    assert f"pid {holder.pid}" in msg and "a test build (ext)" in msg and str(tmp_path) in msg
    assert not acquired.is_set()                  # the holder still holds it
    holder.stdin.write("release\n")
    holder.stdin.flush()
    assert acquired.wait(HANG_GUARD_S)
    t.join(HANG_GUARD_S)
    assert holder.wait(HANG_GUARD_S) == 0


def test_a_first_build_is_announced(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, "continuum.ops.build_lock"):
        with build_lock(tmp_path, "ext", "a test build", "about a minute"):
            pass
        (tmp_path / "ext.so").touch()
        with build_lock(tmp_path, "ext", "a test build", "about a minute"):
            pass
    building = [r.getMessage() for r in caplog.records if "building" in r.getMessage()]
    assert building == [f"building a test build into {tmp_path} (first run only, about a minute)"]


def test_the_cuda_builder_calls_load_under_the_lock(tmp_path, monkeypatch):
    """ops/build.py (GPU only otherwise): torch's ``load`` runs with the flock held and the
    stale baton gone."""
    (tmp_path / TORCH_BATON).touch()
    seen = {}

    def fake_load(**kw):
        with open(tmp_path / LOCK_FILE) as other:             # a second open file: no flock
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        seen.update(kw, baton=(tmp_path / TORCH_BATON).exists())

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setenv("CONTINUUM_OPS_CACHE", str(tmp_path))
    monkeypatch.setenv("CONTINUUM_CUDA_ARCH", "90a")
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    build.build()
    assert seen["build_directory"] == str(tmp_path) and seen["baton"] is False


class _Seen(logging.Handler):
    """Sets ``event`` when a record containing ``needle`` is emitted (from any thread)."""

    def __init__(self, needle: str):
        super().__init__()
        self.needle, self.event, self.messages = needle, threading.Event(), []

    def emit(self, record):
        self.messages.append(record.getMessage())
        if self.needle in record.getMessage():
            self.event.set()


def test_a_load_that_turns_out_to_rebuild_is_announced_then_timed(tmp_path, monkeypatch):
    """The library exists, so no "building" line up front; torch recompiles anyway (a
    changed source): past SLOW_BUILD_S a warning says so, and the end is timed."""
    (tmp_path / "ext.so").touch()
    monkeypatch.setattr("continuum.ops.build_lock.SLOW_BUILD_S", 0.0)
    seen = _Seen("rebuilding")
    lock_logger = logging.getLogger("continuum.ops.build_lock")
    lock_logger.addHandler(seen)
    old_level = lock_logger.level
    lock_logger.setLevel(logging.INFO)
    try:
        with build_lock(tmp_path, "ext", "a test build", "about a minute"):
            assert seen.event.wait(HANG_GUARD_S)      # said while the "build" is still running
    finally:
        lock_logger.removeHandler(seen)
        lock_logger.setLevel(old_level)
    assert seen.messages[0] == (f"rebuilding a test build in {tmp_path} (its sources or flags "
                                f"changed; once per change, about a minute)")
    assert seen.messages[-1].startswith("built a test build in ")


def test_a_quick_load_of_a_built_library_says_nothing(tmp_path, caplog):
    (tmp_path / "ext.so").touch()
    with caplog.at_level(logging.INFO, "continuum.ops.build_lock"):
        with build_lock(tmp_path, "ext", "a test build", "about a minute"):
            pass                                   # far below SLOW_BUILD_S
    assert [r.getMessage() for r in caplog.records] == []
