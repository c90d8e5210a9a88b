"""Measurement patch (on rounds.diff): the bound is max(WAIT_ROUNDS x V, KP x V_peak), V_peak
the same round with every program sized at its projected peak (its context plus its expected
growth over the turns it is expected to have left): 2.5 rounds of the programs as they are,
or KP rounds of them as they will be, whichever is longer."""
import os
import continuum.kv_ttl.programs as P
import continuum.scheduler.admission as A

KP = float(os.environ.get("KP", "1.0"))
_resize = P.ProgramTable._resize
_bind = A.AdmissionControl.bind
_wait_bound = A.AdmissionControl.wait_bound
DOOR = {}


def bind(self, ctx):
    _bind(self, ctx)
    DOOR[id(ctx.programs)] = self


def _resize2(self, rec, size):
    if getattr(rec, "peak", 0):
        self.peak_tokens -= rec.peak
        self.peak_price -= rec.peak_price
    rec.peak, rec.peak_price = 0, 0.0
    _resize(self, rec, size)
    door = DOOR.get(id(self))
    if size and door is not None:
        peak = size
        if rec.kept:
            r, _ = door.turns_ahead(rec.turns_finished + 1)
            peak = int(size + door.program_growth(rec) * r)
        rec.peak, rec.peak_price = peak, self.price(peak)
        self.peak_tokens += peak
        self.peak_price += rec.peak_price


def _init_table(self, *a, **k):
    _tinit(self, *a, **k)
    self.peak_tokens, self.peak_price = 0, 0.0


def wait_bound(self, req):
    b = _wait_bound(self, req)
    ctx = self.ctx
    t = ctx.programs
    n = t.num_in_system
    if not n:
        return b
    cap = self.max_wait if req.num_prompt_tokens > A.SMALL_PROMPT_TOKENS else min(self.max_wait, A.SMALL_WAIT_S)
    o = self.mean_output.value
    c = ctx.kv.pool.num_blocks * ctx.kv.block_size
    steps = o * (t.peak_tokens + n * o / 2) / c
    seqs = min(ctx.config.max_num_seqs, max(1, round(c * n / (t.peak_tokens + n * o))))
    vp = t.peak_price + ctx.prefill_cost.decode_seconds(seqs, c) * steps
    return min(cap, max(b, KP * vp))


_tinit = P.ProgramTable.__init__
P.ProgramTable.__init__ = _init_table
A.AdmissionControl.bind = bind
P.ProgramTable._resize = _resize2
A.AdmissionControl.wait_bound = wait_bound
