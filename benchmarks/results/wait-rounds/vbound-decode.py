"""Measurement patch (the first form of rounds.diff's bound): wait bound K x V2, V2 = sum of prefill(ctx) + t_dec * o * sum(ctx + o/2) / C
(the compute of recomputing every program's context once, plus the memory-time of decoding one
turn of each, over the cache's capacity)."""
import os
import continuum.scheduler.admission as A

K = float(os.environ.get("K", "4"))
TDEC = float(os.environ.get("TDEC", "0.01"))
_wait_bound = A.AdmissionControl.wait_bound


def wait_bound(self, req):
    ctx = self.ctx
    if getattr(self, "_vstep", None) != ctx.step_no:
        self._vstep = ctx.step_no
        pc, v, toks, n = ctx.prefill_cost, 0.0, 0, 0
        for rec in ctx.programs._records.values():
            if rec.num_live or rec.last_finish_time is not None:
                c = max([rec.context_tokens] + [r.num_tokens for r in rec.live.values()])
                v += pc.seconds(c)
                toks += c
                n += 1
        o = self.mean_output.value
        cap = ctx.kv.pool.num_blocks * ctx.kv.block_size
        self._v = v + TDEC * o * (toks + n * o / 2) / cap
    return min(_wait_bound(self, req), K * self._v)


A.AdmissionControl.wait_bound = wait_bound
