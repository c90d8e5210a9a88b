"""Measurement patch (not adopted): the door's wait bound is at most K x V (K from the
environment, default 4), V = the seconds the prefill cost model says it takes to recompute
the context of every program in the system (live, or between turns) once: roughly what a
turn waits under FCFS once the cache thrashes. Recomputed each step the bound is read (it
costs a pass over the programs: the simulator is ~2x slower with it)."""
import os

import continuum.scheduler.admission as A

K = float(os.environ.get("K", "4"))
_wait_bound = A.AdmissionControl.wait_bound


def wait_bound(self, req):
    ctx = self.ctx
    if getattr(self, "_vstep", None) != ctx.step_no:
        self._vstep = ctx.step_no
        pc, v = ctx.prefill_cost, 0.0
        for rec in ctx.programs._records.values():
            if rec.num_live or rec.last_finish_time is not None:
                v += pc.seconds(max([rec.context_tokens] + [r.num_tokens for r in rec.live.values()]))
        self._v = v
    return min(_wait_bound(self, req), K * self._v)


A.AdmissionControl.wait_bound = wait_bound
