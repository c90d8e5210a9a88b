# The door's gate set by the tools instead of the constant GATE_S (AdmissionControl.is_engaged).
# GATE=raise (default): the larger of GATE_S and the median reservation horizon of the kept
# programs now between turns. GATE=lower: the smaller of GATE_S and the P90 of all tools'
# durations (pooled, once the predictor's k back it).
import math
import os
import statistics

import continuum.scheduler.admission as adm

LOWER = os.environ.get("GATE", "raise") == "lower"


def gate(self):
    if LOWER:
        pred = self.ctx.predictor
        s = pred.pooled.sorted()
        return min(adm.GATE_S, s[min(int(0.9 * len(s)), len(s) - 1)]) if len(s) >= pred.k else adm.GATE_S
    hs = [b.horizon for b in self.between.values() if 0 < b.horizon < math.inf]
    return max(adm.GATE_S, statistics.median(hs)) if hs else adm.GATE_S


def is_engaged(self):
    g = gate(self)
    h = self.ctx.eviction.seconds
    if h < g:
        self.engaged = True
    elif h > adm.DISENGAGE * g:
        self.engaged = False
    return self.engaged


adm.AdmissionControl.is_engaged = is_engaged
