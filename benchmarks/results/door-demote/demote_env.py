import os
from continuum.scheduler import admission as adm
adm.DEMOTE = float(os.environ["DEMOTE"])
