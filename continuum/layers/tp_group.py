"""One rank's handle on a tensor-parallel group: the N processes that together run one model.

The group is a private ``torch.distributed`` process group (gloo on CPU, NCCL on CUDA) built
from an explicit ``TCPStore``, never the global default group, so several engines (and
tests) can live in one process. A gloo collective has a timeout (``COLLECTIVE_TIMEOUT_S``),
and a failed collective (a peer that died closes its sockets, a peer that hangs trips the
timeout) raises
:class:`~continuum.errors.TensorParallelError` and marks the group broken: all later calls
raise at once instead of waiting on peers that will never answer.

Invariants: every rank calls the same collectives in the same order with tensors of the same
shape (the model's forward guarantees it: each rank runs the same step); results are
identical on every rank (an all-reduce hands every rank the same sum).
"""
from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

from continuum.errors import TensorParallelError

DEFAULT_TIMEOUT_S = 300.0     # joining the group waits this long for every rank
# A gloo collective waits this long on a live but silent peer (read when a group is made).
# NCCL collectives are not waited on by the host (that would stall the GPU pipeline): a hung
# NCCL peer is found by NCCL's own watchdog, after the group's DEFAULT_TIMEOUT_S.
COLLECTIVE_TIMEOUT_S = 300.0


def master_store(timeout_s: float = DEFAULT_TIMEOUT_S) -> dist.TCPStore:
    """The rendezvous store, on a free localhost port (``store.port``), held by rank 0."""
    return dist.TCPStore("127.0.0.1", 0, None, is_master=True, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=timeout_s))


class TPGroup:
    """``rank`` of ``size``; ``all_reduce`` (sum, in place) and ``all_gather`` along a dim."""

    def __init__(self, rank: int, size: int, pg, timeout_s: float, store=None,
                 collective_timeout_s: float | None = None):
        self.rank, self.size, self.timeout_s = rank, size, timeout_s
        self._pg = pg
        self._store = store          # the master store must outlive the group
        self.broken: str | None = None
        self._wait = () if collective_timeout_s is None else (
            datetime.timedelta(seconds=collective_timeout_s),)

    @classmethod
    def connect(cls, rank: int, size: int, port: int, device: torch.device,
                timeout_s: float = DEFAULT_TIMEOUT_S, store: dist.TCPStore | None = None,
                collective_timeout_s: float | None = None) -> "TPGroup":
        """Join the group (blocks until all ``size`` ranks joined or ``timeout_s`` passed).
        Rank 0 passes the ``master_store`` it made; the others connect to ``port``. A gloo
        collective raises after ``collective_timeout_s`` (default ``COLLECTIVE_TIMEOUT_S``)."""
        timeout = datetime.timedelta(seconds=timeout_s)
        if store is None:
            store = dist.TCPStore("127.0.0.1", port, None, is_master=False, timeout=timeout)
        try:
            if device.type == "cuda":
                opts = dist.ProcessGroupNCCL.Options()
                opts._timeout = timeout
                pg = dist.ProcessGroupNCCL(store, rank, size, opts)
            else:
                opts = dist.ProcessGroupGloo._Options()
                opts._timeout = timeout
                # loopback: ranks live on one host; resolving the hostname may not work here
                opts._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
                pg = dist.ProcessGroupGloo(store, rank, size, opts)
        except RuntimeError as e:
            raise TensorParallelError(f"rank {rank} of {size} could not join the group: {e}") from e
        wait = None if device.type == "cuda" else (
            COLLECTIVE_TIMEOUT_S if collective_timeout_s is None else collective_timeout_s)
        return cls(rank, size, pg, timeout_s, store, wait)

    def _check(self) -> None:
        if self.broken is not None:
            raise TensorParallelError(f"the tensor-parallel group is broken: {self.broken}")

    def _fail(self, op: str, e: BaseException) -> TensorParallelError:
        self.broken = f"{op} failed on rank {self.rank}: {e}"
        return TensorParallelError(self.broken)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` over the ranks, in place; returns ``x``."""
        self._check()
        try:
            self._pg.allreduce([x]).wait(*self._wait)
        except RuntimeError as e:
            raise self._fail("all_reduce", e) from e
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Every rank's ``x`` (same shape on all ranks) concatenated along ``dim`` in rank order."""
        self._check()
        x = x.contiguous()
        outs = [torch.empty_like(x) for _ in range(self.size)]
        try:
            self._pg.allgather([outs], [x]).wait(*self._wait)
        except RuntimeError as e:
            raise self._fail("all_gather", e) from e
        return torch.cat(outs, dim=dim)
