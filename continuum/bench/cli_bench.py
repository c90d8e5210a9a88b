"""The ``continuum bench``, ``continuum bench-trace`` and ``continuum profile`` subcommands
(registered from continuum/cli.py; kept here so the bench owns its flags)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def add_bench_parsers(sub, add_engine_args, engine_kwargs) -> None:
    b = sub.add_parser("bench", help="replay agent traces: every policy on the same arrivals; report + plots")
    b.add_argument("--workload", action="append", default=None,
                   help="swe | bfcl | coding-agent | short-agent | chat | mix (seeded generators) or a "
                        "JSONL trace path; repeatable (default with "
                        "--target sim: the main job, the bundled SWE-bench-like and BFCL-like traces at "
                        "three loads each; else swe)")
    b.add_argument("--workload-jps", action="append", default=None, metavar="WORKLOAD=JPS,JPS",
                   help="loads for one workload, e.g. bfcl=0.8,1.6,3.2 (overrides --jps for it)")
    b.add_argument("--num-programs", type=int, default=None, help="programs per workload (default 100)")
    b.add_argument("--scale", type=float, default=1.0, help="token-count scale of generated traces")
    b.add_argument("--tool-time-scale", type=float, default=1.0, help="tool-duration scale of generated traces")
    b.add_argument("--jps", default=None, help="comma-separated loads (jobs/s); omit to use trace arrival times")
    b.add_argument("--policies", default=None,
                   help="comma-separated policy names, or 'all' available (default all); ignored, with "
                        "a warning, for an http target, which runs the server's own policy")
    b.add_argument("--target", default="sim", help="sim | engine | http://host:port")
    b.add_argument("--profile", default=None,
                   help="profile name/path for the sim and ideal JCT (default h200-llama3.1-8b for sim)")
    b.add_argument("--tp", type=int, default=1, help="sim: tensor-parallel scaling of the profile (approximation)")
    b.add_argument("--num-blocks", type=int, default=None,
                   help="KV blocks, exactly (sim default: the profile's capacity; engine: instead of "
                        "--kv-cache-memory, the same pool whatever dtype the machine picks)")
    b.add_argument("--offload-gb", type=float, default=0.0,
                   help="sim: host-memory KV tier in GB (CPU offload); 0 = off")
    b.add_argument("--served-model", default=None, help="http: model name (default: the server's first)")
    b.add_argument("--client-ids", choices=["all", "tool", "none"], default="all",
                   help="http: what the client tells the server about programs: all (program id, turn, "
                        "last-step flag, tool name, X-Program-Id), tool (only the tool name: the server "
                        "must recognise the programs), none (nothing: an unmodified client)")
    b.add_argument("--out", default=None,
                   help="output dir for results.json, report.md, PNGs (default: a fresh run folder, "
                        "benchmarks/runs/<UTC time>/ in a checkout, git-ignored, else ./continuum-runs/<UTC time>/; "
                        "--out benchmarks/results/main rewrites the recorded main job)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar (logs and CI)")
    add_engine_args(b)
    b.set_defaults(func=lambda a: _user_errors(cmd_bench, a, engine_kwargs))

    g = sub.add_parser("bench-trace", help="generate or convert program traces (JSONL)")
    g.add_argument("kind", choices=["swe", "bfcl", "coding-agent", "short-agent", "chat", "mix", "swe-smith",
                                    "csv", "round-jsonl", "validate", "stats"],
                   help="a generator (swe ... mix: seeded, no data needed), a converter (swe-smith, csv, "
                        "round-jsonl: --input to read) or a check of a trace (validate, stats: --input)")
    g.add_argument("--input", help="swe-smith JSON / CSV / JSONL to read")
    g.add_argument("--time-unit", choices=["ms", "s"], default="ms",
                   help="csv: unit of arrival_time (default ms, as TraceLab's replay format defines it)")
    g.add_argument("--output", help="JSONL to write (without it, only the trace's statistics are printed)")
    g.add_argument("--num-programs", type=int, default=100, help="generators: programs to draw")
    g.add_argument("--seed", type=int, default=0, help="generators: random seed (same seed, same trace)")
    g.add_argument("--scale", type=float, default=1.0, help="generators: multiply every token count by this")
    g.add_argument("--tool-time-scale", type=float, default=1.0,
                   help="generators: multiply every tool duration by this")
    g.add_argument("--tokens-mode", choices=["sum", "final"], default="sum",
                   help="read tokens per program as the sum over turns (default) or the final context")
    g.add_argument("--tokenizer", default="default", help="swe-smith: default | byte | HF dir")
    g.add_argument("--max-turns", type=int, default=None,
                   help="coding-agent/short-agent/chat/mix: keep at most this many turns per program")
    g.set_defaults(func=lambda a: _user_errors(cmd_trace, a))

    v = sub.add_parser("advise", help="replay a (recorded) trace in the simulator over policies, KV "
                                      "sizes and knobs; recommend a setting (docs/benchmarks.md)")
    v.add_argument("trace", nargs="+", metavar="FILE",
                   help="trace file(s): a `continuum serve --record-trace` recording (FILE FILE.1 ... "
                        "replay together) or any program trace")
    v.add_argument("--profile", default="h200-llama3.1-8b",
                   help="the served model's cost profile (name in benchmarks/profiles or a path; "
                        "`continuum profile` measures one)")
    v.add_argument("--policies", default="all", help="comma-separated policies to compare, or 'all'")
    v.add_argument("--current-policy", default=None,
                   help="the setting to compare against; default: the recording's policy, else the default")
    v.add_argument("--kv-gb", type=float, default=None,
                   help="current KV cache size in GB; default: the profile's KV capacity")
    v.add_argument("--kv-scales", default="0.5,2", help="other KV sizes tried, as multiples of --kv-gb")
    v.add_argument("--no-knobs", action="store_true", help="do not try the main knobs of the best policy")
    v.add_argument("--jps", type=float, default=None,
                   help="Poisson arrivals at this load (programs/s); default: the trace's arrival times")
    v.add_argument("--margin", type=float, default=0.02,
                   help="recommend a change only when it lowers mean JCT by more than this fraction")
    v.add_argument("--seed", type=int, default=0, help="seed of prompt tokens (and of --jps arrivals)")
    v.add_argument("--jobs", type=int, default=0, help="worker processes (0: every core)")
    v.add_argument("--out", default=None,
                   help="folder for advise.json and advise.png (default: a fresh run folder, as bench)")
    v.add_argument("--no-progress", action="store_true", help="no progress bar (logs and CI)")
    v.set_defaults(func=lambda a: _user_errors(cmd_advise, a))

    p = sub.add_parser("profile", help="measure a cost-model profile of this machine with the real engine")
    add_engine_args(p)
    p.add_argument("--output", required=True, help="profile JSON to write (benchmarks/profiles/<name>.json)")
    p.add_argument("--name", default="cpu", help="profile name written into the JSON (the sim's --profile)")
    p.add_argument("--prefill-new", default="16,64,256,512",
                   help="comma-separated new-token counts of the timed prefill chunks")
    p.add_argument("--prefill-cached", default="0,512,1024",
                   help="comma-separated cached-prefix lengths the prefill chunks run over")
    p.add_argument("--decode-batch", default="1,2,4,8", help="comma-separated decode batch sizes to time")
    p.add_argument("--decode-ctx", default="128,512,1024", help="comma-separated decode context lengths to time")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per point (the median is kept)")
    p.add_argument("--from-calibration", default=None, metavar="CALIB_JSON",
                   help="convert a ../shared/calibration file instead of measuring")
    p.add_argument("--device-memory", default="141e9", help="with --from-calibration: device bytes")
    p.set_defaults(func=lambda a: _user_errors(cmd_profile, a, engine_kwargs))


def _user_errors(fn, *args) -> int:
    """Bad traces, unknown policies/profiles, missing files: one line on stderr, exit 2."""
    from continuum.bench.trace import TraceError
    try:
        return fn(*args)
    except (TraceError, ValueError, FileNotFoundError) as e:
        print(f"continuum: error: {e}", file=sys.stderr)
        return 2


def cmd_bench(a: argparse.Namespace, engine_kwargs) -> int:
    from continuum.bench.report import glossary_lines, summary_tables, write_report, write_results
    from continuum.bench.runner import BenchConfig, available_policies, load_workload, run_bench

    specs = a.workload or ["swe"]
    per = dict(x.split("=", 1) for x in (a.workload_jps or []))
    if a.workload is None and a.target == "sim" and not per and a.jps is None:
        specs, per = _main_job()
    a.out = a.out or str(fresh_run_dir())
    policies = available_policies() if a.policies in (None, "all") else a.policies.split(",")
    if a.policies is not None and a.target.startswith(("http://", "https://")):
        print(f"continuum: warning: --policies is ignored with --target {a.target}: the server runs its "
              "own scheduling policy (rows say 'server')", file=sys.stderr)
    if a.client_ids != "all" and not a.target.startswith(("http://", "https://")):
        raise ValueError("--client-ids is for an http target (the simulator's counterpart is "
                         "benchmarks/zero_config_sim.py)")
    profile = a.profile or ("h200-llama3.1-8b" if a.target == "sim" else None)
    if profile and a.tp > 1:
        from continuum.sim.profile import load_profile, tensor_parallel
        prof = tensor_parallel(load_profile(profile), a.tp)
        profile = str(Path(a.out) / f"{prof['name']}.json")
        Path(profile).parent.mkdir(parents=True, exist_ok=True)
        Path(profile).write_text(json.dumps(prof))
        print(f"wrote {profile}")
    from continuum.config import EngineArgs, parse_bytes
    engine = engine_kwargs(a)
    if a.num_blocks is not None and a.target == "engine":
        engine["num_blocks_override"] = a.num_blocks
    args = EngineArgs.from_kwargs(**engine)     # the sim takes the engine's knobs too
    host_blocks = 0
    if not a.offload_gb and args.host_kv_cache_memory:
        a.offload_gb = parse_bytes(args.host_kv_cache_memory) / 1e9
    if a.offload_gb and profile:
        from continuum.sim.profile import kv_bytes_per_token, load_profile
        host_blocks = int(a.offload_gb * 1e9 // (kv_bytes_per_token(load_profile(profile)) * args.block_size))
    sim = {"num_blocks": a.num_blocks, "num_host_blocks": host_blocks, "scheduler": args.scheduler_config(),
           "block_size": args.block_size, "max_num_seqs": args.max_num_seqs,
           "max_num_batched_tokens": args.max_num_batched_tokens,
           "enable_prefix_caching": args.enable_prefix_caching}
    results_runs = []
    command = "continuum " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    cfg = BenchConfig(target=a.target, policies=policies, seed=a.seed, profile=profile, sim=sim,
                      engine=engine, model=a.served_model, progress=not a.no_progress,
                      client_ids=a.client_ids)
    results = {"command": command, "config": {k: v for k, v in cfg.__dict__.items() if k != "loads"},
               "git": _git_state(), "runs": results_runs}
    for spec in specs:
        wl = load_workload(spec, a.num_programs, a.seed, a.scale, a.tool_time_scale)
        loads_s = per.get(spec, per.get(wl[0], a.jps))
        cfg.loads = _floats(loads_s) if loads_s else [None]
        results_runs += run_bench([wl], cfg, command)["runs"]
        write_results(results, a.out)  # after every workload: a later failure keeps these runs
    # The short tables first (a failing report still leaves them on screen); every counter is
    # in report.md.
    print("\n".join(summary_tables(results_runs) + glossary_lines()))
    print(f"Every counter of every run: {Path(a.out) / 'report.md'}\n")
    for path in write_report(results, a.out):
        print(f"wrote {path}")
    return 0


# The main job (README's first command): the bundled traces at the paper's three loads each.
MAIN_JOB = {"swe-bench-like-100.jsonl": ("swe", "0.025,0.075,0.125"),
            "bfcl-like-100.jsonl": ("bfcl", "0.8,1.6,3.2")}


# The checkout's benchmarks/ folder (absent when continuum is installed from a wheel).
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _main_job() -> tuple[list[str], dict[str, str]]:
    """Bundled traces when run from a checkout (else the same seeded generators that made
    them), each with its loads."""
    specs, per = [], {}
    for name, (gen, loads) in MAIN_JOB.items():
        path = BENCHMARKS / "traces" / name
        spec = str(path) if path.exists() else gen
        specs.append(spec)
        per[spec] = loads
    return specs, per


def fresh_run_dir(now: datetime | None = None) -> Path:
    """A folder no earlier run wrote to (not created here): benchmarks/runs/<UTC time>/ in a
    checkout (git-ignored), else ./continuum-runs/<UTC time>/; a suffix -2, -3... when a run
    of the same second exists. Recorded results are only written with an explicit --out."""
    base = BENCHMARKS / "runs" if BENCHMARKS.is_dir() else Path("continuum-runs")
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    path, n = base / stamp, 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{n}"
    return path


def _git_state() -> str:
    """Commit and dirtiness of the tree the run used (policies change between commits)."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return f"{head}{'+dirty' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cmd_trace(a: argparse.Namespace) -> int:
    from continuum.bench import converters, trace
    from continuum.bench.generators import generate
    from continuum.bench.workloads import FAMILIES, rescale

    if a.kind in ("swe-smith", "csv", "round-jsonl", "validate", "stats") and not a.input:
        raise ValueError(f"bench-trace {a.kind} needs --input FILE")
    if a.kind in FAMILIES:
        progs = rescale(FAMILIES[a.kind](a.num_programs, seed=a.seed), a.scale, a.tool_time_scale,
                        a.max_turns)
    elif a.kind in ("swe", "bfcl"):
        progs = generate(a.kind, a.num_programs, seed=a.seed, scale=a.scale, tool_time_scale=a.tool_time_scale,
                         tokens_mode=a.tokens_mode)
    elif a.kind == "swe-smith":
        progs = converters.convert_swe_smith(a.input, converters.load_tokenizer(a.tokenizer))
    elif a.kind == "csv":
        progs = converters.convert_round_csv(a.input, a.time_unit)
    elif a.kind == "round-jsonl":
        progs = converters.convert_round_jsonl(a.input)
    else:
        progs = trace.load_trace(a.input)
    print(json.dumps({k: float(v) for k, v in trace.trace_stats(progs).items()}))
    if a.output:
        cmd = "continuum bench-trace " + " ".join(shlex.quote(x) for x in sys.argv[2:])
        trace.save_trace(progs, a.output, header=f"regenerate: {cmd}")
        print(f"wrote {len(progs)} programs to {a.output}")
    return 0


def cmd_advise(a: argparse.Namespace) -> int:
    from continuum.bench.advise import AdviseConfig, advise

    out = Path(a.out) if a.out else fresh_run_dir()
    cfg = AdviseConfig(profile=a.profile, policies=None if a.policies == "all" else a.policies.split(","),
                       current_policy=a.current_policy, kv_gb=a.kv_gb,
                       kv_scales=tuple(_floats(a.kv_scales)), knobs=not a.no_knobs, jps=a.jps,
                       seed=a.seed, jobs=a.jobs, margin=a.margin, progress=not a.no_progress)
    result = advise(a.trace, cfg, out)
    print(result["text"])
    print(f"wrote {out / 'advise.json'}\nwrote {result['plot']}")
    return 0


def cmd_profile(a: argparse.Namespace, engine_kwargs) -> int:
    from continuum.sim.cost_model import CostModel
    from continuum.sim.profile import from_calibration, save_profile

    if a.from_calibration:
        calib = json.loads(Path(a.from_calibration).read_text())
        prof = from_calibration(calib, a.name, float(a.device_memory), a.from_calibration)
    else:
        from continuum.sim.measure import measure_profile
        ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
        prof = measure_profile(engine_kwargs(a), ints(a.prefill_new), ints(a.prefill_cached),
                               ints(a.decode_batch), ints(a.decode_ctx), a.reps, a.name)
    save_profile(prof, a.output)
    print(json.dumps(CostModel(prof).summary()))
    print(f"wrote {a.output}")
    return 0
