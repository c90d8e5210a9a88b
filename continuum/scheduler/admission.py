"""Program admission control (the door of ``continuum+``): keep the KV working set of the
active programs inside device memory, so that admitted programs keep hitting their prefix,
and stay out of the way whenever the prefix cache is not under pressure.

An OS facing thrashing lowers the multiprogramming level until the working sets fit; this is
that rule for agent programs. A program is *active* from the admission of its first turn until
its last turn finishes. A request of a program that is not active yet (a new program's first
turn, or a request without a program) is a *newcomer*; only newcomers are held at the door.

**When the door may hold at all.** Only while it is *engaged*: it engages when the prefix
cache's eviction horizon H (``kv_ttl/eviction.py``: how long a block freed now stays cached)
falls below ``GATE_S`` and disengages when H rises above ``DISENGAGE * GATE_S``. Below the
cliff H is minutes: returning programs find their context whatever the door does, so it
never holds (no harm where there is nothing to win). Past the cliff H falls to seconds and
the door keeps the working set in memory; the hysteresis keeps it engaged while its own holds
are what keeps H up. With a host tier H counts its blocks too (``seconds_with``): an
evicted block is written there, and a return within that H costs a reload over the link,
not the recompute the door exists to prevent. Gated on the device's H alone, the door held
newcomers where vllm's "thrash" only reloads, and its turn-TTFT P99 reached 5-6.7x vllm's
below the cliff with a tier 4x the device KV (``benchmarks/results/matrix-host/device-gate/``).

**The working set.** Agent contexts grow every turn (turn k+1's prompt is turn k's context +
the tool result), so a program's working set is its *peak* context, not its current one: a
door that counted only today's contexts admits many young programs that later outgrow memory
together, and the engine thrashes anyway. The footprint of an active program is therefore

    tokens at the end of its current (or next) turn + g * R(m) * keep

with ``g`` the mean growth per turn (new input + output, last 256 turns), ``m`` its turns so
far, ``R(m) = E[N - m | N >= m]`` the expected turns left from the turn counts ``N`` of the
last 256 completed programs (before any has completed: ``R(m) = m``, a program is assumed
halfway), and ``keep`` 0 for a program whose memory is not kept across its calls (below),
else 1 (``ProgramRecord.kept``). Working set ``W`` (in KV blocks), estimated at the first door decision of a step:

- every live (running or waiting) request of an active program: its prompt plus the output it
  is still expected to produce (``min(max_tokens, mean output)``), plus its expected growth
  (none for a program's last step or a request without a program);
- every active program between turns (in a tool call): its context plus its expected growth,
  while it is pinned, or, unpinned, while its call has lasted less than its *reservation
  horizon*: the P90 of the tool's durations, counting the calls still in flight as
  censored durations (Kaplan-Meier; returns alone are the short calls). A program that computes less than 1/``DUTY`` of
  the time (its tool's P90 is more than ``DUTY`` times its last turn's service time, counted as
  at least ``MIN_SERVICE_S``: a person thinking for minutes between chat turns) is not
  worth holding memory for: no reservation, ``keep`` 0. A call past its horizon stops reserving (a client that never comes back cannot
  hold the door shut). With a host tier, unpinned programs between turns never reserve device
  memory: their KV is written to the host tier when evicted, so their return costs a reload
  over the link, not a recompute.

**Rule.** While engaged, a newcomer with footprint ``n`` is admitted iff
``W + n <= target * num_blocks`` or ``W == 0`` (nothing active: a program larger than the
target still runs alone, so the door never wedges the engine), or it has waited its bound:
``max_wait``, or ``SMALL_WAIT_S`` for a chat-sized prompt (at most ``SMALL_PROMPT_TOKENS``; an
agent's first prompt, with its system prompt and tool schemas, is thousands of tokens).

**The backlog.** A disengaged door lets through every newcomer it never held, but the ones it
held (the *backlog*, ``ProgramRecord.held``), and the newcomers behind them, only while
``W + n <= RELEASE * target * num_blocks`` (bounds and ``W == 0`` as above). H measures
today's pressure and a program's footprint arrives over its whole life: when H crossed the
upper threshold the door used to release its whole backlog at once (14 SWE-like programs
within a second at 10 GB, W to 2.3x the cache), those programs outgrew memory together, and
the door re-engaged only once the thrash had started (half the returning turns faulted).
``RELEASE`` overbooks the peaks by what they overstate: an agent's context over its turns
averages 0.52-0.73 of its final one on the matrix's agent workloads. A chat-sized newcomer is
never part of the backlog once the door is disengaged (a conversation's first message is not
what floods memory; holding people behind the agents' peaks cost the mix at 20 GB 2-3%).

**Demotion.** The door can only stop admitting, and the active set keeps growing after
admission (programs admitted while it was open, or through the release, grow turn by turn):
on BFCL-like programs at 20 GB past the cliff W sat at 1.4x the cache at the median decision
and 30% of the returning turns faulted, most with the door engaged. So an engaged door whose W
exceeds ``DEMOTE * target * num_blocks`` lowers the multiprogramming level, as an OS swaps a
process out: it takes programs in a tool call out of the active set (unpinned ones that
reserve memory, the latest program arrival first) until ``W <= target * num_blocks``. A
demoted program keeps its KV in the prefix cache until evicted; its next turn is a newcomer
and joins the backlog. This spreads the waiting the door imposes over more programs instead of
concentrating it on first turns (turn-TTFT P99 past the cliff).

**Order.** Newcomers pass in the scheduler's order, and once one is held every later newcomer
is held in that step (the door is FIFO); requests of active programs are never held, and the
scheduler skips held requests, so the door never idles the engine while a turn of an active
program could run. ``target`` may exceed 1 to overbook: footprints are peaks, and programs do
not all peak at once.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from continuum.kv_ttl.predictor import TOOL, tool_key
from continuum.kv_ttl.programs import ProgramRecord
from continuum.kv_ttl.ttl import SlidingMean
from continuum.request import Request

COLD_OUTPUT_TOKENS = 256
# Before any duration is known: the P90 of METHOD 2.2's cold-start prior (an exponential tool
# time with mean 1 s). Also the gate: the door engages once a block freed now would be evicted
# before 90% of such calls return, and disengages at DISENGAGE times that. Without the
# hysteresis (disengaging at GATE_S itself) the door opened as soon as its own holds lifted the
# pressure, and lost to vllm past the cliff on BFCL-like programs (1.04-1.05x mean JCT, one
# seed of the matrix's points); at 4x it won there (0.79-0.89x) at the same below-cliff cost.
COLD_HORIZON_S = GATE_S = math.log(10.0)
DISENGAGE = 4.0
# A program whose calls last more than DUTY times its turns computes under 1/DUTY of the time:
# its memory would sit idle most of the time, so it gets no reservation and no pin.
DUTY = 10.0
MIN_SERVICE_S = 1.0          # a turn counts as at least this long (so calls under DUTY s always pass)
# A newcomer with a chat-sized prompt waits at most SMALL_WAIT_S. One bound for every program
# traded the agents' gains for the people's tail (600 s: people in the mix at 20 GB 1.36x
# vllm's mean JCT; 120 s: coding agents worse than vllm past the cliff,
# benchmarks/results/door-wait-frontier/). A bound in proportion to the prompt (600 s x
# prompt / 4,096) gained more on the mix but cost the 70k-token SWE-like programs, whose first
# prompts are ~2,000 tokens, 5-6% past the cliff at 30 GB: a small first prompt does not make a
# small program. docs/scheduling.md, "the wait bound".
SMALL_PROMPT_TOKENS = 512
SMALL_WAIT_S = 60.0
# A disengaged door releases the newcomers it held while W + n <= RELEASE x target x blocks
# (module docstring, "the backlog"). Stricter is better for agents and worse for the mix of
# people and agents on a small cache: a door kept engaged until its backlog had entered made
# the mix at 20 GB 1.02-1.10x vllm's mean JCT past the cliff, 1.25 up to 1.02x; 2 kept half of
# what the flood cost the agents. 1.5 is the strictest that leaves the mix no worse than vllm
# (benchmarks/results/door-backlog/).
RELEASE = 1.5
# An engaged door whose active programs' peaks W exceed DEMOTE x target x blocks takes programs
# in a tool call out of the active set until they fit (module docstring, "demotion"). On the
# whole matrix (benchmarks/results/door-demote/) 1.0 spread the waiting further but lost short
# agents' JCT gain, 1.5 kept more gain but the coding agents' tails returned; 1.2 held the most goals.
DEMOTE = 1.2


@dataclass
class _Between:
    """An active program between turns (its context, turns and finish time are on its record)."""
    horizon: float               # seconds after its finish it keeps reserving memory
    num_full_blocks: int         # full blocks with KV when the turn ended (what it can hit)
    last_hash: bytes | None      # hash of the last of them (to tell eviction from divergence)


class AdmissionControl:
    def __init__(self, target: float = 1.0, max_wait: float = math.inf,
                 horizon_quantile: float = 0.9):
        if target <= 0 or max_wait <= 0:
            raise ValueError("admission target and max wait must be > 0")
        self.target = target
        self.max_wait = max_wait
        self.engaged = False                 # the gate (module docstring)
        self.num_timeouts = 0                # newcomers admitted because they waited their bound
        self.num_faults = 0                  # returning turns whose context had been evicted
        self.num_returns = 0                 # returning turns that extend their context
        self.horizon_quantile = horizon_quantile
        self.between: dict[str, _Between] = {}
        self.mean_output = SlidingMean(initial=COLD_OUTPUT_TOKENS)
        self.mean_new_input = SlidingMean()
        self._ws: int | None = None          # this step's working set (None: not computed yet)
        self._turns_left: list[float] = []   # this step's R(m), by m
        self._closed = False                 # a newcomer was held this step
        self.num_held = 0                    # steps in which the door held a newcomer
        self.num_demoted = 0                 # programs the door took out of the active set
        self.last_working_set = 0            # W at the last door decision (blocks)
        self.ctx = None

    def bind(self, ctx) -> None:
        self.ctx = ctx

    # -- events -------------------------------------------------------------------------------
    def begin_step(self) -> None:
        self._ws = None
        self._closed = False

    def on_finish(self, req: Request, now: float) -> None:
        """A turn of a continuing program finished: it is between turns now."""
        self.mean_output.add(req.num_output_tokens)
        rec = req.program_record
        # The record still describes the previous turn (AgentState updates it after the policy).
        if rec is not None and rec.turns_finished:        # new input since the previous turn
            self.mean_new_input.add(max(req.num_prompt_tokens - rec.context_tokens, 0))
        n_full = min(len(req.block_hashes), req.num_computed_tokens // self.ctx.kv.block_size)
        horizon = self.reservation_horizon(req, now)
        if rec is not None:
            rec.kept = horizon > 0
        self.between[req.program_id] = _Between(horizon, n_full,
                                                req.block_hashes[n_full - 1] if n_full else None)

    def reservation_horizon(self, req: Request, now: float) -> float:
        """How long after this turn's finish its program keeps reserving memory: its tool's
        P90, or 0 if the program computes under 1/DUTY of the time (module docstring)."""
        horizon = self._horizon(req.tool_name, now)
        service = now - (req.first_scheduled_time if req.first_scheduled_time is not None else now)
        return 0.0 if horizon > DUTY * max(service, MIN_SERVICE_S) else horizon

    def on_admit(self, req: Request) -> None:
        """A returning turn was admitted: count it, and count a *fault* if its program's context
        had been evicted (it hit less than the full blocks its previous turn left). A prompt
        that does not extend the previous context counts as neither. The fault rate is the
        thrashing signal to watch when tuning ``target``."""
        b = self.between.pop(req.program_id, None)
        if b is None or not b.num_full_blocks or req.num_preemptions:
            return
        k = b.num_full_blocks
        if (req.num_tokens - 1) // self.ctx.kv.block_size < k or len(req.block_hashes) < k \
                or req.block_hashes[k - 1] != b.last_hash:
            return
        self.num_returns += 1
        if req.num_cached_tokens < k * self.ctx.kv.block_size:
            self.num_faults += 1

    def _horizon(self, tool: str | None, now: float) -> float:
        """The ``horizon_quantile`` of the tool's durations; while few have been recorded,
        counting the calls still in flight.

        A duration is recorded only when its call returns, so the first returns of a tool are
        its short calls: on its first few returns a person who thinks for minutes "returns
        within 30 s" (censoring bias). While fewer than the predictor's ``k`` durations back
        the estimate, the calls in flight are counted as lower bounds (each has lasted
        ``now`` minus its program's last finish) and the quantile is read from the Kaplan-Meier estimate over
        both; if the survival never falls below ``1 - q`` (too many calls outlast every return
        seen) it is unknown and taken as infinite. From ``k`` durations on, the recorded ones
        are trusted as the predictor trusts them, so calls that never return (a client that
        stopped after a tool call) cannot hold the estimate hostage. Before any call returned:
        the cold prior's P90."""
        pred = self.ctx.predictor
        level = pred.level(tool)
        s = pred.samples(tool)
        if s is None:
            s = pred.pooled.sorted()
        if not s:
            return COLD_HORIZON_S
        if len(s) >= pred.k:
            return s[min(int(self.horizon_quantile * len(s)), len(s) - 1)]
        censored = sorted(now - rec.last_finish_time for rec in map(self.ctx.programs.get, self.between)
                          if rec is not None and rec.last_finish_time is not None      # not back yet
                          and (level != TOOL or tool_key(rec.last_tool) == tool_key(tool)))
        return km_quantile(s, censored, self.horizon_quantile)

    # -- sizes --------------------------------------------------------------------------------
    @property
    def growth(self) -> float:
        """Expected tokens a program's context grows by per turn."""
        return self.mean_new_input.value + self.mean_output.value

    def turns_left(self, m: int) -> float:
        """R(m) = E[N - m | N >= m] over recently completed programs (m before any)."""
        table = self._turns_table()
        if not table:
            return float(m)
        return table[m] if m < len(table) else 0.0

    def _turns_table(self) -> list[float]:
        """R(m) by m, built once per step (empty before any program completed)."""
        table = self._turns_left
        if not table:
            counts = self.ctx.eta.turn_counts
            if not counts:
                return table
            hist: dict[int, int] = {}
            for n in counts:
                hist[n] = hist.get(n, 0) + 1
            top = max(hist)
            table = [0.0] * (top + 2)
            num = tot = 0                       # programs with N >= m, sum of their N
            for k in range(top, 0, -1):
                num += hist.get(k, 0)
                tot += k * hist.get(k, 0)
                table[k] = tot / num - k if num else 0.0
            self._turns_left = table
        return table

    def program_growth(self, rec, g: float | None = None) -> float:
        """Growth per turn of this program: its own mean so far, shrunk towards the global mean
        ``g`` (weight 1 for the global mean, one per turn it has finished)."""
        if g is None:
            g = self.growth
        k = rec.turns_finished if rec is not None else 0
        if k == 0:
            return g
        own = (rec.context_tokens - rec.first_prompt_tokens) / k
        return (own * k + g) / (k + 1)

    def request_footprint(self, req: Request) -> int:
        """Tokens the request's program is expected to need at its peak: the tokens it holds
        when its turn ends (prompt + ``min(max_tokens, mean output)``, or what it already
        produced if more), plus the program's growth (``program_growth``) over its expected
        turns left (``turns_left``; none if no turn follows this one or its memory is not
        kept). A request without a program record is taken as a first turn."""
        return self._peak_sum(((req.program_record, (req,)),), 1)

    def _peak_sum(self, groups: Iterable[tuple[ProgramRecord | None, Iterable[Request]]],
                  unit: int) -> int:
        """The sum of ``ceil(request_footprint / unit)`` over requests grouped by program
        record. The working set runs this over every live request at every door decision
        under pressure (the policy's costliest step), so what a program's requests share is
        read once per program and the rest is inlined."""
        table = self._turns_table()
        n_table = len(table)
        g = self.growth
        mo = self.mean_output.value
        mo_int = int(mo)
        total = 0
        for rec, reqs in groups:
            if rec is None:
                m, k = 1, 0
            else:
                m, k = rec.turns_arrived, rec.turns_finished
            kept = rec is None or rec.kept
            # program_growth, inlined
            gp = ((rec.context_tokens - rec.first_prompt_tokens) / k * k + g) / (k + 1) if k else g
            tail = gp * ((table[m] if m < n_table else 0.0) if table else float(m))
            for req in reqs:
                mt = req.sampling_params.max_tokens
                expected = mo_int if mt is None or mt > mo else mt
                produced = len(req.output_token_ids)
                end = len(req.prompt_token_ids) + (produced if produced > expected else expected)
                agent = req.agent
                if kept and agent.program_id is not None and not agent.is_last_step:
                    end = int(end + tail)
                total -= -end // unit                                   # ceil division
        return total

    def working_set_blocks(self, now: float) -> int:
        """W: blocks the active programs are expected to need at their peaks (see the module
        docstring). An engaged door also demotes here when W exceeds ``DEMOTE`` x the target,
        and returns the W left after it."""
        ctx = self.ctx
        bs = ctx.kv.block_size
        self._turns_left = []                  # the turn-count history may have changed
        g = self.growth
        # Live requests of active programs, from the active records rather than the queues:
        # under pressure the waiting queue is mostly newcomers held at this door.
        w = self._peak_sum(((rec, rec.live.values()) for rec in ctx.programs.active.values() if rec.live),
                           bs)
        host = ctx.kv.host is not None
        pins = ctx.pins.pins
        demotable = []                             # unpinned programs reserving in a tool call
        for pid, b in list(self.between.items()):
            rec = ctx.programs.get(pid)
            if rec is None or (not rec.num_live and rec.last_finish_time is None):
                del self.between[pid]              # it ended (or came back and was aborted)
                continue
            if rec.num_live:
                continue                           # it came back: counted as live
            pinned = pid in pins
            if pinned or (not host and now - rec.last_finish_time <= b.horizon):
                gp = self.program_growth(rec, g)
                n = -(-int(rec.context_tokens + gp * (1 + self.turns_left(rec.turns_finished + 1)
                                                      * rec.kept)) // bs)
                w += n
                if not pinned:
                    demotable.append((rec, n))
        limit = self.target * ctx.kv.pool.num_blocks
        if self.engaged and w > DEMOTE * limit:
            w = self._demote(w, demotable, limit)
        return w

    def _demote(self, w: int, demotable: list, limit: float) -> int:
        """Shrink the active set until ``W <= limit`` (module docstring, "demotion"): programs
        in a tool call, unpinned, the latest program arrival first. Returns the new W."""
        demotable.sort(key=lambda x: (-x[0].first_arrival, x[0].program_id))
        for rec, n in demotable:
            if w <= limit:
                break
            self.ctx.programs.set_admitted(rec, False)
            rec.held = True                        # its next turn joins the backlog
            del self.between[rec.program_id]
            w -= n
            self.num_demoted += 1
        return w

    # -- the door -----------------------------------------------------------------------------
    def is_engaged(self) -> bool:
        """The gate, with hysteresis (module docstring); updated at each door decision."""
        host = self.ctx.kv.host
        h = self.ctx.eviction.seconds_with(host.num_blocks if host is not None else 0)
        if h < GATE_S:
            self.engaged = True
        elif h > DISENGAGE * GATE_S:
            self.engaged = False
        return self.engaged

    def wait_bound(self, req: Request) -> float:
        """The longest a newcomer waits at the door: ``max_wait``, at most ``SMALL_WAIT_S`` for
        a prompt of at most ``SMALL_PROMPT_TOKENS`` (module docstring)."""
        if req.num_prompt_tokens <= SMALL_PROMPT_TOKENS:
            return min(self.max_wait, SMALL_WAIT_S)
        return self.max_wait

    def admit(self, req: Request, now: float) -> bool:
        rec = req.program_record
        if rec is None or rec.admitted:
            return True
        engaged = self.is_engaged()
        if not engaged and (req.num_prompt_tokens <= SMALL_PROMPT_TOKENS or not (rec.held or self._closed)):
            return True                     # no pressure, and not (behind) the backlog, or chat-sized
        if now - req.arrival_time >= self.wait_bound(req):
            self.num_timeouts += 1
            return True
        if self._closed:
            rec.held = True
            return False
        if self._ws is None:
            self._ws = self.last_working_set = self.working_set_blocks(now)
        need = self.ctx.kv.blocks_for(self.request_footprint(req))
        limit = self.target * (1.0 if engaged else RELEASE) * self.ctx.kv.pool.num_blocks
        if self._ws and self._ws + need > limit:
            self._closed = rec.held = True
            self.num_held += 1
            return False
        self._ws += need
        return True


def km_quantile(events: list[float], censored: list[float], q: float) -> float:
    """The q-quantile of the Kaplan-Meier estimate from ascending ``events`` (observed
    durations) and ascending ``censored`` (lower bounds): the first event time at which the
    survival drops below ``1 - q``; infinite if it never does. With no censored values this
    is ``events[min(int(q * n), n - 1)]``, the empirical quantile."""
    n = len(events) + len(censored)
    surv, i, j = 1.0, 0, 0
    while i < len(events):
        if j < len(censored) and censored[j] < events[i]:
            j += 1                                  # leaves the risk set before this event
        else:
            surv *= 1.0 - 1.0 / (n - i - j)
            if surv < 1.0 - q - 1e-12:
                return events[i]
            i += 1
    return math.inf
