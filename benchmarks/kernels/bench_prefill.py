"""Chunked prefill over a cached prefix: what the K/V gather costs next to SDPA itself.

Times the CUDA backend's former prefill path (benchmarks/kernels/gather_sdpa.py: gather from
the paged cache + SDPA with a lower-right causal mask) against SDPA on K/V that are already
contiguous, for one Llama-3.1-8B layer: the share of that path a paged kernel saves at best
while it runs on tensor cores too (the varlen kernel's own timing: bench_varlen.py;
docs/kernels.md §2).

    python benchmarks/kernels/bench_prefill.py --out benchmarks/results/<card>

``--cases`` lists the (new tokens x context) pairs, default ``512x4096,2048x4096,512x32768,
2048x32768``. Without CUDA it runs on CPU (a smoke test, see common.py), e.g.
``--cases 16x64,32x128``.
"""
from __future__ import annotations

import argparse

import torch

from common import DEVICE, cuda_time, write_results  # noqa: E402
from continuum.layers.attention_cuda import prefill_over_cache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/local")
    ap.add_argument("--cases", default="512x4096,2048x4096,512x32768,2048x32768",
                    help="comma-separated NEWxCONTEXT pairs (new tokens <= context)")
    args = ap.parse_args()
    cases = [tuple(int(x) for x in c.split("x")) for c in args.cases.split(",")]
    assert all(len(c) == 2 and 0 < c[0] <= c[1] for c in cases), f"bad --cases {args.cases!r}"
    h, hkv, d, bs = 32, 8, 128, 16
    rows = []
    for ql, sl in cases:
        nb = -(-sl // bs)
        k = torch.randn(nb, bs, hkv, d, device=DEVICE, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        bt = torch.randperm(nb, device=DEVICE)
        q = torch.randn(ql, h, d, device=DEVICE, dtype=torch.bfloat16)
        full = cuda_time(lambda: prefill_over_cache(q, k, v, bt, sl, d ** -0.5), iters=10)
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
