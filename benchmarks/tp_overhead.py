"""TP=1 vs TP=2 on the CPU: throughput and the cost of the collectives per step.

On this 2-core machine tensor parallelism cannot speed anything up (two ranks share the two
cores the one-rank engine already uses); the point is the overhead per step, measured:

- ``engine``: greedy generation of ``--seqs`` sequences (``--prompt`` tokens each, then
  ``--tokens`` decode steps) with a random model, per configuration and repeat: output
  tokens/s over ``generate`` and the median decode step time (``LLMEngine.step_times``).
  Configurations: TP=1 with 1 and 2 intra-op threads, TP=2 with 1 thread per rank.
- ``collectives``: two processes, one gloo all-reduce of a decode step's activation
  ``[seqs, hidden]`` fp32, and one all-gather of its logits share; a decode step of TP=2
  runs ``2 * layers + 1`` all-reduces and one all-gather, so their sum is the communication
  floor per step.

Repeats alternate the configurations (the machine is shared: other sessions' load moves
every number); the report gives median and min-max per configuration.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/tp_overhead.py [--repeats 3] \
        [--out benchmarks/results/tp]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

def engine_run(model: str, device: str, tp: int, threads: int, seqs: int, prompt: int,
               tokens: int, dtype: str) -> dict:
    from continuum.llm import LLM
    from continuum.sampling_params import SamplingParams

    torch.set_num_threads(threads)
    llm = LLM(model, dtype=dtype, device=device, kv_cache_memory="256MiB",
              tensor_parallel_size=tp, max_num_seqs=seqs)
    try:
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(3, 250, (prompt,), generator=g).tolist() for _ in range(seqs)]
        sp = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
        llm.generate(prompts[:1], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)
        llm.engine.step_times.clear()
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        wall = time.perf_counter() - t0
        steps = list(llm.engine.step_times)
        decode = steps[1:]                  # the first step prefills every prompt
        m = llm.engine.runner.model
        return {"tp": tp, "threads": threads, "wall_s": wall, "hidden": m.hidden_size,
                "vocab": m.vocab_size, "layers": m.num_layers,
                "tokens_per_s": sum(len(o.outputs[0].token_ids) for o in outs) / wall,
                "decode_step_ms_median": 1e3 * statistics.median(decode),
                "prefill_step_ms": 1e3 * steps[0], "steps": len(steps),
                "first_tokens": outs[0].outputs[0].token_ids[:8], "loadavg": os.getloadavg()[0]}
    finally:
        llm.engine.shutdown()


def _dev(device: str, rank: int) -> torch.device:
    return torch.device("cuda", rank) if device.startswith("cuda") else torch.device("cpu")


def _collective_rank(rank: int, port: int, shape: tuple, gather_cols: int, iters: int,
                     device: str) -> None:
    """Rank 1's side of ``collectives`` (the same loop as rank 0's)."""
    from continuum.layers.tp_group import TPGroup

    torch.set_num_threads(1)
    dev = _dev(device, rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    g = TPGroup.connect(rank, 2, port, dev)
    x = torch.randn(shape, device=dev)
    y = torch.randn(shape[0], gather_cols, device=dev)
    for _ in range(20):
        g.all_reduce(x)
    for _ in range(iters):
        g.all_reduce(x)
    for _ in range(iters):
        g.all_gather(y)


def collectives(seqs: int, hidden: int, vocab_share: int, iters: int, device: str) -> dict:
    """Mean all-reduce and all-gather time between two processes (rank 0 here)."""
    from continuum.layers.tp_group import TPGroup, master_store

    store = master_store()
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_collective_rank,
                    args=(1, store.port, (seqs, hidden), vocab_share, iters, device))
    p.start()
    dev = _dev(device, 0)
    g0 = TPGroup.connect(0, 2, store.port, dev, store=store)
    x, y = torch.randn(seqs, hidden, device=dev), torch.randn(seqs, vocab_share, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(20):
        g0.all_reduce(x)
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        g0.all_reduce(x)
    sync()
    ar = (time.perf_counter() - t) / iters
    t = time.perf_counter()
    for _ in range(iters):
        g0.all_gather(y)
    sync()
    ag = (time.perf_counter() - t) / iters
    p.join()
    return {"all_reduce_us": 1e6 * ar, "all_gather_us": 1e6 * ag, "shape": [seqs, hidden],
            "gather_shape": [seqs, vocab_share]}


def _spread(vals: list[float]) -> str:
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--model", default="random:llama-80m")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, needs 2 GPUs)")
    ap.add_argument("--out", default="benchmarks/results/tp")
    a = ap.parse_args()
    configs = [(1, 2), (1, 1), (2, 1)] if a.device == "cpu" else [(1, 1), (2, 1)]
    runs = []
    for rep in range(a.repeats):
        for tp, threads in configs:
            r = engine_run(a.model, a.device, tp, threads, a.seqs, a.prompt, a.tokens, a.dtype)
            r["repeat"] = rep
            print(json.dumps(r), flush=True)
            runs.append(r)
    firsts = {tuple(r["first_tokens"]) for r in runs}
    shape = runs[0]
    comm = collectives(a.seqs, shape["hidden"], -(-shape["vocab"] // 2), 500, a.device)
    n_ar = 2 * shape["layers"] + 1
    comm["per_decode_step_ms"] = (n_ar * comm["all_reduce_us"] + comm["all_gather_us"]) / 1e3
    comm["all_reduces_per_step"] = n_ar
    print(json.dumps(comm), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tree = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"command": "PYTHONPATH=$PWD .venv/bin/python benchmarks/tp_overhead.py " + " ".join(
        f"--{k} {v}" for k, v in vars(a).items()), "tree": tree, "model": a.model,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "same_tokens_everywhere": len(firsts) == 1, "runs": runs, "collectives": comm}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    lines = [f"# TP=1 vs TP=2 on {a.device} ({a.model}, {a.dtype}, {a.seqs} seqs x {a.prompt} prompt "
             f"+ {a.tokens} tokens; {a.repeats} repeats, median (min-max))", "",
             "| config | output tok/s | decode step ms | prefill step ms |", "|---|---|---|---|"]
    for tp, threads in configs:
        rs = [r for r in runs if r["tp"] == tp and r["threads"] == threads]
        lines.append(f"| TP={tp}, {threads} thread(s)/rank | {_spread([r['tokens_per_s'] for r in rs])} | "
                     f"{_spread([r['decode_step_ms_median'] for r in rs])} | "
                     f"{_spread([r['prefill_step_ms'] for r in rs])} |")
    lines += ["", f"Collectives (2 processes, {'gloo, loopback' if a.device == 'cpu' else 'NCCL'}): all-reduce of {comm['shape']} fp32 "
              f"{comm['all_reduce_us']:.0f} us, all-gather of {comm['gather_shape']} "
              f"{comm['all_gather_us']:.0f} us; a decode step runs {n_ar} all-reduces + 1 all-gather "
              f"= {comm['per_decode_step_ms']:.2f} ms of communication.",
              f"Greedy tokens identical in every run: {res['same_tokens_everywhere']}.",
              f"Load average during the runs: {_spread([r['loadavg'] for r in runs])}."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
