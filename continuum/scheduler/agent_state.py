"""What the scheduler knows about agent programs, and the pin lifecycle of METHOD 2.1.

The scheduler core calls these hooks; every rule about programs and pins lives here:

- ``on_arrival(req)``: program record; measure the previous tool's duration (this arrival
  minus the previous turn's finish, METHOD 2.3) and feed the predictor. If that duration
  revealed a shift of the tool's distribution (``kv_ttl/drift.py``), the tool's pins are
  re-timed at the top of the next step.
- ``begin_step(now)``: forget idle programs; apply the policy's per-step decisions; re-time
  the pins of tools whose history was reset (``policy.ttl_after_drift``: the TTL a new pin
  would get from the new history, counted from the pin's creation, so a stale pin that the new
  distribution does not pay for becomes due at once); lazy expiry: a pin whose TTL has run out is released unless its program has a request waiting
  (that request's admission releases it).
- ``force_release(exclude)``: under memory pressure release one pin, latest program arrival
  first (never the program being admitted). Returns False when none is left, so the caller
  falls back to preemption or stops admitting: pins can never wedge the engine.
- ``on_admit(req, delay)``: the next turn now holds its own references to the shared prefix;
  the pin's are dropped (a pin hit). A continuing program admitted without a pin gives a
  sample of T (the queueing delay of a request whose KV had been evicted).
- ``on_finish(req, status, now)``: resolve the tool (client hint, else parsed from the
  output); if the program continues, ask the policy (free | pin(ttl) | swap), honouring the
  pin budget; if it ends, record its turn count for eta. Every completed turn gets one pin
  decision (``policy.PIN_DECISIONS``): counted in the stats, kept in ``req.pin_decision``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from continuum.kv.kv_manager import KVCacheManager
from continuum.kv_ttl.pins import Pin, PinTable
from continuum.kv_ttl.eviction import EvictionHorizon
from continuum.kv_ttl.predictor import DurationPredictor, tool_key
from continuum.kv_ttl.programs import ProgramTable
from continuum.kv_ttl.reload_cost import OffloadCost, PrefillCost
from continuum.kv_ttl.tool_parser import extract_tool_name
from continuum.kv_ttl.ttl import EtaEstimator, SlidingMean
from continuum.request import Request, RequestStatus
from continuum.scheduler.policy import (FREE, LAST_STEP, NO_PROGRAM, NO_TOOL_CALL, NOTHING_TO_PIN,
                                       OVER_BUDGET, PINNED, POLICY_NEVER_PINS, SWAPPED, Policy,
                                       PolicyContext, QueueView)
from continuum.scheduler.stats import SchedulerStats
from continuum.snapshot import compose


# The text of a finished request's output (the engine decodes it with its tokenizer).
OutputText = Callable[[Request], str]


class AgentState:
    """See the module docstring. ``output_text``: how to read a finished request's output as
    text, for the tool-name parser when the client named no tool (METHOD 2.3); None (a
    scheduler without a tokenizer: the simulator, unit tests) counts client-given names only."""

    def __init__(self, config, kv: KVCacheManager, policy: Policy, stats: SchedulerStats,
                 running: list[Request], waiting: list[Request], output_text: OutputText | None = None):
        self.kv = kv
        self.policy = policy
        self.stats = stats
        self.programs = ProgramTable(config.program_idle_timeout)
        self.pins = PinTable(int(config.pin_budget_fraction * kv.pool.num_blocks))
        self.ctx = PolicyContext(config, kv, self.programs, self.pins, DurationPredictor(),
                                 SlidingMean(), EtaEstimator(), PrefillCost(), OffloadCost(),
                                 QueueView(running), QueueView(waiting), EvictionHorizon())
        policy.bind(self.ctx)
        self.output_text = output_text
        self._drifted: set[str] = set()      # tools whose history was reset since the last step

    def snapshot(self) -> dict[str, float]:
        """The agent state's gauges (``continuum.snapshot``): the pin table's, the program
        table's, the predictor's, and the TTL inputs T and eta of METHOD 2.2. (Its pin
        counters live in the scheduler's ``SchedulerStats``, reported by the scheduler.)"""
        return compose(self.pins.snapshot(), {
            "pin_ttl_queue_delay_seconds": self.ctx.queue_delay.value,
            "pin_ttl_eta": self.ctx.eta.value,
        }, self.ctx.predictor.snapshot(), self.programs.snapshot())

    # -- arrivals and admission ----------------------------------------------------------------
    def on_arrival(self, req: Request) -> None:
        # Arrivals land between steps: they wait from the next one.
        rec = self.programs.on_arrival(req, req.arrival_time, self.ctx.step_no + 1)
        req.program_arrival = rec.first_arrival
        req.program_record = rec
        if rec.turns_arrived == 1:
            rec.first_prompt_tokens = req.num_prompt_tokens
        if rec.last_finish_time is not None and rec.last_tool is not None:
            if self.ctx.predictor.observe(rec.last_tool, req.arrival_time - rec.last_finish_time):
                self._drifted.add(tool_key(rec.last_tool))
        rec.last_finish_time = None

    def on_requeue(self, req: Request) -> None:
        """A running request was preempted back to waiting."""
        rec = self.programs.get(req.program_id)
        if rec is not None:
            rec.stop_running(self.ctx.step_no)          # it did not run in this step
            rec.start_waiting(self.ctx.step_no)

    def on_admit(self, req: Request, delay: float, now: float) -> None:
        rec = self.programs.get(req.program_id)
        if rec is None:
            return
        rec.stop_waiting(self.ctx.step_no)
        rec.start_running(self.ctx.step_no)
        self.programs.set_admitted(rec, True)
        self.programs.touch(rec, now)
        self.policy.on_admit(req, now)
        if req.program_id in self.pins:
            self._release(req.program_id)
            self.stats.pins_hit += 1
        elif rec.turns_finished > 0 and req.num_preemptions == 0:
            self.ctx.queue_delay.add(delay)

    # -- the top of each step ------------------------------------------------------------------
    def begin_step(self, now: float) -> None:
        self.ctx.step_no += 1
        self.ctx.eviction.update(now, self.kv.pool.num_allocated, self.kv.pool.num_free_blocks)
        self.programs.gc(now)
        for program_id, action in self.policy.on_step(now):
            if program_id in self.pins:
                if action.kind == "swap":
                    self.kv.swap_out(self.kv.pinned_block_list(self.pins.get(program_id).key))
                self._release(program_id)
                self.stats.pins_released_by_policy += 1
        if self._drifted:
            self._retime_after_drift()
        if len(self.pins):
            for p in self.pins.expired(now):
                rec = self.programs.get(p.program_id)
                if rec is None or rec.num_waiting == 0:
                    self._release(p.program_id)
                    self.stats.pins_expired += 1

    def _retime_after_drift(self) -> None:
        """Re-decide the TTL of every finite pin on a tool whose history was just reset."""
        tools, self._drifted = self._drifted, set()
        for p in list(self.pins.pins.values()):
            if p.tool is None or tool_key(p.tool) not in tools or math.isinf(p.ttl):
                continue
            ttl = self.policy.ttl_after_drift(p.tool, p.context_tokens)
            if ttl is not None and ttl != p.ttl:
                self.pins.retime(p.program_id, ttl)
                self.stats.pins_retimed += 1

    def force_release(self, exclude: str | None = None) -> bool:
        if not len(self.pins):
            return False
        victims = self.pins.victims(exclude)
        if not victims:
            return False
        self._release(victims[0].program_id)
        self.stats.pins_force_released += 1
        return True

    def _release(self, program_id: str) -> None:
        pin = self.pins.remove(program_id)
        self.kv.unpin(pin.key)
        rec = self.programs.get(program_id)
        if rec is not None:
            rec.pinned = False

    # -- finish ------------------------------------------------------------------------------
    def resolve_tool(self, req: Request) -> str | None:
        if req.agent.tool_name:
            return req.agent.tool_name
        if self.output_text is None:
            return None
        return extract_tool_name(self.output_text(req))

    def on_finish(self, req: Request, status: RequestStatus, was_waiting: bool, now: float) -> None:
        """Decide what happens to the finished request's blocks (it still holds them)."""
        rec = self.programs.get(req.program_id)
        continues = (status.completed and req.agent.program_id is not None
                     and not req.agent.is_last_step)
        req.tool_name = self.resolve_tool(req) if continues else None
        continues = continues and req.tool_name is not None
        action = self.policy.on_finish(req, now) if continues else FREE
        if action.kind == "pin":
            decision = self._pin(req, action.ttl, now, rec)
        else:
            if action.kind == "swap":
                self.kv.swap_out(self.kv.req_to_blocks.get(req.request_id, []))
            self.kv.free(req)
            decision = (action.reason or (SWAPPED if action.kind == "swap" else POLICY_NEVER_PINS)
                        if continues else self._why_not_continuing(req, status))
        if decision is not None:
            req.pin_decision = decision
            self.stats.pin_decisions[decision] += 1
        if rec is None:
            return
        self.programs.on_finish(rec, req, continues)
        # Finishes land after the step that ran (or between steps, for aborts).
        if was_waiting:
            rec.stop_waiting(self.ctx.step_no + 1)
        else:
            rec.stop_running(self.ctx.step_no + 1)
        rec.turns_finished += 1
        rec.context_tokens = req.num_tokens
        self.programs.touch(rec, now)
        if continues:
            rec.last_finish_time, rec.last_tool = now, req.tool_name
        elif req.agent.program_id is None:
            self.programs.forget(req.program_id)        # a program of one turn
        elif status.completed:
            self.ctx.eta.add_program(rec.turns_finished)
            rec.last_finish_time = rec.last_tool = None
            # A later request under this id starts anew, unless the id was inferred: then the
            # end is only a guess (no tool call was parsed), and a later turn under it is one
            # the recogniser attached because it continues this conversation (a person who
            # answered), which an explicit id would have kept in the admitted program.
            self.programs.set_admitted(rec, req.agent.inferred)
            rec.held = False                            # nor is it the door's backlog any more
            if req.program_id in self.pins:
                self._release(req.program_id)
                self.stats.pins_dropped_program_end += 1

    @staticmethod
    def _why_not_continuing(req: Request, status: RequestStatus) -> str | None:
        """The pin decision of a turn after which no tool call is expected (None: the turn
        was aborted or failed, and decides nothing)."""
        if not status.completed:
            return None
        if req.agent.program_id is None:
            return NO_PROGRAM
        return LAST_STEP if req.agent.is_last_step else NO_TOOL_CALL

    def _pin(self, req: Request, ttl: float, now: float, rec) -> str:
        """Pin the turn's blocks for ``ttl``; returns the pin decision (``PINNED``, or why not)."""
        pid = req.program_id
        if pid in self.pins:                 # a newer turn replaces an older pin
            self._release(pid)
        n = self.kv.pinnable_blocks(req)
        if n == 0 or not self.pins.fits(n):
            self.stats.pins_rejected += n > 0
            self.kv.free(req)
            return OVER_BUDGET if n > 0 else NOTHING_TO_PIN
        block_ids = self.kv.pin_blocks(req, Pin.key_of(pid))
        self.pins.add(pid, req.request_id, block_ids, now, ttl,
                      rec.first_arrival if rec is not None else req.arrival_time,
                      req.tool_name, req.num_computed_tokens)
        if rec is not None:
            rec.pinned = True
        self.stats.pins_made += 1
        self.stats.observe_ttl(ttl)
        req.pin_ttl = ttl
        return PINNED

    def check_integrity(self) -> None:
        """Pin table == the KV manager's pin holders; program records count exactly the
        requests waiting and live in the scheduler's queues."""
        self.pins.check()
        waiting: dict[str, int] = {}
        running: dict[str, int] = {}
        for r in self.ctx.waiting:
            waiting[r.program_id] = waiting.get(r.program_id, 0) + 1
        for r in self.ctx.running:
            running[r.program_id] = running.get(r.program_id, 0) + 1
        for pid in set(waiting) | set(running):
            rec = self.programs.get(pid)
            w, r = waiting.get(pid, 0), running.get(pid, 0)
            assert rec is not None and (rec.num_live, rec.num_waiting, rec.num_running) == (w + r, w, r), \
                f"program {pid}: record {rec} disagrees with the queues"
        for r in (*self.ctx.waiting, *self.ctx.running):
            assert self.programs.get(r.program_id).live.get(r.request_id) is r, f"{r.request_id} not live"
        self.programs.check()
        assert set(self.kv.pinned) == {p.key for p in self.pins.pins.values()}, "pins and holders disagree"
        for p in self.pins.pins.values():
            assert [b.block_id for b in self.kv.pinned[p.key]] == p.block_ids
            assert math.isinf(p.ttl) or p.ttl > 0 or p.retimed
