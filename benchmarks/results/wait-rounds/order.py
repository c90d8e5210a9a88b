"""Measurement patch (not adopted): a held program's returning turn -- a program the door
demoted during its tool call -- queues by its program's arrival, ahead of newer newcomers,
instead of by its own arrival (behind every newcomer that came during the call)."""
import continuum.scheduler.policies.continuum_plus as CP
from continuum.request import RequestStatus


def waiting_key(self, req):
    rec = req.program_record
    t = req.program_arrival if (rec is not None and rec.held and not rec.admitted) else req.arrival_time
    return (req.status != RequestStatus.PREEMPTED, req.program_id not in self._pinned, t, req.seq_no)


CP.ContinuumPlusPolicy.waiting_key = waiting_key
