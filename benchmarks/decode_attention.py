"""CPU paged-attention decode: a baseline kernel (the source at a git revision) vs this tree's.

The baseline's csrc/cpu/paged_attention_cpu.cpp and cpu_common.h are read from ``--baseline-rev``
(default: the commit before the AVX-512 decode kernel was added) and built as a separate
extension (``continuum_cpu_decode_base``, same flags as the engine's build); the current
kernel is the engine's ``continuum.layers.cpu_kernels.load()``. Both run in this one process,
alternating call by call (base, new, base, new, ...) so that load from other jobs on a shared
machine hits both alike; each reports the median of ``--reps`` calls and the spread (min-max),
wall and process CPU time (CPU time does not count waiting for a core).

Cases: one decode step of one layer, every sequence at the same context, block size 16,
K/V random in a scattered paged cache:

- ``smollm2``: 9 query / 3 KV heads of 64 (SmolLM2-135M), batch 64;
- ``llama8b``: 32 query / 8 KV heads of 128 (Llama-3.1-8B), batch 16;

each at contexts 512, 2048 and 8192, bf16 (``--dtypes`` adds others). Prints a table and writes
JSON (machine, load average before/after, command, tree) to
benchmarks/results/decode-attention/results.json unless ``--out`` is given.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/decode_attention.py
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from provenance import write_result  # noqa: E402
SHAPES = {"smollm2": (9, 3, 64, 64), "llama8b": (32, 8, 128, 16)}   # (heads, kv heads, head size, batch)
BLOCK = 16


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def default_baseline() -> str:
    """The parent of the commit that added csrc/cpu/decode_avx512.h (HEAD if it is not added yet)."""
    added = git("log", "-1", "--format=%H", "--diff-filter=A", "--", "csrc/cpu/decode_avx512.h")
    return f"{added}^" if added else "HEAD"


def load_baseline(rev: str):
    """Build (cached) the decode kernel as it was at ``rev``, as its own extension module."""
    from torch.utils.cpp_extension import load as jit_load

    from continuum.layers.cpu_kernels import cache_dir
    sha = git("rev-parse", rev)
    src = Path(tempfile.gettempdir()) / f"continuum-decode-base-{sha[:10]}"
    src.mkdir(parents=True, exist_ok=True)
    for name in ("paged_attention_cpu.cpp", "cpu_common.h"):
        text = git("show", f"{sha}:csrc/cpu/{name}")
        path = src / name
        if not path.exists() or path.read_text() != text + "\n":
            path.write_text(text + "\n")
    build = cache_dir() / f"continuum_cpu_decode_base-{sha[:10]}"
    build.mkdir(parents=True, exist_ok=True)
    return jit_load(name="continuum_cpu_decode_base", sources=[str(src / "paged_attention_cpu.cpp")],
                    build_directory=str(build), extra_cflags=["-O3", "-march=native", "-fopenmp", "-ffast-math"],
                    extra_ldflags=["-fopenmp"], verbose=False), sha


def build_case(B: int, ctx: int, H: int, Hkv: int, D: int, dtype: torch.dtype, gen: torch.Generator):
    nb_seq = -(-ctx // BLOCK)
    nb = B * nb_seq
    kc = torch.randn(nb, BLOCK, Hkv, D, generator=gen).to(dtype)
    vc = torch.randn(nb, BLOCK, Hkv, D, generator=gen).to(dtype)
    tables = torch.randperm(nb, generator=gen).view(B, nb_seq)     # scattered blocks
    q = torch.randn(B, H, D, generator=gen).to(dtype)
    return q, kc, vc, tables.contiguous(), torch.full((B,), ctx, dtype=torch.long)


def alternate(fns: dict, reps: int) -> dict:
    """Call each fn in turn, reps rounds after one warm-up round; per fn: median/min/max of
    wall and CPU milliseconds."""
    for fn in fns.values():
        fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[k].append((time.perf_counter() - t) * 1e3)
            cpu[k].append((time.process_time() - c) * 1e3)
    return {k: {"wall_ms": statistics.median(wall[k]), "wall_min_ms": min(wall[k]), "wall_max_ms": max(wall[k]),
                "cpu_ms": statistics.median(cpu[k]), "cpu_min_ms": min(cpu[k]), "cpu_max_ms": max(cpu[k])}
            for k in fns}


def span(t: dict) -> str:
    return f"({t['wall_min_ms']:.1f}-{t['wall_max_ms']:.1f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--dtypes", default="bfloat16")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--contexts", default="512,2048,8192")
    p.add_argument("--baseline-rev", default=None, help="git revision of the baseline kernel source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=str(HERE / "results" / "decode-attention" / "results.json"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from continuum.layers import cpu_kernels
    new = cpu_kernels.load()
    if new is None:
        print(f"the CPU kernel did not build: {cpu_kernels.failure()}", file=sys.stderr)
        return 1
    base, base_sha = load_baseline(a.baseline_rev or default_baseline())
    load_before = os.getloadavg()
    rows = []
    print(f"baseline {base_sha[:10]}, {torch.get_num_threads()} threads, load {load_before[0]:.1f}")
    print(f"{'shape':8} {'dtype':8} {'B':>3} {'ctx':>5} {'base ms':>9} {'(min-max)':>15} {'new ms':>8} "
          f"{'(min-max)':>15} {'speedup':>7} {'cpu x':>6} {'GB/s new':>8} {'max diff':>8}")
    for shape in a.shapes.split(","):
        H, Hkv, D, B = SHAPES[shape]
        for dt in a.dtypes.split(","):
            dtype = getattr(torch, dt)
            for ctx in (int(c) for c in a.contexts.split(",")):
                gen = torch.Generator().manual_seed(a.seed)
                q, kc, vc, bt, lens = build_case(B, ctx, H, Hkv, D, dtype, gen)
                scale = 1 / math.sqrt(D)
                with torch.inference_mode():
                    fns = {"base": lambda: base.paged_attention_decode(q, kc, vc, bt, lens, scale),
                           "new": lambda: new.paged_attention_decode(q, kc, vc, bt, lens, scale)}
                    t = alternate(fns, a.reps)
                    diff = float((fns["base"]().float() - fns["new"]().float()).abs().max())
                kv_bytes = 2 * B * ctx * Hkv * D * kc.element_size()
                b, n = t["base"], t["new"]
                row = {"shape": shape, "heads": H, "kv_heads": Hkv, "head_size": D, "batch": B, "context": ctx,
                       "dtype": dt, "base": b, "new": n, "speedup_wall": b["wall_ms"] / n["wall_ms"],
                       "speedup_cpu": b["cpu_ms"] / n["cpu_ms"], "kv_bytes": kv_bytes,
                       "new_gb_per_s": kv_bytes / n["wall_ms"] / 1e6, "max_abs_diff": diff}
                rows.append(row)
                print(f"{shape:8} {dt:8} {B:>3} {ctx:>5} {b['wall_ms']:>9.2f} {span(b):>15} {n['wall_ms']:>8.2f} "
                      f"{span(n):>15} {row['speedup_wall']:>6.2f}x "
                      f"{row['speedup_cpu']:>5.2f}x {row['new_gb_per_s']:>8.1f} {diff:>8.1e}")
                del q, kc, vc
    write_result(a.out, {"kernel_source_dirty": bool(git("status", "--porcelain", "--", "csrc")),
                         "baseline_commit": base_sha, "load_avg_before": load_before,
                         "load_avg_after": os.getloadavg(), "reps": a.reps, "block_size": BLOCK,
                         "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
