# Variants of the door's backlog rule (scheduler/admission.py, "the backlog"), from the
# environment, for benchmarks/results/matrix-tool-gate/run_patched.py:
#   RELEASE=1.25   the release factor (the default is 1.5; inf: no backlog rule at all, the
#                  door before it: a disengaged door lets every newcomer in)
#   STICKY=1       the first fix tried: the door stays engaged (plain target) until no
#                  newcomer it held is still waiting
import os

import continuum.scheduler.admission as adm

adm.RELEASE = float(os.environ.get("RELEASE", adm.RELEASE))

if os.environ.get("STICKY") == "1":
    adm.RELEASE = 1.0

    def is_engaged(self):
        h = self.ctx.eviction.seconds
        if h < adm.GATE_S:
            self.engaged = True
        elif h > adm.DISENGAGE * adm.GATE_S and not any(
                r.program_record is not None and r.program_record.held and not r.program_record.admitted
                for r in self.ctx.waiting):
            self.engaged = False
        return self.engaged

    adm.AdmissionControl.is_engaged = is_engaged
