"""Program records: what the scheduler remembers about each agent program between turns.

A program is the sequence of requests sharing an ``AgentInfo.program_id``. Its record keeps
the program's first arrival (program-level FCFS orders by it), turn counts, the finish time
and tool of its last turn (the next arrival minus that finish is the tool's measured
duration, METHOD 2.3), attained service / waiting in scheduler steps (Autellix), and its
live requests (waiting or running, by id). ``active`` indexes the records of admitted
programs (``continuum+``'s door sizes them at every decision under pressure, without
scanning a waiting queue full of the newcomers it holds). Invariants (``check`` and the
scheduler's integrity check): a record's ``live`` are exactly its requests in the queues;
``active`` holds exactly the records with ``admitted`` set.

The table also keeps what one *round* of the programs in the system costs, for the door's
wait bound (``scheduler/admission.py``): a program is *in the system* while it has a live request
or is between turns of a continuing program (a turn that ended in a tool call), until it ends,
is aborted or is forgotten; its ``size`` is its context (the latest prompt while live, the
context at the end of its last turn between turns, 0 out of the system), priced by ``price``
(tokens -> seconds, installed by the policy) when it changes (and all of them again by
``reprice`` when the cost model changes), and so is its *projected peak*
(``projected_peak(rec, size)``, installed by the policy: the size plus the growth expected
over the turns it is expected to have left, read at that event; the size itself by default).
``num_in_system``, ``sum_tokens`` / ``sum_price`` and ``peak_tokens`` / ``peak_price`` are
kept incrementally on those events (O(1) each), so the bound is read in O(1) at every door
decision.

Memory is bounded: a record with no live request and no pin is forgotten once it has been
idle for ``idle_timeout`` seconds (checked lazily by ``gc(now)``; O(1) amortised, records are
kept in least-recently-active order), or earlier, least recently active first, when more than
``max_programs`` records exist (program ids are client strings: a client inventing a new id
per request must not grow the table without bound). Records in use (live requests, a pin) are
never forgotten; they can exceed the cap, but they are bounded by the requests in flight. A request without a program id is a program of one
turn (``Request.program_id`` is then ``req-<request id>``): its record is dropped when it
finishes.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from continuum.request import Request


@dataclass
class ProgramRecord:
    program_id: str
    first_arrival: float
    last_active: float
    turns_arrived: int = 0          # requests seen
    turns_finished: int = 0         # requests finished
    live: dict[str, Request] = field(default_factory=dict)     # requests waiting or running now, by id
    num_waiting: int = 0            # of which waiting (queued or preempted)
    last_finish_time: float | None = None
    last_tool: str | None = None    # tool called after the last finished turn
    pinned: bool = False            # the pin table holds this program's KV
    admitted: bool = False          # one of its requests has been admitted (it is active)
    held: bool = False              # the door held it before its admission (it is in the backlog)
    context_tokens: int = 0         # tokens (prompt + output) of its last finished turn
    first_prompt_tokens: int = 0    # prompt tokens of its first turn
    num_running: int = 0
    kept: bool = True               # its memory is held across its calls (False: the door's DUTY rule)
    size: int = 0                   # context tokens while in the system, else 0 (module docstring)
    size_price: float = 0.0         # ProgramTable.price(size) when size was last set
    peak: int = 0                   # ProgramTable.projected_peak when size was last set, >= size
    peak_price: float = 0.0         # and its price
    # Steps its requests ran / waited, all turns (Autellix), kept as open intervals so that
    # nothing is visited per step: total = base + (number open) * current step.
    service_base: int = 0
    wait_base: int = 0

    @property
    def num_live(self) -> int:
        return len(self.live)

    def service_steps(self, step: int) -> int:
        return self.service_base + self.num_running * step

    def wait_steps(self, step: int) -> int:
        return self.wait_base + self.num_waiting * step

    def start_waiting(self, step: int) -> None:
        self.num_waiting += 1
        self.wait_base -= step

    def stop_waiting(self, step: int) -> None:
        self.num_waiting -= 1
        self.wait_base += step

    def start_running(self, step: int) -> None:
        self.num_running += 1
        self.service_base -= step

    def stop_running(self, step: int) -> None:
        self.num_running -= 1
        self.service_base += step


MAX_PROGRAMS = 65_536


def _free(num_tokens: int) -> float:
    return 0.0


def _as_is(rec: ProgramRecord, size: int) -> int:
    return size


class ProgramTable:
    def __init__(self, idle_timeout: float = 600.0, max_programs: int = MAX_PROGRAMS):
        self.idle_timeout = idle_timeout
        self.max_programs = max_programs
        self._records: OrderedDict[str, ProgramRecord] = OrderedDict()
        self.active: dict[str, ProgramRecord] = {}          # the admitted records (set_admitted)
        self.num_forgotten = 0
        # Programs in the system, their sizes and prices, summed (module docstring).
        self.price: Callable[[int], float] = _free
        self.projected_peak: Callable[[ProgramRecord, int], int] = _as_is
        self.num_in_system = 0
        self.sum_tokens = 0
        self.sum_price = 0.0
        self.peak_tokens = 0
        self.peak_price = 0.0

    def __len__(self) -> int:
        return len(self._records)

    def snapshot(self) -> dict[str, float]:
        """The table's stats (``continuum.snapshot``): programs tracked now, forgotten ever."""
        return {"programs_tracked": len(self._records), "programs_forgotten_total": self.num_forgotten}

    def __contains__(self, program_id: str) -> bool:
        return program_id in self._records

    def get(self, program_id: str | None) -> ProgramRecord | None:
        return None if program_id is None else self._records.get(program_id)

    def on_arrival(self, req: Request, now: float, step: int = 0) -> ProgramRecord:
        """``req`` arrived (it is live and waiting, from scheduler step ``step``); it stays in
        its program's ``live`` until ``on_finish``."""
        program_id = req.program_id
        rec = self._records.get(program_id)
        if rec is None:
            if len(self._records) >= self.max_programs:
                self._forget_idle(len(self._records) - self.max_programs + 1, now)
            rec = self._records[program_id] = ProgramRecord(program_id, now, now)
        self.touch(rec, now)
        rec.turns_arrived += 1
        rec.live[req.request_id] = req
        rec.start_waiting(step)
        self._resize(rec, max(rec.size if len(rec.live) > 1 else 0, req.num_prompt_tokens))
        return rec

    def on_finish(self, rec: ProgramRecord, req: Request, continues: bool = False) -> None:
        """``req`` left the queues (finished, aborted or failed); ``continues``: it ended in a
        tool call and its program expects another turn (it stays in the system, sized by its
        context)."""
        rec.live.pop(req.request_id, None)
        if not rec.live:
            self._resize(rec, req.num_tokens if continues else 0)

    def _resize(self, rec: ProgramRecord, size: int) -> None:
        """Set ``rec.size`` (0: out of the system) and its peak, and keep the sums."""
        if rec.size:
            self.num_in_system -= 1
            self.sum_tokens -= rec.size
            self.sum_price -= rec.size_price
            self.peak_tokens -= rec.peak
            self.peak_price -= rec.peak_price
        rec.size, rec.size_price, rec.peak, rec.peak_price = size, 0.0, 0, 0.0
        if size:
            rec.size_price = self.price(size)
            rec.peak = max(size, int(self.projected_peak(rec, size)))
            rec.peak_price = self.price(rec.peak) if rec.peak > size else rec.size_price
            self.num_in_system += 1
            self.sum_tokens += size
            self.sum_price += rec.size_price
            self.peak_tokens += rec.peak
            self.peak_price += rec.peak_price
        if not self.num_in_system:
            self.sum_price = self.peak_price = 0.0     # no float drift survives an empty system

    def reprice(self) -> None:
        """Re-read every program's price and projected peak: the cost model changed (the
        engine refits its step cost every 64 steps; a price made with the prior before its
        first fit can be a hundredfold short on a slow host). O(records)."""
        for rec in self._records.values():
            if rec.size:
                self._resize(rec, rec.size)

    def set_admitted(self, rec: ProgramRecord, admitted: bool) -> None:
        """Mark the program active (one of its requests was admitted) or not; ``active``
        holds exactly the records marked, so that the door sizes the active programs without
        scanning a queue of held newcomers."""
        rec.admitted = admitted
        if admitted:
            self.active[rec.program_id] = rec
        else:
            self.active.pop(rec.program_id, None)

    def touch(self, rec: ProgramRecord, now: float) -> None:
        rec.last_active = max(rec.last_active, now)
        self._records.move_to_end(rec.program_id)

    def gc(self, now: float) -> int:
        """Forget programs idle for longer than ``idle_timeout``; returns how many."""
        return self._forget_idle(len(self._records), now, cutoff=now - self.idle_timeout)

    def _forget_idle(self, n: int, now: float, cutoff: float = float("inf")) -> int:
        """Forget up to ``n`` records not in use, least recently active first, stopping at the
        first one active after ``cutoff``; returns how many were forgotten."""
        done = 0
        for _ in range(len(self._records)):
            if done == n:
                break
            rec = next(iter(self._records.values()))
            if rec.last_active > cutoff:
                break
            if rec.num_live or rec.pinned:
                # still in use: count it as active now and look further
                self.touch(rec, now)
                continue
            self._resize(rec, 0)
            del self._records[rec.program_id]
            self.active.pop(rec.program_id, None)
            done += 1
        self.num_forgotten += done
        return done

    def check(self) -> None:
        """``active`` holds exactly the admitted records; the system's sums are the records'."""
        assert self.active == {p: r for p, r in self._records.items() if r.admitted}, \
            "active programs disagree with the records"
        sized = [r for r in self._records.values() if r.size]
        assert self.num_in_system == len(sized) and self.sum_tokens == sum(r.size for r in sized), \
            "programs in the system disagree with the records"
        assert self.peak_tokens == sum(r.peak for r in sized), "the system's peaks disagree with the records"
        for total, part in ((self.sum_price, "size_price"), (self.peak_price, "peak_price")):
            assert abs(total - sum(getattr(r, part) for r in sized)) <= 1e-6 * (1.0 + total), \
                "the system's prices disagree with the records"

    def forget(self, program_id: str) -> None:
        rec = self._records.pop(program_id, None)
        if rec is not None:
            self._resize(rec, 0)
        self.active.pop(program_id, None)
