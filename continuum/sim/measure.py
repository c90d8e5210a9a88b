"""``continuum profile``: measure a profile (profile.py format) on this machine with the real
engine's model runner, in the same shape as ../shared/calibration/calibrate.py:
prefill of N new tokens over C cached ones, decode steps of batch B at context L, and mixed
steps (a prefill chunk plus a decode batch).

Steps are fabricated SchedulerOutputs run through ``ModelRunner.execute`` on the engine's own
paged KV cache (block ids are arbitrary distinct blocks), so the numbers are what the engine's
executor costs. ``step_overhead_s`` adds the mean time of an engine step outside the model
(scheduling, output building), measured with a short decode run through ``LLMEngine.step``.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from continuum.request import Request
from continuum.sampling_params import SamplingParams
from continuum.scheduler.output import ScheduledRequest, SchedulerOutput


def _timeit(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def measure_profile(engine_kwargs: dict[str, Any], prefill_new: list[int], prefill_cached: list[int],
                    decode_batch: list[int], decode_ctx: list[int], reps: int = 3,
                    name: str = "cpu") -> dict[str, Any]:
    from continuum.config import EngineArgs
    from continuum.engine.cache_engine import bytes_per_block
    from continuum.engine.engine import LLMEngine

    engine = LLMEngine(EngineArgs.from_kwargs(**engine_kwargs))
    runner, bs = engine.runner, engine.args.block_size
    nblocks = int(engine.stats()["kv_blocks_total"])
    params = SamplingParams(max_tokens=1, temperature=0.0)

    def seq(rid: str, length: int, first_block: int) -> tuple[Request, list[int]]:
        req = Request(rid, [i % 200 for i in range(length + 1)], params, 0.0)
        need = -(-(length + 1) // bs)
        if first_block + need > nblocks:
            raise ValueError(f"KV cache too small for {length} tokens at block {first_block}")
        return req, list(range(first_block, first_block + need))

    prefill = []
    for c in prefill_cached:
        for n in prefill_new:
            if c + n >= engine.max_model_len:
                continue
            req, blocks = seq("p", c + n, 0)
            out = SchedulerOutput([ScheduledRequest(req, c, n, blocks, True)])
            prefill.append({"cached": c, "new": n, "seconds": _timeit(lambda: runner.execute(out), reps)})
    decode = []
    for length in decode_ctx:
        for b in decode_batch:
            per = -(-(length + 1) // bs)
            if b * per > nblocks or length >= engine.max_model_len:
                continue
            sched = []
            for i in range(b):
                req, blocks = seq(f"d{i}", length, i * per)
                sched.append(ScheduledRequest(req, length - 1, 1, blocks, True))
            out = SchedulerOutput(sched)
            decode.append({"batch": b, "context": length, "seconds": _timeit(lambda: runner.execute(out), reps)})
    # Mixed steps: one prefill chunk plus a decode batch in the same forward pass (what
    # chunked prefill produces under load; on CPUs the decodes then take the varlen path).
    mixed = []
    # Two decode contexts, so the per-sequence and per-context mixed costs are identifiable.
    for n, b, length in ((n, b, l) for n in prefill_new[-2:] for b in decode_batch[-2:] for l in decode_ctx[-2:]):
        per = -(-(length + 1) // bs)
        pre_blocks = -(-(prefill_cached[-1] + n + 1) // bs)
        if b * per + pre_blocks > nblocks or prefill_cached[-1] + n >= engine.max_model_len:
            continue
        sched = []
        for i in range(b):
            req, blocks = seq(f"m{i}", length, i * per)
            sched.append(ScheduledRequest(req, length - 1, 1, blocks, True))
        req, blocks = seq("mp", prefill_cached[-1] + n, b * per)
        sched.append(ScheduledRequest(req, prefill_cached[-1], n, blocks, True))
        out = SchedulerOutput(sched)
        mixed.append({"cached": prefill_cached[-1], "new": n, "batch": b, "context": length,
                      "seconds": _timeit(lambda: runner.execute(out), reps)})
    # Per-step overhead outside the model: a short real decode run, minus the runner's time.
    engine.add_request(list(range(1, 33)), SamplingParams(max_tokens=24, ignore_eos=True, temperature=0.0))
    engine.step_times.clear()
    t = time.perf_counter()
    n = 0
    while engine.has_unfinished_requests():
        engine.step()
        n += 1
    wall = time.perf_counter() - t
    overhead = max((wall - sum(engine.step_times)) / max(n, 1), 0.0)
    model = engine.loaded.model
    cfg = model.config
    attn = model.attention_layers()[0]            # every layer's KV has the same shape
    kv_heads, head_dim, dtype_bytes = attn.num_kv_heads, attn.head_size, engine.dtype.itemsize
    cap = nblocks * bytes_per_block(model, bs, engine.dtype)
    from continuum.models.loader import num_params
    return {"name": name, "device": str(engine.device), "source": f"continuum profile {engine_kwargs}",
            "model": {"layers": cfg.num_hidden_layers, "kv_heads": kv_heads, "head_dim": head_dim,
                      "dtype_bytes": dtype_bytes, "params": num_params(cfg), "max_model_len": engine.max_model_len},
            # The KV capacity the engine had (weights excluded) is what the simulator needs.
            "memory": {"device_bytes": cap / 0.87, "weights_bytes": 0.0},
            "bandwidth": {"h2d_Bps": 10e9, "d2h_Bps": 10e9, "swap_latency_s": 1e-5},
            "prefill": prefill, "decode": decode, "mixed": mixed, "step_overhead_s": overhead}
