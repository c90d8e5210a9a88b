"""The ``continuum`` command line.

Every subcommand's ``--help`` shows each option's default (``DefaultsHelpFormatter``); an option
whose default is None says in its help text what happens without it.
"""
from __future__ import annotations

import argparse
import copy
import sys

DEFAULT_QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for writing a good unit test.",
    "Write a haiku about a cache that never forgets.",
]


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, minus the noise: appends
    ``(default: X)`` to every option that has a default, except None (the help text then says
    what happens without the option) and help that already names ``%(default)s``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").strip()
        if "%(default)" in text or action.default in (None, argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text = f"{text} (default: %(default)s)" if text else "(default: %(default)s)"
        return text

    def _format_action(self, action: argparse.Action) -> str:
        # argparse prints no help column for an action without help: give one that has a
        # default a help of its own, so that the default still shows
        if not action.help and action.default not in (None, argparse.SUPPRESS):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class _Parser(argparse.ArgumentParser):
    """Subcommand parsers (ours and continuum/bench's) get the defaults formatter too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def _engine_knobs() -> list[type]:
    """The dataclasses whose knobs are the engine flags: ``EngineArgs``, then each scheduling
    policy's config (registry order)."""
    from continuum.config import EngineArgs
    from continuum.scheduler.policies import policy_configs
    return [EngineArgs, *policy_configs()]


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """The engine flags: one per knob of ``_engine_knobs()`` (continuum/knobs.py says how a
    field becomes a flag)."""
    from continuum.knobs import add_knob_args
    g = p.add_argument_group("engine")
    for cls in _engine_knobs():
        add_knob_args(g, cls)


def engine_kwargs(a: argparse.Namespace) -> dict:
    """``EngineArgs.from_kwargs`` keywords from flags added by ``add_engine_args``."""
    from continuum.knobs import knob_values
    return {k: v for cls in _engine_knobs() for k, v in knob_values(a, cls).items()}


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


# -- continuum serve (the OpenAI-compatible server) ------------------------------------------
def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="serve the OpenAI-compatible HTTP API with the agent extensions")
    s.add_argument("model_pos", nargs="?", default=None, metavar="MODEL",
                   help="model (same as --model): HF dir, .gguf, 'random[:preset]'; default SmolLM2")
    add_engine_args(s)
    g = s.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="bind address (loopback only unless you ask)")
    g.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    g.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1 and /debug; default: env "
                        "CONTINUUM_API_KEY, else no key")
    g.add_argument("--served-model-name", default=None,
                   help="the model id clients send; default: MODEL as given (or SmolLM2-135M-Instruct)")
    g.add_argument("--chat-template", default=None, metavar="FILE_OR_JINJA",
                   help="chat template for /v1/chat/completions: a Jinja file or the Jinja text "
                        "itself; default: the tokenizer's. Either way, a template that ignores "
                        "`tools` gets them as a Hermes-style system section (docs/server.md)")
    g.add_argument("--max-waiting-requests", type=int, default=1024,
                   help="requests waiting for admission before new ones get 503 + Retry-After")
    g.add_argument("--max-request-body", default="16MiB", help="largest request body (413 above)")
    g.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds in-flight requests get to finish on shutdown before being aborted")
    g.add_argument("--enable-debug-endpoints", action="store_true",
                   help="expose GET /debug/kv (KV integrity check + engine stats) and, with Ray "
                        "replicas, GET/POST /debug/replicas")
    g.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="server and uvicorn log level")
    from continuum.entrypoints.openai.record import RecordOptions
    from continuum.knobs import add_knob_args
    add_knob_args(s.add_argument_group("recording (continuum advise FILE replays it; docs/server.md)"),
                  RecordOptions)
    d = s.add_argument_group("distributed (Ray replicas; see docs/distributed.md)")
    d.add_argument("--replicas", "--data-parallel-size", dest="replicas", type=int, default=1,
                   help="engine replicas as Ray actors (one GPU each when GPUs exist)")
    d.add_argument("--ray-address", default=None,
                   help="existing Ray cluster ('auto' or host:port); default: start a local one")
    d.add_argument("--ray-node-ip", default="127.0.0.1",
                   help="the IP a locally started Ray head advertises (127.0.0.1: Ray listens "
                        "on loopback only; any other address makes Ray listen on every "
                        "interface, e.g. to let other nodes join)")
    d.add_argument("--max-replicas", type=int, default=None,
                   help="most replicas alive at once, a cap on POST /debug/replicas "
                        "(default: --replicas, so the POST only replaces dead replicas)")
    d.add_argument("--routing-policy", default="continuum",
                   choices=["continuum", "round-robin", "least-loaded", "autellix"],
                   help="how requests are placed on replicas (continuum: program affinity)")
    s.set_defaults(func=cmd_serve)


def cmd_serve(a: argparse.Namespace) -> int:
    import logging
    import os

    from continuum.config import parse_bytes
    from continuum.entrypoints.openai.api_server import ServerOptions, run_server

    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.model_pos is not None:
        a.model = a.model_pos
    if a.max_waiting_requests < 1:
        print("continuum: error: --max-waiting-requests must be >= 1", file=sys.stderr)
        return 2
    name = a.served_model_name or a.model or "SmolLM2-135M-Instruct"
    from continuum.entrypoints.chat_utils import load_chat_template
    from continuum.entrypoints.openai.record import RecordOptions
    from continuum.knobs import knob_values
    record = None
    if a.record_text and not a.record_trace:
        print("continuum: error: --record-text needs --record-trace FILE", file=sys.stderr)
        return 2
    if a.record_trace:
        record = RecordOptions(**knob_values(a, RecordOptions),
                               record_program_timeout=a.program_idle_timeout,
                               settings={"served_model_name": name, "replicas": a.replicas,
                                         **engine_kwargs(a)})
        record.check()                    # before the model loads: a taken FILE fails at once
    opts = ServerOptions(model_name=name, api_key=a.api_key or os.environ.get("CONTINUUM_API_KEY") or None,
                         max_body_bytes=parse_bytes(a.max_request_body),
                         shutdown_timeout=a.shutdown_timeout, debug_endpoints=a.enable_debug_endpoints,
                         chat_template=load_chat_template(a.chat_template), record=record)
    if a.replicas != 1 or a.ray_address:
        from continuum.distributed.server import run_distributed_server
        run_distributed_server(engine_kwargs(a), a.host, a.port, opts, a.max_waiting_requests,
                               a.log_level, num_replicas=a.replicas, ray_address=a.ray_address,
                               routing_policy=a.routing_policy, max_replicas=a.max_replicas,
                               ray_node_ip=a.ray_node_ip)
        return 0
    run_server(engine_kwargs(a), a.host, a.port, opts, a.max_waiting_requests, a.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="continuum", description="An LLM inference engine for agent workloads.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    c = sub.add_parser("chat", help="offline chat: answer questions with the model and print them")
    add_engine_args(c)
    c.add_argument("prompt", nargs="*", help="questions (default: three built-in ones)")
    c.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0: greedy)")
    c.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    c.add_argument("--max-tokens", type=int, default=128, help="most tokens generated per answer")
    c.set_defaults(func=cmd_chat)
    # bench, bench-trace, profile: flags and commands live in continuum/bench/cli_bench.py
    from continuum.bench.cli_bench import add_bench_parsers
    add_bench_parsers(sub, add_engine_args, engine_kwargs)
    add_serve_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from continuum.errors import ContinuumError
    try:
        return a.func(a)
    except ContinuumError as e:
        print(f"continuum: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
