"""Soak test of the server: mixed agent programs with tool gaps and random disconnects.

Starts ``continuum serve MODEL --enable-debug-endpoints`` on loopback, then runs --programs
concurrent agent programs for --duration seconds (bounded). Each program: 2-8 chat turns with
one ``program_id``, tools, a fake tool call + result appended after each turn, a tool gap
(exponential, mean --tool-gap-s) between turns, ``is_last_step`` on the last one. With
probability --p-disconnect a turn hangs up mid-stream (or times out a non-streaming call),
which the server must turn into an abort. Every --sample-s seconds it records the server's RSS
and /debug/kv. At the end it lets the server go idle and checks: zero 5xx, KV integrity ok,
zero blocks in use apart from live pins, RSS flat (second half growth under --max-rss-growth).

    python benchmarks/serve_soak.py --duration 600 --programs 16 \\
        --out benchmarks/results/serve-soak/result.json
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import HOST, free_port, stop, wait_health  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {
    "type": "object", "properties": {"cmd": {"type": "string"}}}}}]
TOOL_NAMES = ["ls", "cat", "grep", "pytest", "git", "sed"]


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Stats:
    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.turns = self.programs = self.disconnects = self.client_errors = 0
        self.cached_tokens = 0

    def code(self, c: int | str) -> None:
        self.status[str(c)] = self.status.get(str(c), 0) + 1


async def program(a, client: httpx.AsyncClient, url: str, pid: str, rng: random.Random, st: Stats):
    turns = rng.randint(2, 8)
    messages = [{"role": "system", "content": "You are a coding agent. " * rng.randint(2, 10)},
                {"role": "user", "content": f"Fix issue {pid}: " + "details " * rng.randint(5, 40)}]
    for turn in range(turns):
        last = turn == turns - 1
        tool = rng.choice(TOOL_NAMES)
        body = {"model": a.model_name, "messages": messages, "tools": TOOLS, "max_tokens": rng.randint(4, 48),
                "ignore_eos": True, "stream": rng.random() < 0.5,
                "continuum": {"program_id": pid, "is_last_step": last, "tool_name": tool}}
        hang_up = rng.random() < a.p_disconnect
        try:
            if body["stream"]:
                async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                    st.code(r.status_code)
                    n = 0
                    async for line in r.aiter_lines():
                        n += line.startswith("data: {")
                        if hang_up and n >= 2:
                            st.disconnects += 1
                            return                            # closes the connection mid-stream
            else:
                timeout = httpx.Timeout(60, read=0.05) if hang_up else httpx.Timeout(60)
                try:
                    r = await client.post(url + "/v1/chat/completions", json=body, timeout=timeout)
                except httpx.ReadTimeout:
                    st.disconnects += 1
                    return
                st.code(r.status_code)
                if r.status_code == 200:
                    st.cached_tokens += r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
        except httpx.HTTPError:
            st.client_errors += 1
            return
        st.turns += 1
        call_id = f"call_{pid}_{turn}"
        messages += [{"role": "assistant", "content": None, "tool_calls": [
                          {"id": call_id, "type": "function",
                           "function": {"name": "bash", "arguments": json.dumps({"cmd": f"{tool} x"})}}]},
                     {"role": "tool", "tool_call_id": call_id, "content": "out " * rng.randint(1, 30)}]
        if not last:
            await asyncio.sleep(min(rng.expovariate(1 / a.tool_gap_s), 10 * a.tool_gap_s))
    st.programs += 1


async def drive(a, url: str, st: Stats, server_pid: int, samples: list) -> None:
    rng = random.Random(a.seed)
    stop_at = time.monotonic() + a.duration
    counter = [0]

    async def runner(i: int) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            while time.monotonic() < stop_at:
                counter[0] += 1
                await program(a, client, url, f"p{counter[0]}", random.Random(rng.random()), st)

    async def sampler() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while time.monotonic() < stop_at:
                kv = (await client.get(url + "/debug/kv")).json()
                samples.append({"t": round(a.duration - (stop_at - time.monotonic()), 1),
                                "rss_kib": rss_kib(server_pid), "in_use": kv["stats"]["kv_blocks_in_use"],
                                "in_flight": kv["num_in_flight"], "ok": kv["ok"]})
                await asyncio.sleep(a.sample_s)

    await asyncio.wait_for(asyncio.gather(sampler(), *(runner(i) for i in range(a.programs))),
                           timeout=a.duration + 300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:tiny")
    ap.add_argument("--model-name", default="soak")
    ap.add_argument("--scheduling-policy", default="vllm")
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--programs", type=int, default=16)
    ap.add_argument("--tool-gap-s", type=float, default=0.5)
    ap.add_argument("--p-disconnect", type=float, default=0.1)
    ap.add_argument("--sample-s", type=float, default=15)
    ap.add_argument("--max-rss-growth", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/serve-soak/result.json")
    a = ap.parse_args()
    if a.duration > 3600 or a.programs > 256:
        raise SystemExit("bounded on purpose: --duration <= 3600, --programs <= 256")
    port = free_port()
    url = f"http://{HOST}:{port}"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "continuum.cli", "serve", a.model, "--host", HOST, "--port", str(port),
           "--served-model-name", a.model_name, "--enable-debug-endpoints", "--dtype", "float32",
           "--kv-cache-memory", "64MiB", "--max-model-len", "2048",
           "--scheduling-policy", a.scheduling_policy, "--log-level", "warning"]
    log = open(out.with_suffix(".server.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    st, samples = Stats(), []
    try:
        try:
            wait_health(url, proc, 120)
        except RuntimeError as e:
            raise SystemExit(f"server did not start: {e} (see {log.name})") from None
        t0 = time.monotonic()
        asyncio.run(drive(a, url, st, proc.pid, samples))
        # let pins expire, then one request runs a schedule() (pins are expired lazily there)
        time.sleep(3)
        httpx.post(url + "/v1/completions", json={"model": a.model_name, "prompt": "x", "max_tokens": 1},
                   timeout=30)
        for _ in range(100):
            kv = httpx.get(url + "/debug/kv", timeout=30).json()
            if kv["num_in_flight"] == 0 and kv["stats"]["num_requests_running"] == 0:
                break
            time.sleep(0.1)
        wall = time.monotonic() - t0
        pinned = kv["stats"].get("pinned_blocks", 0)
        half = [s["rss_kib"] for s in samples[len(samples) // 2:]] or [0]
        growth = (half[-1] - half[0]) / max(half[0], 1)
        five_xx = sum(v for k, v in st.status.items() if k.startswith("5"))
        result = {"command": " ".join(sys.argv), "server_command": " ".join(cmd), "wall_s": round(wall, 1),
                  "programs_completed": st.programs, "turns": st.turns, "disconnects": st.disconnects,
                  "client_errors": st.client_errors, "status_codes": st.status, "five_xx": five_xx,
                  "cached_tokens_non_streaming": st.cached_tokens,
                  "final_kv": {"ok": kv["ok"], "error": kv["error"], "in_use": kv["stats"]["kv_blocks_in_use"],
                               "pinned_blocks": pinned},
                  "leaked_blocks": kv["stats"]["kv_blocks_in_use"] - pinned,
                  "rss_kib_first": samples[0]["rss_kib"] if samples else None,
                  "rss_kib_last": samples[-1]["rss_kib"] if samples else None,
                  "rss_growth_second_half": round(growth, 4), "samples": samples}
        result["pass"] = bool(five_xx == 0 and kv["ok"] and result["leaked_blocks"] == 0
                              and growth < a.max_rss_growth)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    finally:
        stop(proc, log)


if __name__ == "__main__":
    main()
