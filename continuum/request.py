"""A request as the scheduler sees it: token ids, sampling params, progress, and agent info."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from continuum.sampling_params import SamplingParams


@dataclass
class AgentInfo:
    """Which agent program a request belongs to. Without a program id a request is a program
    of one turn. ``tool_name`` is the client's hint for the tool this turn will call."""

    program_id: str | None = None
    turn: int | None = None
    is_last_step: bool = False
    tool_name: str | None = None
    inferred: bool = False           # program_id was recognised from the traffic, not sent


class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED_STOPPED = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5
    FINISHED_ERROR = 6          # the engine failed this request alone (the others ran on)

    @property
    def is_finished(self) -> bool:
        return self >= RequestStatus.FINISHED_STOPPED

    @property
    def completed(self) -> bool:
        """Finished by a stop condition or a length limit (not aborted, not failed)."""
        return self in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH)

    @property
    def finish_reason(self) -> str | None:
        return {RequestStatus.FINISHED_STOPPED: "stop", RequestStatus.FINISHED_LENGTH: "length",
                RequestStatus.FINISHED_ABORTED: "abort",
                RequestStatus.FINISHED_ERROR: "error"}.get(self)


class Request:
    """One generation request.

    Invariants: ``all_token_ids == prompt_token_ids + output_token_ids``;
    ``num_computed_tokens <= num_tokens``; tokens [0, num_computed_tokens) have KV in the
    request's blocks. The last sampled token is not yet computed, so a running request in
    decode has ``num_tokens - num_computed_tokens == 1``.
    """

    def __init__(self, request_id: str, prompt_token_ids: list[int], sampling_params: SamplingParams,
                 arrival_time: float, eos_token_ids: list[int] | None = None,
                 agent: AgentInfo | None = None, max_model_len: int | None = None,
                 cache_salt: str | None = None):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.sampling_params = sampling_params
        self.arrival_time = arrival_time
        self.eos_token_ids = list(eos_token_ids or [])
        self.agent = agent or AgentInfo()
        # The program this request belongs to (a program of one turn without an id), and that
        # program's first arrival (set by the scheduler's program table on arrival).
        self.program_id: str = self.agent.program_id or f"req-{request_id}"
        self.program_arrival: float = arrival_time
        self.program_record = None              # the scheduler's ProgramRecord (hot-path lookups)
        self.max_model_len = max_model_len
        # Tie-breaker in the policies' orderings: the order in which the request reached its
        # scheduler (``Scheduler.add_request`` numbers them; -1 until then). Per scheduler,
        # not process-wide, so engines in one process do not share a counter.
        self.seq_no = -1
        self.status = RequestStatus.WAITING
        self.output_token_ids: list[int] = []
        self.all_token_ids: list[int] = list(self.prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens = -1             # prefix-cache hit at first admission (-1: not yet)
        # Prefix-cache isolation: only requests with the same salt (or none) share KV blocks.
        self.cache_salt = cache_salt
        self.block_hashes: list[bytes] = []     # chained hashes of the full blocks, kept current
        self.num_preemptions = 0
        self.stop_reason: int | str | None = None
        # tool this turn called (client hint, else parsed from the output at finish); None
        # after finish means the program ended with this turn.
        self.tool_name: str | None = None
        # why its KV was or was not pinned at finish (a scheduler.policy.PIN_DECISIONS key;
        # None until a completed finish) and the TTL of its pin
        self.pin_decision: str | None = None
        self.pin_ttl: float = 0.0
        # timestamps (scheduler clock)
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.finished_time: float | None = None
        self.queued_time = 0.0                  # total time spent waiting for admission
        self.last_enqueue_time = arrival_time

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    def append_output_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self.all_token_ids.append(token_id)

    def __repr__(self) -> str:
        return (f"Request({self.request_id!r}, {self.status.name}, prompt={self.num_prompt_tokens}, "
                f"out={self.num_output_tokens}, computed={self.num_computed_tokens})")
