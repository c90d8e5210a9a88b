"""Chunked prefill over a cached prefix: what the K/V gather costs next to SDPA itself.

Decides whether a paged prefill kernel is worth writing (docs/kernels.md §2): times the
CUDA backend's prefill path (gather from the paged cache + SDPA with a lower-right causal
mask) against SDPA on K/V that are already contiguous, for one Llama-3.1-8B layer.

    python benchmarks/kernels/bench_prefill.py --out benchmarks/results/<card>
"""
from __future__ import annotations

import argparse

import torch

from common import cuda_time, write_results  # noqa: E402
from continuum.layers import attention_cuda


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/local")
    args = ap.parse_args()
    h, hkv, d, bs = 32, 8, 128, 16
    rows = []
    for ql, sl in [(512, 4096), (2048, 4096), (512, 32768), (2048, 32768)]:
        nb = -(-sl // bs)
        k = torch.randn(nb, bs, hkv, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        bt = torch.randperm(nb, device="cuda")
        q = torch.randn(ql, h, d, device="cuda", dtype=torch.bfloat16)
        full = cuda_time(lambda: attention_cuda._prefill_over_cache(q, k, v, bt, sl, d ** -0.5), iters=10)
        kc = k.flatten(0, 1)[:sl]
        vc = v.flatten(0, 1)[:sl]

        def no_gather():
            from torch.nn.attention.bias import causal_lower_right
            ki = kc.transpose(0, 1)[None].repeat_interleave(h // hkv, 1)
            vi = vc.transpose(0, 1)[None].repeat_interleave(h // hkv, 1)
            return torch.nn.functional.scaled_dot_product_attention(
                q.transpose(0, 1)[None], ki, vi, attn_mask=causal_lower_right(ql, sl), scale=d ** -0.5)
        base = cuda_time(no_gather, iters=10)
        rows.append({"new_tokens": ql, "context": sl, "gather_sdpa_us": full * 1e6,
                     "contiguous_sdpa_us": base * 1e6, "gather_share_pct": 100 * (full - base) / full})
        print(rows[-1], flush=True)
    write_results(args.out, "prefill_gather", {"shape": "H=32 Hkv=8 D=128 bf16",
                  "rule": "write a paged prefill kernel only if gather_share_pct > 10"},
                  rows, ["new_tokens", "context", "gather_sdpa_us", "contiguous_sdpa_us", "gather_share_pct"])


if __name__ == "__main__":
    main()
