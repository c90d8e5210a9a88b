"""Tensor parallelism: greedy tokens with two CPU ranks (gloo) equal one rank's and
transformers' on the shapes that exercise the sharding rules, every rank's block tables and
(replicated) KV agree after each run, and a rank that dies fails the engine with a typed
error instead of a hang."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest
import torch

from continuum.errors import ConfigError, TensorParallelError
from continuum.llm import LLM
from tests.conftest import make_hf_checkpoint, requires_smollm2
from tests.engine.test_generate_vs_hf import hf_greedy, prompts_of, run

# (arch, checkpoint overrides, random biases?): the shapes the issue names.
SHAPES = {
    # GQA with fewer KV heads than ranks: the one KV head is replicated on both ranks; the
    # biases of the row-parallel o_proj/down_proj must be added once, not once per rank.
    "llama-1kv-bias": ("llama", dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True)),
    "qwen2-bias": ("qwen2", {}),                 # q/k/v biases, KV heads split 1 + 1
    "qwen3-qknorm": ("qwen3", {}),               # per-head q/k RMSNorm, head_dim != hidden/heads
}


@pytest.fixture(scope="module")
def tp_checkpoints(tmp_path_factory):
    """{shape: (dir, hf_model)}; every bias set non-zero (HF initialises them to zero)."""
    out = {}
    for name, (arch, overrides) in SHAPES.items():
        d = tmp_path_factory.mktemp(name)
        hf = make_hf_checkpoint(d, arch, **overrides)
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for pname, p in hf.named_parameters():
                if pname.endswith(".bias"):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        hf.save_pretrained(d, safe_serialization=True)
        out[name] = (str(d), hf)
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
def test_tp2_greedy_equals_tp1_and_hf(tp_checkpoints, shape):
    path, hf = tp_checkpoints[shape]
    prompts = prompts_of([5, 17, 33, 48, 1])
    # a small token budget: chunked prefill and mixed prefill/decode steps on every rank
    kw = dict(dtype="float32", kv_cache_memory="16MiB", max_num_batched_tokens=40)
    want = [hf_greedy(hf, p) for p in prompts]
    one = LLM(path, **kw)
    assert run(one, prompts) == want
    two = LLM(path, tensor_parallel_size=2, **kw)
    try:
        assert two.engine.runner.model.tp_layout.size == 2
        assert run(two, prompts) == want            # run() checks every rank's integrity too
        # a second turn over the first: prefix-cache hits, and the ranks' mirrored tables
        follow = [p + o for p, o in zip(prompts, want)]
        assert run(two, follow) == [hf_greedy(hf, p) for p in follow]
        assert two.engine.scheduler.kv.stats.hits > 0
    finally:
        two.engine.shutdown()


def _tp_engine() -> LLM:
    return LLM("random:tiny", dtype="float32", kv_cache_memory="4MiB", tensor_parallel_size=2)


def _kill_rank1(llm: LLM) -> int:
    proc = llm.engine.tp_workers.procs[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()                     # the process's exit is the event; no time threshold
    return proc.pid


def test_a_dead_rank_fails_the_next_step_clearly():
    llm = _tp_engine()
    prompts = prompts_of([9, 4])
    before = run(llm, prompts, 4)
    pid = _kill_rank1(llm)
    with pytest.raises(TensorParallelError, match=rf"rank 1 \(pid {pid}\) exited with code -9"):
        run(llm, prompts, 4)
    llm.engine.add_request([5, 6, 7])
    with pytest.raises(TensorParallelError):          # broken for good, still no hang
        llm.engine.step()
    assert before and llm.engine.tp_workers.broken is not None


def test_a_rank_dying_inside_a_step_fails_its_collective(monkeypatch):
    """The liveness check before the step is skipped: the death is found by the collective
    (gloo raises as soon as the peer's sockets close), not by a timeout."""
    llm = _tp_engine()
    run(llm, prompts_of([6]), 2)
    workers = llm.engine.tp_workers
    monkeypatch.setattr(workers, "ensure_alive", lambda: None)
    _kill_rank1(llm)
    with pytest.raises(TensorParallelError, match="rank 1"):
        run(llm, prompts_of([7]), 2)
    assert not any(p.is_alive() for p in workers.procs)


def test_shutdown_stops_the_ranks():
    llm = _tp_engine()
    procs = list(llm.engine.tp_workers.procs)
    llm.engine.shutdown()
    assert [p.exitcode for p in procs] == [0]


def test_integrity_check_sees_replicated_kv_that_differs():
    """One KV head, two ranks: both hold it, and the check compares their bytes."""
    llm = LLM("random:tiny", dtype="float32", kv_cache_memory="4MiB", tensor_parallel_size=2,
              random_config={"num_key_value_heads": 1})
    try:
        run(llm, prompts_of([20]), 3)                 # checks: equal on both ranks
        llm.engine.cache_engine.k_caches[0][0, 0, 0, 0] += 1.0     # rank 0's copy only
        with pytest.raises(AssertionError, match="rank 1's KV differs from rank 0's"):
            llm.engine.check_integrity()
    finally:
        llm.engine.shutdown()


@requires_smollm2
def test_gguf_default_model_tp3_equals_tp1():
    """The embedded SmolLM2 GGUF (9 heads, 3 KV heads) over three ranks: each rank
    dequantises one tensor at a time and keeps its slice; tokens equal one rank's."""
    prompts = [[1, 28, 90, 311, 42, 7], list(range(100, 140))]
    kw = dict(dtype="float32", kv_cache_memory="16MiB")
    want = run(LLM(None, **kw), prompts, 6)
    three = LLM(None, tensor_parallel_size=3, **kw)
    try:
        assert run(three, prompts, 6) == want
    finally:
        three.engine.shutdown()


def test_a_size_the_model_cannot_split_is_a_config_error_and_leaves_no_rank():
    with pytest.raises(ConfigError, match="tensor_parallel_size 3 does not divide"):
        LLM("random:tiny", dtype="float32", kv_cache_memory="4MiB", tensor_parallel_size=3)
    assert not [p for p in mp.active_children() if p.name.startswith("continuum-tp-rank")]


def test_a_hung_rank_fails_the_step_at_the_collective_timeout(monkeypatch):
    """Rank 1 stopped (SIGSTOP) before the step: the driver's first all-reduce raises when
    its timeout (shortened here; the wait is the test's length, not a pass/fail threshold)
    runs out, and the stopped rank is killed."""
    from continuum.layers import tp_group
    monkeypatch.setattr(tp_group, "COLLECTIVE_TIMEOUT_S", 10.0)
    llm = _tp_engine()
    proc = llm.engine.tp_workers.procs[0]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(TensorParallelError, match="timed out"):
            run(llm, prompts_of([5]), 2)
        assert not proc.is_alive()
    finally:
        if proc.is_alive():
            proc.kill()
