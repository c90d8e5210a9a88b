"""The persistent batch: exact rows after joins, leaves, growth and re-allocation, and the
model runner's inputs equal to a from-scratch build on random step sequences."""
from __future__ import annotations

import random

import torch

from continuum.engine.input_batch import InputBatch
from continuum.engine.model_runner import ModelRunner
from continuum.request import Request
from continuum.sampling_params import SamplingParams
from continuum.scheduler.output import ScheduledRequest, SchedulerOutput


def test_rows_stay_dense_and_only_new_ids_are_written():
    b = InputBatch(max_num_seqs=2, width=2)
    ta, tb, tc = [7], [3, 4], [9]
    assert b.update(["a", "b", "c"], [ta, tb, tc]) == [0, 1, 2]      # grows to 3 rows
    assert b.table[:3, :2].tolist() == [[7, 0], [3, 4], [9, 0]]
    ta.append(8)                                                   # a grows in place
    tb_new = [5]                                                   # b re-allocated
    assert b.update(["c", "a", "b"], [tc, ta, tb_new]) == [1, 2, 0]  # rows keep their order
    assert [b.table[r, :b.synced[r]].tolist() for r in range(3)] == [[7, 8], [5], [9]]
    # a leaves: the last row (c) moves into its hole.
    assert b.update(["b", "c"], [tb_new, tc]) == [1, 0]
    assert b.row_ids == ["c", "b"] and b.rows == {"c": 0, "b": 1}
    b.check()
    # Width grows for a long table, keeping the rows.
    long = list(range(40))
    assert b.update(["c", "d"], [tc, long]) == [0, 1]
    assert b.table.shape[1] >= 40 and b.table[1, :40].tolist() == long
    b.check()
    b.clear()
    assert b.update(["d"], [long]) == [0] and b.table[0, :40].tolist() == long


def test_drop_several_holes():
    b = InputBatch(4, 4)
    tabs = {k: [i] for i, k in enumerate("abcde")}
    b.update(list("abcde"), [tabs[k] for k in "abcde"])
    order = b.update(["b", "e"], [tabs["b"], tabs["e"]])
    assert b.row_ids == ["e", "b"] and order == [1, 0]
    assert b.table[0, 0].item() == 4 and b.table[1, 0].item() == 1
    b.check()


def _reference(out: SchedulerOutput, bs: int):
    """The batch built from scratch in scheduler order (the runner before the persistent batch)."""
    ids, pos, slots, seq_lens = [], [], [], []
    for s in out.scheduled:
        n = s.num_new_tokens
        ids.append(s.request.all_token_ids[s.start:s.start + n])
        p = list(range(s.start, s.start + n))
        pos.append(p)
        slots.append([s.block_ids[x // bs] * bs + x % bs for x in p])
        seq_lens.append(s.start + n)
    return ids, pos, slots, seq_lens


def test_runner_inputs_match_a_fresh_build_on_random_steps():
    bs = 4
    runner = ModelRunner(torch.nn.Identity(), bs, torch.device("cpu"), max_num_seqs=2, max_model_len=8)
    rng = random.Random(0)
    params = SamplingParams(max_tokens=1000)
    live: dict[str, tuple[Request, list[int]]] = {}
    next_block = [0]
    for step in range(300):
        # Join, leave, re-allocate (a preemption hands the request a new list object).
        if rng.random() < 0.3 or not live:
            rid = f"r{step}"
            req = Request(rid, [rng.randrange(100) for _ in range(rng.randrange(1, 30))], params, 0.0)
            live[rid] = (req, [])
        if live and rng.random() < 0.2:
            live.pop(rng.choice(sorted(live)))
        if live and rng.random() < 0.1:
            rid = rng.choice(sorted(live))
            req, _ = live[rid]
            req.num_computed_tokens = 0
            live[rid] = (req, [])
        chosen = [rid for rid in sorted(live) if rng.random() < 0.8]
        rng.shuffle(chosen)
        sched = []
        for rid in chosen:
            req, table = live[rid]
            start = req.num_computed_tokens
            if start == req.num_tokens:
                req.append_output_token(rng.randrange(100))
            n = min(req.num_tokens - start, rng.choice([1, 1, 3, 7]))
            while len(table) * bs < start + n:
                table.append(next_block[0] % 97)
                next_block[0] += 1
            req.num_computed_tokens += n
            sched.append(ScheduledRequest(req, start, n, table, req.num_computed_tokens == req.num_tokens))
        if not sched:
            continue
        out = SchedulerOutput(sched)
        ids, pos, meta, rows, order = runner.prepare(out)
        runner.batch.check()
        ref_ids, ref_pos, ref_slots, ref_lens = _reference(out, bs)
        assert sorted(order) == list(range(len(sched)))
        assert meta.seq_lens_list == [ref_lens[i] for i in order]
        assert ids.tolist() == sum((ref_ids[i] for i in order), [])
        assert pos.tolist() == sum((ref_pos[i] for i in order), [])
        assert meta.slot_mapping.tolist() == sum((ref_slots[i] for i in order), [])
        qsl = meta.query_start_loc.tolist()
        assert qsl[0] == 0 and qsl[-1] == ids.numel()
        for r, i in enumerate(order):
            nb = -(-ref_lens[i] // bs)
            assert meta.block_tables[r, :nb].tolist() == sched[i].block_ids[:nb]
        assert rows == [qsl[r + 1] - 1 for r, i in enumerate(order) if sched[i].samples]
