import os
from continuum.scheduler import admission as A
T = float(os.environ.get("T", "0.85"))
_init = A.AdmissionControl.__init__
def __init__(self, target=1.0, *a, **k):
    _init(self, T, *a, **k)
A.AdmissionControl.__init__ = __init__
