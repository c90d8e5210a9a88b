"""Two CPU replicas on a local Ray cluster (loopback only) behind the real OpenAI server.

One module-scoped cluster and server (Ray and two engine processes take ~20 s to start on
two cores). Tests run in file order; the failure test runs last because it kills replicas.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import socket
import threading
import time

import httpx
import pytest

ray = pytest.importorskip("ray")
openai = pytest.importorskip("openai")

from continuum.distributed.server import add_replica_routes  # noqa: E402
from continuum.entrypoints.openai.api_server import ServerOptions, create_app  # noqa: E402

MODEL = "random:tiny"
ENGINE_KW = dict(model=MODEL, dtype="float32", device="cpu", max_model_len=1024,
                 kv_cache_memory="64MiB", max_num_batched_tokens=1024, scheduling_policy="continuum")
# The torch attention path: the JIT-built CPU kernel would cost each fresh process a build.
ENV = {"env_vars": {"CONTINUUM_ATTENTION_BACKEND": "torch", "OMP_NUM_THREADS": "1"}}


class Served:
    def __init__(self):
        import uvicorn

        from continuum.distributed.client import DistributedEngineClient
        self.client = DistributedEngineClient(ENGINE_KW, 2, routing_policy="continuum",
                                              num_cpus_per_replica=0.5, runtime_env=ENV,
                                              health_interval=0.5)
        self.placements: list[tuple[str | None, int]] = []     # (program, replica) per request
        route = self.client.router.route

        def recording_route(rid, program, n, now):
            d = route(rid, program, n, now)
            self.placements.append((program, d.replica))
            return d
        self.client.router.route = recording_route
        app = create_app(self.client, ServerOptions(model_name=MODEL, debug_endpoints=True,
                                                    shutdown_timeout=2.0))
        add_replica_routes(app, self.client)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def openai(self, retries: int = 0):
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=retries, timeout=60)

    def replicas_of(self, program: str) -> set[int]:
        return {r for p, r in self.placements if p == program}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@pytest.fixture(scope="module")
def served():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    s = Served()
    yield s
    s.stop()
    ray.shutdown()


def run_program(client, program: str, turns: int, base: int, max_tokens: int = 4) -> list[int]:
    """Multi-turn program: each prompt extends the previous one. Returns cached tokens per turn."""
    prompt = [(base + i) % 250 + 1 for i in range(120)]
    cached = []
    for t in range(turns):
        r = client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0.0,
            extra_body={"continuum": {"program_id": program, "tool_name": "ls",
                                      "is_last_step": t == turns - 1}})
        cached.append(r.usage.prompt_tokens_details.cached_tokens)
        prompt = prompt + [(base + 7 * t + i) % 250 + 1 for i in range(40)]
    return cached


def test_affinity_all_turns_on_one_replica_and_hits_grow(served):
    cached = run_program(served.openai(), "aff-1", turns=5, base=3)
    assert len(served.replicas_of("aff-1")) == 1
    assert cached[0] == 0 and all(b > a for a, b in zip(cached, cached[1:])), cached


def test_load_balance_across_programs(served):
    progs = [f"bal-{i}" for i in range(8)]
    with cf.ThreadPoolExecutor(8) as ex:
        hits = list(ex.map(lambda ip: run_program(served.openai(), ip[1], 3, 40 * ip[0]), enumerate(progs)))
    homes = [served.replicas_of(p) for p in progs]
    assert all(len(h) == 1 for h in homes), homes                 # affinity under concurrency
    per = [sum(1 for h in homes if h == {r}) for r in (0, 1)]
    assert min(per) >= 2, per                                     # and the programs spread
    assert all(h[-1] > 0 for h in hits)
    m = httpx.get(served.url + "/metrics", timeout=10).text       # per-replica series
    assert "continuum_engine_replica0_requests_finished" in m and "continuum_engine_replica1_" in m
    assert "continuum_engine_router_replicas_alive 2.0" in m


def test_client_disconnect_aborts_on_the_replica(served):
    c = served.client
    body = {"model": MODEL, "prompt": [7] * 100, "max_tokens": 800, "stream": True,
            "ignore_eos": True, "continuum": {"program_id": "gone"}}
    with httpx.stream("POST", served.url + "/v1/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break                                     # first chunk, then hang up
    deadline = time.monotonic() + 20
    while True:
        kv = httpx.get(served.url + "/debug/kv", timeout=10).json()
        st = kv["stats"]
        if kv["num_in_flight"] == 0 and st["num_requests_running"] == 0 and not c.router.requests:
            break
        assert time.monotonic() < deadline, kv
        time.sleep(0.05)
    assert kv["ok"], kv


def test_killed_replica_fails_its_requests_with_503_and_serving_goes_on(served):
    c = served.client
    results: dict[str, object] = {}

    def long_victim_turn():
        try:
            served.openai().completions.create(
                model=MODEL, prompt=[5] * 200, max_tokens=600, temperature=0.0,
                extra_body={"continuum": {"program_id": "victim"}, "ignore_eos": True})
            results["victim"] = "ok"
        except openai.APIStatusError as e:
            results["victim"] = e

    def survivor_turns():
        results["survivor"] = run_program(served.openai(), "survivor", 6, 9, max_tokens=16)

    def wait_for(cond, what: str) -> None:
        deadline = time.monotonic() + 30
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    t1 = threading.Thread(target=long_victim_turn)
    t1.start()
    wait_for(lambda: served.replicas_of("victim") and "victim" in c.router.programs and
             any(r.started for r in c.router.requests.values() if r.program_id == "victim"),
             "victim request never started")
    (v,) = served.replicas_of("victim")
    t2 = threading.Thread(target=survivor_turns)       # new program: the other replica
    t2.start()
    wait_for(lambda: served.replicas_of("survivor"), "survivor never placed")
    c.pool.handles[v].actor.crash.remote()              # the victim's replica process dies
    t1.join(60)
    t2.join(60)
    (s,) = served.replicas_of("survivor")
    assert s != v
    err = results["victim"]
    assert isinstance(err, openai.APIStatusError) and err.status_code == 503, err
    assert "replica" in err.message
    assert len(results["survivor"]) == 6                # the other program finished
    assert httpx.get(served.url + "/health", timeout=5).status_code == 200
    # The victim's next turn lands on the surviving replica and recomputes its context.
    assert run_program(served.openai(), "victim", 1, 5)[0] == 0
    assert served.placements[-1] == ("victim", s)
    rows = httpx.get(served.url + "/debug/replicas", timeout=5).json()["replicas"]
    assert {r["index"]: r["alive"] for r in rows} == {v: False, s: True}
    # A replica can be added back; it serves once the other one is gone too.
    added = httpx.post(served.url + "/debug/replicas", timeout=60).json()["added"]
    c.kill_replica(s)
    run_program(served.openai(), "after", 2, 11)
    assert served.replicas_of("after") == {added}
