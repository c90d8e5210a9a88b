"""Routing policies: ``policy(router, program_id, prompt_tokens, now) -> Decision``.

Each reads the router's state (live replicas, loads, program entries) and returns a live
replica; the router does the accounting. Adding a policy is one function and one dict entry.

- ``round-robin``: calls cycle over the live replicas, ignoring programs and load.
- ``least-loaded``: every call to the replica with the least load (waiting tokens + weighted
  running requests), ignoring where the program's KV is.
- ``autellix``: Autellix's rule: a call of <= ``short_input_tokens`` (2048) input tokens goes
  to the least-used replica; a longer one to the replica of the program's previous call
  (its KV), or the least-used one if the program has none.
- ``continuum``: program affinity. A program stays on the replica holding its KV; a pinned
  program never moves while its pin lives (nor while it has a call in flight); a new program
  (or one whose replica died) goes to the least-loaded replica; an *idle* program moves only
  when its replica's load exceeds ``rebalance_factor`` times the least-loaded one's plus what
  moving costs (recomputing its whole prompt there), plus ``rebalance_margin`` tokens.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from continuum.distributed.router import Decision, Router

Policy = Callable[["Router", "str | None", int, float], "Decision"]


def _decision(replica: int, reason: str) -> "Decision":
    from continuum.distributed.router import Decision
    return Decision(replica, reason)


def round_robin(router: "Router", program_id: str | None, prompt_tokens: int, now: float) -> "Decision":
    live = sorted(router.replicas)
    # The cursor is an ever-growing counter: after a replica dies the cycle simply skips it.
    replica = live[router.rr_next % len(live)]
    router.rr_next += 1
    return _decision(replica, "round-robin")


def least_loaded(router: "Router", program_id: str | None, prompt_tokens: int, now: float) -> "Decision":
    # Load only: the baseline deliberately ignores where the program's KV is.
    return _decision(router.least_loaded(), "least-loaded")


def autellix(router: "Router", program_id: str | None, prompt_tokens: int, now: float) -> "Decision":
    p = router.programs.get(program_id) if program_id is not None else None
    if prompt_tokens > router.short_input_tokens and p is not None and p.replica in router.replicas:
        return _decision(p.replica, "autellix-long")
    return _decision(router.least_loaded(), "autellix-short")


def continuum_affinity(router: "Router", program_id: str | None, prompt_tokens: int,
                       now: float) -> "Decision":
    p = router.programs.get(program_id) if program_id is not None else None
    if p is None or p.replica is None:
        return _decision(router.least_loaded(), "new")
    if p.replica not in router.replicas:      # defensive: remove_replica already clears these
        return _decision(router.least_loaded(), "rerouted")
    if p.pinned(now):
        return _decision(p.replica, "pinned")
    if not p.idle(now) or not router.rebalance:
        return _decision(p.replica, "affinity")
    target = router.least_loaded()
    # Moving makes the target compute the whole prompt instead of the new part here; it pays
    # only if the queue it avoids is longer than that (plus a margin against flapping).
    stay_cost = router.load(p.replica) + router.expected_new_tokens(program_id, p.replica, prompt_tokens)
    move_cost = router.load(target) + prompt_tokens
    # Under program-FCFS scheduling a returning turn overtakes much of its home queue, and a
    # moved program loses that seniority: hence the factor (>1) on the target's side.
    if target != p.replica and stay_cost > router.rebalance_factor * move_cost + router.rebalance_margin:
        return _decision(target, "rebalance")
    return _decision(p.replica, "affinity")


POLICIES: dict[str, Policy] = {
    "round-robin": round_robin,
    "least-loaded": least_loaded,
    "autellix": autellix,
    "continuum": continuum_affinity,
}


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown routing policy {name!r}; choose from {sorted(POLICIES)}") from None
