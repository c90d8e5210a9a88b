"""The ``continuum`` command line."""
from __future__ import annotations

import argparse
import sys

DEFAULT_QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for writing a good unit test.",
    "Write a haiku about a cache that never forgets.",
]


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--model", default=None,
                   help="local HF dir, .gguf file, 'random[:preset]'; default: embedded SmolLM2-135M-Instruct")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    g.add_argument("--device", default="auto")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--kv-cache-memory", default=None, help="KV cache size, e.g. 2GiB")
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--max-num-seqs", type=int, default=128)
    g.add_argument("--max-num-batched-tokens", type=int, default=2048)
    g.add_argument("--scheduling-policy", default="vllm")
    g.add_argument("--no-prefix-caching", action="store_true")


def engine_kwargs(a: argparse.Namespace) -> dict:
    return dict(model=a.model, dtype=a.dtype, device=a.device, seed=a.seed, max_model_len=a.max_model_len,
                kv_cache_memory=a.kv_cache_memory, block_size=a.block_size, max_num_seqs=a.max_num_seqs,
                max_num_batched_tokens=a.max_num_batched_tokens, scheduling_policy=a.scheduling_policy,
                enable_prefix_caching=not a.no_prefix_caching)


def cmd_chat(a: argparse.Namespace) -> int:
    from continuum.llm import LLM
    from continuum.sampling_params import SamplingParams

    llm = LLM(**engine_kwargs(a))
    questions = a.prompt or DEFAULT_QUESTIONS
    params = SamplingParams(temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens, seed=a.seed)
    outs = llm.chat([[{"role": "user", "content": q}] for q in questions], params, use_tqdm=False)
    for q, o in zip(questions, outs):
        c = o.outputs[0]
        print(f"### user\n{q}\n### assistant ({len(c.token_ids)} tokens, {c.finish_reason})\n{c.text.strip()}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="continuum", description="An LLM inference engine for agent workloads.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("chat", help="offline chat: answer questions with the model and print them")
    add_engine_args(c)
    c.add_argument("prompt", nargs="*", help="questions (default: three built-in ones)")
    c.add_argument("--temperature", type=float, default=0.0)
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--max-tokens", type=int, default=128)
    c.set_defaults(func=cmd_chat)
    a = p.parse_args(argv)
    from continuum.errors import ContinuumError
    try:
        return a.func(a)
    except ContinuumError as e:
        print(f"continuum: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
