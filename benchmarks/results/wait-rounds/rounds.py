"""Measurement patch (on rounds.diff): its bound in rounds with K = WAIT_ROUNDS from the environment and
MODE = sum (the V of rounds.diff, to be applied first), max (the larger of its two parts) or c01 (its decode steps at a
constant 10 ms instead of the cost model's full-cache step)."""
import os
import continuum.scheduler.admission as A
K = float(os.environ.get("K", "2.5"))
MODE = os.environ.get("MODE", "max")

def round_seconds(self):
    ctx = self.ctx
    t = ctx.programs
    n = t.num_in_system
    if not n:
        return 0.0
    o = self.mean_output.value
    cap = ctx.kv.pool.num_blocks * ctx.kv.block_size
    steps = o * (t.sum_tokens + n * o / 2) / cap
    seqs = min(ctx.config.max_num_seqs, max(1, round(cap * n / (t.sum_tokens + n * o))))
    dec = ctx.prefill_cost.decode_seconds(seqs, cap) * steps
    if MODE == "max":
        return max(t.sum_price, dec)
    if MODE == "c01":
        return t.sum_price + 0.01 * steps
    return t.sum_price + dec

A.AdmissionControl.round_seconds = round_seconds
A.WAIT_ROUNDS = K
_init = A.AdmissionControl.__init__
def __init__(self, *a, **k):
    _init(self, *a, **k)
    self.wait_rounds = K
A.AdmissionControl.__init__ = __init__
