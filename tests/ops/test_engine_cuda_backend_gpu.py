"""The CUDA backend inside the engine (skipped without CUDA): greedy generation identical to
the torch-reference backend in fp32, and decode CUDA graphs equal to eager steps in bf16.

No bf16 token-identity test: a random model's logits are nearly tied, so bf16 rounding
differences between two correct paths flip tokens; bf16 accuracy is checked per kernel
(tests/ops/test_kernels_gpu.py) and per step (the graph test) with tolerances instead."""
from __future__ import annotations

import pytest
import torch

from continuum import ops
from continuum.layers import attention as attn_mod
from continuum.layers import attention_cuda
from continuum.sampling_params import SamplingParams

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _cuda_forward(self, q, k, v):
    """Attention.forward routed through the CUDA backend (what the dispatch line does)."""
    T = q.shape[0]
    meta = attn_mod.current_metadata(self)   # the bound backend's step, else the global
    if meta is None or self.k_cache is None:
        return _orig_forward(self, q, k, v)
    q = q.view(T, self.num_heads, self.head_size)
    k = k.view(T, self.num_kv_heads, self.head_size)
    v = v.view(T, self.num_kv_heads, self.head_size)
    return attention_cuda.forward(q, k, v, self.k_cache, self.v_cache, meta, self.scale).reshape(T, -1)


_orig_forward = attn_mod.Attention.forward


def _generate(backend_cuda: bool, dtype: str, monkeypatch):
    from continuum.llm import LLM
    with monkeypatch.context() as m:
        m.setenv("CONTINUUM_ATTENTION_BACKEND", "torch")
        if backend_cuda:
            m.setattr(attn_mod.Attention, "forward", _cuda_forward)
        # initializer_range 0.1 (preset: 0.02): with the default init the random model repeats
        # one token per prompt whatever the attention computes, so even a decode kernel that
        # ignores q (uniform weights) produced the reference's tokens; at 0.1 every output has
        # 24 distinct tokens and such a kernel changes them (checked on CPU).
        llm = LLM("random:llama-80m", dtype=dtype, kv_cache_memory="1GiB", max_model_len=1024,
                  max_num_batched_tokens=256, device="cuda", random_config={"initializer_range": 0.1})
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(3, 250, (n,), generator=g).tolist() for n in (5, 17, 100, 300, 33)]
        p = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
        outs = llm.generate(prompts, p, use_tqdm=False)
        return [o.outputs[0].token_ids for o in outs]


def test_greedy_tokens_identical_to_reference_fp32(monkeypatch):
    assert ops.load(), ops.unavailable_reason()
    ref = _generate(False, "float32", monkeypatch)
    assert all(len(set(t)) >= 8 for t in ref), "degenerate outputs: the comparison would prove nothing"
    got = _generate(True, "float32", monkeypatch)
    assert got == ref


def test_decode_graph_replay_matches_eager(monkeypatch):
    from continuum.engine.cuda_graph import DecodeGraphRunner
    from continuum.engine.cache_engine import CacheEngine
    from continuum.models.loader import load_model
    from tests.ops.helpers import metadata, random_block_tables, rel_err

    monkeypatch.setattr(attn_mod.Attention, "forward", _cuda_forward)
    loaded = load_model("random:llama-80m", dtype=torch.bfloat16, device=torch.device("cuda"), seed=0)
    model = loaded.model
    CacheEngine(model, 512, 16, torch.bfloat16, torch.device("cuda"))
    layers = [m for m in model.modules() if isinstance(m, attn_mod.Attention)]
    gen = torch.Generator().manual_seed(1)
    for layer in layers:   # random context in the cache (never zeros)
        layer.k_cache.copy_(torch.randn(layer.k_cache.shape, generator=gen).to(layer.k_cache))
        layer.v_cache.copy_(torch.randn(layer.v_cache.shape, generator=gen).to(layer.v_cache))
    runner = DecodeGraphRunner(model, 16, 2048, 8, torch.device("cuda"),
                               batch_buckets=[1, 4, 8], context_buckets=[512, 2048])
    runner.capture()
    for lens in ([7], [100, 513, 1, 2000, 30], [16] * 8):
        bt = random_block_tables(lens, 16, 512, gen, "cuda")
        meta = metadata([1] * len(lens), lens, bt, 16, "cuda")
        ids = torch.randint(3, 250, (len(lens),), generator=gen).cuda()
        pos = torch.tensor([L - 1 for L in lens]).cuda()
        assert runner.can_run(meta)
        got = runner.run(ids, pos, meta).clone()
        with torch.inference_mode(), attn_mod.set_forward_context(meta):
            want = model(ids, pos)
        assert rel_err(got, want) < 2e-2, lens


def test_engine_cuda_backend_reserves_its_workspace_before_the_kv_cache(monkeypatch):
    """CONTINUUM_ATTENTION_BACKEND=cuda through the engine itself (its CudaBackend object, CUDA
    graphs on): the decode split-K workspace exists before the KV cache was sized (so graph
    capture allocated none), covers max_num_seqs x max_model_len, and greedy fp32 tokens equal
    the torch backend's."""
    from continuum.llm import LLM

    assert ops.load(), ops.unavailable_reason()
    ref = _generate(False, "float32", monkeypatch)
    with monkeypatch.context() as m:
        m.setenv("CONTINUUM_ATTENTION_BACKEND", "cuda")
        llm = LLM("random:llama-80m", dtype="float32", kv_cache_memory="1GiB", max_model_len=1024,
                  max_num_batched_tokens=256, device="cuda", random_config={"initializer_range": 0.1})
        backend = llm.engine.runner.attention
        assert backend.name == "cuda" and backend.workspace is not None
        layer = backend.layers[0]
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        need = ops.decode_workspace_floats(llm.engine.args.scheduler_config().max_num_seqs, layer.num_heads,
                                           layer.num_kv_heads, layer.head_size, 1024, sms)
        assert backend.workspace.numel() >= need
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(3, 250, (n,), generator=g).tolist() for n in (5, 17, 100, 300, 33)]
        p = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
        got = [o.outputs[0].token_ids for o in llm.generate(prompts, p, use_tqdm=False)]
    assert got == ref
