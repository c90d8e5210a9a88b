import continuum.scheduler.admission as adm
_init = adm.AdmissionControl.__init__
def __init__(self, target=1.0, *a, **k):
    _init(self, 1.5 if target == 1.0 else target, *a, **k)
adm.AdmissionControl.__init__ = __init__
