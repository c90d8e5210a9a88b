"""vLLM-shaped outputs of the offline API and the engine step."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class RequestMetrics:
    """Times on the engine's clock (seconds)."""

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    queued_time: float = 0.0
    num_preemptions: int = 0

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time


@dataclass
class CompletionOutput:
    index: int
    text: str                                   # cumulative text so far
    token_ids: list[int]                        # cumulative output token ids
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None            # "stop" | "length" | "abort" | "error" | None while running
    stop_reason: int | str | None = None        # the stop string or stop token id that ended it
    delta_text: str = ""                        # text added by the latest step (streaming)
    delta_token_ids: list[int] = field(default_factory=list)

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    num_cached_tokens: int = 0                  # prompt tokens served from the prefix cache
    error: str | None = None                    # why the engine failed this request (finish_reason "error")
    # On the finished output of a completed turn: the tool the scheduler saw it call (client
    # hint or parsed; None: the program ends here), and why its KV was or was not pinned
    # (``continuum.scheduler.policy.PIN_DECISIONS``) with the pin's TTL in seconds.
    tool_name: str | None = None
    pin_decision: str | None = None
    pin_ttl: float = 0.0
