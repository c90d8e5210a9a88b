"""Patch: the door's working set as the peak of the projected sum of the active programs'
contexts (turn-steps ahead), not the sum of their peaks. Each program i contributes
b_i + g_i * j for 0 <= j <= r_i turns ahead (b: blocks at the end of its current/next turn,
g: growth per turn, r: expected turns left), 0 after. ENV: PROJ=1 on (default).

Written against commit 9c958a1 (the door before the projection; it replaces that tree's
AdmissionControl.working_set_blocks and admit), run from a checkout of it:

    git worktree add /tmp/ws 9c958a1 && cd /tmp/ws
    python benchmarks/results/matrix-tool-gate/run_patched.py PATH/to_the_mean.py \
        --reuse benchmarks/results/matrix/results.json --fresh continuum+ \
        --policies vllm,continuum,continuum+,infercept --jobs 2 --out OUT
"""
import math, os
import continuum.scheduler.admission as A

def _proj_max(trajs):
    # max over j of sum_i (b_i + g_i j) [j <= r_i]; breakpoints at each r_i (left limit) and 0
    best = sum(b for b, g, r in trajs)
    B = G = 0.0
    for b, g, r in sorted(trajs, key=lambda t: -t[2]):
        B += b; G += g
        v = B + G * r
        if v > best: best = v
    return best

def _traj_of(self, rec, req, table, g, bs):
    n_table = len(table)
    if rec is None:
        m, k = 1, 0
    else:
        m, k = rec.turns_arrived, rec.turns_finished
    kept = rec is None or rec.kept
    gp = ((rec.context_tokens - rec.first_prompt_tokens) + g) / (k + 1) if k else g
    R = ((table[m] if m < n_table else 0.0) if table else float(m))
    mo = self.mean_output.value
    mt = req.sampling_params.max_tokens
    expected = int(mo) if mt is None or mt > mo else mt
    produced = len(req.output_token_ids)
    end = len(req.prompt_token_ids) + (produced if produced > expected else expected)
    if kept and req.agent.program_id is not None and not req.agent.is_last_step:
        return (end / bs, gp / bs, R)
    return (end / bs, 0.0, 0.0)

def working_set_blocks(self, now):
    ctx = self.ctx
    bs = ctx.kv.block_size
    self._turns_left = []
    g = self.growth
    table = self._turns_table()
    trajs = []
    for rec in ctx.programs.active.values():
        for req in rec.live.values():
            trajs.append(_traj_of(self, rec, req, table, g, bs))
    host = ctx.kv.host is not None
    pins = ctx.pins.pins
    demotable = []
    for pid, b in list(self.between.items()):
        rec = ctx.programs.get(pid)
        if rec is None or (not rec.num_live and rec.last_finish_time is None):
            del self.between[pid]; continue
        if rec.num_live:
            continue
        pinned = pid in pins
        if pinned or (not host and now - rec.last_finish_time <= b.horizon):
            gp = self.program_growth(rec, g)
            t = ((rec.context_tokens + gp) / bs, gp / bs, self.turns_left(rec.turns_finished + 1) * rec.kept)
            trajs.append(t)
            if not pinned:
                demotable.append((rec, t))
    self._trajs = trajs
    w = _proj_max(trajs)
    limit = self.target * ctx.kv.pool.num_blocks
    if self.engaged and w > A.DEMOTE * limit:
        demotable.sort(key=lambda x: (-x[0].first_arrival, x[0].program_id))
        for rec, t in demotable:
            if w <= limit: break
            ctx.programs.set_admitted(rec, False)
            rec.held = True
            del self.between[rec.program_id]
            trajs.remove(t)
            w = _proj_max(trajs)
            self.num_demoted += 1
    return math.ceil(w)

def admit(self, req, now):
    rec = req.program_record
    if rec is None or rec.admitted:
        return True
    engaged = self.is_engaged()
    if not engaged and (req.num_prompt_tokens <= A.SMALL_PROMPT_TOKENS or not (rec.held or self._closed)):
        return True
    if now - req.arrival_time >= self.wait_bound(req):
        self.num_timeouts += 1
        return True
    if self._closed:
        rec.held = True
        return False
    if self._ws is None:
        self._ws = self.last_working_set = self.working_set_blocks(now)
    t = _traj_of(self, rec, req, self._turns_table(), self.growth, self.ctx.kv.block_size)
    limit = self.target * (1.0 if engaged else A.RELEASE) * self.ctx.kv.pool.num_blocks
    w2 = _proj_max(self._trajs + [t])
    if self._ws and w2 > limit:
        self._closed = rec.held = True
        self.num_held += 1
        return False
    self._trajs.append(t)
    self._ws = math.ceil(w2)
    return True

if os.environ.get("PROJ", "1") == "1":
    A.AdmissionControl.working_set_blocks = working_set_blocks
    A.AdmissionControl.admit = admit
