"""JIT build of the CUDA extension ``continuum_C`` (csrc/) with a persistent cache.

The kernels are plain CUDA; ``csrc/torch_bindings.cpp`` registers them as torch custom ops
(``torch.ops.continuum_C.*``). ``torch.utils.cpp_extension.load`` rebuilds only when a source
or flag changes, so a warm cache costs a library load (well under a second). Builds into one
folder take turns under ``continuum.ops.build_lock`` (a killed build never blocks the next).

Invariant: only called where ``torch.version.cuda`` is set and a GPU is visible; the caller
(:func:`continuum.ops.load`) turns any exception into the reference fallback.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from continuum.cache_dir import cache_root
from continuum.ops.build_lock import build_lock

CSRC = Path(__file__).resolve().parents[2] / "csrc"
SOURCES = ("paged_attention.cu", "paged_attention_varlen.cu", "cache_kernels.cu", "swap_blocks.cu",
           "torch_bindings.cpp")
EXTENSION_NAME = "continuum_C"


def arch_flags() -> list[str]:
    """nvcc target flags for the visible GPU: Hopper gets sm_90a (wgmma/TMA capable) SASS;
    others their own SASS plus PTX. ``CONTINUUM_CUDA_ARCH=90a`` overrides (e.g. '80', '90a')."""
    arch = os.environ.get("CONTINUUM_CUDA_ARCH")
    if not arch:
        major, minor = torch.cuda.get_device_capability()
        arch = f"{major}{minor}" + ("a" if (major, minor) == (9, 0) else "")
    # Two flags rather than code=[sm_X,compute_X]: the brackets would reach ninja's shell
    # command unquoted, where they are a glob pattern.
    return [f"-gencode=arch=compute_{arch},code=sm_{arch}", f"-gencode=arch=compute_{arch},code=compute_{arch}"]


def cache_dir() -> Path:
    """``$CONTINUUM_OPS_CACHE`` or ``<cache root>/ops/<torch>-cu<cuda>-sm<arch>-<checkout>``
    (cache root: :mod:`continuum.cache_dir`): one build per torch/CUDA/GPU combination and
    checkout, kept across runs. The checkout's csrc path is in the name because torch's
    build.ninja names sources by absolute path: two checkouts sharing a folder would rebuild
    it (minutes) each time the other had built last."""
    env = os.environ.get("CONTINUUM_OPS_CACHE")
    if env:
        path = Path(env)
    else:
        major, minor = torch.cuda.get_device_capability()
        checkout = hashlib.sha1(str(CSRC).encode()).hexdigest()[:8]
        tag = f"{torch.__version__.replace('+', '_')}-cu{torch.version.cuda}-sm{major}{minor}-{checkout}"
        path = cache_root() / "ops" / tag
    path.mkdir(parents=True, exist_ok=True)
    return path


def build(verbose: bool = False) -> None:
    """Build (or reuse) and load the extension; afterwards ``torch.ops.continuum_C`` holds the
    ops. Raises on any failure."""
    from torch.utils.cpp_extension import load

    if torch.version.cuda is None:
        raise RuntimeError("this torch build has no CUDA")
    missing = [s for s in SOURCES if not (CSRC / s).exists()]
    if missing:
        raise FileNotFoundError(f"csrc sources missing: {missing} (installed without csrc/?)")
    build_dir = cache_dir()
    with build_lock(build_dir, EXTENSION_NAME, "the CUDA kernels", "1-2 minutes"):
        load(
            name=EXTENSION_NAME,
            sources=[str(CSRC / s) for s in SOURCES],
            extra_include_paths=[str(CSRC)],
            # The gencode flag names an arch, so cpp_extension adds none of its own.
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", *arch_flags()],
            build_directory=str(build_dir),
            is_python_module=False,    # a plain library: its TORCH_LIBRARY block registers the ops
            verbose=verbose,
        )
