"""Host time of one step's input preparation at agent scale, against context length.

256 sequences decode (one token each per step) with contexts from 1k to 128k tokens, plus a
mixed row (every step, one sequence prefills a 512-token chunk over its long cached prefix
among 255 decodes). Only the model
runner's ``prepare`` runs (no model, no kernels): building ``input_ids``, positions, the slot
mapping and the block tables from the scheduler's output. Each step appends one token per
sequence, so a new block id appears every ``block_size`` steps, as in a real decode; the
figure is the median over steady-state steps. The goal (issue 15) is < 1 ms, flat in context.
Beside it, the engine's other per-step host work that scales with the batch: the online
step-cost fit's ``observe`` of the same step (``kv_ttl/step_cost.py``), its median and its
mean (the mean carries the refit every 64 steps).

    .venv/bin/python benchmarks/step_host_time.py [--seqs 256] [--steps 200] [--json FILE]

Run it against another tree for a before/after (``PYTHONPATH=/path/to/tree``); it only uses
``ModelRunner(model, block_size, device).prepare(SchedulerOutput)``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import continuum
from continuum.engine.model_runner import ModelRunner
from continuum.kv_ttl.step_cost import OnlineStepCost
from continuum.request import Request
from continuum.sampling_params import SamplingParams
from continuum.scheduler.output import ScheduledRequest, SchedulerOutput

BS = 16


def _measure(contexts: list[int], chunk: int, steps: int) -> tuple[float, float, float]:
    """Median seconds of prepare() over ``steps`` steady-state steps, and the median and the
    mean seconds of the step-cost fit's observe() of the same steps."""
    params = SamplingParams(max_tokens=10**9)
    reqs, tables = [], []
    next_block = 0
    for i, ctx in enumerate(contexts):
        r = Request(f"r{i}", [1] * ctx, params, 0.0)
        r.num_computed_tokens = ctx - (chunk if i == 0 and chunk else 1)
        n = -(-ctx // BS)
        tables.append(list(range(next_block, next_block + n)))
        next_block += n
        reqs.append(r)
    try:
        runner = ModelRunner(torch.nn.Identity(), BS, torch.device("cpu"), len(contexts), max(contexts) + steps + chunk)
    except TypeError:                    # a runner without persistent-batch sizing arguments
        runner = ModelRunner(torch.nn.Identity(), BS, torch.device("cpu"))
    times, observe = [], []
    fit = OnlineStepCost()
    for step in range(steps):
        sched = []
        for r, t in zip(reqs, tables):
            start = r.num_computed_tokens
            n = r.num_tokens - start
            while len(t) * BS < start + n:
                t.append(next_block)
                next_block += 1
            sched.append(ScheduledRequest(r, start, n, t, True))
        out = SchedulerOutput(sched)
        t0 = time.perf_counter()
        runner.prepare(out)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit.observe(((x.start, x.num_new_tokens) for x in out.scheduled), 0.01)
        observe.append(time.perf_counter() - t0)
        for i, r in enumerate(reqs):      # the step computed them and sampled one token each;
            r.num_computed_tokens = r.num_tokens    # the chunked one gets a new suffix to prefill
            for _ in range(chunk if i == 0 and chunk else 1):
                r.append_output_token(1)
    steady = observe[steps // 4:]
    return statistics.median(times[steps // 4:]), statistics.median(steady), statistics.fmean(steady)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", default=None, help="write the rows to this file")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    def row(case: str, ctx: int, contexts: list[int], chunk: int) -> dict:
        ms, obs, obs_mean = (1e3 * x for x in _measure(contexts, chunk, a.steps))
        return {"case": case, "context": ctx, "ms": ms, "observe_ms": obs, "observe_mean_ms": obs_mean}

    for ctx in (1024, 8192, 32768, 131072):
        rows.append(row(f"{a.seqs} decodes @ {ctx // 1024}k", ctx, [ctx] * a.seqs, 0))
    for ctx in (8192, 131072):
        rows.append(row(f"512-chunk over {ctx // 1024}k + {a.seqs - 1} decodes @ 2k", ctx,
                        [ctx] + [2048] * (a.seqs - 1), 512))
    print(f"{'case':<44} {'prepare ms':>10} {'observe ms':>10} {'(mean)':>8}")
    for r in rows:
        print(f"{r['case']:<44} {r['ms']:>10.3f} {r['observe_ms']:>10.3f} {r['observe_mean_ms']:>8.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": "benchmarks/step_host_time.py", "tree": continuum.__file__,
                       "machine": {"cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads()},
                       "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
