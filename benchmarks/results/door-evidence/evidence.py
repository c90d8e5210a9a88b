# Ad-hoc patch (measured 2026-12-08, not kept): the door's gate on evidence instead of the
# constant GATE_S alone. Exec'd before continuum is used (wait-rounds/probe.py, simcpu.sh).
#   MODE=measured  the gate is the GQ-quantile (0.5) of the reservation horizons of the last 256
#                  kept programs' finishes (GATE_S until MINS = 8 of them)
#   MODE=faults    engage only when H < GATE_S and >= F (0.25) of the last N (32) returning
#                  turns faulted (at least 8 seen); once engaged, as before
#   MODE=evict     as faults, or >= F of the kept programs now between turns (at least 4)
#                  lost their last full block
import os
from collections import deque
from continuum.scheduler import admission as A

MODE = os.environ.get("MODE", "faults")
GQ, MINS = float(os.environ.get("GQ", "0.5")), int(os.environ.get("MINS", "8"))
F, N = float(os.environ.get("F", "0.25")), int(os.environ.get("N", "32"))
_finish, _admit = A.AdmissionControl.on_finish, A.AdmissionControl.on_admit


def on_finish(self, req, now):
    _finish(self, req, now)
    b = self.between.get(req.program_id)
    if b is not None and b.horizon > 0:
        self.__dict__.setdefault("_hz", deque(maxlen=256)).append(b.horizon)


def on_admit(self, req):
    r0, f0 = self.num_returns, self.num_faults
    _admit(self, req)
    if self.num_returns != r0:
        self.__dict__.setdefault("_rf", deque(maxlen=N)).append(self.num_faults - f0)


def gate(self):
    hz = self.__dict__.get("_hz")
    if MODE != "measured" or not hz or len(hz) < MINS:
        return A.GATE_S
    s = sorted(hz)
    return s[min(int(GQ * len(s)), len(s) - 1)]


def thrashing(self):
    rf = self.__dict__.get("_rf", ())
    if len(rf) >= 8 and sum(rf) >= F * len(rf):
        return True
    if MODE != "evict":
        return False
    lost = [self.ctx.kv.pool.get_cached_block(b.last_hash) is None
            for b in self.between.values() if b.horizon > 0 and b.last_hash is not None]
    return len(lost) >= 4 and sum(lost) >= F * len(lost)


def is_engaged(self):
    host = self.ctx.kv.host
    h = self.ctx.eviction.seconds_with(host.num_blocks if host is not None else 0)
    g = gate(self)
    if h < g:
        self.engaged = self.engaged or MODE == "measured" or thrashing(self)
    elif h > A.DISENGAGE * g:
        self.engaged = False
    return self.engaged


A.AdmissionControl.on_finish, A.AdmissionControl.on_admit = on_finish, on_admit
A.AdmissionControl.is_engaged = is_engaged
