# The gate lowered to the tools' own P90 (pooled over all tools, once k durations back it)
# when their calls are shorter than GATE_S; unchanged otherwise.
import continuum.scheduler.admission as adm
def is_engaged(self):
    pred = self.ctx.predictor
    s = pred.pooled.sorted()
    gate = adm.GATE_S
    if len(s) >= pred.k:
        gate = min(gate, s[min(int(0.9 * len(s)), len(s) - 1)])
    h = self.ctx.eviction.seconds
    if h < gate:
        self.engaged = True
    elif h > adm.DISENGAGE * gate:
        self.engaged = False
    return self.engaged
adm.AdmissionControl.is_engaged = is_engaged
