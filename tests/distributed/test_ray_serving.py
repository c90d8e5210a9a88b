"""Two CPU replicas on a local Ray cluster (loopback only) behind the real OpenAI server.

One module-scoped cluster and server (Ray and two engine processes take ~20 s to start on
two cores). Tests run in file order; the failure test runs last because it kills replicas.
Waits are polls on state (tests/polling.py), and where a test needs a request to stay in
flight, the replicas' engines are held (``Gate``, ``freeze_after_victims_first_token``)
rather than trusting it to be slower than the test.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import socket
import sys
import threading

import httpx
import pytest

ray = pytest.importorskip("ray")
openai = pytest.importorskip("openai")

from continuum.distributed.server import create_distributed_app, init_ray  # noqa: E402
from continuum.entrypoints.openai.api_server import ServerOptions  # noqa: E402
from tests.polling import HANG_GUARD_S, wait_for  # noqa: E402

MODEL = "random:tiny"
ENGINE_KW = dict(model=MODEL, dtype="float32", device="cpu", max_model_len=1024,
                 kv_cache_memory="64MiB", max_num_batched_tokens=1024, scheduling_policy="continuum")
# The torch attention path: the JIT-built CPU kernel would cost each fresh process a build.
ENV = {"env_vars": {"CONTINUUM_ATTENTION_BACKEND": "torch", "OMP_NUM_THREADS": "1"}}
VICTIM_PROMPT = [5] * 200


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
        # --max-replicas defaults to the replicas started: POST /debug/replicas only replaces.
        app = create_distributed_app(self.client, ServerOptions(
            model_name=MODEL, debug_endpoints=True, shutdown_timeout=2.0))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "server did not start")
        assert self.thread.is_alive(), "server thread died"

    def openai(self, retries: int = 0):
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=retries,
                             timeout=HANG_GUARD_S)

    def replicas_of(self, program: str) -> set[int]:
        return {r for p, r in self.placements if p == program}

    def post_replica(self, **kw) -> httpx.Response:
        return httpx.post(self.url + "/debug/replicas", timeout=HANG_GUARD_S, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=HANG_GUARD_S)
        self.sock.close()


@pytest.fixture(scope="module")
def served():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    init_ray(None, num_cpus=2)                      # what `continuum serve` does: loopback head
    # Functions this module sends to replicas (engine.call) travel by value: the workers
    # cannot import a test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
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


def test_recognised_programs_are_routed_by_affinity(served):
    """No id sent: the front recognises the program (the same recogniser as one server) and
    the router places every turn of it by that program."""
    client, ids = served.openai(), []
    msgs = [{"role": "system", "content": "shared " * 20}, {"role": "user", "content": "ray, turn 0"}]
    for t in range(4):
        r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4)
        ids.append(r.usage.model_extra["continuum"]["program_id"])
        msgs += [{"role": "assistant", "content": r.choices[0].message.content},
                 {"role": "user", "content": f"ray, turn {t + 1}"}]
    assert len(set(ids)) == 1 and ids[0].startswith("auto-")
    assert [p for p, _ in served.placements].count(ids[0]) == 4
    assert len(served.replicas_of(ids[0])) == 1


@ray.remote(num_cpus=0)
class Gate:
    """Holds replicas' engine threads (``hold`` run through ``engine.call``) until ``open``.
    A held engine accepts and steps nothing, so requests routed meanwhile stay in flight."""

    def __init__(self):
        import asyncio
        self.opened = asyncio.Event()
        self.held = 0

    async def hold(self) -> None:
        self.held += 1
        await self.opened.wait()

    def num_held(self) -> int:
        return self.held

    def open(self) -> None:
        self.opened.set()


def hold_engines(client, gate) -> list:
    """Hold every live replica's engine thread on ``gate``; returns once all are held."""
    refs = [h.actor.call.remote(lambda e: ray.get(gate.hold.remote())) for h in client.pool.alive()]
    wait_for(lambda: ray.get(gate.num_held.remote()) == len(refs), "engines not held")
    return refs


def test_load_balance_across_programs(served):
    progs = [f"bal-{i}" for i in range(8)]
    clients = [served.openai() for _ in progs]
    gate = Gate.remote()
    held = hold_engines(served.client, gate)
    # Every first turn is routed while all of them are in flight (the engines are held), so
    # the placements see each other's load however the threads happen to be scheduled.
    with cf.ThreadPoolExecutor(8) as ex:
        runs = [ex.submit(run_program, clients[i], p, 3, 40 * i) for i, p in enumerate(progs)]
        wait_for(lambda: all(served.replicas_of(p) for p in progs), "first turns not routed")
        ray.get(gate.open.remote())
        ray.get(held)
        hits = [r.result() for r in runs]
    homes = [served.replicas_of(p) for p in progs]
    assert all(len(h) == 1 for h in homes), homes                 # affinity under concurrency
    per = [sum(1 for h in homes if h == {r}) for r in (0, 1)]
    assert min(per) >= 2, per                                     # and the programs spread
    assert all(h[-1] > 0 for h in hits)
    m = httpx.get(served.url + "/metrics", timeout=HANG_GUARD_S).text   # per-replica series
    assert "continuum_engine_replica0_requests_finished" in m and "continuum_engine_replica1_" in m
    assert "continuum_engine_router_replicas_alive 2.0" in m


def test_client_disconnect_aborts_on_the_replica(served):
    c = served.client
    body = {"model": MODEL, "prompt": [7] * 100, "max_tokens": 800, "stream": True,
            "ignore_eos": True, "continuum": {"program_id": "gone"}}
    with httpx.stream("POST", served.url + "/v1/completions", json=body, timeout=HANG_GUARD_S) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break                                     # first chunk, then hang up

    kv: dict = {}

    def idle() -> bool:
        kv.update(httpx.get(served.url + "/debug/kv", timeout=HANG_GUARD_S).json())
        return kv["num_in_flight"] == 0 and kv["stats"]["num_requests_running"] == 0 \
            and not c.router.requests
    wait_for(idle, "the disconnected request is still running")
    assert kv["ok"], kv


def test_ray_services_listen_on_loopback_only(served):
    """init_ray started the head on 127.0.0.1: the node advertises it and the GCS port has
    no listening socket on any other address (/proc/net/tcp, tcp6)."""
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    gcs_host, gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)
    assert gcs_host == "127.0.0.1"
    addrs = listening_addresses(int(gcs_port))
    assert addrs and all(a in LOOPBACK_HEX for a in addrs), addrs


# 127.0.0.1 in /proc/net/tcp, and as ::ffff:127.0.0.1 or ::1 in /proc/net/tcp6 (hex, host order)
LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def listening_addresses(port: int) -> list[str]:
    """Hex local addresses of the sockets listening on TCP ``port`` (Linux /proc/net)."""
    addrs = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:      # 0A: LISTEN
                    addrs.append(addr)
    return addrs


def test_replica_routes_need_the_debug_flag(served):
    from starlette.testclient import TestClient

    # Another app over the same replicas, without --enable-debug-endpoints (no lifespan: the
    # client is not started or stopped by it).
    app = create_distributed_app(served.client, ServerOptions(model_name=MODEL))
    http = TestClient(app)
    assert http.get("/debug/replicas").status_code == 404
    assert http.post("/debug/replicas", json={}).status_code == 404


def test_replica_post_needs_json_and_stops_at_the_cap(served):
    pool = served.client.pool
    started = len(pool.handles)
    r = served.post_replica(content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = served.post_replica(json={})                  # 2 alive: --max-replicas defaults to 2
    assert r.status_code == 409 and r.json()["error"]["code"] == "replica_limit_reached"
    assert "--max-replicas 2" in r.json()["error"]["message"]
    assert len(pool.handles) == started


def freeze_after_victims_first_token(engine) -> None:
    """Make this replica's engine thread stop for good at the step after the one that gave
    the victim request (prompt ``VICTIM_PROMPT``) its first token: the victim is then in
    flight, started, and cannot finish, however slowly the test reaches its next line."""
    step, seen = engine.step, []

    def gated_step():
        if seen:
            threading.Event().wait()               # until the process is killed
        outs = step()
        seen.extend(o for o in outs if o.prompt_token_ids == VICTIM_PROMPT)
        return outs
    engine.step = gated_step


def test_killed_replica_fails_its_requests_with_503_and_serving_goes_on(served):
    c = served.client
    results: dict[str, object] = {}

    def long_victim_turn():
        try:
            served.openai().completions.create(
                model=MODEL, prompt=VICTIM_PROMPT, max_tokens=600, temperature=0.0,
                extra_body={"continuum": {"program_id": "victim"}, "ignore_eos": True})
            results["victim"] = "ok"
        except openai.APIStatusError as e:
            results["victim"] = e

    def survivor_turns():
        results["survivor"] = run_program(served.openai(), "survivor", 6, 9, max_tokens=16)

    ray.get([h.actor.call.remote(freeze_after_victims_first_token) for h in c.pool.alive()])
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
    for t in (t1, t2):
        t.join(HANG_GUARD_S)
        assert not t.is_alive()
    (s,) = served.replicas_of("survivor")
    assert s != v
    err = results["victim"]
    assert isinstance(err, openai.APIStatusError) and err.status_code == 503, err
    assert "replica" in err.message
    assert len(results["survivor"]) == 6                # the other program finished
    assert httpx.get(served.url + "/health", timeout=HANG_GUARD_S).status_code == 200
    # The victim's next turn lands on the surviving replica and recomputes its context.
    assert run_program(served.openai(), "victim", 1, 5)[0] == 0
    assert served.placements[-1] == ("victim", s)
    rows = httpx.get(served.url + "/debug/replicas", timeout=HANG_GUARD_S).json()["replicas"]
    assert {r["index"]: r["alive"] for r in rows} == {v: False, s: True}
    # A replica can be added back, up to --max-replicas alive; it serves once the other one
    # is gone too.
    r = served.post_replica(json={})
    assert r.status_code == 200, r.text
    added = r.json()["added"]
    assert sorted(h.index for h in c.pool.alive()) == sorted([s, added])
    assert served.post_replica(json={}).status_code == 409
    c.kill_replica(s)
    run_program(served.openai(), "after", 2, 11)
    assert served.replicas_of("after") == {added}
