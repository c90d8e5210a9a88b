"""Where one decode step's time goes: cProfile of steady-state decode steps on the CPU.

    python benchmarks/decode_profile.py [--model llama-80m] [--batch 64] [--prompt-len 64]

Runs ``--batch`` requests (random prompt ids, forced outputs) through ``LLMEngine.step``,
skips the prefill and warm-up steps, then profiles ``--steps`` decode steps and prints the
mean step time and the functions that took it (matmuls appear as oneDNN ``_linear_pointwise``,
the attention kernel as ``paged_attention_decode``).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama-80m", help="benchmarks/models.py name")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    import models
    from continuum import LLM, SamplingParams

    llm = LLM(str(models.prepare(a.model)), dtype=a.dtype, kv_cache_memory="2GiB",
              max_num_seqs=max(a.batch, 1), enable_prefix_caching=False)
    eng, rng = llm.engine, random.Random(0)
    params = SamplingParams(temperature=0, max_tokens=a.steps + 20, ignore_eos=True)
    for _ in range(a.batch):
        eng.add_request([rng.randrange(8, 256) for _ in range(a.prompt_len)], params)
    for _ in range(10):                      # prefill + warm-up
        eng.step()
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    for _ in range(a.steps):
        eng.step()
    prof.disable()
    dt = (time.perf_counter() - t) / a.steps
    print(f"{a.model}, batch {a.batch}, context ~{a.prompt_len + 10}-{a.prompt_len + 10 + a.steps}: "
          f"{dt * 1000:.1f} ms per decode step (under cProfile)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    while eng.has_unfinished_requests():
        eng.step()


if __name__ == "__main__":
    main()
