"""Varlen paged attention on the CPU: the torch reference loop vs the C++ kernel, one layer.

Cases (block size 16, random K/V in a scattered paged cache, q of the step's new tokens):

- ``turns``: 8 sequences x (3,072 cached + 256 new tokens): returning agent turns;
- ``mixed``: one 512-token chunk over 16k cached tokens + 63 decodes at 1k-4k context;
- ``prefill``: 8 x 512-token prompts, nothing cached.

each for the llama-80m head shape (12 query / 4 KV heads of 64) and SmolLM2-135M's (9 / 3 of
64). ``reference`` is ``paged_attention_ref`` as the engine calls it (new K/V passed, so a
whole-prompt sequence skips the gather); ``kernel`` is ``varlen_plan`` + ``paged_attention_varlen``
(the plan is once per step in the engine, shared by all layers: its time is listed apart).
Times are medians of --reps runs after one warm-up, both wall and CPU (process) time: the
machine is shared, and CPU time does not count waiting for a core. Prints a table and writes JSON (machine,
command, tree) to benchmarks/results/attention-varlen/results.json unless --out is given.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/attention_varlen.py
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import write_result  # noqa: E402
SHAPES = {"llama-80m": (12, 4, 64), "smollm2-135m": (9, 3, 64)}   # (heads, kv heads, head size)
BLOCK = 16


def cases(seed: int) -> dict[str, tuple[list[int], list[int]]]:
    """name -> (query_lens, seq_lens)."""
    import random
    rng = random.Random(seed)
    decodes = [rng.randint(1024, 4096) for _ in range(63)]
    return {
        "turns": ([256] * 8, [3072 + 256] * 8),
        "mixed": ([512] + [1] * 63, [16384 + 512] + decodes),
        "prefill": ([512] * 8, [512] * 8),
    }


def build(qls, sls, H, Hkv, D, dtype, gen):
    from continuum.layers.attention import AttentionMetadata
    need = [-(-s // BLOCK) for s in sls]
    nb = sum(need)
    shape = (nb, BLOCK, Hkv, D)
    kc = torch.randn(shape, generator=gen).to(dtype)
    vc = torch.randn(shape, generator=gen).to(dtype)
    perm = torch.randperm(nb, generator=gen).tolist()
    rows, at = [], 0
    for n in need:
        rows.append(perm[at:at + n] + [0] * (max(need) - n))
        at += n
    bt = torch.tensor(rows)
    qsl = [0]
    for q in qls:
        qsl.append(qsl[-1] + q)
    meta = AttentionMetadata(slot_mapping=torch.zeros(qsl[-1], dtype=torch.long), block_tables=bt,
                             seq_lens=torch.tensor(sls), query_start_loc=torch.tensor(qsl),
                             seq_lens_list=list(sls), query_lens_list=list(qls), block_size=BLOCK)
    q = torch.randn(qsl[-1], H, D, generator=gen).to(dtype)
    # The new tokens' K/V (what the engine passes the reference): the last ql cached rows.
    knew = torch.cat([kc[bt[i]].flatten(0, 1)[s - ql:s] for i, (ql, s) in enumerate(zip(qls, sls))])
    vnew = torch.cat([vc[bt[i]].flatten(0, 1)[s - ql:s] for i, (ql, s) in enumerate(zip(qls, sls))])
    return q, kc, vc, meta, knew, vnew


def median_time(fn, reps: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process, all threads) after a warm-up.
    On a shared machine the CPU time is the steadier of the two (it excludes time spent
    waiting for a core); the wall time is what a step would take on this machine now."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--cases", default="turns,mixed,prefill")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "attention-varlen" / "results.json"))
    a = p.parse_args()
    from continuum.layers import cpu_kernels
    from continuum.layers.attention import paged_attention_ref
    mod = cpu_kernels.load()
    if mod is None:
        print(f"the CPU kernel did not build: {cpu_kernels.failure()}", file=sys.stderr)
        return 1
    all_cases = cases(a.seed)
    rows = []
    print(f"{'case':8} {'shape':13} {'dtype':8} {'tokens':>6} {'ctx':>7} {'ref ms':>9} {'kernel ms':>9} "
          f"{'speedup':>7} {'ref cpu':>9} {'ker cpu':>9} {'speedup':>7} {'plan ms':>7} {'max err':>8}")
    for name in a.cases.split(","):
        qls, sls = all_cases[name]
        for shape in a.shapes.split(","):
            H, Hkv, D = SHAPES[shape]
            for dt in a.dtypes.split(","):
                dtype = getattr(torch, dt)
                gen = torch.Generator().manual_seed(a.seed)
                q, kc, vc, meta, knew, vnew = build(qls, sls, H, Hkv, D, dtype, gen)
                scale = 1 / math.sqrt(D)
                nthreads = torch.get_num_threads()
                plan = lambda: mod.varlen_plan(meta.seq_lens, meta.query_start_loc, Hkv, H // Hkv, nthreads)
                work = plan()
                ws = torch.empty(min(nthreads, work.shape[0]), mod.varlen_workspace_floats(0, H // Hkv, D))
                with torch.inference_mode():
                    ref_s, ref_c = median_time(lambda: paged_attention_ref(q, kc, vc, meta, scale, knew, vnew),
                                               a.reps)
                    ker_s, ker_c = median_time(lambda: mod.paged_attention_varlen(
                        q, kc, vc, meta.block_tables, meta.seq_lens, meta.query_start_loc, scale, work, ws), a.reps)
                    plan_s, _ = median_time(plan, a.reps)
                    want = paged_attention_ref(q, kc, vc, meta, scale, knew, vnew).float()
                    got = mod.paged_attention_varlen(q, kc, vc, meta.block_tables, meta.seq_lens,
                                                     meta.query_start_loc, scale, work, ws).float()
                err = float((got - want).abs().max())
                row = {"case": name, "shape": shape, "heads": H, "kv_heads": Hkv, "head_size": D,
                       "dtype": dt, "query_tokens": sum(qls), "context_tokens": sum(sls),
                       "work_items": int(work.shape[0]), "reference_ms": ref_s * 1e3,
                       "kernel_ms": ker_s * 1e3, "plan_ms": plan_s * 1e3, "speedup": ref_s / ker_s,
                       "reference_cpu_ms": ref_c * 1e3, "kernel_cpu_ms": ker_c * 1e3,
                       "cpu_speedup": ref_c / ker_c, "max_abs_err": err}
                rows.append(row)
                print(f"{name:8} {shape:13} {dt:8} {sum(qls):>6} {sum(sls):>7} {ref_s * 1e3:>9.2f} "
                      f"{ker_s * 1e3:>9.2f} {ref_s / ker_s:>6.2f}x {ref_c * 1e3:>9.2f} {ker_c * 1e3:>9.2f} "
                      f"{ref_c / ker_c:>6.2f}x {plan_s * 1e3:>7.3f} {err:>8.1e}")
    write_result(a.out, {"load_avg_1m": os.getloadavg()[0], "reps": a.reps, "block_size": BLOCK,
                         "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
