"""Paged-attention decode: achieved bandwidth vs the measured copy bandwidth.

One Llama-3.1-8B layer shape (32 query heads, 8 KV heads, head 128, bf16, blocks of 16 with
shuffled block tables). For each context length the batch is chosen so that about 1 GiB of
K/V is read per call (large enough to time, the regime of a busy server), plus batch 1 at the
same context (latency regime). Bytes = K + V actually read (docs/kernels.md §1); achieved
bandwidth = bytes / time; the goal is >= 80% of the copy bandwidth at long contexts.

    python benchmarks/kernels/bench_decode_attention.py --out benchmarks/results/<card>

Without CUDA it runs on CPU with the torch reference op (a smoke test, see common.py), e.g.
``--contexts 64 --target-gib 0.0005``.
"""
from __future__ import annotations

import argparse

import torch

from common import (DEVICE, copy_bandwidth, cuda_time, empty_cache, require_kernels,  # noqa: E402
                    write_results)                                 # (common sets sys.path)
from continuum import ops
from continuum.layers.attention import AttentionMetadata, paged_attention_ref


def run_case(batch: int, ctx: int, h: int = 32, hkv: int = 8, d: int = 128, bs: int = 16,
             dtype=torch.bfloat16, with_ref: bool = False) -> dict:
    nblk = -(-ctx // bs)
    nb = batch * nblk
    k = torch.randn(nb, bs, hkv, d, device=DEVICE, dtype=dtype)
    v = torch.randn(nb, bs, hkv, d, device=DEVICE, dtype=dtype)
    bt = torch.randperm(nb, device=DEVICE).view(batch, nblk)
    lens = torch.full((batch,), ctx, dtype=torch.long, device=DEVICE)
    q = torch.randn(batch, h, d, device=DEVICE, dtype=dtype)
    out = torch.empty_like(q)
    scale = d ** -0.5
    t = cuda_time(lambda: ops.paged_attention_decode(out, q, k, v, bt, lens, scale, ctx), iters=20)
    nbytes = 2 * batch * ctx * hkv * d * k.element_size()
    row = {"batch": batch, "context": ctx, "MiB_read": nbytes / 2**20, "us": t * 1e6, "GB/s": nbytes / t / 1e9}
    if with_ref:
        meta = AttentionMetadata(slot_mapping=lens, block_tables=bt, seq_lens=lens,
                                 query_start_loc=torch.arange(batch + 1, device=DEVICE),
                                 seq_lens_list=[ctx] * batch, query_lens_list=[1] * batch, block_size=bs)
        tr = cuda_time(lambda: paged_attention_ref(q, k, v, meta, scale), iters=5, warmup=1)
        row["ref_us"] = tr * 1e6
        row["speedup_vs_ref"] = tr / t
    del k, v
    empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/local")
    ap.add_argument("--contexts", default="512,2048,8192,32768,131072")
    ap.add_argument("--target-gib", type=float, default=1.0)
    args = ap.parse_args()
    require_kernels(verbose=False)
    bw = copy_bandwidth()
    rows = []
    for ctx in [int(c) for c in args.contexts.split(",")]:
        per_seq = 2 * ctx * 8 * 128 * 2
        big = max(1, int(args.target_gib * 2**30 // per_seq))
        for batch in sorted({1, big}):
            r = run_case(batch, ctx, with_ref=(ctx <= 8192 and batch * ctx <= 2**18))
            r["pct_of_copy_bw"] = 100 * r["GB/s"] * 1e9 / bw
            rows.append(r)
            print(r, flush=True)
    write_results(args.out, "decode_attention",
                  {"shape": "H=32 Hkv=8 D=128 bf16 block 16", "copy_bw_GBps": round(bw / 1e9, 1),
                   "goal": ">= 80% of copy bandwidth at long contexts"},
                  rows, ["batch", "context", "MiB_read", "us", "GB/s", "pct_of_copy_bw", "ref_us",
                         "speedup_vs_ref"])


if __name__ == "__main__":
    main()
