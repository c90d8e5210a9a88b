"""Measurement patch (not adopted: it measured the same as without it): a newcomer admitted because it waited its bound runs that turn on
probation: outside the active set (not in W, demotes no one, no reservation, no pin); its
program's next turn queues by the program's arrival (at the head of the backlog) and is a
newcomer again."""
import continuum.scheduler.admission as A
import continuum.scheduler.policies.continuum_plus as CP
from continuum.request import RequestStatus
from continuum.scheduler.policy import free_because, LOW_DUTY

_admit = A.AdmissionControl.admit
_on_admit = A.AdmissionControl.on_admit
_on_finish = CP.ContinuumPlusPolicy.on_finish


def admit(self, req, now):
    t0 = self.num_timeouts
    ok = _admit(self, req, now)
    if ok and self.num_timeouts > t0:
        req._probation = True
    return ok


def on_admit(self, req):
    rec = req.program_record
    _on_admit(self, req)
    if rec is None:
        return
    if getattr(req, "_probation", False):
        rec.probation = True
        self.ctx.programs.set_admitted(rec, False)
        rec.held = True
    else:
        rec.probation = False


def on_finish(self, req, now):
    rec = req.program_record
    if rec is not None and getattr(rec, "probation", False) and not rec.admitted:
        self.door.on_finish(req, now)
        self.door.between.pop(req.program_id, None)
        return free_because(LOW_DUTY)
    return _on_finish(self, req, now)


def waiting_key(self, req):
    rec = req.program_record
    t = rec.first_arrival if (rec is not None and getattr(rec, "probation", False) and not rec.admitted) \
        else req.arrival_time
    return (req.status != RequestStatus.PREEMPTED, req.program_id not in self._pinned, t, req.seq_no)


A.AdmissionControl.admit = admit
A.AdmissionControl.on_admit = on_admit
CP.ContinuumPlusPolicy.on_finish = on_finish
CP.ContinuumPlusPolicy.waiting_key = waiting_key
