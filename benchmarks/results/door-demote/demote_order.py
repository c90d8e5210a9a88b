# Demotion order variant: ORDER=idle (the program whose call has lasted longest first),
# ORDER=big (the largest reservation first).
import os
from continuum.scheduler import admission as adm
ORDER = os.environ.get("ORDER", "idle")
def _demote(self, w, demotable, limit):
    if ORDER == "idle":
        demotable.sort(key=lambda x: (x[0].last_finish_time, x[0].program_id))
    else:
        demotable.sort(key=lambda x: (-x[1], x[0].program_id))
    for rec, n in demotable:
        if w <= limit:
            break
        self.ctx.programs.set_admitted(rec, False)
        rec.held = True
        del self.between[rec.program_id]
        w -= n
        self.num_demoted += 1
    return w
adm.AdmissionControl._demote = _demote
