"""Continuous batching with a unified token budget (vLLM v1's shape), policy-ordered and
program-aware.

Each ``schedule(now)`` step:
0. ``AgentState.begin_step``: forget idle programs, apply the policy's per-step decisions on
   pins, release expired pins whose program has nothing waiting (lazy expiry, METHOD 2.1).
1. Running requests, in policy priority order, get their next tokens (one for a decode, a
   chunk for an unfinished prefill). When the pool runs dry, pins are released first
   (latest program arrival first); then the lowest-priority running request not yet
   scheduled this step is preempted by recompute (its blocks freed, back to waiting); if
   that is the request being scheduled itself, the step stops there.
2. If nothing was preempted, waiting requests are admitted in the policy's order while the
   token budget, ``max_num_seqs`` and the pool allow (requests the policy holds at its door,
   ``Policy.admit``, are skipped: the requests behind them may still go); prefix-cache hits (device, then host
   tier by swap-in) skip computed tokens and long prompts are chunked. If the head does not
   fit, pins of other programs are released (latest program arrival first), then its own,
   until it does or none is left; then admission stops (head-of-line: nobody behind it
   jumps the queue).

The scheduler reads no wall clock (``now`` is passed in) and touches no tensors.
``num_computed_tokens`` advances when a chunk is scheduled (the executor always runs what it
is given), so the next step can already schedule the following chunk.
"""
from __future__ import annotations

import itertools

from continuum.config import CacheConfig, SchedulerConfig
from continuum.kv.kv_manager import KVCacheManager
from continuum.kv_ttl.reload_cost import PrefillModel, ReloadCostModel
from continuum.request import Request, RequestStatus
from continuum.scheduler.agent_state import AgentState, OutputText
from continuum.scheduler.output import ScheduledRequest, SchedulerOutput
from continuum.scheduler.policy import Policy, make_policy
from continuum.scheduler.stats import SchedulerStats
from continuum.snapshot import compose

__all__ = ["Scheduler", "SchedulerStats"]


class Scheduler:
    """See the module docstring. ``policy``: an instance to use instead of the config's
    (tests); ``output_text``: how the owner reads a finished request's output as text, for
    parsing the tool it calls when the client named none (``AgentState``); the engine passes
    its tokenizer's decode, the simulator none."""

    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig,
                 num_blocks: int, max_model_len: int, policy: Policy | None = None,
                 num_host_blocks: int = 0, output_text: OutputText | None = None):
        self.config = scheduler_config
        self.block_size = cache_config.block_size
        self.max_model_len = max_model_len
        self.kv = KVCacheManager(num_blocks, cache_config.block_size,
                                 cache_config.enable_prefix_caching, num_host_blocks)
        self.policy = policy or make_policy(scheduler_config.policy, scheduler_config)
        self.requests: dict[str, Request] = {}
        # Changed in place only, never rebound: the policy reads them through live read-only
        # views (``PolicyContext.running`` / ``waiting``).
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self._finished_ids: list[str] = []
        self._seq = itertools.count()           # Request.seq_no: arrival order here
        self.stats = SchedulerStats()
        self.agents = AgentState(scheduler_config, self.kv, self.policy, self.stats,
                                 self.running, self.waiting, output_text)

    def set_reload_cost(self, prefill: PrefillModel | None = None,
                        offload: ReloadCostModel | None = None) -> None:
        """Install fitted cost models (recompute time / host reload time of n tokens)."""
        if prefill is not None:
            self.agents.ctx.prefill_cost = prefill
        if offload is not None:
            self.agents.ctx.offload_cost = offload

    def snapshot(self) -> dict[str, float]:
        """Everything the scheduler and the layers below it count (``continuum.snapshot``):
        queue lengths, the KV manager's, its own counters, the agent state's, the policy's."""
        return compose({"num_requests_running": len(self.running),
                        "num_requests_waiting": len(self.waiting)},
                       self.kv.snapshot(), self.stats.snapshot(), self.agents.snapshot(),
                       self.policy.snapshot())

    def pin_expiry(self, program_id: str) -> float | None:
        """When ``program_id``'s KV pin expires (on the ``now`` clock), or None: not pinned.
        What a router hears so that it sends the program's next turn where its KV is."""
        pin = self.agents.pins.get(program_id)
        return None if pin is None else pin.expires_at

    # -- queue management --------------------------------------------------------------------
    def add_request(self, req: Request) -> None:
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already in use")
        self.requests[req.request_id] = req
        req.seq_no = next(self._seq)
        req.status = RequestStatus.WAITING
        req.last_enqueue_time = req.arrival_time
        self.waiting.append(req)
        self.agents.on_arrival(req)

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish_requests(self, request_ids, status: RequestStatus, now: float) -> list[Request]:
        """Finish (stop string, abort) requests by id; unknown or finished ids are ignored."""
        done = []
        for rid in [request_ids] if isinstance(request_ids, str) else request_ids:
            req = self.requests.get(rid)
            if req is not None and not req.is_finished:
                self._finish(req, status, now)
                done.append(req)
        return done

    def fail_request(self, req: Request, now: float, unwritten_from: int | None = None) -> list[Request]:
        """Finish ``req`` with FINISHED_ERROR (the executor failed it alone; everyone else runs
        on). ``unwritten_from``: the first position whose KV the failed step did not write.
        Blocks registered for those positions leave the prefix cache, and any other request
        that already took them by a prefix hit (admitted in the same step) is preempted, since
        it would read KV nobody wrote. Returns those preempted requests."""
        victims: list[Request] = []
        if unwritten_from is not None:
            shared = {b.block_id for b in self.kv.uncache_from(req, unwritten_from) if b.ref_cnt > 1}
            if shared:
                victims = [r for r in self.running if r is not req and not shared.isdisjoint(
                    self.kv.req_to_block_ids.get(r.request_id, ()))]
                for r in victims:
                    self._preempt(r, now)
        if not req.is_finished:
            self._finish(req, RequestStatus.FINISHED_ERROR, now)
        return victims

    # -- the step ------------------------------------------------------------------------------
    def schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput(finished_ids=self._finished_ids)
        self._finished_ids = []
        self.stats.num_steps += 1
        self.agents.begin_step(now)
        budget = self.config.max_num_batched_tokens

        # 1. Running requests, highest priority first; victims come off the end.
        self.running.sort(key=self.policy.victim_key)
        idx = 0
        while idx < len(self.running) and budget > 0:
            req = self.running[idx]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            scheduled = True
            while self.kv.allocate_slots(req, n) is None:
                if self.agents.force_release():
                    continue
                victim = self.running[-1]
                self._preempt(victim, now)
                out.preempted_ids.append(victim.request_id)
                if victim is req:
                    scheduled = False
                    break
            if not scheduled:
                break
            self._schedule_chunk(out, req, n)
            budget -= n
            idx += 1

        # 2. Waiting requests, in policy order, unless this step already had to preempt (or
        #    there is no room: then the sort is skipped, it is most of a busy step's cost).
        if (not out.preempted_ids and self.waiting and budget > 0
                and len(self.running) < self.config.max_num_seqs):
            self.waiting.sort(key=self.policy.waiting_key)
            admitted, held = 0, False
            for req in self.waiting:
                if budget <= 0 or len(self.running) >= self.config.max_num_seqs:
                    break
                if not self.policy.admit(req, now):
                    held = True            # held at the policy's door; the rest may go on
                    continue
                if not self._admit(out, req, budget, now):
                    break
                admitted += 1
                budget -= out.scheduled[-1].num_new_tokens
            if held:
                self.waiting[:] = [r for r in self.waiting if r.status != RequestStatus.RUNNING]
            else:
                del self.waiting[:admitted]
        out.swap_out, out.swap_in = self.kv.take_block_ops()
        return out

    def _admit(self, out: SchedulerOutput, req: Request, budget: int, now: float) -> bool:
        hit_blocks, n_hit, host_hits = [], 0, []
        if req.num_computed_tokens == 0:
            hit_blocks, n_hit = self.kv.get_computed_blocks(req)
            host_hits = self.kv.get_host_hits(req, len(hit_blocks))
        n_host = len(host_hits) * self.block_size
        n = req.num_tokens - req.num_computed_tokens - n_hit - n_host
        if n > budget:
            if not self.config.enable_chunked_prefill:
                return False
            n = budget
        while self.kv.allocate_slots(req, n, hit_blocks, host_hits) is None:
            # Other programs' pins first; the request's own pin last (it usually holds the
            # prefix just hit, but if the new prompt diverged it is dead weight, and keeping it
            # while its follow-up waits would wedge an otherwise idle engine).
            if not (self.agents.force_release(exclude=req.program_id) or self.agents.force_release()):
                return False
        self.kv.record_lookup(req, n_hit, n_host)
        if req.num_cached_tokens < 0:
            req.num_cached_tokens = n_hit + n_host
        req.num_computed_tokens += n_hit + n_host
        req.status = RequestStatus.RUNNING
        delay = now - req.last_enqueue_time
        req.queued_time += delay
        self.stats.total_queueing_delay += delay
        self.stats.num_admissions += 1
        if req.first_scheduled_time is None:
            req.first_scheduled_time = now
        self.agents.on_admit(req, delay, now)
        self.running.append(req)
        self._schedule_chunk(out, req, n)
        return True

    def _schedule_chunk(self, out: SchedulerOutput, req: Request, n: int) -> None:
        start = req.num_computed_tokens
        req.num_computed_tokens += n
        out.scheduled.append(ScheduledRequest(
            req, start, n, self.kv.req_to_block_ids[req.request_id], samples=req.num_computed_tokens == req.num_tokens))

    def _preempt(self, req: Request, now: float) -> None:
        """Preempt by recompute: free the blocks; the request restarts from its (cached) prefix
        (with a host tier, blocks evicted meanwhile come back by swap-in)."""
        self.running.remove(req)
        self.kv.free(req)
        req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        req.last_enqueue_time = now
        self.waiting.append(req)
        self.agents.on_requeue(req)
        self.stats.num_preemptions += 1

    # -- after the executor ran ------------------------------------------------------------------
    def update_from_output(self, out: SchedulerOutput, sampled: list[int | None],
                           now: float) -> list[Request]:
        """Append each sampling request's new token and finish those that stop.

        ``sampled`` is aligned with ``out.scheduled`` (None where a chunk did not sample).
        Returns the requests that finished in this update.
        """
        finished = []
        for s, tok in zip(out.scheduled, sampled):
            req = s.request
            if tok is None or req.status != RequestStatus.RUNNING:
                continue  # a prefill chunk, or aborted since it was scheduled
            req.append_output_token(tok)
            if req.first_token_time is None:
                req.first_token_time = now
            status = self._check_stop(req, tok)
            if status is not None:
                self._finish(req, status, now)
                finished.append(req)
        return finished

    def _check_stop(self, req: Request, tok: int) -> RequestStatus | None:
        p = req.sampling_params
        n_out = req.num_output_tokens
        if n_out >= p.min_tokens:
            if not p.ignore_eos and tok in req.eos_token_ids:
                return RequestStatus.FINISHED_STOPPED
            if tok in p.stop_token_ids:
                req.stop_reason = tok
                return RequestStatus.FINISHED_STOPPED
        if p.max_tokens is not None and n_out >= p.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        if req.num_tokens >= self.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None

    def _finish(self, req: Request, status: RequestStatus, now: float) -> None:
        was_waiting = req.status != RequestStatus.RUNNING
        if not was_waiting:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        req.status = status
        req.finished_time = now
        self.agents.on_finish(req, status, was_waiting, now)   # frees, pins or swaps its blocks
        del self.requests[req.request_id]
        self._finished_ids.append(req.request_id)
        self.stats.num_finished += 1

    def check_integrity(self) -> None:
        """KV invariants (ref counts == holders incl. pins), pin table == pin holders, no
        blocks held by a request the scheduler no longer tracks, nothing leaked when idle."""
        self.kv.check_integrity()
        self.agents.check_integrity()
        held = set(self.kv.req_to_blocks)
        assert held <= {r.request_id for r in self.running} | {r.request_id for r in self.waiting}, \
            "blocks held by a request the scheduler no longer tracks"
        if not self.has_unfinished() and not len(self.agents.pins):
            assert self.kv.pool.num_free_blocks == self.kv.pool.num_blocks, "leaked KV blocks"
