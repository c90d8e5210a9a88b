"""Decode step of a Llama-3.1-8B-shaped random bf16 model vs the weight + KV read floor.

Every sequence has `--context` tokens already cached (random K/V) and decodes one token:
model forward + LM head for the batch. Three ways: the torch reference attention (eager),
the CUDA backend (eager), and the CUDA backend replayed from CUDA graphs.
Floor = (weight bytes read + batch * context * KV bytes per token) / copy bandwidth
(docs/kernels.md §6). Goal: <= 1.3x the floor at batch 1. The calibration in
../shared/calibration measured 7.2 ms at batch 1 for plain PyTorch on an H200 (floor 3.8 ms).

    python benchmarks/kernels/bench_decode_step.py --out benchmarks/results/<card>

Without CUDA it runs on CPU (a smoke test, see common.py) with the reference ops and no CUDA
graphs (the graph columns say "skipped"), e.g. ``--preset tiny --batches 1,2 --context 32``.
"""
from __future__ import annotations

import argparse

import torch

from common import (DEVICE, attention_backend, build_random_model, copy_bandwidth,  # noqa: E402
                    cuda_time, require_kernels, weight_read_bytes, write_results)
from continuum.engine.cache_engine import CacheEngine
from continuum.engine.cuda_graph import DecodeGraphRunner
from continuum.layers.attention import AttentionMetadata, set_forward_context


def decode_meta(batch: int, ctx: int, bs: int, max_blocks: int) -> tuple:
    """Sequence i owns blocks [i*max_blocks, (i+1)*max_blocks) and decodes position ctx."""
    bt = torch.arange(batch * max_blocks, device=DEVICE).view(batch, max_blocks)
    pos = torch.full((batch,), ctx, dtype=torch.long, device=DEVICE)
    slots = bt[:, ctx // bs] * bs + ctx % bs
    meta = AttentionMetadata(slot_mapping=slots, block_tables=bt, seq_lens=pos + 1,
                             query_start_loc=torch.arange(batch + 1, device=DEVICE),
                             seq_lens_list=[ctx + 1] * batch, query_lens_list=[1] * batch, block_size=bs)
    return meta, pos


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/local")
    ap.add_argument("--batches", default="1,8,32,64,128")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--preset", default="llama3.1-8b")
    ap.add_argument("--no-ref", action="store_true", help="skip the torch-reference attention rows")
    args = ap.parse_args()
    require_kernels()
    batches = [int(b) for b in args.batches.split(",")]
    bw = copy_bandwidth()
    model, config = build_random_model(args.preset)
    bs, ctx = 16, args.context
    max_blocks = -(-(ctx + 1) // bs)
    cache = CacheEngine(model, max(batches) * max_blocks, bs, torch.bfloat16, torch.device(DEVICE))
    for t in cache.k_caches + cache.v_caches:       # random context, never zeros
        t.normal_()
    wbytes = weight_read_bytes(model)
    kv_tok = cache.nbytes // (cache.num_blocks * bs)
    ids_all = torch.randint(0, config.vocab_size, (max(batches),), device=DEVICE)

    def step(batch, meta, pos):
        with torch.inference_mode(), set_forward_context(meta):
            h = model(ids_all[:batch], pos)
            return model.compute_logits(h)

    rows = []
    with attention_backend("cuda"):
        graphs = DecodeGraphRunner(model, bs, ctx + 1, max(batches), torch.device(DEVICE),
                                   batch_buckets=batches, context_buckets=[ctx + 1])
        graphs.capture()
    graph_skip = "skipped: " + ("no CUDA" if DEVICE != "cuda" else "graphs not captured")
    for batch in batches:
        meta, pos = decode_meta(batch, ctx, bs, max_blocks)
        floor = (wbytes + batch * (ctx + 1) * kv_tok) / bw
        row = {"batch": batch, "floor_ms": floor * 1e3}
        if not args.no_ref:
            with attention_backend("torch"):
                row["torch_ref_ms"] = cuda_time(lambda: step(batch, meta, pos), iters=5, warmup=2) * 1e3
        with attention_backend("cuda"):
            row["cuda_eager_ms"] = cuda_time(lambda: step(batch, meta, pos), iters=10) * 1e3

            def replay():
                with torch.inference_mode():
                    h = graphs.run(ids_all[:batch], pos, meta)
                    return model.compute_logits(h)
            if graphs.graphs:
                row["cuda_graph_ms"] = cuda_time(replay, iters=20) * 1e3
                row["graph_vs_floor"] = row["cuda_graph_ms"] / row["floor_ms"]
                row["tok_per_s"] = batch / row["cuda_graph_ms"] * 1e3
            else:    # no CUDA (or capture refused, see the log): nothing to replay
                row["cuda_graph_ms"] = row["graph_vs_floor"] = row["tok_per_s"] = graph_skip
        rows.append(row)
        print(row, flush=True)
    write_results(args.out, "decode_step",
                  {"model": f"{args.preset} random bf16", "context": ctx,
                   "weight_GB": round(wbytes / 1e9, 2), "kv_bytes_per_token": kv_tok,
                   "copy_bw_GBps": round(bw / 1e9, 1), "goal": "<= 1.3x floor at batch 1"},
                  rows, ["batch", "floor_ms", "torch_ref_ms", "cuda_eager_ms", "cuda_graph_ms",
                         "graph_vs_floor", "tok_per_s"])


if __name__ == "__main__":
    main()
