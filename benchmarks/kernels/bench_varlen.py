"""Varlen paged attention (one launch for a whole mixed step) vs the old gather + SDPA path.

One Llama-3.1-8B layer shape (32 query heads, 8 KV heads, head 128, bf16, blocks of 16 with
shuffled block tables). Each case is one step: the kernel's output is first checked against
the fp32 torch reference (relative L2 error, must be < 2e-2 in bf16), then both paths are
timed: ``ops.paged_attention_varlen`` alone, the CUDA backend's former per-sequence path
(benchmarks/kernels/gather_sdpa.py: decode launch for one-token rows, gather +
repeat_interleave + SDPA per chunk), and what the engine runs now (``attention_cuda.mixed``:
varlen for items under ``LONG_CHUNK`` new tokens, SDPA for longer chunks; the 16 / 32-token
cases bracket that threshold). Columns: unique K/V bytes the step attends over, FLOPs
(QK^T and PV, causal half of each chunk excluded), achieved TFLOP/s of the kernel.

    python benchmarks/kernels/bench_varlen.py --out benchmarks/results/<card>

A case is ``NxC+S`` (N sequences, C cached tokens each plus S new ones), optionally followed
by ``+Md@L`` (M decodes at context L), or ``Md@L`` alone. Defaults: the returning-turn shape 8x3072+256 (and with
16 / 32 new tokens), one 512-token chunk over 16k cached beside 63 decodes at 4k, 8 whole 512-token prompts, 64 pure
decodes at 2k through the varlen kernel (what it costs where the decode kernel would run).
Without CUDA it runs on CPU with the torch reference op (a smoke test, see common.py), e.g.
``--cases 2x32+8,1x64+16+3d@40``.
"""
from __future__ import annotations

import argparse
import re

import torch

from common import DEVICE, HAS_CUDA, cuda_time, empty_cache, require_kernels, write_results  # noqa: E402
from continuum import ops
from continuum.layers import attention_cuda
from continuum.ops import reference
from gather_sdpa import attention as gather_sdpa_attention  # noqa: E402

CASE = re.compile(r"^(?:(\d+)x(\d+)\+(\d+))?(?:(?:(?<=\d)\+|^)(\d+)d@(\d+))?$")
TOL_BF16 = 2e-2


def parse_case(text: str) -> tuple[list[int], list[int]]:
    """``NxC+S``, ``NxC+S+Md@L`` or ``Md@L`` -> (query_lens, seq_lens)."""
    m = CASE.match(text)
    if m is None or not text or m.group(1) is None and m.group(4) is None:
        raise SystemExit(f"bad case {text!r}: want NxC+S, NxC+S+Md@L or Md@L")
    n, c, s, md, ml = (int(x) if x else 0 for x in m.groups())
    if s == 0 and n:
        raise SystemExit(f"bad case {text!r}: a sequence needs new tokens (S >= 1)")
    qls, sls = [s] * n + [1] * md, [c + s] * n + [ml] * md
    if md and ml < 1:
        raise SystemExit(f"bad case {text!r}: decode contexts need L >= 1")
    return qls, sls


def run_case(name: str, qls: list[int], sls: list[int], h: int = 32, hkv: int = 8, d: int = 128,
             bs: int = 16, dtype=torch.bfloat16) -> dict:
    nblk = [-(-L // bs) for L in sls]
    nb = sum(nblk)
    k_cache = torch.randn(nb, bs, hkv, d, device=DEVICE, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    perm = torch.randperm(nb, device=DEVICE)
    width = max(nblk)
    bt = torch.zeros(len(sls), width, dtype=torch.long, device=DEVICE)
    at = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[at:at + n]
        at += n
    t = sum(qls)
    q = torch.randn(t, h, d, device=DEVICE, dtype=dtype)
    lens = torch.tensor(sls, dtype=torch.long, device=DEVICE)
    qsl = torch.tensor([0] + qls, dtype=torch.long).cumsum(0).to(DEVICE)
    # The new tokens' K/V as the old path gets them (already in the cache at their slots).
    slots = torch.cat([bt[i, torch.arange(L - ql, L, device=DEVICE) // bs] * bs
                       + torch.arange(L - ql, L, device=DEVICE) % bs for i, (ql, L) in enumerate(zip(qls, sls))])
    k_new = k_cache.view(-1, hkv, d)[slots]
    v_new = v_cache.view(-1, hkv, d)[slots]
    scale = d ** -0.5
    out = torch.empty_like(q)

    ops.paged_attention_varlen(out, q, k_cache, v_cache, bt, lens, qsl, scale)
    ref = torch.empty(q.shape, dtype=torch.float32, device=DEVICE)
    reference.paged_attention_varlen(ref, q.float(), k_cache.float(), v_cache.float(), bt, lens, qsl, scale)
    err = float((out.double() - ref.double()).norm() / ref.double().norm())
    old = gather_sdpa_attention(q, k_new, v_new, k_cache, v_cache, bt, lens, qls, sls, scale)
    err_old = float((old.double() - ref.double()).norm() / ref.double().norm())
    del ref

    t_new = cuda_time(lambda: ops.paged_attention_varlen(out, q, k_cache, v_cache, bt, lens, qsl, scale), iters=10)
    t_old = cuda_time(lambda: gather_sdpa_attention(q, k_new, v_new, k_cache, v_cache, bt, lens, qls, sls, scale),
                      iters=10)
    # What the engine runs: varlen for items under attention_cuda.LONG_CHUNK tokens, SDPA above.
    t_eng = cuda_time(lambda: attention_cuda.mixed(out, q, k_new, v_new, k_cache, v_cache, bt, lens, qsl, qls, sls,
                                                   scale), iters=10)
    kv_bytes = 2 * sum(sls) * hkv * d * k_cache.element_size()
    flops = 4 * h * d * sum(ql * L - ql * (ql - 1) // 2 for ql, L in zip(qls, sls))
    del k_cache, v_cache
    empty_cache()
    return {"case": name, "sequences": len(qls), "new_tokens": t, "MiB_kv": kv_bytes / 2**20,
            "GFLOP": flops / 1e9, "varlen_us": t_new * 1e6, "gather_sdpa_us": t_old * 1e6,
            "engine_us": t_eng * 1e6,
            "speedup": t_old / t_new, "varlen_TFLOPs": flops / t_new / 1e12,
            "rel_err": err, "rel_err_old": err_old, "ok": err < TOL_BF16}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/local")
    ap.add_argument("--cases", default="8x3072+256,8x3072+16,8x3072+32,1x16384+512+63d@4096,8x0+512,64d@2048")
    args = ap.parse_args()
    require_kernels(verbose=False)
    rows = []
    for name in args.cases.split(","):
        qls, sls = parse_case(name)
        rows.append(run_case(name, qls, sls))
        print(rows[-1], flush=True)
    write_results(args.out, "varlen", {"shape": "H=32 Hkv=8 D=128 bf16, block 16",
                                       "baseline": "gather + repeat_interleave + SDPA per sequence",
                                       "validated": "rel_err vs fp32 torch reference < 2e-2"},
                  rows, ["case", "sequences", "new_tokens", "MiB_kv", "GFLOP", "varlen_us", "gather_sdpa_us", "engine_us",
                         "speedup", "varlen_TFLOPs", "rel_err", "ok"])
    bad = [r["case"] for r in rows if not r["ok"]]
    if bad and HAS_CUDA:
        raise SystemExit(f"varlen kernel disagrees with the reference on {bad}")


if __name__ == "__main__":
    main()
