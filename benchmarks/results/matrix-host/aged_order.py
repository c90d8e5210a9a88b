"""Ad-hoc: continuum+ orders by program arrival with a bounded head start: a request's key is
max(program arrival, request arrival - AGE), so a later turn of an old program goes ahead of
a newcomer by at most AGE seconds. HOST=1: only with a host tier."""
import os
from continuum.request import RequestStatus
from continuum.scheduler.policies import continuum_plus as cp
AGE = float(os.environ.get("AGE", "30"))
HOST = os.environ.get("HOST", "1") == "1"
P = cp.ContinuumPlusPolicy
_wk, _vk = P.waiting_key, P.victim_key
def _on(self):
    return self.ctx.kv.host is not None or not HOST
def waiting_key(self, req):
    if not _on(self):
        return _wk(self, req)
    return (req.status != RequestStatus.PREEMPTED, req.program_id not in self._pinned,
            max(req.program_arrival, req.arrival_time - AGE), req.arrival_time, req.seq_no)
def victim_key(self, req):
    if not _on(self):
        return _vk(self, req)
    return (max(req.program_arrival, req.arrival_time - AGE), req.arrival_time, req.seq_no)
P.waiting_key, P.victim_key = waiting_key, victim_key
