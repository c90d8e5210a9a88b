"""Measurement patch (on rounds.diff): size each program in V by its projected peak (its context now plus its
expected growth over the turns it is expected to have left), not its context now."""
import continuum.kv_ttl.programs as P
import continuum.scheduler.admission as A

import os
A.WAIT_ROUNDS = float(os.environ.get("K", "2.5"))
_init = A.AdmissionControl.__init__
def _i(self, *a, **k):
    _init(self, *a, **k)
    self.wait_rounds = A.WAIT_ROUNDS
A.AdmissionControl.__init__ = _i
_resize = P.ProgramTable._resize
_bind = A.AdmissionControl.bind
DOOR = {}


def bind(self, ctx):
    _bind(self, ctx)
    DOOR[id(ctx.programs)] = self


def _resize2(self, rec, size):
    door = DOOR.get(id(self))
    if size and door is not None and rec.kept:
        r, _ = door.turns_ahead(rec.turns_finished + 1)
        size = int(size + door.program_growth(rec) * r)
    _resize(self, rec, size)


A.AdmissionControl.bind = bind
P.ProgramTable._resize = _resize2
