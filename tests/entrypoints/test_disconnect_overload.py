"""Client disconnects free the request's KV at once; a full waiting queue answers 503 with
Retry-After (not a hang); shutdown lets short requests finish and aborts long ones.

The server's model sleeps 10 ms per step, so a 900-token request stays in flight for at
least 9 s however fast the machine is: long enough to disconnect from. That it was aborted,
not finished, is read from a spy on the engine's aborts, not from how long it took.
"""
import json
import socket
import threading

import httpx
import openai
import pytest

from tests.entrypoints.conftest import MODEL, Server
from tests.polling import HANG_GUARD_S, wait_for

LONG = {"model": MODEL, "prompt": "a long one", "max_tokens": 900, "ignore_eos": True}


@pytest.fixture(scope="module")
def slow():
    s = Server(engine_kw={"max_num_seqs": 1}, max_waiting=1, step_delay=0.01).start()
    aborted: list[str] = []
    real = s.llm_engine.abort_request

    def spy(ids):
        aborted.extend([ids] if isinstance(ids, str) else list(ids))
        return real(ids)

    s.llm_engine.abort_request = spy
    s.aborted = aborted
    yield s
    s.stop()


def _in_use(server) -> int:
    return server.debug_kv()["stats"]["kv_blocks_in_use"]


def test_disconnect_mid_stream_frees_all_blocks(slow):
    n = len(slow.aborted)
    with httpx.Client(timeout=HANG_GUARD_S) as http:
        with http.stream("POST", slow.url + "/v1/completions", json={**LONG, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]       # a few events, then hang up
            assert any(x.startswith("data: {") for x in got)
            assert _in_use(slow) > 0
    kv = slow.wait_idle()
    assert kv["ok"] and kv["stats"]["kv_blocks_in_use"] == 0
    assert len(slow.aborted) == n + 1                   # aborted, not run to the end
    metrics = httpx.get(slow.url + "/metrics").text
    aborted = [l for l in metrics.splitlines() if l.startswith("continuum_requests_aborted_total")]
    assert aborted and float(aborted[0].split()[-1]) >= 1


def _post_then_hang_up(server: Server, body: dict) -> None:
    """A non-streaming client that gives up: send the request on a raw socket, wait until the
    engine runs it, then close the connection without reading the answer."""
    payload = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_GUARD_S) as s:
        s.sendall(head + payload)
        wait_for(lambda: server.debug_kv()["stats"]["num_requests_running"] == 1,
                 "the request never ran")


def test_disconnect_of_openai_stream_and_of_non_streaming(slow):
    client = openai.OpenAI(base_url=slow.url + "/v1", api_key="x", max_retries=0,
                           timeout=HANG_GUARD_S)
    n = len(slow.aborted)
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=900, stream=True, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    slow.wait_idle()
    # non-streaming: the client gives up and the server aborts
    _post_then_hang_up(slow, LONG)
    kv = slow.wait_idle()
    assert kv["ok"] and len(slow.aborted) == n + 2


def test_overload_answers_503_with_retry_after(slow):
    with httpx.Client(timeout=HANG_GUARD_S) as http:
        with http.stream("POST", slow.url + "/v1/completions", json={**LONG, "stream": True}) as a:
            lines_a = a.iter_lines()                     # keep it: dropping it hangs up
            next(lines_a)                                # A runs (max_num_seqs=1)
            with http.stream("POST", slow.url + "/v1/completions", json={**LONG, "stream": True}) as b:
                assert b.status_code == 200
                wait_for(lambda: slow.debug_kv()["stats"]["num_requests_waiting"] >= 1,
                         "B never queued")
                r = http.post(slow.url + "/v1/completions", json={**LONG, "max_tokens": 2})
                assert r.status_code == 503 and r.headers["retry-after"] == "1"
                assert r.json()["error"]["type"] == "server_overloaded"
                # Refused at once, not queued: A and B, each >= 9 s long, are still there.
                assert slow.debug_kv()["num_in_flight"] == 2
    kv = slow.wait_idle()
    assert kv["ok"]
    metrics = httpx.get(slow.url + "/metrics").text
    assert 'continuum_requests_rejected_total{reason="overloaded"} 1.0' in metrics
    # and it serves again once the queue drained
    r = httpx.post(slow.url + "/v1/completions", json={**LONG, "max_tokens": 2},
                   timeout=HANG_GUARD_S)
    assert r.status_code == 200


def _hold_before_last_token(server: Server, max_tokens: int) -> tuple[threading.Event, threading.Event]:
    """Stop the engine thread before the step that gives a ``max_tokens`` request its last
    token. Returns (held, release): ``held`` is set once it waits, ``release`` lets it go."""
    held, release = threading.Event(), threading.Event()
    runner = server.llm_engine.runner
    real = runner.execute

    def execute(out):
        if any(s.request.sampling_params.max_tokens == max_tokens and
               s.request.num_output_tokens == max_tokens - 1 for s in out.scheduled):
            held.set()
            release.wait()
        return real(out)
    runner.execute = execute
    return held, release


def test_graceful_shutdown_finishes_short_and_aborts_long():
    # uvicorn gives in-flight requests graceful_s, then cancels them. The short request is
    # held one token from its end until the shutdown has begun, so it finishes inside the
    # grace period by one step; the long one needs >= 8.7 s more (10 ms per step), far over.
    s = Server(step_delay=0.01, graceful_s=4.0, shutdown_timeout=0.5).start()
    held, release = _hold_before_last_token(s, 30)
    results = {}

    def run(name, max_tokens):
        try:
            r = httpx.post(s.url + "/v1/completions", json={**LONG, "max_tokens": max_tokens},
                           timeout=HANG_GUARD_S)
            results[name] = r.status_code
        except httpx.HTTPError as e:
            results[name] = type(e).__name__

    threads = [threading.Thread(target=run, args=("short", 30)),
               threading.Thread(target=run, args=("long", 900))]
    for t in threads:
        t.start()
    assert held.wait(HANG_GUARD_S)
    assert s.engine.num_in_flight == 2
    stopper = threading.Thread(target=s.stop)
    stopper.start()
    wait_for(lambda: not any(srv.is_serving() for srv in s.server.servers),
             "the server never began to shut down")
    release.set()
    for t in [*threads, stopper]:
        t.join(timeout=HANG_GUARD_S)
        assert not t.is_alive()
    assert results["short"] == 200
    assert results["long"] != 200                      # cut off by the shutdown
    assert not s.engine.is_running
    assert not s.llm_engine.has_unfinished_requests()
    s.llm_engine.check_integrity()                      # the engine thread is gone: safe here
    assert s.llm_engine.stats()["kv_blocks_in_use"] == 0
