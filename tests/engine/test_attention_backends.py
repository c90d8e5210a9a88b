"""Each engine owns its attention backend: two engines in one process, one on the torch
reference and one on the CPU kernels, stepped in turn, each give exactly the tokens they give
alone (nothing about a step leaks from one engine's backend into the other's)."""
import pytest
import torch

from continuum.engine.engine import LLMEngine
from continuum.config import EngineArgs
from continuum.layers import cpu_kernels
from continuum.layers.attention import Attention
from continuum.layers.attention_backend import AttentionBackend, CpuKernelBackend, select_backend
from continuum.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(cpu_kernels.load() is None,
                                reason=f"CPU kernel did not build: {cpu_kernels.failure()}")


def make_engine(backend: str, monkeypatch) -> LLMEngine:
    monkeypatch.setenv("CONTINUUM_ATTENTION_BACKEND", backend)
    # Small step budget: prompts are prefilled in chunks over their cached prefix while other
    # requests decode, i.e. mixed batches; initializer_range 0.1 keeps the random model's
    # greedy outputs from collapsing to one repeated token.
    args = EngineArgs(model="random:tiny", dtype="float32", kv_cache_memory="16MiB",
                      max_num_batched_tokens=40, random_config={"initializer_range": 0.1})
    return LLMEngine(args)


def prompts():
    g = torch.Generator().manual_seed(7)
    return [torch.randint(3, 250, (n,), generator=g).tolist() for n in (90, 7, 45, 130)]


def add_all(engine: LLMEngine) -> None:
    p = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    for i, prompt in enumerate(prompts()):
        engine.add_request(prompt, p, request_id=f"r{i}")


def collect(outs, into: dict) -> None:
    for o in outs:
        if o.finished:
            into[o.request_id] = list(o.outputs[0].token_ids)


def run_alone(engine: LLMEngine) -> dict:
    add_all(engine)
    done: dict = {}
    while engine.has_unfinished_requests():
        collect(engine.step(), done)
    return done


def test_two_engines_interleaved_match_their_own_runs(monkeypatch):
    ref_alone = run_alone(make_engine("torch", monkeypatch))
    ker_engine = make_engine("auto", monkeypatch)
    ker_alone = run_alone(ker_engine)
    assert len(ref_alone) == 4 and all(len(set(t)) >= 4 for t in ref_alone.values()), "degenerate outputs"

    a, b = make_engine("torch", monkeypatch), make_engine("auto", monkeypatch)
    assert a.attention_backend == "torch" and b.attention_backend == "cpu-kernel"
    assert a.runner.attention is not b.runner.attention
    calls = {"a": 0, "b": 0}
    for name, eng in (("a", a), ("b", b)):
        backend = eng.runner.attention
        inner = backend.forward

        def counted(layer, q, k, v, meta, name=name, backend=backend, inner=inner):
            # every layer call of this engine reaches its own backend, with its own step
            assert layer.backend is backend and meta is backend.meta
            calls[name] += 1
            return inner(layer, q, k, v, meta)
        backend.forward = counted
    add_all(a)
    add_all(b)
    got_a, got_b = {}, {}
    while a.has_unfinished_requests() or b.has_unfinished_requests():
        if a.has_unfinished_requests():
            collect(a.step(), got_a)
        if b.has_unfinished_requests():
            collect(b.step(), got_b)
    assert calls["a"] > 0 and calls["b"] > 0
    assert got_a == ref_alone
    assert got_b == ker_alone
    assert b.runner.attention.num_varlen_steps > 0          # the varlen kernel did run
    # fp32: the kernel and the reference agree to rounding, and these logits are not tied
    assert got_b == got_a


def test_backend_holds_the_step_and_binds_its_layers():
    from continuum.models.loader import load_model
    model = load_model("random:tiny", dtype=torch.float32, device=torch.device("cpu"), seed=0).model
    backend = select_backend("cpu")
    assert isinstance(backend, CpuKernelBackend)
    backend.bind(model)
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    assert layers and all(layer.backend is backend for layer in layers)
    assert backend.meta is None
    from tests.ops.helpers import metadata
    meta = metadata([3, 1], [3, 5], torch.tensor([[0], [1]]), 16, "cpu")
    with backend.step(meta):
        assert backend.meta is meta and backend.num_varlen_steps == 1
    assert backend.meta is None
    assert type(select_backend("cpu", "torch")) is AttentionBackend
    with pytest.raises(ValueError, match="unknown attention backend"):
        select_backend("cpu", "flash")
