import statistics, math
import continuum.scheduler.admission as adm
def is_engaged(self):
    hs = [b.horizon for b in self.between.values() if 0 < b.horizon < math.inf]
    gate = max(adm.GATE_S, statistics.median(hs)) if hs else adm.GATE_S
    h = self.ctx.eviction.seconds
    if h < gate:
        self.engaged = True
    elif h > adm.DISENGAGE * gate:
        self.engaged = False
    return self.engaged
adm.AdmissionControl.is_engaged = is_engaged
