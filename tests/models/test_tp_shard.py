"""The shard rules and the step wire format, without processes."""
from __future__ import annotations

import pytest
import torch

from continuum.engine.input_batch import InputBatch
from continuum.engine.tp_step import StepDecoder, StepEncoder
from continuum.errors import ConfigError
from continuum.models.loader import random_config
from continuum.models.tp_shard import TPLayout, full_shape, shard
from continuum.request import Request
from continuum.sampling_params import SamplingParams
from continuum.scheduler.output import ScheduledRequest, SchedulerOutput


def _layout(rank, size, **kw):
    return TPLayout.of(random_config("tiny", kw), rank, size)


def test_layout_refuses_shapes_that_do_not_split():
    with pytest.raises(ConfigError, match="num_attention_heads 4"):
        _layout(0, 3)
    with pytest.raises(ConfigError, match="num_key_value_heads 3"):
        _layout(0, 2, hidden_size=96, num_attention_heads=6, num_key_value_heads=3)


def test_replicated_kv_heads_serve_their_ranks_q_heads():
    # 8 q heads, 2 KV heads, 4 ranks: ranks 0-1 hold KV head 0 (q heads 0-3), ranks 2-3 head 1
    lays = [_layout(r, 4, hidden_size=128, num_attention_heads=8, num_key_value_heads=2) for r in range(4)]
    assert [(l.kv_start, l.kv_heads) for l in lays] == [(0, 1), (0, 1), (1, 1), (1, 1)]
    group = 8 // 2
    for l in lays:
        q_heads = range(l.rank * l.heads, (l.rank + 1) * l.heads)
        assert {h // group for h in q_heads} == {l.kv_start}


def test_shards_reassemble_the_full_tensors():
    size = 2
    lays = [_layout(r, size) for r in range(size)]
    cfg = random_config("tiny")
    V, H, I = cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size
    emb = torch.randn(V, H)
    parts = [shard("model.embed_tokens.weight", emb, l) for l in lays]
    assert all(p.shape[0] == lays[0].vocab_per_rank for p in parts)
    assert torch.equal(torch.cat(parts)[:V], emb)                 # padding rows at the end
    down = torch.randn(H, I)
    assert torch.equal(torch.cat([shard("l.mlp.down_proj.weight", down, l) for l in lays], 1), down)
    bias = torch.randn(H)
    got = [shard("l.self_attn.o_proj.bias", bias, l) for l in lays]
    assert torch.equal(got[0], bias) and torch.equal(got[1], torch.zeros(H))   # added once
    qkv_shape = full_shape("l.self_attn.qkv_proj.weight", (0, H), lays[0])
    qkv = torch.randn(qkv_shape)
    q, k, v = qkv.split([64, 32, 32])          # tiny: 4 heads x 16, 2 KV heads x 16
    r1 = shard("l.self_attn.qkv_proj.weight", qkv, lays[1])
    assert torch.equal(r1, torch.cat([q[32:], k[16:], v[16:]]))


def test_safetensors_slices_equal_tensor_slices(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    lay = _layout(1, 2)
    t = {"a.self_attn.o_proj.weight": torch.randn(64, 64), "a.mlp.up_proj.weight": torch.randn(128, 64)}
    save_file(t, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as st:
        for k in t:
            assert torch.equal(shard(k, st.get_slice(k), lay), shard(k, t[k], lay))


def _req(rid, tokens):
    return Request(rid, tokens, SamplingParams(), 0.0, eos_token_ids=[0], max_model_len=1000)


def test_the_wire_mirrors_block_tables_incrementally():
    enc, dec = StepEncoder(), StepDecoder()
    a, b = _req("a", list(range(40))), _req("b", list(range(8)))
    blocks_a, blocks_b = [3, 4, 5], [9]
    driver, rank = InputBatch(4, 8), InputBatch(4, 8)

    def step(sched, forgotten=()):
        out = SchedulerOutput(scheduled=sched)
        msg = enc.encode(out, list(forgotten))
        mirrored = dec.decode(msg)
        driver.update([s.request.request_id for s in sched], [s.block_ids for s in sched])
        rank.update([s.request.request_id for s in mirrored.scheduled],
                    [s.block_ids for s in mirrored.scheduled])
        assert driver.row_ids == rank.row_ids
        assert torch.equal(driver.table[:len(sched)], rank.table[:len(sched)])
        for s, m in zip(sched, mirrored.scheduled):
            assert m.request.all_token_ids[m.start:m.start + m.num_new_tokens] == \
                s.request.all_token_ids[s.start:s.start + s.num_new_tokens]
        return msg

    step([ScheduledRequest(a, 0, 40, blocks_a, True), ScheduledRequest(b, 0, 8, blocks_b, True)])
    blocks_a.append(6)
    msg = step([ScheduledRequest(a, 40, 1, blocks_a, True)])
    assert msg[1][0][3:5] == (False, [6])                  # only the new id travels
    msg = step([ScheduledRequest(a, 41, 1, blocks_a, True)])
    assert msg[1][0][3:5] == (False, [])
    blocks_b2 = [11, 12]                                   # b preempted and resumed: new list
    msg = step([ScheduledRequest(b, 0, 8, blocks_b2, True)], forgotten=["a"])
    assert msg[1][0][3:5] == (True, [11, 12]) and "a" not in dec.tables
