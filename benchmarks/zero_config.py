"""Zero-config programs: recognition accuracy through the real server, no ids sent.

    python benchmarks/zero_config.py --out benchmarks/results/zero-config

Starts ``continuum serve random:tiny`` (CPU, random weights, byte tokenizer) in a subprocess
and replays three seeded generated workloads with the official ``openai`` client, sending no
program id, job_id or header (``continuum/bench/zero_config.py`` says how conversations are
built and scored):

- ``agents``: coding-agent sessions (``workloads.coding_agent``), tool results as ``tool``
  messages, tool schemas on every request, one agent system prompt shared by all;
- ``chat``: human-paced conversations (``workloads.chat``), no system prompt;
- ``mix-shared-system``: agents and chats (``workloads.mix``), every one of them starting with
  the same long system prompt (the case where a shared prefix must not merge programs).

Tokens are scaled (``--token-scale``) to fit the 2048-token model; tool and think times are
slept at ``--time-scale``. Writes ``results.json`` (command, per-workload scores, the server's
recognition counters from /metrics) in ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from server_proc import HOST, free_port, stop, wait_health  # noqa: E402

COUNTERS = ("programs_inferred_total", "turns_attached_total", "program_forks_total",
            "program_signatures", "program_signatures_evicted_total")


def counters(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(url + "/metrics", timeout=30).text
    out = {}
    for name in COUNTERS:
        m = re.search(rf"^continuum_{name} (\S+)$", text, re.M)
        out[name] = float(m.group(1)) if m else None
    return out


def workloads(a: argparse.Namespace):
    from continuum.bench.workloads import chat, coding_agent, mix, rescale
    from continuum.bench.zero_config import words
    import numpy as np

    rng = np.random.default_rng([a.seed, 0x5157])
    agent_system = "You are a coding agent. " + words(rng, a.agent_system_chars)
    long_system = "You are a helpful assistant for ACME. " + words(rng, a.shared_system_chars)
    scale = dict(tokens=a.token_scale, time=1.0, max_turns=a.max_turns)
    return [("agents", rescale(coding_agent(a.programs, a.seed), **scale), agent_system),
            ("chat", rescale(chat(a.programs, a.seed), **scale), None),
            ("mix-shared-system", rescale(mix(a.programs, a.seed), **scale), long_system)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/zero-config")
    p.add_argument("--programs", type=int, default=100, help="programs per workload")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-scale", type=float, default=0.02)
    p.add_argument("--time-scale", type=float, default=0.002, help="tool/think seconds slept per trace second")
    p.add_argument("--max-turns", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--agent-system-chars", type=int, default=300)
    p.add_argument("--shared-system-chars", type=int, default=700)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    from continuum.bench.zero_config import replay, score

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "continuum.cli", "serve", "random:tiny", "--host", HOST,
           "--port", str(port), "--dtype", "float32", "--device", "cpu", "--kv-cache-memory", "64MiB",
           "--log-level", "warning"]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    log = open(out / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    report = {"command": "python " + " ".join(shlex.quote(x) for x in sys.argv),
              "server": " ".join(shlex.quote(x) for x in cmd[1:]), "workloads": {}}
    try:
        wait_health(url, proc, 180)
        for name, progs, system in workloads(a):
            before = counters(url)
            results, cut, wall = asyncio.run(replay(
                url, "random:tiny", progs, shared_system=system, seed=a.seed,
                time_scale=a.time_scale, concurrency=a.concurrency))
            after = counters(url)
            s = score(results)
            s.update(wall_seconds=round(wall, 1), programs_cut_short=len(cut),
                     shared_system_chars=len(system) if system else 0,
                     server_counters={k: (after[k] - before[k]) if k.endswith("_total") else after[k]
                                      for k in COUNTERS})
            report["workloads"][name] = s
            print(f"{name}: {s['turns']} turns of {s['programs']} programs, accuracy "
                  f"{s['accuracy']:.4f} (continuations {s['continuation_accuracy']:.4f}), merges "
                  f"{s['merges']}, splits {s['splits']}, {wall:.0f} s", flush=True)
    finally:
        stop(proc, log)
        if not (out / "server.log").stat().st_size:
            (out / "server.log").unlink()           # nothing went wrong: no log to keep
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
