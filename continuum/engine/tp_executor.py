"""The driver's side of tensor parallelism: rank 0 runs in the engine's process, ranks
1..N-1 are spawned processes (:mod:`~continuum.engine.tp_worker`), and one scheduler drives
them all.

Per step the driver sends the step (:mod:`~continuum.engine.tp_step`) down each rank's pipe
and runs its own forward pass; the ranks meet in the model's collectives (two all-reduces
per layer, one for the embedding, an all-gather of the logits) and only rank 0 samples.
The scheduler, the KV manager and kv_ttl know nothing of ranks: every rank's cache has the
same number of blocks and a block id means the same slots on every rank.

Failure is loud, never a hang: a rank that exits is seen before the next step (its
``exitcode``) or inside a collective (its sockets close; gloo raises at once), a rank that
hangs trips the collective timeout, and start-up waits on each rank's pipe *and* its
process sentinel. Each raises :class:`~continuum.errors.TensorParallelError` naming the
rank, its exit code and its traceback if it sent one; the engine is broken from then on
(every later step raises the same error) and the remaining ranks are stopped.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import weakref
from multiprocessing.connection import Connection, wait

import torch

from continuum.config import EngineArgs
from continuum.engine.model_runner import ModelRunner
from continuum.engine.tp_step import StepEncoder
from continuum.engine.tp_worker import batch_rows, kv_digest, rank_device, worker_main
from continuum.errors import TensorParallelError
from continuum.layers.tp_group import DEFAULT_TIMEOUT_S, TPGroup, master_store
from continuum.scheduler.output import SchedulerOutput

logger = logging.getLogger(__name__)


def _stop(procs: list, conns: list[Connection], timeout_s: float = 10.0) -> None:
    """Ask every rank to stop, then kill those still alive after ``timeout_s``."""
    for c in conns:
        try:
            c.send(("stop", None))
        except OSError:
            pass
    for p in procs:
        p.join(timeout_s)
        if p.is_alive():
            p.kill()
            p.join(10.0)
    for c in conns:
        c.close()


class TPWorkers:
    """Ranks 1..size-1 and rank 0's group handle (``group``). Build with :meth:`start`."""

    def __init__(self, size: int, procs: list, conns: list[Connection], group: TPGroup,
                 timeout_s: float):
        self.size, self.procs, self.conns, self.group = size, procs, conns, group
        self.timeout_s = timeout_s
        self.broken: TensorParallelError | None = None
        self._finalizer = weakref.finalize(self, _stop, procs, conns)

    @classmethod
    def start(cls, args: EngineArgs, device: torch.device, dtype: torch.dtype, size: int,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> "TPWorkers":
        """Spawn ranks 1..size-1 (each loads its own shard) and join the group as rank 0."""
        store = master_store(timeout_s)
        ctx = mp.get_context("spawn")         # fork would copy this process's threads' locks
        procs, conns = [], []
        threads = torch.get_num_threads()
        for rank in range(1, size):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, name=f"continuum-tp-rank{rank}", daemon=True,
                            args=(child, rank, size, store.port, args,
                                  str(rank_device(device, rank)), dtype, threads, timeout_s))
            p.start()
            child.close()
            procs.append(p)
            conns.append(parent)
        # Joining blocks until every rank joined: do it beside a watch on the ranks, so a
        # rank that dies while importing fails the start now, not at the store's timeout.
        box: dict = {}
        joined, done = mp.Pipe(duplex=False)

        def join() -> None:
            try:
                box["group"] = TPGroup.connect(0, size, store.port, device, timeout_s, store=store)
            except BaseException as e:      # noqa: BLE001 - re-raised in the caller
                box["error"] = e
            done.send(None)
            done.close()

        threading.Thread(target=join, name="continuum-tp-join", daemon=True).start()
        ready = wait([joined] + [p.sentinel for p in procs])    # whichever comes first
        joined.close()
        if joined not in ready:                 # a rank exited before the group formed
            err = TensorParallelError(cls._describe(procs, conns, "while joining the group"))
            _stop(procs, conns, timeout_s=0.0)
            raise err
        if "error" in box:
            _stop(procs, conns, timeout_s=0.0)
            raise box["error"]
        return cls(size, procs, conns, box["group"], timeout_s)

    # -- liveness -------------------------------------------------------------------------------
    @staticmethod
    def _describe(procs: list, conns: list[Connection], when: str) -> str:
        parts = []
        for rank, (p, c) in enumerate(zip(procs, conns), start=1):
            msg = ""
            try:
                while c.poll():
                    kind, payload = c.recv()
                    if kind == "error":
                        msg = f"\n{payload}"
            except (EOFError, OSError):
                pass
            if p.exitcode is not None or msg:
                parts.append(f"tensor-parallel rank {rank} (pid {p.pid}) exited with code "
                             f"{p.exitcode} {when}{msg}")
        return "; ".join(parts) or f"a tensor-parallel collective failed {when}"

    def fail(self, when: str, cause: BaseException | None = None) -> TensorParallelError:
        """Mark the engine broken (stopping every rank) and return the error to raise."""
        if self.broken is None:
            detail = self._describe(self.procs, self.conns, when)
            if cause is not None:
                detail += f" ({type(cause).__name__}: {cause})"
            self.broken = TensorParallelError(detail)
            self._kill()
        return self.broken

    def _kill(self) -> None:
        # Broken: the live ranks may sit in a collective that will never complete.
        self._finalizer.detach()
        _stop(self.procs, self.conns, timeout_s=0.0)

    def ensure_alive(self) -> None:
        """Raise TensorParallelError if the group is broken or any rank has exited."""
        if self.broken is not None:
            raise self.broken
        if any(p.exitcode is not None for p in self.procs):
            raise self.fail("before a step")

    def send(self, kind: str, payload) -> None:
        self.ensure_alive()
        for c in self.conns:
            try:
                c.send((kind, payload))
            except OSError as e:
                raise self.fail(f"on sending {kind!r}", e) from e

    def _recv_all(self, want: str, when: str) -> list:
        """One ``want`` reply per rank, waiting on each rank's pipe and process together."""
        out = []
        for p, c in zip(self.procs, self.conns):
            if not wait([c, p.sentinel], timeout=self.timeout_s):
                raise self.fail(f"{when}: no reply in {self.timeout_s:.0f} s")
            try:
                if not c.poll():
                    raise EOFError
                kind, payload = c.recv()
            except (EOFError, OSError) as e:
                raise self.fail(when, e) from e
            if kind == "error":
                self.broken = TensorParallelError(f"{payload}")
                self._kill()
                raise self.broken
            assert kind == want, (kind, want)
            out.append(payload)
        return out

    # -- phases ---------------------------------------------------------------------------------
    def wait_loaded(self) -> None:
        self._recv_all("loaded", "while loading its shard")

    def init(self, *, num_blocks: int, block_size: int, num_host_blocks: int, max_model_len: int,
             max_num_seqs: int) -> None:
        """Give every rank the driver's pool size and limits; wait until all are ready."""
        self.send("init", dict(num_blocks=num_blocks, block_size=block_size,
                               num_host_blocks=num_host_blocks, max_model_len=max_model_len,
                               max_num_seqs=max_num_seqs))
        self._recv_all("ready", "while allocating its KV cache")

    def swap(self, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]]) -> None:
        self.send("swap", (swap_out, swap_in))

    def check(self, runner: ModelRunner, cache, replicated_kv: bool) -> None:
        """Every rank's batch rows (request ids and block ids) equal the driver's and its
        pool has the same size; with replicated KV heads, ranks holding the same heads hold
        the same bytes. AssertionError otherwise."""
        self.send("check", replicated_kv)
        replies = self._recv_all("check", "during an integrity check")
        mine = batch_rows(runner)
        layout = runner.model.tp_layout
        kv = {0: kv_digest(cache) if replicated_kv else None}
        for rank, r in enumerate(replies, start=1):
            assert r["rows"] == mine, f"rank {rank}'s block tables differ from rank 0's"
            assert r["num_blocks"] == cache.num_blocks, f"rank {rank} has {r['num_blocks']} blocks"
            kv[rank] = r["kv"]
        if replicated_kv:
            per_head = max(1, self.size // layout.num_kv_heads)
            for rank in range(self.size):
                first = rank - rank % per_head       # the first rank holding these KV heads
                assert kv[rank] == kv[first], f"rank {rank}'s KV differs from rank {first}'s"

    def shutdown(self) -> None:
        """Stop every rank (idempotent)."""
        self._finalizer()


class TPModelRunner(ModelRunner):
    """Rank 0's runner: sends each step to the other ranks, then runs it itself."""

    def __init__(self, workers: TPWorkers, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.workers = workers
        self._encoder = StepEncoder()
        self._forgotten: list[str] = []

    def release(self, request_ids) -> None:
        ids = list(request_ids)
        super().release(ids)
        self._forgotten.extend(ids)            # the other ranks forget them with the next step

    def execute(self, out: SchedulerOutput) -> tuple[list[int | None], list]:
        """Send the step, then run it. A failure of the sampler alone (after the last
        collective) propagates as on one device: the ranks are still in step, and the
        engine's per-request re-runs resend their steps."""
        forgotten = self._forgotten + list(out.finished_ids)
        self._forgotten = []
        self.workers.send("step", self._encoder.encode(out, forgotten))
        ModelRunner.release(self, out.finished_ids)
        try:
            return self.run(out)
        except TensorParallelError as e:
            raise self.workers.fail("during a step", e) from e

    def forward(self, out: SchedulerOutput):
        try:
            return super().forward(out)
        except TensorParallelError:
            raise
        except Exception as e:                 # noqa: BLE001 - the ranks are out of step now
            raise self.workers.fail("after rank 0 failed a forward pass", e) from e
