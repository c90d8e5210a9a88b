"""Ad-hoc: with a host tier, continuum+ orders by program (as continuum does; ORDER=request keeps
its own order) and gates its door on the device + host horizon (MODE=sum) or keeps the device
gate (MODE=dev)."""
import os, math
from continuum.scheduler import admission as adm
from continuum.scheduler.policies import continuum_plus as cp
from continuum.scheduler.policies.continuum import ContinuumPolicy
MODE = os.environ.get("MODE", "sum")
ORDER = os.environ.get("ORDER", "program")
P = cp.ContinuumPlusPolicy
_wk, _vk = P.waiting_key, P.victim_key
def waiting_key(self, req):
    return ContinuumPolicy.waiting_key(self, req) if self.ctx.kv.host is not None and ORDER == "program" else _wk(self, req)
def victim_key(self, req):
    return ContinuumPolicy.victim_key(self, req) if self.ctx.kv.host is not None and ORDER == "program" else _vk(self, req)
P.waiting_key, P.victim_key = waiting_key, victim_key
_eng = adm.AdmissionControl.is_engaged
def is_engaged(self):
    kv = self.ctx.kv
    if kv.host is None or MODE == "dev":
        return _eng(self)
    ev = self.ctx.eviction
    h = (ev._free + kv.host.num_blocks) / ev.rate if ev.rate > 1e-9 else math.inf
    if h < adm.GATE_S:
        self.engaged = True
    elif h > adm.DISENGAGE * adm.GATE_S:
        self.engaged = False
    return self.engaged
adm.AdmissionControl.is_engaged = is_engaged
