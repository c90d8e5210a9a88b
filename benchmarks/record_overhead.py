"""What ``continuum serve --record-trace`` costs in server throughput (loopback only).

The same load as benchmarks/serve_load.py (N concurrent streaming clients on /v1/completions,
random token-id prompts, forced output length) against two fresh servers per repeat: one
without recording and one with ``--record-trace`` (to a temp file), in alternating order
(off/on, then on/off, ...) so that drift of a shared machine hits both sides alike. Every
request carries no program id, so every request is a program line of its own: the most lines
per token the recorder ever writes.

Reported: per run output tokens/s and requests/s; per repeat the ratio on/off of output
tokens/s (paired runs); the median, min and max ratio, and the overhead = 1 - median ratio.
The recording of every "on" run is loaded with the trace loader and its program count checked
against the requests the server completed (warm-up included).

    python benchmarks/record_overhead.py --repeats 4 --duration 20 --out benchmarks/results/record
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from serve_load import load  # noqa: E402
from server_proc import HOST, free_port, stop, wait_health  # noqa: E402


def one_run(a, model_dir: str, record: Path | None, vocab: int, log_path: Path) -> dict:
    """A fresh server (recording into ``record`` when given), warm-up, then the measured load."""
    port = free_port()
    cmd = [sys.executable, "-m", "continuum.cli", "serve", model_dir, "--host", HOST, "--port", str(port),
           "--dtype", a.dtype, "--kv-cache-memory", a.kv_cache, "--served-model-name", a.model,
           "--max-waiting-requests", str(10 * a.clients), "--log-level", "warning"]
    if record is not None:
        cmd += ["--record-trace", str(record)]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        wait_health(url, proc, 180)
        warm = argparse.Namespace(**{**vars(a), "duration": 2, "max_requests": a.clients})
        w = asyncio.run(load(warm, url, a.model, "warm-up", vocab))
        r = asyncio.run(load(a, url, a.model, "on" if record else "off", vocab))
    finally:
        stop(proc, log)                     # SIGTERM: graceful shutdown writes the recording
    r["completed_with_warmup"] = r["requests"] + w["requests"]
    if record is not None:
        from continuum.bench.trace import load_trace
        files = sorted(record.parent.glob(record.name + "*"))
        r["recorded_programs"] = sum(len(load_trace(f)) for f in files)
        r["recorded_bytes"] = sum(f.stat().st_size for f in files)
    return r


def recorder_cost(n: int, tmp: Path) -> dict:
    """CPU time the recorder itself spends per request, measured in-process (robust to a
    busy machine, unlike the A/B throughput): ``n`` one-turn requests of the load's shape
    through ``begin``/``finish`` (the event loop's share: that thread's CPU time) and then
    ``close`` (the writer thread's JSON and writes; the process CPU time over both phases is
    the total, an upper bound since it includes the interpreter's own work)."""
    from continuum.entrypoints.openai.record import RecordOptions, TraceRecorder
    from continuum.outputs import CompletionOutput, RequestMetrics, RequestOutput
    from continuum.request import AgentInfo

    rec = TraceRecorder(RecordOptions(record_trace=str(tmp / "micro.jsonl")))
    rec.start()
    outs = [RequestOutput(f"r{i}", None, list(range(128)),
                          [CompletionOutput(0, "", list(range(32)), finish_reason="length")],
                          True, RequestMetrics(0.0)) for i in range(n)]
    agent = AgentInfo()
    p0, t0 = time.process_time(), time.thread_time()
    for i, out in enumerate(outs):
        rec.begin(out.request_id, agent, float(i))
        rec.finish(out, float(i), float(i) + 0.5)
    loop_s = time.thread_time() - t0
    rec.close()
    total_s = time.process_time() - p0
    assert rec.programs_written == n
    return {"requests": n, "event_loop_us_per_request": round(1e6 * loop_s / n, 2),
            "total_cpu_us_per_request": round(1e6 * total_s / n, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama-80m", help="benchmarks/models.py name")
    ap.add_argument("--repeats", type=int, default=4, help="pairs of runs (off + on)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-requests", type=int, default=100000)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--kv-cache", default="1GiB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the server")
    ap.add_argument("--out", default=str(HERE / "results" / "record"))
    a = ap.parse_args()
    if a.duration > 600 or a.clients > 256 or a.repeats > 20:
        raise SystemExit("bounded on purpose: --duration <= 600, --clients <= 256, --repeats <= 20")
    from models import prepare

    model_dir = str(prepare(a.model))
    vocab = 261                              # byte-tokenizer ids: valid for the bundled models
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, ratios = [], []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            order = ["off", "on"] if i % 2 == 0 else ["on", "off"]
            pair = {}
            for side in order:
                rec = Path(tmp) / f"rec-{i}.jsonl" if side == "on" else None
                r = one_run(a, model_dir, rec, vocab, Path(tmp) / f"server-{i}-{side}.log")
                r.update(repeat=i, side=side)
                pair[side] = r
                runs.append(r)
                print(f"[{time.time() - t0:5.0f}s] repeat {i} {side:3s}: "
                      f"{r['output_tokens_per_s']} tok/s, {r['requests_per_s']} req/s"
                      + (f", {r['recorded_programs']} programs recorded" if side == "on" else ""),
                      flush=True)
            ratios.append(pair["on"]["output_tokens_per_s"] / pair["off"]["output_tokens_per_s"])
        micro = recorder_cost(20000, Path(tmp))
    lost = [r for r in runs if r["side"] == "on" and r["recorded_programs"] != r["completed_with_warmup"]]
    med = statistics.median(ratios)
    summary = {"ratio_on_off_per_repeat": [round(x, 4) for x in ratios],
               "ratio_median": round(med, 4), "ratio_min": round(min(ratios), 4),
               "ratio_max": round(max(ratios), 4), "overhead_median": round(1 - med, 4),
               "off_tok_s": [r["output_tokens_per_s"] for r in runs if r["side"] == "off"],
               "on_tok_s": [r["output_tokens_per_s"] for r in runs if r["side"] == "on"],
               "recordings_complete": not lost, "recorder_cost": micro,
               # the recorder's CPU share at the measured request rate (one core = 1.0)
               "recorder_cpu_share_at_off_rate": round(
                   micro["total_cpu_us_per_request"] * 1e-6
                   * statistics.median(r["requests_per_s"] for r in runs if r["side"] == "off"), 6)}
    cmd = "python " + " ".join(sys.argv)
    report = {"command": cmd, "config": vars(a), "model_dir": model_dir, "summary": summary, "runs": runs,
              "load_average_after": os.getloadavg()}
    (out / "result.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {out / 'result.json'}")


if __name__ == "__main__":
    main()
