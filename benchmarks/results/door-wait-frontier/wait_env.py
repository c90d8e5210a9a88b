import os
from continuum.scheduler import admission as adm
_init = adm.AdmissionControl.__init__
def __init__(self, target=1.0, max_wait=float("inf"), horizon_quantile=0.9):
    _init(self, target, float(os.environ["WAIT"]), horizon_quantile)
adm.AdmissionControl.__init__ = __init__
