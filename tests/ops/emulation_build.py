"""Builds a CUDA kernel's own source for the CPU thread emulation (tests/ops/emulation/shim:
fake CUDA headers, one std::thread per CUDA thread, barriers for __syncthreads and warp
shuffles), shared by the ``test_*_emulated.py`` files. Builds are cached by source hash under
/tmp, so a session builds each kernel once."""
from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMU = Path(__file__).resolve().parent / "emulation"
CSRC = ROOT / "csrc"

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def build_attention_kernel(kernel: str, headers: tuple[str, ...], driver: str) -> ctypes.CDLL:
    """Compile ``csrc/<kernel>`` (a .cuh whose dynamic shared memory the shim provides: its
    ``extern __shared__`` declaration is rewritten, written beside the build as
    ``<kernel stem>_emu.cuh`` for ``emulation/<driver>`` to include) into a shared library.
    ``headers``: the csrc files it includes, part of the cache key."""
    src = (CSRC / kernel).read_text()
    marker = "extern __shared__ float smem[];"
    assert marker in src, "the emulation rewrites this declaration; update the test with the kernel"
    src = src.replace(marker, "float* smem = g_dyn_smem;")
    inputs = [src] + [p.read_text() for p in sorted(EMU.rglob("*")) if p.is_file()] + \
        [(CSRC / f).read_text() for f in headers]
    tag = hashlib.sha256("".join(inputs).encode()).hexdigest()[:16]
    stem = Path(driver).stem
    build = Path("/tmp") / f"continuum_{stem}_{tag}"
    so = build / f"{stem}.so"
    if not so.exists():
        build.mkdir(parents=True, exist_ok=True)
        (build / kernel.replace(".cuh", "_emu.cuh")).write_text(src)
        cmd = ["nice", "g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
               f"-I{build}", f"-I{EMU / 'shim'}", f"-I{CSRC}", str(EMU / driver), "-o", str(so) + ".tmp"]
        subprocess.run(cmd, check=True)
        Path(str(so) + ".tmp").rename(so)
    return ctypes.CDLL(str(so))
