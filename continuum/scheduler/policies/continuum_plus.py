"""continuum+ (ours, beyond the paper): Continuum's TTL pins, program-level FCFS with a
starvation guard, and program admission control (``scheduler/admission.py``).

- Admission (the door): a new program's first turn is admitted only while the KV working set
  of the active programs (plus its own) fits in ``admission_target`` of the device blocks;
  newcomers wait in arrival order. Turns of active programs are never held.
- Order: preempted > program holds a pin > ``max(program arrival, request arrival - G)`` >
  request arrival > id. With ``G = starvation_guard`` seconds, a turn of an older program
  goes ahead of a waiting request only if it arrived less than G seconds after it: G = 0 is
  request FCFS (vllm), G = inf is Continuum's program FCFS.
- On finish: Continuum's TTL (METHOD 2.2). Victims: latest program arrival first.
"""
from __future__ import annotations

from continuum.request import Request, RequestStatus
from continuum.scheduler.admission import AdmissionControl
from continuum.scheduler.policies.continuum import ContinuumPolicy
from continuum.scheduler.policy import FinishAction


class ContinuumPlusPolicy(ContinuumPolicy):
    name = "continuum+"

    def __init__(self, admission_target: float = 1.0, starvation_guard: float = 30.0):
        self.door = AdmissionControl(admission_target)
        self.guard = starvation_guard

    @classmethod
    def from_config(cls, config) -> "ContinuumPlusPolicy":
        return cls(config.admission_target, config.starvation_guard)

    def bind(self, ctx) -> None:
        super().bind(ctx)
        self.door.bind(ctx)

    def waiting_key(self, req: Request) -> tuple:
        return (req.status != RequestStatus.PREEMPTED, req.program_id not in self._pinned,
                max(req.program_arrival, req.arrival_time - self.guard), req.arrival_time, req.seq_no)

    def on_step(self, now: float) -> list:
        self.door.begin_step()
        return []

    def admit(self, req: Request, now: float) -> bool:
        return self.door.admit(req, now)

    def on_admit(self, req: Request, now: float) -> None:
        self.door.on_admit(req)

    def stats(self) -> dict[str, float]:
        d = self.door
        return {"admission_held_steps_total": d.num_held,
                "admission_working_set_blocks": d.last_working_set,
                "admission_faults_total": d.num_faults, "admission_returns_total": d.num_returns}

    def on_finish(self, req: Request, now: float) -> FinishAction:
        self.door.on_finish(req, now)
        return super().on_finish(req, now)
