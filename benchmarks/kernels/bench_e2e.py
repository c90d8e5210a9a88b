"""End-to-end offline throughput: N prompts x M output tokens through the engine.

Llama-3.1-8B-shaped random bf16 model (initialised on the GPU, see common.py), random prompt
token ids, greedy, ignore_eos, so every request produces exactly M tokens. Backends:
``cuda-graph`` (CUDA kernels + decode graphs), ``cuda`` (kernels, eager), ``torch`` (the
reference attention, eager). Reports output tokens/s over the whole generate() call (engine
construction and graph capture excluded, and reported separately).

    python benchmarks/kernels/bench_e2e.py --out benchmarks/results/<card>

Without CUDA it runs on CPU (a smoke test, see common.py) with the reference ops; the
``cuda-graph`` row then runs eagerly (nothing is captured) and its ``note`` says so, e.g.
``--preset tiny --num-prompts 2 --prompt-len 8 --max-tokens 4 --batched-tokens 64``.
"""
from __future__ import annotations

import argparse
import gc
import time

import torch

from common import (DEVICE, attention_backend, build_random_model, empty_cache,  # noqa: E402
                    require_kernels, synchronize, write_results)


def run(backend: str, model, config, args) -> dict:
    import continuum.engine.engine as engine_mod
    from continuum.engine.cuda_graph import DecodeGraphRunner, GraphedModel
    from continuum.llm import LLM
    from continuum.models.byte_tokenizer import make_byte_tokenizer
    from continuum.models.loader import LoadedModel
    from continuum.sampling_params import SamplingParams

    max_len = args.prompt_len + args.max_tokens + 16
    tok = make_byte_tokenizer()
    loaded = LoadedModel(model, config, tok, [tok.eos_token_id], max_len, "bench")
    orig = engine_mod.load_model
    engine_mod.load_model = lambda *a, **k: loaded
    try:
        with attention_backend("cuda" if backend.startswith("cuda") else "torch"):
            t0 = time.perf_counter()
            # (CPU: a 256 MiB KV pool instead of the default 2 GiB; ample for smoke-test shapes)
            cpu_kv = {} if DEVICE == "cuda" else {"kv_cache_memory": 256 << 20}
            llm = LLM("bench", dtype="bfloat16", max_model_len=max_len, max_num_seqs=args.num_prompts,
                      max_num_batched_tokens=args.batched_tokens, gpu_memory_utilization=0.85, device=DEVICE,
                      **cpu_kv)
            capture_s = 0.0
            note = ""
            if backend == "cuda-graph":
                t1 = time.perf_counter()
                runner = llm.engine.runner
                graphs = DecodeGraphRunner(model, llm.engine.cache_engine.block_size, max_len,
                                           args.num_prompts, torch.device(DEVICE))
                graphs.capture()
                runner.model = GraphedModel(model, graphs)
                capture_s = time.perf_counter() - t1
                if not graphs.graphs:
                    note = "no graph captured" + (" (no CUDA)" if DEVICE != "cuda" else "") + ": ran eager"
            init_s = time.perf_counter() - t0
            g = torch.Generator().manual_seed(0)
            # ids >= 300 keep clear of the byte tokenizer's specials; a byte-vocab preset
            # (``tiny``: 261 ids) draws plain bytes instead.
            lo, hi = (300, config.vocab_size) if config.vocab_size > 300 else (0, 256)
            prompts = [torch.randint(lo, hi, (args.prompt_len,), generator=g).tolist()
                       for _ in range(args.num_prompts)]
            params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
            llm.generate(prompts[:2], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True),
                         use_tqdm=False)                                  # warm-up
            synchronize()
            t2 = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            synchronize()
            wall = time.perf_counter() - t2
            n_out = sum(len(o.outputs[0].token_ids) for o in outs)
            steps = llm.engine.step_times
            run_model = llm.engine.runner.model
            replays = run_model.num_replays if isinstance(run_model, GraphedModel) else 0
            # Every reference to this engine goes (the runner holds its KV cache and the
            # graphs their memory pool), or the next backend sizes its cache from what is left.
            del llm
            runner = graphs = None
    finally:
        engine_mod.load_model = orig
        # The shared model's attention layers still point at this run's KV tensors: drop them
        # so the next engine sizes its cache from truly free memory.
        for a in model.attention_layers():
            a.k_cache = a.v_cache = None
        gc.collect()
        empty_cache()
    row = {"backend": backend, "prompts": args.num_prompts, "prompt_len": args.prompt_len,
           "output_tokens": n_out, "seconds": wall, "output_tok_per_s": n_out / wall,
           "mean_step_ms": 1e3 * sum(steps) / max(len(steps), 1), "graph_replays": replays,
           "init_s": init_s, "capture_s": capture_s}
    if note:
        row["note"] = note
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/local")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--batched-tokens", type=int, default=8192)
    ap.add_argument("--backends", default="cuda-graph,cuda,torch")
    ap.add_argument("--preset", default="llama3.1-8b")
    args = ap.parse_args()
    require_kernels()
    model, config = build_random_model(args.preset)
    rows = []
    for b in args.backends.split(","):
        r = run(b, model, config, args)
        rows.append(r)
        print(r, flush=True)
    write_results(args.out, "e2e_throughput",
                  {"model": f"{args.preset} random bf16", "workload":
                   f"{args.num_prompts} prompts x {args.prompt_len} tokens -> {args.max_tokens} tokens, greedy"},
                  rows, ["backend", "output_tokens", "seconds", "output_tok_per_s", "mean_step_ms",
                         "graph_replays", "init_s", "capture_s"] + (["note"] if any("note" in r for r in rows) else []))


if __name__ == "__main__":
    main()
