"""The policy interface: what differs between scheduling policies, and nothing else.

The scheduler core asks a policy three questions: in which order to admit waiting requests,
which running request to preempt first, and what to do with a finished request's KV. Adding a
policy is one small file plus a line in ``POLICIES``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from continuum.request import Request, RequestStatus


class Policy(ABC):
    name: str = ""

    @abstractmethod
    def waiting_key(self, req: Request) -> tuple:
        """Sort key of a waiting request; smallest is admitted first."""

    @abstractmethod
    def victim_key(self, req: Request) -> tuple:
        """Sort key of a running request; largest is preempted first."""


class VllmPolicy(Policy):
    """Request-level FCFS, as in vLLM: preempted requests first (they already held memory),
    then by arrival; the latest arrival is preempted first; finished requests free their KV."""

    name = "vllm"

    def waiting_key(self, req: Request) -> tuple:
        return (req.status != RequestStatus.PREEMPTED, req.arrival_time, req.seq_no)

    def victim_key(self, req: Request) -> tuple:
        return (req.arrival_time, req.seq_no)


POLICIES: dict[str, type[Policy]] = {"vllm": VllmPolicy}


def make_policy(name: str) -> Policy:
    from continuum.errors import ConfigError
    try:
        return POLICIES[name]()
    except KeyError:
        raise ConfigError(f"unknown scheduling policy {name!r}; choose one of {sorted(POLICIES)}") from None
