"""Time ``LLM()`` start-up, each run in a fresh Python process (what a user waits for).

    python benchmarks/startup.py [--runs 2] [--model MODEL] [--cache-dir DIR] [--phases]

Prints, per run: the import time of ``continuum.LLM`` (torch, transformers...), the time of
``LLM(model)`` itself, and the 1-minute load average (the shared test machine is rarely
idle: read numbers next to it). ``--phases`` also prints the engine's per-phase lines.
``--cache-dir`` sets ``CONTINUUM_CACHE_DIR`` for the children (an empty folder measures a
cold start: kernel build and tokenizer conversion included). Run from the repository root.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import json, os, sys, time
t0 = time.perf_counter()
from continuum import LLM
t1 = time.perf_counter()
LLM(None if sys.argv[1] == "default" else sys.argv[1])
t2 = time.perf_counter()
print("RESULT " + json.dumps({"import_s": t1 - t0, "llm_s": t2 - t1, "loadavg": os.getloadavg()[0]}))
"""


def run_once(model: str, env: dict[str, str], phases: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, model], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"LLM({model!r}) failed:\n{proc.stderr[-3000:]}")
    if phases:
        print("".join(f"    {line}\n" for line in proc.stderr.splitlines()), end="")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--model", default="default", help="'default' or any LLM() model spec")
    ap.add_argument("--cache-dir", default=None, help="CONTINUUM_CACHE_DIR for the children")
    ap.add_argument("--phases", action="store_true", help="print the per-phase log lines")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if a.cache_dir:
        env["CONTINUUM_CACHE_DIR"] = a.cache_dir
    for i in range(a.runs):
        r = run_once(a.model, env, a.phases)
        print(f"run {i + 1}: import {r['import_s']:.1f} s, LLM() {r['llm_s']:.1f} s, "
              f"total {r['import_s'] + r['llm_s']:.1f} s (load average {r['loadavg']:.1f})", flush=True)


if __name__ == "__main__":
    main()
