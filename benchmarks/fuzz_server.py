"""Fuzz a real ``continuum serve`` with malformed and hostile requests.

Starts the server as a subprocess (random tiny model, debug endpoints on, loopback), then
sends ``--requests`` requests from ``--workers`` threads at once, so hostile requests share
batches with valid ones. Each request is a valid body (completions, chat, chat with tools and
tool calls, agent fields, streaming or not) with one to four fields mutated: wrong types,
out-of-range and huge numbers, NaN/Infinity, lone surrogates, control characters, huge strings
and lists, deep nesting, unknown fields; plus raw-byte attacks (invalid JSON, invalid UTF-8,
truncated bodies, wrong content types, oversized bodies) and clients that disconnect
mid-stream. Afterwards: the process must be alive, /health 200, ``/debug/kv`` integrity ok and
no KV block in use.

Pass criteria (exit status 1 otherwise): no response >= 500, no engine death, integrity ok,
zero blocks in use. Results (counts by status and by kind, the first examples of each, the
command, the machine) go to ``--out`` as JSON.

    python benchmarks/fuzz_server.py --requests 2500 --out benchmarks/results/fuzz/result.json
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import HOST, free_port, stop, wait_health  # noqa: E402

MODEL = "random:tiny"
VOCAB = 261

# -- hostile values -------------------------------------------------------------------------------
NUMBERS = [0, -1, 1, 2, 7, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), 1e-300,
           -1e-300, 1e308, -1e308, 0.5, 1e30, -1e30, math.nan, math.inf, -math.inf]
STRINGS = ["", " ", "x", "\x00", "\ud800", "a\udfffb", "\ud83d\ude00", "é" * 50, "\u202e" * 10,
           "</tool_call>", "<|im_end|>", "{{ 7*7 }}", "{% raw %}", "x" * 5000, "\n" * 100,
           "null", "[]", "\\", "\"", "\uffff"]
SCALARS = NUMBERS + STRINGS + [True, False, None]


def nested(depth: int, leaf=0):
    obj = leaf
    for i in range(depth):
        obj = [obj] if i % 2 else {"k": obj}
    return obj


def hostile(rng: random.Random):
    """One hostile JSON value."""
    kind = rng.random()
    if kind < 0.55:
        return rng.choice(SCALARS)
    if kind < 0.7:
        return [rng.choice(SCALARS) for _ in range(rng.randint(0, 5))]
    if kind < 0.8:
        return {rng.choice(["a", "", "\ud800", "role", "type"]): rng.choice(SCALARS)}
    if kind < 0.9:
        return nested(rng.choice([3, 63, 65, 200, 900]))
    return [rng.randrange(-5, 2**33) for _ in range(rng.choice([1, 10, 3000]))]


# -- valid bodies to mutate ------------------------------------------------------------------------
SAMPLING_FIELDS = ["max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "n", "stream",
                   "stop", "presence_penalty", "frequency_penalty", "repetition_penalty",
                   "ignore_eos", "min_tokens", "stop_token_ids", "skip_special_tokens",
                   "include_stop_str_in_output", "logit_bias", "user", "model", "stream_options",
                   "logprobs", "cache_salt"]
AGENT_FIELDS = ["continuum", "program_id", "job_id", "is_last_step", "tool_name",
                "this_func_call", "last_func_call", "turn"]
TOOLS = [{"type": "function", "function": {"name": "bash", "description": "run a command",
                                           "parameters": {"type": "object", "properties": {
                                               "cmd": {"type": "string"}}}}}]


# Type-correct values at and just past the edges of each range: these reach the engine.
EDGES = {
    "temperature": [0, 1e-5, 2e-5, 100, 100.0001, 1e-300], "top_p": [1e-9, 1, 1.0000001],
    "top_k": [-1, 0, 1, VOCAB, 2**62, -2], "min_p": [0, 1, 0.999], "seed": [-(2**63), 2**63 - 1, 2**63],
    "presence_penalty": [-2, 2, 2.0001], "frequency_penalty": [-2, 2, -2.0001],
    "repetition_penalty": [0.01, 2, 0.0099, 1e-300], "min_tokens": [0, 3, 8, 9, 10**6],
    "max_tokens": [1, 8, 4000, 10**9], "logprobs": [0, 20, 21],
    "stop_token_ids": [[0], [VOCAB - 1], [VOCAB], list(range(VOCAB)), list(range(VOCAB - 1))],
    "stop": [["a"], ["x" * 256] * 64, ["x" * 257], ["y"] * 65, "<|im_end|>"],
}


def valid_body(rng: random.Random) -> tuple[str, dict]:
    common = {"max_tokens": rng.randint(1, 8), "temperature": rng.choice([0, 0.7, 1.0]),
              "stream": rng.random() < 0.3}
    if rng.random() < 0.4:
        common["continuum"] = {"program_id": f"p{rng.randrange(50)}", "is_last_step": rng.random() < 0.3}
    if rng.random() < 0.4:
        prompt = rng.choice(["hello", "a b c", [1, 2, 3], ["x", "y"], [[4, 5], [6]]])
        return "/v1/completions", {"prompt": prompt, **common}
    msgs = [{"role": "user", "content": rng.choice(["hi", "list files", [{"type": "text", "text": "t"}]])}]
    if rng.random() < 0.4:
        msgs += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}]},
                 {"role": "tool", "tool_call_id": "c1", "content": "a.txt"}]
    body = {"messages": msgs, **common}
    if rng.random() < 0.5:
        body["tools"] = TOOLS
    return "/v1/chat/completions", body


def mutate(rng: random.Random, path: str, body: dict) -> tuple[str, dict, str]:
    """Mutate 1-4 places of the body; returns (path, body, label of the first mutation)."""
    labels = []
    for _ in range(rng.randint(1, 4)):
        where = rng.random()
        if where < 0.2:
            field = rng.choice(sorted(EDGES))
            body[field] = rng.choice(EDGES[field])
            if rng.random() < 0.5:
                body["min_tokens"] = rng.choice([0, 2, 5])
        elif where < 0.5:
            field = rng.choice(SAMPLING_FIELDS)
            body[field] = hostile(rng)
        elif where < 0.62:
            field = rng.choice(AGENT_FIELDS)
            body[field] = hostile(rng) if rng.random() < 0.7 else {rng.choice(AGENT_FIELDS): hostile(rng)}
        elif where < 0.8 and isinstance(body.get("messages"), list) and body["messages"] \
                and all(isinstance(m, dict) for m in body["messages"]):
            field = "messages"
            msg = rng.choice(body["messages"])
            key = rng.choice(["role", "content", "name", "tool_calls", "tool_call_id", "extra"])
            msg[key] = hostile(rng)
            if key == "tool_calls" and rng.random() < 0.5:
                msg[key] = [{"id": "c", "type": "function", "function": {
                    "name": rng.choice(["f", "", "\ud800", "x" * 300]),
                    "arguments": rng.choice(["{", "[" * 5000 + "]" * 5000, json.dumps(nested(70)),
                                             "\"\\ud800\"", "{}", "null"])}}]
        elif where < 0.9 and "tools" in body:
            field = "tools"
            body["tools"] = rng.choice([hostile(rng), [{"type": "function", "function": {
                "name": rng.choice(["", "a" * 300, "\ud800"]), "parameters": nested(rng.choice([5, 70]))}}]])
        elif "prompt" in body:
            field = "prompt"
            body["prompt"] = rng.choice([hostile(rng), [True], [VOCAB], [-1], [], "", "\ud800x",
                                         ["\ud800"], [[1, True]], "y" * 20000])
        else:
            field = "messages"
            body["messages"] = hostile(rng)
        labels.append(field)
    return path, body, labels[0]


RAW_ATTACKS = [
    ("invalid-json", b'{"prompt": "x", "max_tokens": ', "application/json"),
    ("not-utf8", b'{"prompt": "\xff\xfe\xfd"}', "application/json"),
    ("json-array", b"[1, 2, 3]", "application/json"),
    ("json-null", b"null", "application/json"),
    ("nan-literal", b'{"prompt": "x", "temperature": NaN}', "application/json"),
    ("text-plain", b'{"prompt": "x", "max_tokens": 2}', "text/plain"),
    ("form", b"prompt=x", "application/x-www-form-urlencoded"),
    ("empty", b"", "application/json"),
    ("deep-body", b'{"prompt": "x", "e": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
    ("huge-body", b'{"prompt": "' + b"x" * (17 * 2**20) + b'"}', "application/json"),
    ("bom", b'\xef\xbb\xbf{"prompt": "x", "max_tokens": 2}', "application/json"),
]


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_status: collections.Counter = collections.Counter()
        self.by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.failures: list[dict] = []
        self.examples: dict[str, dict] = {}

    def add(self, kind: str, status: int | str, detail: dict) -> None:
        with self.lock:
            self.by_status[str(status)] += 1
            self.by_kind[kind][str(status)] += 1
            bad = not isinstance(status, int) or status >= 500
            if bad and len(self.failures) < 50:
                self.failures.append({"kind": kind, "status": status, **detail})
            key = f"{kind}:{status}"
            if key not in self.examples and len(self.examples) < 300:
                self.examples[key] = detail


def send_json(client: httpx.Client, url: str, path: str, body: dict, rng: random.Random,
              tally: Tally, label: str, headers: dict) -> None:
    # json.dumps writes NaN/Infinity literals and escapes lone surrogates: both are hostile input
    content = json.dumps(body).encode()
    detail = {"path": path, "body": content[:300].decode("utf-8", "replace")}
    streaming = body.get("stream") is True
    disconnect_after = rng.choice([None, None, 1, 3]) if streaming else None
    try:
        with client.stream("POST", url + path, content=content, headers=headers) as r:
            status = r.status_code
            if disconnect_after is not None and status == 200:
                for i, _ in enumerate(r.iter_lines()):
                    if i >= disconnect_after:
                        break                       # drop the connection mid-stream
                label += "+disconnect"
            else:
                text = r.read().decode("utf-8", "replace")
                if status == 200 and streaming and '"error"' in text:
                    status = "stream-error"         # an error event after the headers
                detail["response"] = text[:300]
    except httpx.HTTPError as e:
        status = f"transport:{type(e).__name__}"
    tally.add(label, status, detail)


def send_raw(client: httpx.Client, url: str, name: str, content: bytes, ctype: str,
             tally: Tally) -> None:
    try:
        r = client.post(url + "/v1/completions", content=content, headers={"content-type": ctype})
        tally.add("raw:" + name, r.status_code, {"response": r.text[:300]})
    except httpx.HTTPError as e:
        tally.add("raw:" + name, f"transport:{type(e).__name__}", {})


def worker(url: str, seed: int, n: int, tally: Tally, health_failures: list) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=120) as client:
        for i in range(n):
            r = rng.random()
            if r < 0.06:
                name, content, ctype = rng.choice(RAW_ATTACKS)
                send_raw(client, url, name, content, ctype, tally)
                continue
            path, body = valid_body(rng)
            label = "valid"
            if r >= 0.15:                        # 85% hostile, 9% valid bodies, 6% raw bytes
                path, body, label = mutate(rng, path, body)
            headers = {"content-type": "application/json"}
            if rng.random() < 0.1:
                headers["x-program-id"] = rng.choice(["p1", "", "a b", "x" * 300, "é".encode("latin-1"),
                                                      b"\xff\xfe"])
            send_json(client, url, path, body, rng, tally, label, headers)
            if i % 50 == 49 and client.get(url + "/health").status_code != 200:
                health_failures.append(i)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2500, help="requests in all (default 2500)")
    ap.add_argument("--workers", type=int, default=8, help="concurrent client threads (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", default=None, help="fuzz a running server instead (needs "
                    "--enable-debug-endpoints for the integrity check)")
    ap.add_argument("--out", default=None, help="JSON results file (default: print only)")
    a = ap.parse_args()

    proc = log = None
    url = a.url
    if url is None:
        port = free_port()
        url = f"http://{HOST}:{port}"
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        log = open(os.devnull, "w") if a.out is None else open(Path(a.out).with_suffix(".server.log"), "w")
        cmd = [sys.executable, "-m", "continuum.cli", "serve", MODEL, "--host", HOST, "--port", str(port),
               "--dtype", "float32", "--kv-cache-memory", "16MiB", "--max-model-len", "2048",
               "--enable-debug-endpoints", "--log-level", "warning"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_health(url, proc, timeout=300)
    tally, health_failures = Tally(), []
    t0 = time.monotonic()
    per = [a.requests // a.workers + (i < a.requests % a.workers) for i in range(a.workers)]
    threads = [threading.Thread(target=worker, args=(url, a.seed * 1000 + i, n, tally, health_failures))
               for i, n in enumerate(per)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        alive = proc is None or proc.poll() is None
        health = httpx.get(url + "/health", timeout=30).status_code if alive else None
        kv = idle_kv(url) if alive else None
    finally:
        if proc is not None:
            stop(proc, log)
    total = sum(tally.by_status.values())
    n5xx = sum(v for k, v in tally.by_status.items() if not k.isdigit() or int(k) >= 500)
    passed = (alive and health == 200 and n5xx == 0 and not health_failures and kv is not None
              and kv["ok"] and kv["stats"]["kv_blocks_in_use"] == 0)
    result = {
        "passed": passed, "requests": total, "responses_5xx_or_transport": n5xx,
        "by_status": dict(sorted(tally.by_status.items())),
        "by_kind": {k: dict(v) for k, v in sorted(tally.by_kind.items())},
        "server_alive": alive, "final_health": health, "health_failures": health_failures,
        "kv_integrity_ok": kv["ok"] if kv else None,
        "kv_blocks_in_use": kv["stats"]["kv_blocks_in_use"] if kv else None,
        "failures": tally.failures, "seconds": round(elapsed, 1),
        "command": " ".join(["python"] + sys.argv), "seed": a.seed, "workers": a.workers,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "examples": tally.examples,
    }
    print(f"{total} requests in {elapsed:.0f} s from {a.workers} threads: "
          f"{dict(sorted(tally.by_status.items()))}")
    print(f"5xx/transport errors: {n5xx}; server alive: {alive}; /health: {health}; "
          f"KV integrity: {result['kv_integrity_ok']}; blocks in use: {result['kv_blocks_in_use']}")
    for f in tally.failures[:10]:
        print("FAILURE", json.dumps(f)[:400])
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1, ensure_ascii=True) + "\n")
        print("wrote", a.out)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


def idle_kv(url: str, timeout: float = 120.0) -> dict:
    """/debug/kv once nothing is in flight (aborted streams are freed asynchronously) and every
    TTL pin has expired. Pins expire lazily, at the next scheduler step, so a one-token request
    of no program is sent each second to step the engine."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url + "/debug/kv", timeout=30)
        if r.status_code != 200:                    # the engine is dead
            return {"ok": False, "error": r.text[:300], "stats": {"kv_blocks_in_use": None}}
        kv = r.json()
        s = kv["stats"]
        idle = s["num_requests_running"] == 0 and s["num_requests_waiting"] == 0
        if (kv["num_in_flight"] == 0 and idle and s["pinned_programs"] == 0) \
                or time.monotonic() > deadline:
            return kv
        if idle:
            httpx.post(url + "/v1/completions", json={"prompt": "tick", "max_tokens": 1}, timeout=30)
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
