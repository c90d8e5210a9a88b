"""A real uvicorn server on 127.0.0.1 (random free port) in a background thread, plus a
scripted model runner so tests can make the model say exact things (tool calls).

The scripted runner wraps the real ``ModelRunner.execute``: the forward pass still runs, then
for requests whose prompt contains a ``SCRIPT[...]`` key the sampled token is replaced by the
next byte of the scripted reply (the byte tokenizer maps byte b to id b), then eos.
"""
from __future__ import annotations

import re
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from continuum.config import EngineArgs
from continuum.engine.async_engine import AsyncLLMEngine
from continuum.engine.engine import LLMEngine
from continuum.entrypoints.openai.api_server import ServerOptions, create_app
from tests.polling import HANG_GUARD_S, wait_for

MODEL = "random:tiny"
ENGINE_KW = dict(model=MODEL, dtype="float32", device="cpu", max_model_len=1024,
                 kv_cache_memory="8MiB", max_num_batched_tokens=1024)

# prompt marker -> scripted reply
SCRIPTS = {
    "SCRIPT[hermes]": 'Let me look.\n<tool_call>\n{"name": "bash", "arguments": {"cmd": "ls -la"}}\n'
                      '</tool_call>',
    "SCRIPT[llama]": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    "SCRIPT[two]": '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
                   '<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>',
    "SCRIPT[plain]": "Paris is the capital of France.",
}


def install_script(engine: LLMEngine, step_delay: float = 0.0) -> None:
    runner, real = engine.runner, engine.runner.execute
    tok, eos = engine.tokenizer, engine.eos_token_ids[0]

    def script_for(req) -> list[int] | None:
        if req.sampling_params.logprobs is not None:
            return None
        text = tok.decode(req.prompt_token_ids)
        for key, reply in SCRIPTS.items():
            if key in text:
                return list(reply.encode()) + [eos]
        return None

    def execute(out):
        if step_delay:
            time.sleep(step_delay)       # a slower "model": requests stay in flight for a while
        toks, lps = real(out)
        for i, s in enumerate(out.scheduled):
            if toks[i] is None:
                continue
            script = script_for(s.request)
            if script is not None:
                n = s.request.num_output_tokens
                toks[i] = script[min(n, len(script) - 1)]
        return toks, lps

    runner.execute = execute


class Server:
    """uvicorn in a daemon thread; ``url`` is http://127.0.0.1:PORT."""

    def __init__(self, engine_kw: dict | None = None, max_waiting: int | None = None,
                 step_delay: float = 0.0, graceful_s: float = 2.0, clock=None, **opts):
        kw = {**ENGINE_KW, **(engine_kw or {})}
        self.llm_engine = LLMEngine(EngineArgs.from_kwargs(**kw), **({"clock": clock} if clock else {}))
        install_script(self.llm_engine, step_delay)
        self.engine = AsyncLLMEngine(self.llm_engine, max_waiting_requests=max_waiting)
        opts = {"model_name": MODEL, "debug_endpoints": True, "shutdown_timeout": 2.0, **opts}
        self.app = create_app(self.engine, ServerOptions(**opts))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=graceful_s)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def start(self) -> "Server":
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "server did not start")
        assert self.thread.is_alive(), "server thread died"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=HANG_GUARD_S)
        assert not self.thread.is_alive(), "server did not stop"
        self.sock.close()

    def openai_client(self):
        """The official client against this server (no retries: a failure shows at once)."""
        import openai
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                             timeout=HANG_GUARD_S)

    def metric(self, name: str) -> float:
        """One sample of /metrics by its full name."""
        text = httpx.get(self.url + "/metrics", timeout=HANG_GUARD_S).text
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        assert m, f"{name} not on /metrics"
        return float(m.group(1))

    def debug_kv(self, headers: dict | None = None) -> dict:
        r = httpx.get(self.url + "/debug/kv", headers=headers, timeout=HANG_GUARD_S)
        r.raise_for_status()
        return r.json()

    def wait_idle(self, headers: dict | None = None) -> dict:
        """Poll /debug/kv until no request is in flight and no block is in use."""
        kv: dict = {}

        def idle() -> bool:
            kv.update(self.debug_kv(headers))
            s = kv["stats"]
            return kv["num_in_flight"] == 0 and s["kv_blocks_in_use"] == 0 and \
                s["num_requests_running"] == 0 and s["num_requests_waiting"] == 0
        wait_for(idle, lambda: f"server not idle: {kv}")
        return kv


@pytest.fixture(scope="module")
def server():
    s = Server().start()
    yield s
    s.stop()


@pytest.fixture()
def client(server):
    return server.openai_client()
