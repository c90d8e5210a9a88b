"""The KV-cache kernels' own source (csrc/cache_kernels.cuh, csrc/swap_blocks.cu) run on the
CPU with the fake CUDA headers of tests/ops/emulation/shim, against the torch reference:
reshape_and_cache with strided inputs and padding slots, the multi-layer block copy (also
with fewer CTAs than pairs), and the swap's merging of a mapping into few copies.
Skipped without g++; builds in a few seconds (cached by source hash under /tmp)."""
from __future__ import annotations

import ctypes
import hashlib
import subprocess
from pathlib import Path

import pytest
import torch

from continuum.ops import reference
from tests.ops.emulation_build import CSRC, EMU, needs_gxx

pytestmark = needs_gxx


@pytest.fixture(scope="module")
def lib():
    files = [EMU / "cache_emu.cpp", EMU / "shim" / "cuda_runtime.h", CSRC / "cache_kernels.cuh",
             CSRC / "cache_kernels.h", CSRC / "swap_blocks.cu"]
    tag = hashlib.sha256("".join(p.read_text() for p in files).encode()).hexdigest()[:16]
    so = Path("/tmp") / f"continuum_cache_emu_{tag}.so"
    if not so.exists():
        subprocess.run(["nice", "g++", "-std=c++20", "-O1", "-shared", "-fPIC", f"-I{EMU / 'shim'}",
                        f"-I{CSRC}", "-x", "c++", str(EMU / "cache_emu.cpp"), "-o", f"{so}.tmp"], check=True)
        Path(f"{so}.tmp").rename(so)
    lib = ctypes.CDLL(str(so))
    lib.emu_swap_runs.restype = ctypes.c_int64
    return lib


def P(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


@pytest.mark.parametrize("dtype,hkv,d,want_unit", [(torch.bfloat16, 2, 64, 16), (torch.float32, 1, 64, 16),
                                                   (torch.float16, 1, 4, 8), (torch.float16, 1, 3, 2)])
def test_reshape_and_cache(lib, dtype, hkv, d, want_unit):
    g = torch.Generator().manual_seed(d)
    nb, bs, T, h = 12, 4, 30, 2 * hkv
    kc = torch.randn(nb, bs, hkv, d, generator=g).to(dtype)
    vc = torch.randn(nb, bs, hkv, d, generator=g).to(dtype)
    kc2, vc2 = kc.clone(), vc.clone()
    qkv = torch.randn(T, (h + 2 * hkv) * d, generator=g).to(dtype)     # fused, strided views
    key = qkv[:, h * d:(h + hkv) * d].view(T, hkv, d)
    value = qkv[:, (h + hkv) * d:].view(T, hkv, d)
    slots = torch.randperm(nb * bs, generator=g)[:T]
    slots[::5] = -1
    e = key.element_size()
    unit = lib.emu_reshape_and_cache(P(key), P(value), P(kc), P(vc), P(slots), ctypes.c_int64(T),
                                     ctypes.c_int64(key.stride(0) * e), ctypes.c_int64(value.stride(0) * e),
                                     ctypes.c_int64(hkv * d * e))
    assert unit == want_unit
    reference.reshape_and_cache(key, value, kc2, vc2, slots)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)


@pytest.mark.parametrize("grid_y", [1, 2, 16])
def test_copy_blocks_multi_layer(lib, grid_y):
    g = torch.Generator().manual_seed(grid_y)
    caches = [torch.randn(10, 16, 2, 64, generator=g).to(torch.bfloat16) for _ in range(4)]
    want = [c.clone() for c in caches]
    m = torch.tensor([[0, 5], [1, 6], [9, 2], [3, 3]])
    ptrs = torch.tensor([c.data_ptr() for c in caches], dtype=torch.long)
    bb = caches[0][0].numel() * caches[0].element_size()
    lib.emu_copy_blocks(P(ptrs), P(ptrs), P(m), ctypes.c_int64(4), ctypes.c_int64(4), ctypes.c_int64(bb),
                        ctypes.c_uint(grid_y))
    reference.copy_blocks(want[:2], want[2:], m)
    assert all(torch.equal(a, b) for a, b in zip(caches, want))


def test_swap_merges_runs(lib):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(64, 16, 2, 8, generator=g)
    dst = torch.randn(40, 16, 2, 8, generator=g)
    want = dst.clone()
    # two runs consecutive on both sides (given out of order), one run broken on the dst side
    m = torch.tensor([[12, 2], [10, 0], [11, 1], [30, 20], [31, 21], [32, 22], [40, 5], [41, 7]])
    bb = src[0].numel() * src.element_size()
    copies = lib.emu_swap_runs(P(src), P(dst), P(m), ctypes.c_int64(len(m)), ctypes.c_int64(bb))
    assert copies == 4            # [10..12]->[0..2], [30..32]->[20..22], 40->5, 41->7
    reference.swap_blocks(src, want, m)
    assert torch.equal(dst, want)
