"""The request router of a multi-replica deployment: pure bookkeeping, no Ray, no clock.

The same ``Router`` object decides placements in the Ray server (``client.py``) and in the
multi-replica simulator (``sim_routing.py``): callers inject time (``now``) and report what
happens to each routed request (started, finished, failed). Placement rules live in
``policies.py``; this file keeps the state they read.

State and invariants:
- ``replicas``: live replica ids. Nothing is ever routed to a dead or removed replica.
- Load accounting is the router's own, updated only by the calls below (so it needs no polling
  and behaves the same in the simulator): a routed request counts its *expected uncached*
  prompt tokens as waiting on its replica until ``on_start``; from then until ``on_finish``
  it counts as running. ``load(r) = waiting_tokens + running_weight * running``.
  Both counters return to 0 once every routed request has finished or failed.
- A program's entry remembers the replica holding its latest KV (``replica``), how many
  context tokens that KV covers (``resident_tokens``), its requests in flight, and until when
  its KV is pinned there (``pinned_until``, on the caller's clock; None: not pinned).
- ``remove_replica`` forgets the replica for every program homed there (their next turn is
  placed as if new and recomputes its context) and returns the request ids in flight on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from continuum.errors import ContinuumError
from continuum.kv_ttl.programs import MAX_PROGRAMS

DEFAULT_RUNNING_WEIGHT = 128.0      # one running request ~ 128 waiting prefill tokens (ours)


class NoReplicaError(ContinuumError):
    """No live replica can take the request."""


@dataclass
class ReplicaLoad:
    waiting_tokens: float = 0.0
    running: int = 0
    routed_total: int = 0            # requests ever placed here (for balance reports)


@dataclass
class ProgramEntry:
    replica: int | None = None
    resident_tokens: int = 0
    in_flight: int = 0
    pinned_until: float | None = None
    last_seen: float = 0.0

    def pinned(self, now: float) -> bool:
        return self.pinned_until is not None and now < self.pinned_until

    def idle(self, now: float) -> bool:
        """No request in flight and no live pin: the only state in which it may move."""
        return self.in_flight == 0 and not self.pinned(now)


@dataclass
class RoutedRequest:
    request_id: str
    program_id: str | None
    replica: int
    prompt_tokens: int
    expected_new: float              # uncached tokens counted as waiting until on_start
    started: bool = False


@dataclass(frozen=True)
class Decision:
    replica: int
    reason: str                      # "new", "affinity", "pinned", "rebalance", "rerouted", ...


@dataclass
class RouterStats:
    decisions: dict[str, int] = field(default_factory=dict)
    replica_failures: int = 0
    requests_failed: int = 0
    programs_rerouted: int = 0


class Router:
    """Places requests on replicas by a named policy (see ``policies.POLICIES``)."""

    def __init__(self, policy: str = "continuum", replicas: list[int] | tuple[int, ...] = (), *,
                 running_weight: float = DEFAULT_RUNNING_WEIGHT, short_input_tokens: int = 2048,
                 rebalance: bool = True, rebalance_margin: float = 2048.0,
                 rebalance_factor: float = 4.0,
                 program_idle_timeout: float = 600.0, max_programs: int = MAX_PROGRAMS):
        from continuum.distributed.policies import get_policy
        self.policy_name = policy
        self.policy = get_policy(policy)
        self.running_weight = running_weight
        self.short_input_tokens = short_input_tokens
        self.rebalance = rebalance
        self.rebalance_margin = rebalance_margin
        self.rebalance_factor = rebalance_factor
        self.program_idle_timeout = program_idle_timeout
        self.max_programs = max_programs
        self.replicas: dict[int, ReplicaLoad] = {}
        self.programs: dict[str, ProgramEntry] = {}
        self.requests: dict[str, RoutedRequest] = {}
        self.stats = RouterStats()
        self.rr_next = 0                  # round-robin cursor (policy state kept here: one router)
        for r in replicas:
            self.add_replica(r)

    # -- replicas ---------------------------------------------------------------------------
    def add_replica(self, replica: int) -> None:
        """Make ``replica`` routable (a fresh replica: empty load, no programs)."""
        self.replicas[replica] = ReplicaLoad()

    def remove_replica(self, replica: int) -> list[str]:
        """Forget a dead replica. Returns the ids of its requests in flight (the caller fails
        them); their accounting is dropped here, so later ``on_finish`` calls are no-ops."""
        if self.replicas.pop(replica, None) is None:
            return []
        self.stats.replica_failures += 1
        lost = [rid for rid, r in self.requests.items() if r.replica == replica]
        for rid in lost:
            req = self.requests.pop(rid)
            self.stats.requests_failed += 1
            if req.program_id is not None and req.program_id in self.programs:
                self.programs[req.program_id].in_flight -= 1
        for p in self.programs.values():
            if p.replica == replica:
                p.replica, p.resident_tokens, p.pinned_until = None, 0, None
                self.stats.programs_rerouted += 1
        return lost

    def load(self, replica: int) -> float:
        r = self.replicas[replica]
        return r.waiting_tokens + self.running_weight * r.running

    def least_loaded(self, extra: dict[int, float] | None = None) -> int:
        """Live replica with the least load (+ ``extra[r]``); ties go to the lowest id."""
        if not self.replicas:
            raise NoReplicaError("no live replica to route to")
        extra = extra or {}
        return min(self.replicas, key=lambda r: (self.load(r) + extra.get(r, 0.0), r))

    # -- requests ---------------------------------------------------------------------------
    def expected_new_tokens(self, program_id: str | None, replica: int, prompt_tokens: int) -> float:
        """Prompt tokens ``replica`` would have to compute: all of them unless it holds the
        program's latest KV, in which case only what the program added since."""
        p = self.programs.get(program_id) if program_id is not None else None
        if p is not None and p.replica == replica:
            return float(max(prompt_tokens - p.resident_tokens, 1))
        return float(prompt_tokens)

    def route(self, request_id: str, program_id: str | None, prompt_tokens: int,
              now: float) -> Decision:
        """Choose a replica for a request and start accounting for it."""
        if request_id in self.requests:
            raise ContinuumError(f"request {request_id!r} is already routed")
        if not self.replicas:
            raise NoReplicaError("no live replica to route to")
        decision = self.policy(self, program_id, prompt_tokens, now)
        new = self.expected_new_tokens(program_id, decision.replica, prompt_tokens)
        self.requests[request_id] = RoutedRequest(request_id, program_id, decision.replica,
                                                  prompt_tokens, new)
        load = self.replicas[decision.replica]
        load.waiting_tokens += new
        load.routed_total += 1
        if program_id is not None:
            if program_id not in self.programs and len(self.programs) >= self.max_programs:
                self._forget_oldest_idle(len(self.programs) - self.max_programs * 9 // 10, now)
            p = self.programs.setdefault(program_id, ProgramEntry())
            if p.replica != decision.replica:
                # The program's KV now builds up on the new replica; any pin on the old one is
                # no longer ours to rely on.
                p.replica, p.resident_tokens, p.pinned_until = decision.replica, 0, None
            p.in_flight += 1
            p.last_seen = now
        self.stats.decisions[decision.reason] = self.stats.decisions.get(decision.reason, 0) + 1
        return decision

    def on_start(self, request_id: str) -> None:
        """The request produced its first token: it moves from waiting to running."""
        req = self.requests.get(request_id)
        if req is None or req.started:
            return
        req.started = True
        load = self.replicas[req.replica]
        load.waiting_tokens -= req.expected_new
        load.running += 1

    def on_finish(self, request_id: str, now: float, *, output_tokens: int = 0,
                  pin_until: float | None = None, last_step: bool = False,
                  ok: bool = True) -> None:
        """The request ended (``ok``: normally; else aborted or failed). ``pin_until``: when the
        replica's pin of the program's KV expires (caller's clock), if it pinned one."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return
        load = self.replicas.get(req.replica)
        if load is not None:
            if req.started:
                load.running -= 1
            else:
                load.waiting_tokens -= req.expected_new
        if req.program_id is None:
            return
        p = self.programs.get(req.program_id)
        if p is None:
            return
        p.in_flight -= 1
        p.last_seen = now
        if last_step and p.in_flight == 0:
            del self.programs[req.program_id]       # the program is over: nothing to keep
            return
        if ok and p.replica == req.replica:
            p.resident_tokens = max(p.resident_tokens, req.prompt_tokens + output_tokens)
            p.pinned_until = pin_until

    def gc(self, now: float) -> int:
        """Forget idle programs unseen for ``program_idle_timeout`` s; returns how many."""
        old = [pid for pid, p in self.programs.items()
               if p.in_flight == 0 and now - p.last_seen > self.program_idle_timeout]
        for pid in old:
            del self.programs[pid]
        return len(old)

    def _forget_oldest_idle(self, n: int, now: float) -> None:
        """Forget the ``n`` idle programs (nothing in flight, no live pin) seen least recently:
        program ids are client strings, so the table must not grow without bound. Evicting a
        tenth of the cap at once keeps this sort rare."""
        idle = sorted((p.last_seen, pid) for pid, p in self.programs.items() if p.idle(now))
        for _, pid in idle[:n]:
            del self.programs[pid]

    def snapshot(self) -> dict[str, float]:
        """Flat numbers for /metrics and reports (``router_`` prefix; ``_total`` = counter)."""
        s: dict[str, float] = {
            "router_replicas_alive": len(self.replicas),
            "router_programs_tracked": len(self.programs),
            "router_requests_in_flight": len(self.requests),
            "router_replica_failures_total": self.stats.replica_failures,
            "router_requests_failed_total": self.stats.requests_failed,
            "router_programs_rerouted_total": self.stats.programs_rerouted,
        }
        for reason, n in sorted(self.stats.decisions.items()):
            s[f"router_decisions_{reason.replace('-', '_')}_total"] = n
        for r, load in sorted(self.replicas.items()):
            s[f"replica{r}_router_load"] = self.load(r)
            s[f"replica{r}_router_routed_total"] = load.routed_total
        return s
