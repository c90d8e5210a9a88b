"""`continuum serve` as a subprocess: loopback bind, API key from the environment, SIGTERM
shuts it down cleanly; and the AsyncLLMEngine on its own (crash -> typed error, no hang)."""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from continuum.config import EngineArgs
from continuum.engine.async_engine import AsyncLLMEngine, EngineDeadError
from continuum.engine.engine import LLMEngine
from continuum.errors import PromptTooLongError
from continuum.sampling_params import SamplingParams
from tests.entrypoints.conftest import ENGINE_KW
from tests.polling import HANG_GUARD_S, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llm_engine():
    return LLMEngine(EngineArgs.from_kwargs(**{**ENGINE_KW, "max_model_len": 128}))


def test_cli_serve_subprocess_and_sigterm(llm_engine):
    # Run one step in-process first: a fresh checkout JIT-builds the CPU attention kernel, and
    # the subprocess should start from the built kernel rather than spend its start-up on it.
    llm_engine.add_request([1, 2, 3], SamplingParams(max_tokens=1), request_id="warm")
    while llm_engine.has_unfinished_requests():
        llm_engine.step()
    port = _free_port()
    env = {**os.environ, "CONTINUUM_API_KEY": "k1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "continuum.cli", "serve", "random:tiny", "--port", str(port),
           "--dtype", "float32", "--device", "cpu", "--kv-cache-memory", "8MiB",
           "--max-model-len", "256", "--log-level", "info"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                return httpx.get(url + "/health", timeout=HANG_GUARD_S).status_code == 200
            except httpx.ConnectError:           # not listening yet
                return False
        wait_for(healthy, "server did not come up")
        body = {"model": "random:tiny", "prompt": "hi", "max_tokens": 3, "ignore_eos": True}
        assert httpx.post(url + "/v1/completions", json=body).status_code == 401
        r = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": "Bearer k1"})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (exit status -SIGTERM)
        assert proc.wait(timeout=HANG_GUARD_S) in (0, -signal.SIGTERM)
        log = proc.stdout.read().decode()
        assert "Application shutdown complete" in log and "Traceback" not in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serve_on_a_port_in_use_fails_before_loading_the_model(tmp_path):
    """The port is checked first: the missing model would be the error otherwise."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "continuum.cli", "serve", str(tmp_path / "no-model"),
                            "--port", str(port)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "no-model" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_async_engine_concurrency_errors_and_crash(llm_engine):
    async def main():
        eng = AsyncLLMEngine(llm_engine)
        eng.start()
        p = SamplingParams(max_tokens=5, ignore_eos=True, temperature=0)

        async def run(prompt):
            return [o async for o in eng.generate(prompt, p)]

        outs = await asyncio.gather(*(run([i + 1] * (i + 2)) for i in range(8)))
        assert all(len(o) == 5 and o[-1].finished for o in outs)
        with pytest.raises(PromptTooLongError):
            await eng.add_request([1] * 500, p)
        # abort by dropping a stream half way
        stream = await eng.add_request([7, 7, 7], SamplingParams(max_tokens=100, ignore_eos=True))
        async for _ in stream:
            break
        stream.close()
        deadline = time.monotonic() + HANG_GUARD_S       # the abort lands between two steps
        while await eng.call(lambda e: e.has_unfinished_requests()):
            assert time.monotonic() < deadline, "the dropped stream's request was not aborted"
            await asyncio.sleep(0.01)
        await eng.call(lambda e: e.check_integrity())
        assert eng.num_in_flight == 0
        # an engine bug fails in-flight requests with a typed error instead of hanging them
        real = llm_engine.step
        llm_engine.step = lambda: (_ for _ in ()).throw(RuntimeError("boom"))
        try:
            with pytest.raises(EngineDeadError):
                await asyncio.wait_for(run([1, 2, 3]), timeout=HANG_GUARD_S)
            assert not eng.is_running
            with pytest.raises(EngineDeadError):
                await run([1, 2])
        finally:
            llm_engine.step = real
        await eng.shutdown(timeout=1)

    asyncio.run(main())


def test_a_flood_of_engine_calls_cannot_stall_a_running_request(llm_engine):
    """Each inbox command (a /metrics scrape is one) runs on the engine thread; while requests
    run, at most MAX_COMMANDS_PER_STEP of them are handled between two steps."""
    from continuum.engine.async_engine import MAX_COMMANDS_PER_STEP

    async def main():
        eng = AsyncLLMEngine(llm_engine)
        eng.start()
        log: list[str] = []                          # engine thread only: no lock needed
        real_step = llm_engine.step
        queued = threading.Event()                   # the 200 calls are in the inbox

        def step():
            # The request's steps wait until every call is queued, so that how fast the engine
            # thread runs against the event loop cannot decide the outcome.
            assert queued.wait(HANG_GUARD_S), "calls never queued"
            log.append("step")
            return real_step()

        llm_engine.step = step
        try:
            stream = await eng.add_request([5, 6, 7], SamplingParams(max_tokens=20, ignore_eos=True))
            # 200 calls queued at once while the request runs (each task puts its command into
            # the inbox before its first await, so one yield queues them all)
            calls = [asyncio.ensure_future(eng.call(lambda e: log.append("call"))) for _ in range(200)]
            await asyncio.sleep(0)
            queued.set()
            outs = [o async for o in stream]
            await asyncio.gather(*calls)
        finally:
            llm_engine.step = real_step
        assert len(outs) == 20
        runs, run = [], 0
        for item in log:
            if item == "call":
                run += 1
            else:
                runs.append(run)
                run = 0
        assert max(runs) <= MAX_COMMANDS_PER_STEP, runs
        assert sum(runs) >= 100, runs            # the calls were handled between the steps
        await eng.shutdown(timeout=1)

    asyncio.run(main())
