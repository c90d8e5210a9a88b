# Adaptive overbooking: target = clamp(1 / P90 of (current blocks / projected peak blocks) over
# the last 256 door decisions, 1, 2). Measured at each W computation on the same program set.
# ADAPT_Q: the quantile (default 0.9; 1.0 = the maximum); ADAPT_CAP: the cap (default 2x);
# GUARD_S > 0: overbook only once the door has stayed engaged that long (default 0: always).
import continuum.scheduler.admission as adm
import collections, math, os
Q = float(os.environ.get("ADAPT_Q", "0.9")); CAP = float(os.environ.get("ADAPT_CAP", "2"))
_init = adm.AdmissionControl.__init__
def __init__(self, *a, **k):
    _init(self, *a, **k)
    self._ratios = collections.deque(maxlen=256)
    self._engaged_since = None           # scheduler time the door last became engaged
adm.AdmissionControl.__init__ = __init__
def working_set_blocks(self, now):
    ctx = self.ctx
    bs = ctx.kv.block_size
    self._turns_left = []
    mean_output, g = self.mean_output.value, self.growth
    footprint = self.request_footprint
    w = cur = 0
    for queue in (ctx.running, ctx.waiting):
        for r in queue:
            rec = r.program_record
            if rec is not None and rec.admitted:
                w -= -footprint(r, mean_output, g) // bs
                cur -= -len(r.all_token_ids) // bs
    host = ctx.kv.host is not None
    pins = ctx.pins.pins
    for pid in list(self.between):
        b = self.between[pid]
        rec = ctx.programs.get(pid)
        if rec is None or (not rec.num_live and rec.last_finish_time is None):
            del self.between[pid]
            continue
        if rec.num_live:
            continue
        if pid in pins or (not host and now - rec.last_finish_time <= b.horizon):
            gp = self.program_growth(rec, g)
            w -= -int(rec.context_tokens + gp * (1 + self.turns_left(rec.turns_finished + 1) * rec.kept)) // bs
            cur -= -int(rec.context_tokens) // bs
    if w > 0:
        self._ratios.append(cur / w)
    return w
adm.AdmissionControl.working_set_blocks = working_set_blocks
GUARD_S = float(os.environ.get("GUARD_S", "0"))   # > 0: overbook only after that long engaged
def _target(self, now):
    r = self._ratios
    since = self._engaged_since
    if len(r) < 32 or (GUARD_S > 0 and (since is None or now - since < GUARD_S)):
        return self.target
    s = sorted(r)
    p = s[min(int(Q * len(s)), len(s) - 1)]
    return min(max(self.target, 1.0 / max(p, 1e-9)), CAP * self.target)
def admit(self, req, now):
    rec = req.program_record
    was = self.engaged
    if rec is None or rec.admitted or not self.is_engaged():
        if not self.engaged:
            self._engaged_since = None
        return True
    if not was or self._engaged_since is None:
        self._engaged_since = now
    if now - req.arrival_time >= self.max_wait:
        self.num_timeouts += 1
        return True
    if self._closed:
        return False
    if self._ws is None:
        self._ws = self.last_working_set = self.working_set_blocks(now)
    need = self.ctx.kv.blocks_for(self.request_footprint(req))
    if self._ws and self._ws + need > _target(self, now) * self.ctx.kv.pool.num_blocks:
        self._closed = True
        self.num_held += 1
        return False
    self._ws += need
    return True
adm.AdmissionControl.admit = admit
