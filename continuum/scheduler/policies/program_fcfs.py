"""Program-level FCFS (METHOD 2.4 without the pin rule; Continuum's ablation 1).

Waiting order: preempted first, then the *program's* first arrival, then the request's
arrival and id: a returning turn of an old program goes ahead of newer programs. Victims:
latest program arrival first. Finished turns free their KV.
"""
from __future__ import annotations

from continuum.request import Request, RequestStatus
from continuum.scheduler.policy import Policy


class ProgramFCFSPolicy(Policy):
    name = "program-fcfs"

    def waiting_key(self, req: Request) -> tuple:
        return (req.status != RequestStatus.PREEMPTED, req.program_arrival,
                req.arrival_time, req.seq_no)

    def victim_key(self, req: Request) -> tuple:
        return (req.program_arrival, req.arrival_time, req.seq_no)
