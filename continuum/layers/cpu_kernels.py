"""CPU kernels from csrc/cpu, built on first use with torch's JIT extension builder.

The build is cached (``$CONTINUUM_CACHE_DIR`` or ``~/.cache/continuum``), so only the first
engine start on a machine pays it (about a minute on two cores; a warning says so). Builds
into one folder take turns under ``continuum.ops.build_lock`` (a killed build never blocks
the next start). If the build fails (no compiler, no ninja) the torch reference path is used
and the reason is logged once.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from continuum.ops.build_lock import build_lock

logger = logging.getLogger(__name__)

_SRC = Path(__file__).resolve().parents[2] / "csrc" / "cpu" / "paged_attention_cpu.cpp"
_module = None
_failed: str | None = None


def cache_dir() -> Path:
    root = Path(os.environ.get("CONTINUUM_CACHE_DIR", Path.home() / ".cache" / "continuum"))
    return root / "torch_extensions"


def _cpu_tag() -> str:
    """The build uses -march=native: key the cache by the CPU's feature flags so a cache dir
    shared across machines never hands one CPU another's instructions."""
    import platform
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags += next((l for l in f if l.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def load():
    """The compiled module, or None (reason in ``failure()``)."""
    global _module, _failed
    if _module is not None or _failed is not None:
        return _module
    try:
        from torch.utils.cpp_extension import load as jit_load
        if not _SRC.exists():
            raise FileNotFoundError(f"{_SRC} is missing (an install without csrc/)")
        # Keyed by the source too: checkouts with different kernels sharing one cache dir each
        # keep their own build instead of rebuilding over one another.
        src_tag = hashlib.sha1(_SRC.read_bytes()).hexdigest()[:8]
        build = cache_dir() / f"continuum_cpu-{_cpu_tag()}-{src_tag}"
        with build_lock(build, "continuum_cpu", "the CPU attention kernel", "about a minute"):
            _module = jit_load(name="continuum_cpu", sources=[str(_SRC)], build_directory=str(build),
                               extra_cflags=["-O3", "-march=native", "-fopenmp", "-ffast-math"],
                               extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # any build problem: fall back, say why once
        _failed = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}"
        logger.warning("CPU attention kernel unavailable (%s); using the torch reference path", _failed)
    return _module


def failure() -> str | None:
    return _failed
