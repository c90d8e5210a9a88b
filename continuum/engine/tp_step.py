"""A step as the driver sends it to the other tensor-parallel ranks: small and incremental.

Rank 0 schedules; the other ranks need, per scheduled request, only what
``ModelRunner.prepare`` reads: its id, the new tokens and where they start, whether it
samples, and its block table. Block tables are mirrored, not resent: the driver remembers
which live list (``ScheduledRequest.block_ids``) it last sent for a request and how many ids,
and sends only the ids appended since (a decode step: usually none), or the whole list when
it is a new list object (the request entered, was preempted, or its id was reused). The
rank replays that into a list object of its own, so the rank's ``InputBatch`` sees the same
"same object, longer" / "new object" history the driver's does, and its rows hold the same
block ids in the same order (``LLMEngine.check_integrity`` compares them).

Invariants: messages are applied in the order sent (a pipe); a message's forgotten ids are
applied before its scheduled requests; per-step wire size is O(sequences + new tokens +
new block ids), never O(context), except when a request enters.
"""
from __future__ import annotations

from dataclasses import dataclass

from continuum.scheduler.output import ScheduledRequest, SchedulerOutput

# (request id, start, new token ids, whole table?, block ids, samples)
WireRequest = tuple[str, int, list[int], bool, list[int], bool]
StepMessage = tuple[list[str], list[WireRequest]]      # (forgotten ids, scheduled requests)


class StepEncoder:
    """Driver side: ``SchedulerOutput`` -> ``StepMessage``."""

    def __init__(self) -> None:
        # request id -> (the live block list last sent, ids of it sent); the strong reference
        # keeps `is` sound (a freed list's id could otherwise be reused by a new one).
        self._sent: dict[str, tuple[list[int], int]] = {}

    def encode(self, out: SchedulerOutput, forgotten: list[str]) -> StepMessage:
        for rid in forgotten:
            self._sent.pop(rid, None)
        wire: list[WireRequest] = []
        for s in out.scheduled:
            rid, live = s.request.request_id, s.block_ids
            prev = self._sent.get(rid)
            if prev is not None and prev[0] is live and len(live) >= prev[1]:
                whole, ids = False, live[prev[1]:]
            else:
                whole, ids = True, list(live)
            self._sent[rid] = (live, len(live))
            tokens = s.request.all_token_ids[s.start:s.start + s.num_new_tokens]
            wire.append((rid, s.start, list(tokens), whole, list(ids), s.samples))
        return forgotten, wire


class _Window:
    """Token ids ``[start, start + len(ids))`` of a request, sliced like ``all_token_ids``
    (the only read ``prepare`` makes: exactly the step's new tokens)."""

    __slots__ = ("start", "ids")

    def __init__(self, start: int, ids: list[int]):
        self.start, self.ids = start, ids

    def __getitem__(self, sl: slice) -> list[int]:
        assert sl.start >= self.start and sl.stop <= self.start + len(self.ids), "outside the step"
        return self.ids[sl.start - self.start:sl.stop - self.start]


@dataclass
class RankRequest:
    """What a non-zero rank knows of a request: its id and this step's tokens."""

    request_id: str
    all_token_ids: _Window


class StepDecoder:
    """Rank side: ``StepMessage`` -> a ``SchedulerOutput`` over mirrored block tables."""

    def __init__(self) -> None:
        self.tables: dict[str, list[int]] = {}

    def decode(self, msg: StepMessage) -> SchedulerOutput:
        forgotten, wire = msg
        for rid in forgotten:
            self.tables.pop(rid, None)
        scheduled = []
        for rid, start, tokens, whole, ids, samples in wire:
            if whole:
                self.tables[rid] = list(ids)          # a new object, as on the driver
            else:
                self.tables[rid].extend(ids)
            req = RankRequest(rid, _Window(start, tokens))
            scheduled.append(ScheduledRequest(req, start, len(tokens), self.tables[rid], samples))  # type: ignore[arg-type]
        return SchedulerOutput(scheduled=scheduled, finished_ids=list(forgotten))
