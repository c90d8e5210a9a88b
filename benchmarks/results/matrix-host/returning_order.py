"""Ad-hoc: continuum+'s waiting queue keeps its own (request) order for the slots, but the
slots held by later turns of programs are refilled in program order (oldest program first), so
an old program's turn goes ahead of a younger program's turn, never ahead of a newcomer that
arrived before it; only while the returning turns' mean queueing delay T exceeds Q seconds
(Q=0: always; with Q_OFF < Q it stays on until T falls below Q_OFF). HOST=1: only with a host
tier."""
import os
from continuum.request import RequestStatus
from continuum.scheduler import scheduler as sm
HOST = os.environ.get("HOST", "1") == "1"
Q = float(os.environ.get("Q", "0"))
Q_OFF = float(os.environ.get("Q_OFF", os.environ.get("Q", "0")))   # hysteresis: off again below Q_OFF


class ReslotList(list):
    def sort(self, key=None, reverse=False):
        super().sort(key=key, reverse=reverse)
        if Q > 0:
            t = self.ctx.queue_delay.value
            self.on = t > Q or (getattr(self, "on", False) and t > Q_OFF)
            if not self.on:
                return
        idx = [i for i, r in enumerate(self)
               if r.status != RequestStatus.PREEMPTED and r.program_id is not None
               and r.arrival_time > r.program_arrival]
        if len(idx) > 1:
            rs = sorted((self[i] for i in idx), key=lambda r: (r.program_arrival, r.arrival_time, r.seq_no))
            for i, r in zip(idx, rs):
                self[i] = r


_init = sm.Scheduler.__init__
def __init__(self, *a, **k):
    _init(self, *a, **k)
    if self.policy.name == "continuum+" and (self.kv.host is not None or not HOST):
        assert not self.waiting
        self.waiting = ReslotList()
        self.waiting.ctx = self.agents.ctx
        self.agents.ctx.waiting._items = self.waiting
        for k, v in list(vars(self.agents).items()):
            if isinstance(v, list) and v is not self.running and k.endswith("waiting"):
                setattr(self.agents, k, self.waiting)
sm.Scheduler.__init__ = __init__
