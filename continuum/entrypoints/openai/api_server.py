"""The FastAPI app factory and ``continuum serve``'s server runner.

``create_app(engine, ...)`` builds an app around an ``AsyncLLMEngine`` whose thread starts with
the app (lifespan) and shuts down with it: in-flight requests get ``shutdown_timeout`` seconds
to finish, the rest are aborted (KV freed). Routes: /v1/completions, /v1/chat/completions,
/v1/models, /health, /version, /metrics, and /debug/kv when debug endpoints are enabled.
With ``opts.record`` naming a file, finished requests are recorded as a program trace
(``record.py``); the recorder is closed after the engine, so in-flight turns are written.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from continuum import __version__
from continuum.engine.async_engine import AsyncLLMEngine, freeze_gc_heap
from continuum.entrypoints.openai.errors import install_error_handlers
from continuum.entrypoints.openai.metrics import CONTENT_TYPE, ServerMetrics
from continuum.entrypoints.openai.middleware import GuardMiddleware
from continuum.entrypoints.openai.protocol import ChatCompletionRequest, CompletionRequest
from continuum.entrypoints.openai.recognition import ProgramInference
from continuum.entrypoints.openai.record import RecordOptions, TraceRecorder
from continuum.entrypoints.openai.serving_chat import OpenAIServingChat
from continuum.entrypoints.openai.serving_completions import OpenAIServingCompletion
from continuum.errors import ConfigError
from continuum.kv_ttl.recognizer import ProgramRecognizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    model_name: str
    api_key: str | None = None
    max_body_bytes: int = 16 * 2**20
    shutdown_timeout: float = 10.0
    debug_endpoints: bool = False
    chat_template: str | None = None     # Jinja text (already loaded); None: the tokenizer's
    record: RecordOptions | None = None  # --record-trace and friends (None: no recording)


def _integrity(engine) -> dict:
    try:
        engine.check_integrity()
        ok, err = True, None
    except AssertionError as e:
        ok, err = False, str(e) or "integrity check failed"
    return {"ok": ok, "error": err, "stats": engine.stats()}


def program_inference(engine: AsyncLLMEngine) -> ProgramInference | None:
    """The app's program recogniser (None: ``--no-program-inference``), hashing with the
    engine's block size. Its signatures live for the recogniser's windows (an hour after a
    tool call, 30 minutes after an answer) and are capped like the program table."""
    args = engine.args
    if not args.program_inference:
        return None
    return ProgramInference(ProgramRecognizer(block_size=args.block_size), engine.clock)


def create_app(engine: AsyncLLMEngine, opts: ServerOptions) -> FastAPI:
    metrics = ServerMetrics()
    inference = program_inference(engine)
    recorder = (TraceRecorder(opts.record)
                if opts.record is not None and opts.record.record_trace else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.start()
        if recorder is not None:
            recorder.start()
        try:
            yield
        finally:
            await engine.shutdown(opts.shutdown_timeout)
            if recorder is not None:        # after the engine: in-flight turns are recorded
                await asyncio.to_thread(recorder.close)

    app = FastAPI(title="continuum", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    app.state.recorder = recorder
    app.add_middleware(GuardMiddleware, metrics=metrics, api_key=opts.api_key,
                       max_body_bytes=opts.max_body_bytes)
    completions = OpenAIServingCompletion(engine, opts.model_name, metrics, inference, recorder)
    chat = OpenAIServingChat(engine, opts.model_name, metrics, opts.chat_template, inference, recorder)
    created = int(time.time())

    @app.post("/v1/completions")
    async def create_completion(req: CompletionRequest, raw: Request):
        return await completions.create(req, raw)

    @app.post("/v1/chat/completions")
    async def create_chat_completion(req: ChatCompletionRequest, raw: Request):
        return await chat.create(req, raw)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [
            {"id": opts.model_name, "object": "model", "created": created, "owned_by": "continuum",
             "max_model_len": engine.max_model_len}]}

    @app.get("/health")
    async def health():
        if engine.is_running:
            return {"status": "ok"}
        return JSONResponse({"status": "unavailable"}, status_code=503)

    @app.get("/version")
    async def version():
        return {"version": __version__}

    @app.get("/metrics")
    async def prometheus_metrics():
        stats = await engine.call(lambda e: e.stats()) if engine.is_running else {}
        metrics.in_flight.set(engine.num_in_flight)
        front = inference.snapshot() if inference is not None else {}
        return Response(metrics.render(stats, front), media_type=CONTENT_TYPE)

    if opts.debug_endpoints:
        @app.get("/debug/kv")
        async def debug_kv():
            """KV integrity check and engine stats, run on the engine thread between steps."""
            return {**(await engine.call(_integrity)), "num_in_flight": engine.num_in_flight}

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything slow (loading a model, starting
    Ray) so that a port in use fails at once. Raises ``ConfigError`` naming the address."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn: restart over TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e} (another server "
                          f"there? choose another --port)") from None
    return sock


def serve_on(app, sock: socket.socket, log_level: str, shutdown_timeout: float) -> None:
    """Serve ``app`` with uvicorn on the bound ``sock`` until SIGINT/SIGTERM."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level,
                            timeout_graceful_shutdown=max(1, int(shutdown_timeout)))
    uvicorn.Server(config).run(sockets=[sock])


def run_server(engine_kwargs: dict, host: str, port: int, opts: ServerOptions,
               max_waiting_requests: int | None, log_level: str = "info") -> None:
    """Bind the port, load the model, then serve until SIGINT/SIGTERM (graceful shutdown)."""
    from continuum.config import EngineArgs
    from continuum.engine.engine import LLMEngine

    sock = bind_socket(host, port)
    if not is_loopback(host) and not opts.api_key:
        logger.warning("serving on %s without --api-key: anyone who can reach it can use it", host)
    engine = AsyncLLMEngine(LLMEngine(EngineArgs.from_kwargs(**engine_kwargs)), max_waiting_requests)
    app = create_app(engine, opts)
    freeze_gc_heap()                      # the engine lives as long as this process
    serve_on(app, sock, log_level, opts.shutdown_timeout)
