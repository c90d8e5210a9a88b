"""Client disconnects free the request's KV at once; a full waiting queue answers 503 with
Retry-After (not a hang); shutdown lets short requests finish and aborts long ones.

The server's model sleeps 10 ms per step, so a 900-token request stays in flight for ~9 s:
long enough to disconnect from, short enough that a missed abort fails the test quickly.
"""
import threading
import time

import httpx
import openai
import pytest

from tests.entrypoints.conftest import MODEL, Server

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
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", slow.url + "/v1/completions", json={**LONG, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]       # a few events, then hang up
            assert any(x.startswith("data: {") for x in got)
            assert _in_use(slow) > 0
    kv = slow.wait_idle(timeout=5)                      # far less than the ~9 s to finish
    assert kv["ok"] and kv["stats"]["kv_blocks_in_use"] == 0
    assert len(slow.aborted) == n + 1
    metrics = httpx.get(slow.url + "/metrics").text
    aborted = [l for l in metrics.splitlines() if l.startswith("continuum_requests_aborted_total")]
    assert aborted and float(aborted[0].split()[-1]) >= 1


def test_disconnect_of_openai_stream_and_of_non_streaming(slow):
    client = openai.OpenAI(base_url=slow.url + "/v1", api_key="x", max_retries=0, timeout=30)
    n = len(slow.aborted)
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=900, stream=True, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    slow.wait_idle(timeout=5)
    # non-streaming: the client gives up (read timeout) and the server aborts
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(slow.url + "/v1/completions", json=LONG, timeout=httpx.Timeout(30, read=0.5))
    kv = slow.wait_idle(timeout=5)
    assert kv["ok"] and len(slow.aborted) == n + 2


def test_overload_answers_503_with_retry_after(slow):
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", slow.url + "/v1/completions", json={**LONG, "stream": True}) as a:
            lines_a = a.iter_lines()                     # keep it: dropping it hangs up
            next(lines_a)                                # A runs (max_num_seqs=1)
            with http.stream("POST", slow.url + "/v1/completions", json={**LONG, "stream": True}) as b:
                assert b.status_code == 200
                deadline = time.monotonic() + 5
                while slow.debug_kv()["stats"]["num_requests_waiting"] < 1:  # B waits
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                t0 = time.monotonic()
                r = http.post(slow.url + "/v1/completions", json={**LONG, "max_tokens": 2})
                assert r.status_code == 503 and r.headers["retry-after"] == "1"
                assert r.json()["error"]["type"] == "server_overloaded"
                assert time.monotonic() - t0 < 2                # refused at once, not queued
    kv = slow.wait_idle(timeout=5)
    assert kv["ok"]
    metrics = httpx.get(slow.url + "/metrics").text
    assert 'continuum_requests_rejected_total{reason="overloaded"} 1.0' in metrics
    # and it serves again once the queue drained
    r = httpx.post(slow.url + "/v1/completions", json={**LONG, "max_tokens": 2}, timeout=30)
    assert r.status_code == 200


def test_graceful_shutdown_finishes_short_and_aborts_long():
    s = Server(step_delay=0.01, graceful_s=1.5, shutdown_timeout=0.5).start()
    results = {}

    def run(name, max_tokens):
        try:
            r = httpx.post(s.url + "/v1/completions", json={**LONG, "max_tokens": max_tokens},
                           timeout=30)
            results[name] = r.status_code
        except httpx.HTTPError as e:
            results[name] = type(e).__name__

    threads = [threading.Thread(target=run, args=("short", 30)),
               threading.Thread(target=run, args=("long", 900))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while s.engine.num_in_flight < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    s.stop()
    for t in threads:
        t.join(timeout=15)
    assert time.monotonic() - t0 < 10
    assert results["short"] == 200
    assert results["long"] != 200                      # cut off by the shutdown
    assert not s.engine.is_running
    assert not s.llm_engine.has_unfinished_requests()
    s.llm_engine.check_integrity()                      # the engine thread is gone: safe here
    assert s.llm_engine.stats()["kv_blocks_in_use"] == 0
