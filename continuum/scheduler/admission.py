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
together, and the engine thrashes anyway. Each active program is therefore a *trajectory*: it
holds the tokens at the end of its current (or next) turn now, and grows by

    g * min(j, R(m)) * keep  tokens j turns ahead, until j = Rq(m); then it has ended

with ``g`` the mean growth per turn (new input + output, last 256 turns; each program's own so
far, shrunk towards it), ``m`` its turns so far, ``R(m) = E[N - m | N >= m]`` the expected
turns left and ``Rq(m)`` their ``LEAVE_QUANTILE`` (P90), both from the turn counts ``N`` of the
last 256 completed programs (before any has completed: ``R(m) = Rq(m) = m``, a program is
assumed halfway), and ``keep`` 0 for a program whose memory is not kept across its calls
(below), else 1 (``ProgramRecord.kept``). Its *footprint* is its peak, reached at
``j = R(m)``. The working set ``W`` (in KV blocks, estimated at the first door decision of a
step) is the *peak of the sum* of the trajectories over the turns ahead (``Projection``), not
the sum of their peaks: the old programs end while the young ones grow, so an old program's
last turns and a young one's last turns do not hold memory at once. Summing the peaks held
newcomers for memory no one would need: at vllm's cliff first turns waited 2.6-5.8x vllm's
turn-TTFT P99 (short agents at 4 and 8 GB, SWE-like at 10 and 20 GB) for little or no gain in
mean JCT. A program is counted until the P90 of its turns left, not their mean: counted only
until the mean, the programs that outlive it collide with the young ones' growth where turn
counts spread (coding agents, 3-16 turns: at 107 GB @ 0.5 programs/s 4.7x vllm's turn-TTFT
P99, from 1.6x with summed peaks; 2.7x with the P90). Turns are the common clock (programs are
assumed to move through their turns at one pace). ``benchmarks/results/working-set/``. The
trajectories:

- every live (running or waiting) request of an active program: its prompt plus the output it
  is still expected to produce (``min(max_tokens, mean output)``), then its expected growth
  (none for a program's last step or a request without a program);
- every active program between turns (in a tool call): its context plus one turn's growth,
  then its expected growth over the turns after it,
  while it is pinned, or, unpinned, while its call has lasted less than its *reservation
  horizon*: the P90 of the tool's durations, counting the calls still in flight as
  censored durations (Kaplan-Meier; returns alone are the short calls). A program that computes less than 1/``DUTY`` of
  the time (its tool's P90 is more than ``DUTY`` times its last turn's service time, counted as
  at least ``MIN_SERVICE_S``: a person thinking for minutes between chat turns) is not
  worth holding memory for: no reservation, ``keep`` 0. A call past its horizon stops reserving (a client that never comes back cannot
  hold the door shut). With a host tier, unpinned programs between turns never reserve device
  memory: their KV is written to the host tier when evicted, so their return costs a reload
  over the link, not a recompute.

**Rule.** While engaged, a newcomer is admitted iff ``W`` with its trajectory added is at
most ``target * num_blocks``, or ``W == 0`` (nothing active: a program larger than the
target still runs alone, so the door never wedges the engine), or it has waited its bound.

**The wait bound.** A newcomer waits at most ``WAIT_ROUNDS`` *rounds* ``V`` of the programs
in the system, or ``PEAK_ROUNDS`` rounds ``V_peak`` of them at their projected peaks if that is
longer, and never more than ``max_wait`` (``SMALL_WAIT_S`` for a chat-sized prompt of at most
``SMALL_PROMPT_TOKENS``; an agent's first prompt, with its system prompt and tool schemas, is
thousands of tokens). A round is what a turn waits for under FCFS once the cache thrashes,
vllm's regime past the cliff: one turn of every program in the system (live, or in a tool
call) from a cold cache,

    V = sum over programs of PrefillReload(context) + t_full * o * (sum of contexts + n o / 2) / C

the recompute of every context, plus the decode steps of one turn's ``o`` output tokens
(the mean) of each, where a turn holds its context + o/2 tokens for o steps and a step of a
full cache (``C`` tokens, as many sequences as fit at the mean size: ``t_full``, the prefill
model's ``decode_seconds``) serves C of those token-steps. Both parts rest on measured
costs: the engine's online step-cost fit (``kv_ttl/step_cost.py``), the simulator's cost
model. Until the engine's first fit there is no bound in rounds (only the caps): its prior is
an H100's, a hundredfold short on a slow CPU, and on the CPU engine a door bounded by it
admitted every newcomer at once (the mix at 2 / 4 programs/s 1.03x / 1.02x vllm's mean JCT,
from 0.63x / 0.54x; ``benchmarks/results/matrix-cpu/``). The table's prices are re-read
whenever the model changes (``ProgramTable.reprice``, every refit). The door moves the
waiting of the thrash onto the newcomers, and a fixed bound of 180 s let it concentrate there:
past the cliff first turns waited 2.2-2.9x vllm's turn-TTFT P99 (short agents, SWE-like,
coding agents), whose scale is V (a round of short agents at 4 GB is seconds, of coding
agents at 40 GB a minute). The prefill part alone tracked vllm's tail only
within 1.5-3.5x across the workloads (it leaves out the decode that dominates short agents'
rounds); with the decode part the ratio is even. ``V_peak`` is the same sum with each
program's context grown by its growth per turn over its expected turns left
(``projected_peak``, the working set's ``g`` and ``R(m)``): early in an overload the programs
are young (a 70k-token SWE-like program starts at ~2k tokens), V is seconds, and the rounds
now alone let in the newcomers the door held for the memory those programs are about to need.
``ProgramTable`` keeps the sums incrementally (each program's peak read when its size
changes), so the bound is O(1) to read.

**The backlog.** A disengaged door lets through every newcomer it never held, but the ones it
held (the *backlog*, ``ProgramRecord.held``), and the newcomers behind them, only while the
*sum of the peaks* (``Projection.peak_sum``: every trajectory at its peak, as if all peaked at
once) with it fits ``RELEASE * target * num_blocks`` (bounds and ``W == 0`` as above). H measures
today's pressure and a program's footprint arrives over its whole life: when H crossed the
upper threshold the door used to release its whole backlog at once (14 SWE-like programs
within a second at 10 GB, W to 2.3x the cache), those programs outgrew memory together, and
the door re-engaged only once the thrash had started (half the returning turns faulted).
``RELEASE`` overbooks the peaks by what they overstate: an agent's context over its turns
averages 0.52-0.73 of its final one on the matrix's agent workloads. Why the peaks and not the
projection here: the projection with the same factor overbooked twice (it already counts that
programs do not peak at once), and let the 70k-token SWE-like programs of the admission sweeps
flood a cache that holds three of them (1.10x vllm's mean JCT at 30 GB @ 0.09 programs/s,
0.27x with the peaks); the projection against the target itself (no overbooking) held the
mix's coding agents behind its people at 20 GB (1.06x vllm's mean JCT at 0.2 programs/s) and
lengthened the backlog's waits (coding agents at 40 GB: turn-TTFT P99 2.9-5.0x vllm's, from
2.1-2.4x). ``benchmarks/results/working-set/``. A chat-sized newcomer is
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
program could run. ``target`` may exceed 1 to overbook.
"""
from __future__ import annotations

import heapq
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
# A newcomer waits at most WAIT_ROUNDS rounds V of the programs as they are, or PEAK_ROUNDS
# rounds of them at their projected peaks if longer (module docstring, "the wait bound"). On
# the simulator's whole matrix (benchmarks/results/wait-rounds/, "two and a half rounds"), the
# rounds now alone: 2.5 held 180 of 184 goals, mean turn-TTFT P99 above 2x vllm's at 11 of 72
# budgeted points (20 with the fixed bounds alone); 2 cut the tails further (9 points, 179
# goals) at more JCT (BFCL-like 20 GB @ 0.24 0.85x vllm's from 0.75x); 3 and 4 left the short
# agents', SWE-like and coding agents' tails at 2.1-2.6x. But the rounds now let in the
# newcomers the door held for the memory young programs will need: the 70k-token SWE-like
# programs of the admission sweeps at 30 GB went from 0.35x / 0.44x to 0.80x / 0.96x vllm's
# mean JCT at 0.08 / 0.09 programs/s. The round at the peaks keeps the door shut for them:
# PEAK_ROUNDS 1 gave back part (0.39x / 0.56x), 1.25 all of it (9.3 / 14.8 JCT / ideal, from
# the fixed bounds' 11.2 / 15.8) at 180 goals, 1.5 left SWE-like 10 GB's tail at 2.30x.
WAIT_ROUNDS = 2.5
PEAK_ROUNDS = 1.25
# A disengaged door releases the newcomers it held while the sum of the peaks with them fits
# RELEASE x target x blocks (module docstring, "the backlog"). Stricter is better for agents and
# worse for the mix of people and agents on a small cache: a door kept engaged until its backlog
# had entered made the mix at 20 GB 1.02-1.10x vllm's mean JCT past the cliff, 1.25 up to
# 1.02x; 2 kept half of what the flood cost the agents. 1.5 is the strictest that leaves the
# mix no worse than vllm (benchmarks/results/door-backlog/).
RELEASE = 1.5
# An engaged door whose working set W exceeds DEMOTE x target x blocks takes programs
# in a tool call out of the active set until they fit (module docstring, "demotion"). With the
# summed peaks (benchmarks/results/door-demote/) 1.0 spread the waiting further but lost short
# agents' JCT gain, 1.5 kept more gain but the coding agents' tails returned, and 1.2 held the
# most goals; the projected working set admits more, and with it 1.0 holds the most (171 of
# 184 goals, 166 at 1.2: benchmarks/results/working-set/).
DEMOTE = 1.0
# The working set counts a program until this quantile of its turns left (given its turns so
# far, from the completed programs' turn counts), holding its peak from its expected last turn
# on (``Projection``): counted only until their mean, the programs that outlive it collide
# with the young programs' growth (module docstring). The P90, as for the tools' reservation
# horizon; 1.0 (the longest seen) measured the same on the points that moved.
LEAVE_QUANTILE = 0.9


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
        self.wait_rounds = WAIT_ROUNDS       # the bound in rounds (tests move them out of reach)
        self.peak_rounds = PEAK_ROUNDS
        self.engaged = False                 # the gate (module docstring)
        self.num_timeouts = 0                # newcomers admitted because they waited their bound
        self.num_faults = 0                  # returning turns whose context had been evicted
        self.num_returns = 0                 # returning turns that extend their context
        self.horizon_quantile = horizon_quantile
        self.between: dict[str, _Between] = {}
        self.mean_output = SlidingMean(initial=COLD_OUTPUT_TOKENS)
        self.mean_new_input = SlidingMean()
        # This step's working set (None: not computed yet; 0: nothing active). After a release
        # it holds the sum of the peaks instead, an upper bound: only its being 0 is read.
        self._ws: int | None = None
        self._proj: Projection | None = None  # and its trajectories (working_set_blocks)
        self._round: tuple | None = None     # this step's bound in rounds and what it was read from
        self._priced: tuple | None = None    # the cost model the program table's prices are from
        self._turns_left: tuple[list[float], list[float]] = ([], [])   # R(m), Rq(m) by m
        self._turns_version = -1             # of the turn-count history they were built from
        self._closed = False                 # a newcomer was held this step
        self.num_held = 0                    # steps in which the door held a newcomer
        self.num_demoted = 0                 # programs the door took out of the active set
        self.last_working_set = 0            # W at the last door decision (blocks)
        self.ctx = None

    def bind(self, ctx) -> None:
        self.ctx = ctx
        ctx.programs.price = lambda n: ctx.reload_cost.seconds(n)     # a program's share of V
        ctx.programs.projected_peak = self.projected_peak

    # -- events -------------------------------------------------------------------------------
    def begin_step(self) -> None:
        self._ws = None
        self._round = None
        self._closed = False
        model = self.ctx.prefill_cost
        if (id(model), model.version) != self._priced:     # installed, or refitted: reprice
            self._priced = (id(model), model.version)
            self.ctx.programs.reprice()

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

    def turns_ahead(self, m: int) -> tuple[float, float]:
        """(R(m), Rq(m)): the turns a program at turn m is expected to have left, and the
        ``LEAVE_QUANTILE`` of them (m and m before any program completed)."""
        table, q_table = self._turns_table()
        if not table:
            return float(m), float(m)
        return (table[m], q_table[m]) if m < len(table) else (0.0, 0.0)

    def _turns_table(self) -> tuple[list[float], list[float]]:
        """R(m) and Rq(m) (the ``LEAVE_QUANTILE`` of ``N - m`` given ``N >= m``) by m; empty
        before any program completed. Rebuilt when a program completes."""
        eta = self.ctx.eta
        if self._turns_version != eta.num_added:
            self._turns_version = eta.num_added
            self._turns_left = turns_left_tables(eta.turn_counts, LEAVE_QUANTILE)
        return self._turns_left

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
        turns left (``turns_ahead``; none if no turn follows this one or its memory is not
        kept). A request without a program record is taken as a first turn."""
        proj = Projection()
        self._project_live(((req.program_record, (req,)),), 1, proj)
        return round(proj.peak_sum())

    def _project_live(self, groups: Iterable[tuple[ProgramRecord | None, Iterable[Request]]],
                      unit: int, proj: Projection) -> None:
        """Add each request's trajectory, in units of ``unit`` tokens, to ``proj``: now
        ``ceil(end / unit)`` (the tokens at the end of its turn), at its peak
        ``ceil(request_footprint / unit)`` ``R(m)`` turns ahead, gone after ``Rq(m)``. The
        working set runs this over every live request at every door decision under pressure
        (the policy's costliest step), so what a program's requests share is read once per
        program and the rest is inlined."""
        table, q_table = self._turns_table()
        n_table = len(table)
        g = self.growth
        mo = self.mean_output.value
        mo_int = int(mo)
        cohorts = proj.cohorts
        for rec, reqs in groups:
            if rec is None:
                m, k = 1, 0
            else:
                m, k = rec.turns_arrived, rec.turns_finished
            kept = rec is None or rec.kept
            # program_growth, inlined
            gp = ((rec.context_tokens - rec.first_prompt_tokens) / k * k + g) / (k + 1) if k else g
            if not table:
                r = rq = float(m)
            elif m < n_table:
                r, rq = table[m], q_table[m]
            else:
                r = rq = 0.0
            tail = gp * r
            for req in reqs:
                mt = req.sampling_params.max_tokens
                expected = mo_int if mt is None or mt > mo else mt
                produced = len(req.output_token_ids)
                end = len(req.prompt_token_ids) + (produced if produced > expected else expected)
                now_units = -(-end // unit)                             # ceil division
                agent = req.agent
                if kept and agent.program_id is not None and not agent.is_last_step and r > 0:
                    grow = -(-int(end + tail) // unit) - now_units
                    acc = cohorts.get((r, rq))
                    if acc is None:
                        cohorts[(r, rq)] = [now_units, grow / r]
                    else:
                        acc[0] += now_units
                        acc[1] += grow / r
                else:
                    proj.now_only += now_units

    def working_set_blocks(self, now: float) -> int:
        """W: blocks the active programs are expected to need at once (see the module
        docstring), and this step's projection (``self._proj``) that newcomers are tried
        against. An engaged door also demotes here when W exceeds ``DEMOTE`` x the target,
        and returns the W left after it."""
        ctx = self.ctx
        bs = ctx.kv.block_size
        g = self.growth
        proj = self._proj = Projection()
        # Live requests of active programs, from the active records rather than the queues:
        # under pressure the waiting queue is mostly newcomers held at this door.
        self._project_live(((rec, rec.live.values()) for rec in ctx.programs.active.values() if rec.live),
                           bs, proj)
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
                # Its next turn: its context + one turn's growth, then R(m + 1) more turns.
                gp = self.program_growth(rec, g)
                nxt = -(-int(rec.context_tokens + gp) // bs)
                r, rq = self.turns_ahead(rec.turns_finished + 1) if rec.kept else (0.0, 0.0)
                grow = -(-int(rec.context_tokens + gp * (1 + r)) // bs) - nxt
                proj.add(nxt, grow, r, rq)
                if not pinned:
                    demotable.append((rec, nxt, grow, r, rq))
        w = proj.peak()
        limit = self.target * ctx.kv.pool.num_blocks
        if self.engaged and w > DEMOTE * limit:
            w = self._demote(w, demotable, limit)
        return math.ceil(w - 1e-9)

    def _demote(self, w: float, demotable: list, limit: float) -> float:
        """Shrink the active set until ``W <= limit`` (module docstring, "demotion"): programs
        in a tool call, unpinned, the latest program arrival first. Returns the new W."""
        demotable.sort(key=lambda x: (-x[0].first_arrival, x[0].program_id))
        for rec, nxt, grow, r, rq in demotable:
            if w <= limit:
                break
            self.ctx.programs.set_admitted(rec, False)
            rec.held = True                        # its next turn joins the backlog
            del self.between[rec.program_id]
            self._proj.add(-nxt, -grow, r, rq)
            w = self._proj.peak()
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
        """The longest a newcomer waits at the door: ``rounds_bound()``, and at most
        ``max_wait``, or ``SMALL_WAIT_S`` for a prompt of at most ``SMALL_PROMPT_TOKENS``
        (module docstring, "the wait bound")."""
        cap = self.max_wait
        if req.num_prompt_tokens <= SMALL_PROMPT_TOKENS:
            cap = min(cap, SMALL_WAIT_S)
        return min(cap, self.rounds_bound())

    def rounds_bound(self) -> float:
        """The bound in rounds: ``WAIT_ROUNDS`` rounds of the programs in the system as they
        are, or ``PEAK_ROUNDS`` rounds of them at their projected peaks, whichever is longer
        (module docstring, "the wait bound"). O(1): the table keeps the sums; kept for the
        step while they do not change (every held newcomer asks). Infinite (no bound but the
        caps) while the cost model is a prior from another machine (an engine's first steps,
        before its step-cost fit)."""
        if not self.ctx.prefill_cost.measured:
            return math.inf
        t = self.ctx.programs
        key = (t.num_in_system, t.sum_tokens, t.sum_price, t.peak_tokens, t.peak_price,
               self.mean_output.value)
        if self._round is not None and self._round[0] == key:
            return self._round[1]
        bound = max(self.wait_rounds * self.round_seconds(t.sum_tokens, t.sum_price),
                    self.peak_rounds * self.round_seconds(t.peak_tokens, t.peak_price))
        self._round = (key, bound)
        return bound

    def round_seconds(self, tokens: int, price: float) -> float:
        """V: the seconds one turn of every program in the system takes the engine from a cold
        cache, the programs holding ``tokens`` in all and their contexts' recomputes costing
        ``price``: that recompute plus the decode steps of one turn's output of each, the
        cache's worth at a time (module docstring, "the wait bound"). 0 with no program."""
        ctx = self.ctx
        n = ctx.programs.num_in_system
        if not n:
            return 0.0
        o = self.mean_output.value
        cap = ctx.kv.pool.num_blocks * ctx.kv.block_size
        # A turn of o tokens holds its context + o / 2 on average for o steps; a step of a full
        # cache (as many sequences as fit at the mean size) serves cap of those token-steps.
        steps = o * (tokens + n * o / 2) / cap
        seqs = min(ctx.config.max_num_seqs, max(1, round(cap * n / (tokens + n * o))))
        return price + ctx.prefill_cost.decode_seconds(seqs, cap) * steps

    def projected_peak(self, rec: ProgramRecord, size: int) -> int:
        """A program's size in ``size`` tokens grown by its growth per turn
        (``program_growth``) over the turns it is expected to have left (``turns_ahead`` of
        its current turn): the peak the round at the peaks prices it at (``ProgramTable``
        reads it when the size changes). No growth for a program whose memory is not kept or
        whose live request is its last step."""
        if not rec.kept or any(r.agent.is_last_step for r in rec.live.values()):
            return size
        r, _ = self.turns_ahead(rec.turns_arrived)
        return int(size + self.program_growth(rec) * r)

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
        limit = self.target * (1.0 if engaged else RELEASE) * self.ctx.kv.pool.num_blocks
        proj = self._proj
        if not self._ws:                    # nothing active: it is admitted whatever its size
            self._project_live(((rec, (req,)),), self.ctx.kv.block_size, proj)
            self._ws = math.ceil(proj.peak() - 1e-9)
            return True
        trial = proj.copy()
        self._project_live(((rec, (req,)),), self.ctx.kv.block_size, trial)
        # Engaged: the projection. Releasing the backlog: the sum of the peaks, overbooked by
        # RELEASE (module docstring, "the backlog").
        w = trial.peak() if engaged else trial.peak_sum()
        if w > limit + 1e-9:
            self._closed = rec.held = True
            self.num_held += 1
            return False
        self._proj, self._ws = trial, math.ceil(w - 1e-9)
        return True


class Projection:
    """The active programs' expected KV over the turns ahead: the door's working set.

    Each program (each live request, or a program between turns) is a trajectory: ``b`` blocks
    at the end of its current (or next) turn, growing by ``g`` blocks a turn for the ``r``
    turns it is expected to have left, up to its peak ``b + g * r`` (its footprint), which it
    holds until ``rq`` turns ahead (``rq >= r``: the ``LEAVE_QUANTILE`` of its turns left, so
    that a program longer than the mean is still counted); then it has ended and freed its KV.
    The programs do not all peak at once: the old ones end while the young ones grow. So the
    door's working set is the *peak of the sum*,

        W = max over j >= 0 of  sum over programs with rq >= j of (b + g * min(j, r)),

    not the sum of the peaks (which it used to be, and which counted memory for an old
    program's last turns and a young one's last turns at the same time). Turns are the common
    clock: programs are assumed to move through their turns at one pace. Invariants:
    ``sum of b <= W <= sum of the peaks`` (``peak_sum``), with the upper bound reached when
    every program has the same ``rq``. Kept by ``(r, rq)`` (``cohorts``: [sum of b, sum of g]);
    both are functions of a program's turn index, so there are a few dozen cohorts however
    many programs are active."""
    __slots__ = ("cohorts", "now_only")

    def __init__(self):
        self.cohorts: dict[tuple[float, float], list[float]] = {}
        self.now_only = 0.0          # blocks of requests with no turn after this one

    def add(self, b: float, growth: float, r: float, rq: float) -> None:
        """A trajectory from ``b`` blocks to ``b + growth`` over ``r`` turns, gone after ``rq``
        turns (negative ``b`` and ``growth`` remove one)."""
        if r <= 0:
            self.now_only += b + growth
            return
        acc = self.cohorts.get((r, rq))
        if acc is None:
            self.cohorts[(r, rq)] = [b, growth / r]
        else:
            acc[0] += b
            acc[1] += growth / r

    def copy(self) -> Projection:
        p = Projection()
        p.cohorts = {k: acc[:] for k, acc in self.cohorts.items()}
        p.now_only = self.now_only
        return p

    def peak(self) -> float:
        """W: the most the trajectories hold at once: now (j = 0, every ``b``), or just before
        some ``rq`` (the sum only falls at those; between them it grows)."""
        cohorts = sorted(self.cohorts.items(), key=lambda kv: -kv[0][1])
        b_sum = g_lin = const = 0.0              # sums of b; g with r >= j; g * r with r < j
        below: list[tuple[float, float]] = []    # (-r, g) of counted cohorts with r < j (heap)
        best = 0.0
        i, n = 0, len(cohorts)
        while i < n:
            j = cohorts[i][0][1]
            while i < n and cohorts[i][0][1] == j:
                (r, _), (b, g) = cohorts[i]
                b_sum += b
                if r >= j:
                    g_lin += g
                else:
                    const += g * r
                    heapq.heappush(below, (-r, g))
                i += 1
            while below and -below[0][0] >= j:   # r >= j now: growing until j
                r, g = heapq.heappop(below)
                const += g * r                     # r is negated
                g_lin += g
            v = b_sum + g_lin * j + const
            if v > best:
                best = v
        return max(best, b_sum + self.now_only)

    def peak_sum(self) -> float:
        """The sum of the trajectories' peaks (an upper bound on ``peak``)."""
        return self.now_only + sum(acc[0] + acc[1] * r for (r, _), acc in self.cohorts.items())


def turns_left_tables(counts: Iterable[int], q: float) -> tuple[list[float], list[float]]:
    """From the turn counts ``N`` of completed programs: ``R(m) = E[N - m | N >= m]`` and
    ``Rq(m)``, the q-quantile of ``N - m`` given ``N >= m`` (index ``min(int(q * n), n - 1)``
    of the n sorted values, as the tools' quantiles), for m = 0 .. max N + 1; both empty
    without counts."""
    hist: dict[int, int] = {}
    for n in counts:
        hist[n] = hist.get(n, 0) + 1
    if not hist:
        return [], []
    top = max(hist)
    table = [0.0] * (top + 2)
    q_table = [0.0] * (top + 2)
    num = tot = 0                           # programs with N >= m, sum of their N
    for m in range(top, 0, -1):
        num += hist.get(m, 0)
        tot += m * hist.get(m, 0)
        if not num:
            continue
        table[m] = tot / num - m
        idx, seen, n = min(int(q * num), num - 1), 0, m - 1
        while seen <= idx:                  # the (idx + 1)-th smallest N >= m
            n += 1
            seen += hist.get(n, 0)
        q_table[m] = max(float(n - m), table[m])
    return table, q_table


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
