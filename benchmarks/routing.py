"""Routing policies compared: simulator at paper scale, and a small real run on Ray.

    # simulator: 4 and 8 replicas of the H200 Llama-3.1-8B profile, SWE-bench-like and
    # BFCL-like traces, every routing policy on the same arrivals
    python benchmarks/routing.py sim --out benchmarks/results/routing
    # real: 2 CPU replicas (Ray actors, random tiny model) behind the OpenAI server,
    # replayed over HTTP by the bench driver
    python benchmarks/routing.py real --out benchmarks/results/routing

Per (workload, replicas, load, routing policy): mean/P50/P95 JCT, JCT/ideal, TTFT, prefix hit
rate and the router's decision counts. Every replica runs the ``continuum`` scheduling policy
so that only routing differs. Results: ``{sim,real}.json`` (with the command line) and
``{sim,real}.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROUTINGS = ["round-robin", "least-loaded", "autellix", "continuum"]
# (routing label, router policy, router kwargs): "continuum-no-rebalance" is an ablation.
VARIANTS = [(p, p, {}) for p in ROUTINGS] + [("continuum-no-rebalance", "continuum", {"rebalance": False})]
KEYS = ["jct_mean", "jct_p50", "jct_p95", "jct_over_ideal_mean", "ttft_mean", "ttft_p99",
        "prefix_hit_rate", "preemptions", "completed"]


def _row(workload: str, replicas: int, jps: float, label: str, summary: dict, router: dict,
         wall: float) -> dict[str, Any]:
    return {"workload": workload, "replicas": replicas, "jps": jps, "routing": label,
            **{k: summary.get(k) for k in KEYS},
            "decisions": {k[len("router_decisions_"):-len("_total")]: v for k, v in router.items()
                          if k.startswith("router_decisions_")},
            "routed_per_replica": [v for k, v in sorted(router.items()) if k.endswith("_router_routed_total")],
            "wall_seconds": round(wall, 2)}


def run_sim(a: argparse.Namespace) -> list[dict[str, Any]]:
    from continuum.bench.generators import generate
    from continuum.bench.metrics import summarize
    from continuum.bench.replay import assign_arrivals
    from continuum.distributed.sim_routing import simulate_replicas
    from continuum.sim.cost_model import CostModel
    from continuum.sim.profile import load_profile
    from continuum.sim.simulator import SimConfig

    cost = CostModel(load_profile(a.profile))
    rows = []
    for wl in a.workloads:
        for n in a.replicas:
            progs = generate(wl, a.programs_per_replica * n, seed=a.seed)
            for per in a.jps_per_replica[wl]:
                arrivals = assign_arrivals(progs, per * n, a.seed)
                for label, policy, kw in VARIANTS:
                    t = time.perf_counter()
                    r = simulate_replicas(progs, arrivals, cost, SimConfig(policy=a.scheduling, seed=a.seed),
                                          n, policy, kw)
                    rows.append(_row(wl, n, per * n, label, summarize(r.programs, r.stats), r.router,
                                     time.perf_counter() - t))
                    print(json.dumps({k: rows[-1][k] for k in ("workload", "replicas", "jps", "routing",
                                                                "jct_mean", "jct_p95", "prefix_hit_rate")}),
                          flush=True)
    return rows


def run_real(a: argparse.Namespace) -> list[dict[str, Any]]:
    """2 CPU replicas per policy (fresh replicas: cold caches), HTTP replay on loopback."""
    import socket
    import threading

    import ray
    import uvicorn

    from continuum.bench.generators import generate
    from continuum.bench.http_driver import run_http
    from continuum.bench.metrics import summarize
    from continuum.bench.replay import assign_arrivals
    from continuum.distributed.server import build_distributed_app
    from continuum.entrypoints.openai.api_server import ServerOptions

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    engine = dict(model="random:tiny", dtype="float32", device="cpu", max_model_len=2048,
                  kv_cache_memory=a.kv_cache_memory, max_num_batched_tokens=512,
                  scheduling_policy=a.scheduling)
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "CONTINUUM_ATTENTION_BACKEND": "torch"}}
    progs = generate(a.real_workload, a.real_programs, seed=a.seed, scale=a.real_scale,
                     tool_time_scale=a.real_tool_scale)
    arrivals = assign_arrivals(progs, a.real_jps, a.seed)
    rows = []
    for label, policy, kw in VARIANTS[:len(ROUTINGS)]:
        app, client = build_distributed_app(engine, ServerOptions(model_name="random:tiny"), 2, policy,
                                            router_kwargs=kw, num_cpus_per_replica=0.5, runtime_env=env)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        th.start()
        while not server.started:
            time.sleep(0.05)
        t = time.perf_counter()
        res = run_http(progs, arrivals, f"http://127.0.0.1:{sock.getsockname()[1]}", seed=a.seed)
        router = client.router.snapshot()
        rows.append(_row(a.real_workload, 2, a.real_jps, label, summarize(res["programs"]), router,
                         time.perf_counter() - t))
        print(json.dumps({k: rows[-1][k] for k in ("routing", "jct_mean", "jct_p95", "prefix_hit_rate")}),
              flush=True)
        server.should_exit = True
        th.join(30)
        sock.close()
    ray.shutdown()
    return rows


def markdown(rows: list[dict[str, Any]], title: str, command: str) -> str:
    lines = [f"# {title}", "", f"Command: `{command}`", "",
             "| workload | replicas | JPS | routing | mean JCT (s) | P50 | P95 | JCT/ideal | TTFT mean (s) "
             "| hit rate | preemptions | decisions | routed per replica |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v, nd=2: "-" if v is None else f"{v:.{nd}f}"  # noqa: E731
    for r in rows:
        dec = ", ".join(f"{k} {v}" for k, v in sorted(r["decisions"].items()))
        lines.append(f"| {r['workload']} | {r['replicas']} | {r['jps']:g} | {r['routing']} | {f(r['jct_mean'])} "
                     f"| {f(r['jct_p50'])} | {f(r['jct_p95'])} | {f(r['jct_over_ideal_mean'])} "
                     f"| {f(r['ttft_mean'], 3)} | {f(r['prefix_hit_rate'], 3)} | {r['preemptions']} | {dec} "
                     f"| {r['routed_per_replica']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["sim", "real"])
    p.add_argument("--out", default="benchmarks/results/routing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduling", default="continuum", help="scheduling policy of every replica")
    p.add_argument("--profile", default="h200-llama3.1-8b")
    p.add_argument("--workloads", nargs="+", default=["swe", "bfcl"])
    p.add_argument("--replicas", nargs="+", type=int, default=[4, 8])
    p.add_argument("--programs-per-replica", type=int, default=50)
    p.add_argument("--swe-jps", nargs="+", type=float, default=[0.2, 0.4], help="JPS per replica")
    p.add_argument("--bfcl-jps", nargs="+", type=float, default=[1.0, 2.0], help="JPS per replica")
    p.add_argument("--real-workload", default="swe")
    p.add_argument("--real-programs", type=int, default=12)
    p.add_argument("--real-scale", type=float, default=0.05, help="token scale of the real run")
    p.add_argument("--real-tool-scale", type=float, default=0.5)
    p.add_argument("--real-jps", type=float, default=2.0)
    p.add_argument("--kv-cache-memory", default="2MiB", help="per replica, real run")
    a = p.parse_args(argv)
    a.jps_per_replica = {"swe": a.swe_jps, "bfcl": a.bfcl_jps}
    command = "python " + " ".join(shlex.quote(x) for x in [sys.argv[0], *(argv or sys.argv[1:])])
    t = time.time()
    rows = run_sim(a) if a.mode == "sim" else run_real(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "mode": a.mode, "args": {k: v for k, v in vars(a).items()},
            "wall_seconds": round(time.time() - t, 1), "rows": rows}
    (out / f"{a.mode}.json").write_text(json.dumps(meta, indent=1, default=str))
    title = ("Routing policies, simulator (" + a.profile + ")" if a.mode == "sim"
             else "Routing policies, real run: 2 CPU replicas on Ray, random tiny model")
    (out / f"{a.mode}.md").write_text(markdown(rows, title, command))
    print(f"wrote {out / (a.mode + '.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
