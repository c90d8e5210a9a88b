"""Measurement patch (on rounds.diff): a newcomer past its bound in rounds (but not past the cap) is admitted
only if the live requests of the active programs, projected over their turns ahead, leave it
room (the programs in a tool call do not count: it may take their reservations, never the
running turns' memory)."""
import math
import continuum.scheduler.admission as A
from continuum.scheduler.admission import SMALL_PROMPT_TOKENS, SMALL_WAIT_S, Projection

_admit = A.AdmissionControl.admit
_begin = A.AdmissionControl.begin_step


def begin_step(self):
    _begin(self)
    self._live = None


def admit(self, req, now):
    rec = req.program_record
    if rec is None or rec.admitted:
        return True
    cap = self.max_wait
    if req.num_prompt_tokens <= SMALL_PROMPT_TOKENS:
        cap = min(cap, SMALL_WAIT_S)
    waited = now - req.arrival_time
    rounds = self.wait_rounds * self.round_seconds()
    if rounds <= waited < cap and self.is_engaged():
        ctx = self.ctx
        bs = ctx.kv.block_size
        if getattr(self, "_live", None) is None:
            p = Projection()
            self._project_live(((r, r.live.values()) for r in ctx.programs.active.values() if r.live), bs, p)
            self._live = p
        trial = self._live.copy()
        self._project_live(((rec, (req,)),), bs, trial)
        limit = self.target * ctx.kv.pool.num_blocks
        if self._live.peak() > 0 and trial.peak() > limit + 1e-9:
            # not yet: behave as if its bound were the cap
            saved = self.wait_rounds
            self.wait_rounds = math.inf
            try:
                return _admit(self, req, now)
            finally:
                self.wait_rounds = saved
        self._live = trial
    return _admit(self, req, now)


A.AdmissionControl.begin_step = begin_step
A.AdmissionControl.admit = admit
