"""A tensor-parallel rank other than 0: one spawned process running its shard of the model.

Life: join the group, load this rank's shard, report ``loaded``; take ``init`` (the KV pool
size and batch limits the driver chose, so every rank has the same block ids), build the KV
cache, attention backend and model runner exactly as the engine does, report ``ready``;
then apply the driver's messages in order until ``stop`` or until the driver goes away:

- ``step``: a :mod:`~continuum.engine.tp_step` message; run the forward pass (and the LM
  head's share when the step samples) in lock step with the driver's collectives. Nothing
  is sent back: the collectives are the synchronisation.
- ``swap``: the host tier's copies for this rank's KV heads.
- ``check``: reply with this rank's batch rows and a digest of its KV (integrity checks).

Any error is sent to the driver as ``("error", traceback)`` and ends the process; the
driver's next collective then fails (the sockets close) and it raises
``TensorParallelError`` with that text. A driver that dies closes the pipe: ``recv`` raises
``EOFError`` and the rank exits.
"""
from __future__ import annotations

import hashlib
import traceback
from multiprocessing.connection import Connection

import torch

from continuum.config import EngineArgs
from continuum.engine.cache_engine import CacheEngine
from continuum.engine.heap import keep_freed_memory
from continuum.engine.model_runner import ModelRunner
from continuum.engine.tp_step import StepDecoder
from continuum.layers.attention_backend import select_backend
from continuum.layers.cpu_linear import pack_linears
from continuum.layers.tp_group import TPGroup
from continuum.models.loader import load_model
from continuum.threads import torch_threads


def rank_device(base: torch.device, rank: int) -> torch.device:
    """Rank r's device: the driver's on CPU; CUDA device ``base.index + r`` on GPUs."""
    if base.type != "cuda":
        return base
    return torch.device("cuda", (base.index or 0) + rank)


def batch_rows(runner: ModelRunner) -> list[tuple[str, list[int]]]:
    """The runner's persistent rows: (request id, block ids held) in row order."""
    b = runner.batch
    return [(rid, b.table[r, :b.synced[r]].tolist()) for r, rid in enumerate(b.row_ids)]


def kv_digest(cache: CacheEngine) -> str:
    """SHA-1 of every K and V byte of this rank (ranks holding the same KV heads must agree)."""
    h = hashlib.sha1()
    for t in cache.k_caches + cache.v_caches:
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def worker_main(conn: Connection, rank: int, size: int, port: int, args: EngineArgs,
                device: str, dtype: torch.dtype, threads: int, timeout_s: float) -> None:
    """The process body (``multiprocessing`` spawn target)."""
    torch.set_num_threads(threads)
    try:
        _serve(conn, rank, size, port, args, torch.device(device), dtype, timeout_s)
    except EOFError:
        return                                  # the driver is gone: nothing to report to
    except BaseException:                       # noqa: BLE001 - reported, then the rank ends
        try:
            conn.send(("error", f"rank {rank}: {traceback.format_exc()}"))
        except OSError:
            pass
        raise SystemExit(1)


def _serve(conn: Connection, rank: int, size: int, port: int, args: EngineArgs,
           device: torch.device, dtype: torch.dtype, timeout_s: float) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        keep_freed_memory()                     # engine/heap.py, as the driver does
    group = TPGroup.connect(rank, size, port, device, timeout_s)
    mc = args.model_config()
    loaded = load_model(mc.model, dtype=dtype, device=device, seed=mc.seed,
                        random_config=mc.random_config, group=group)
    model = loaded.model
    conn.send(("loaded", None))
    kind, init = conn.recv()
    assert kind == "init", kind
    cache = CacheEngine(model, init["num_blocks"], init["block_size"], dtype, device,
                        init["num_host_blocks"])
    attention = select_backend(device)
    if device.type == "cpu":
        with torch_threads(1):
            pack_linears(model)
    runner = ModelRunner(model, init["block_size"], device, init["max_num_seqs"],
                         init["max_model_len"], attention)
    decoder = StepDecoder()
    cache.ready()
    conn.send(("ready", None))
    with torch.inference_mode():
        while True:
            kind, payload = conn.recv()
            if kind == "step":
                out = decoder.decode(payload)
                runner.release(out.finished_ids)
                if out.is_empty:
                    continue
                hidden, rows, _ = runner.forward(out)
                if rows:                        # the driver samples: join the LM head's gather
                    model.compute_logits(hidden[torch.tensor(rows, device=device)])
            elif kind == "swap":
                cache.swap(*payload)
            elif kind == "check":
                runner.batch.check()
                conn.send(("check", {"rows": batch_rows(runner), "num_blocks": cache.num_blocks,
                                     "kv": kv_digest(cache) if payload else None}))
            elif kind == "stop":
                return
            else:
                raise RuntimeError(f"unknown message {kind!r}")
