"""A tensor-parallel replica on Ray: the actor's engine spawns its second rank and serves
greedy tokens equal to a one-rank engine's (CPU, gloo; on GPUs the replica asks Ray for N)."""
from __future__ import annotations

import os
import sys

import pytest

ray = pytest.importorskip("ray")

from continuum.distributed.replica_pool import ReplicaPool  # noqa: E402
from continuum.distributed.server import init_ray  # noqa: E402
from continuum.llm import LLM  # noqa: E402
from continuum.sampling_params import SamplingParams  # noqa: E402

ENGINE_KW = dict(model="random:tiny", dtype="float32", device="cpu", kv_cache_memory="16MiB")
ENV = {"env_vars": {"CONTINUUM_ATTENTION_BACKEND": "torch", "OMP_NUM_THREADS": "1"}}
PROMPT = list(range(20, 52))


def _greedy_in_engine(engine) -> tuple[int, list[int]]:
    """Runs on the replica's engine thread between steps: one greedy request to the end."""
    req = engine.add_request(PROMPT, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    while not req.is_finished:
        engine.step()
    engine.check_integrity()
    return engine.tp_workers.size, list(req.output_token_ids)


def test_a_tp2_replica_on_ray_equals_one_rank():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    want = LLM(**ENGINE_KW).generate([PROMPT], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                                     use_tqdm=False)[0].outputs[0].token_ids
    init_ray(None, num_cpus=2)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        pool = ReplicaPool(dict(ENGINE_KW, tensor_parallel_size=2), num_cpus_per_replica=1,
                           runtime_env=ENV)
        (h,) = pool.start_sync(1)
        assert pool.num_gpus == 0.0                 # no GPU in the cluster: CPU ranks
        size, got = ray.get(h.actor.call.remote(_greedy_in_engine))
        assert (size, got) == (2, want)
    finally:
        ray.shutdown()
