"""What the scheduler hands the executor for one step: plain data, no tensors."""
from __future__ import annotations

from dataclasses import dataclass, field

from continuum.request import Request


@dataclass
class ScheduledRequest:
    """Compute ``num_new_tokens`` tokens of ``request`` starting at position ``start``.

    ``block_ids`` is the request's whole block table after allocation: the KV manager's live
    list, not a copy (read it, never mutate it). While the request holds its blocks the list
    only grows; when they are freed and taken again it is a new list object. The model
    runner relies on both to copy only new ids (``continuum.engine.input_batch``). ``samples``
    is true when this chunk reaches the end of the known tokens, so the step yields a new
    token for it.
    """

    request: Request
    start: int
    num_new_tokens: int
    block_ids: list[int]
    samples: bool


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)
    finished_ids: list[str] = field(default_factory=list)   # finished since the last step
    # KV copies to run before the forward pass, swap-outs first: (device block, host block)
    # and (host block, device block) pairs (the host tier, METHOD 2.5).
    swap_out: list[tuple[int, int]] = field(default_factory=list)
    swap_in: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_scheduled_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        """Nothing to compute (there may still be swaps to run)."""
        return not self.scheduled
