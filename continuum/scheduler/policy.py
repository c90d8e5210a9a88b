"""The policy interface: what differs between scheduling policies, and nothing else.

The scheduler core asks a policy:
- ``waiting_key(req)``: admission order (smallest first);
- ``victim_key(req)``: running order (largest is preempted first);
- ``on_finish(req, now)``: what to do with the KV of a turn whose program continues with a
  tool call: ``FREE``, ``pin(ttl)`` (keep it referenced; ``math.inf`` = until a rule
  releases it) or ``SWAP`` (copy it to the host tier, then free); a free says why in
  ``reason`` (``PIN_DECISIONS``; none: the policy never pins);
- ``on_step(now)``: called at the top of every ``schedule()``; may return decisions for
  pinned programs (``(program_id, FREE | SWAP)``): InferCept's per-step re-evaluation, and
  Autellix's service accounting.
- ``admit(req, now)``: whether a waiting request may be admitted now (default: yes). A held
  request is skipped and keeps its place; requests after it are still considered, so a
  policy that holds one request must keep its own order among those it holds
  (``continuum+``'s program admission control);
- ``ttl_after_drift(tool, context_tokens)``: the TTL for a pin already held on ``tool`` once
  that tool's duration history was reset after a detected shift (default None: unchanged);
- ``snapshot()``: the policy's own counters (``continuum.snapshot``), composed into the
  scheduler's and so into ``LLMEngine.stats()``.

The policy reads shared state through ``self.ctx`` (a ``PolicyContext``: programs, pins,
predictor, T and eta windows, cost models, read-only views of the running/waiting queues). It
never mutates KV or queues itself (the queue views have no mutators): the core executes its decisions, so every lifecycle rule lives in one place.
A policy with knobs declares them once, as a frozen dataclass of knobs (``config_cls``; field
names are the ``EngineArgs`` keywords and CLI flags) that its constructor takes. Adding a
policy is one file in ``policies/`` plus a line in ``policies/__init__.py`` (docs/scheduling.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from continuum.request import Request, RequestStatus

if TYPE_CHECKING:
    from continuum.config import SchedulerConfig
    from continuum.kv.kv_manager import KVCacheManager
    from continuum.kv_ttl.pins import PinTable
    from continuum.kv_ttl.predictor import DurationPredictor
    from continuum.kv_ttl.eviction import EvictionHorizon
    from continuum.kv_ttl.programs import ProgramTable
    from continuum.kv_ttl.reload_cost import PrefillModel, ReloadCostModel
    from continuum.kv_ttl.ttl import EtaEstimator, SlidingMean


# Why a finished turn's KV was or was not pinned: one decision per turn that finished by a
# stop condition or a length limit (aborted and failed turns decide nothing). The engine
# counts them (``stats()["pin_decisions_<reason>_total"]``, on /metrics) and reports each
# turn's in ``RequestOutput.pin_decision``, so a user can see why nothing was pinned.
PINNED = "pinned"
NO_PROGRAM = "no_program"
LAST_STEP = "last_step"
NO_TOOL_CALL = "no_tool_call"
POLICY_NEVER_PINS = "policy_never_pins"
COLD_START = "cold_start"
RELOAD_CHEAP = "reload_cheap"
CACHE_SURVIVES = "cache_survives"
LOW_DUTY = "low_duty"
TOOL_TOO_SLOW = "tool_too_slow"
SWAPPED = "swapped"
OVER_BUDGET = "over_budget"
NOTHING_TO_PIN = "nothing_to_pin"
PIN_DECISIONS: dict[str, str] = {
    PINNED: "the KV was pinned for a TTL",
    NO_PROGRAM: "the request has no program id (a program of one turn)",
    LAST_STEP: "the turn said is_last_step: the program ends",
    NO_TOOL_CALL: "no tool_name was given and none was found in the output",
    POLICY_NEVER_PINS: "the scheduling policy never pins (vllm, program-fcfs, autellix)",
    COLD_START: "fewer than 100 tool durations seen yet, and the cold-start TTL "
                "ln(T + reload time) is 0 because T + reload time <= 1 s",
    RELOAD_CHEAP: "the tool's duration history gives TTL 0: recomputing the context is "
                  "cheaper than the memory a pin would hold",
    CACHE_SURVIVES: "continuum+: the prefix cache keeps the KV past the TTL without a pin",
    LOW_DUTY: "continuum+: the program computes under a tenth of the time (a person chatting)",
    TOOL_TOO_SLOW: "fixed-ttl: the tool's mean duration exceeds the fixed TTL",
    SWAPPED: "the policy copied the KV to the host tier instead",
    OVER_BUDGET: "a pin would exceed the pin budget (--pin-budget-fraction)",
    NOTHING_TO_PIN: "the turn holds no full KV block to pin",
}


@dataclass(frozen=True)
class FinishAction:
    kind: str                 # "free" | "pin" | "swap"
    ttl: float = 0.0          # seconds, for "pin"
    reason: str = ""          # a PIN_DECISIONS key when the policy chose not to pin


FREE = FinishAction("free")
SWAP = FinishAction("swap")


def pin(ttl: float, why_not: str = RELOAD_CHEAP) -> FinishAction:
    """Pin for ``ttl`` seconds; a TTL of 0 frees, for the reason ``why_not``."""
    return FinishAction("pin", ttl) if ttl > 0 else FinishAction("free", 0.0, why_not)


def free_because(reason: str) -> FinishAction:
    return FinishAction("free", 0.0, reason)


class QueueView(Sequence[Request]):
    """A read-only view of one of the scheduler's queues (``running``, ``waiting``): a policy
    reads them (length, iteration, indexing) but cannot reorder or change them; only the
    scheduler core moves requests. Live: it shows the list as it is now (the scheduler changes
    its queues in place and never rebinds them)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[Request]):
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]            # a slice is a copy: the queue itself stays untouched

    def __iter__(self) -> Iterator[Request]:
        return iter(self._items)

    def __contains__(self, req: object) -> bool:
        return req in self._items


@dataclass
class PolicyContext:
    config: "SchedulerConfig"
    kv: "KVCacheManager"
    programs: "ProgramTable"
    pins: "PinTable"
    predictor: "DurationPredictor"
    queue_delay: "SlidingMean"          # T of METHOD 2.2
    eta: "EtaEstimator"
    prefill_cost: "PrefillModel"        # recompute time of n tokens, a decode step's time
    offload_cost: "ReloadCostModel"     # host -> device reload time of n tokens
    running: QueueView                  # the scheduler's queues, read-only
    waiting: QueueView
    eviction: "EvictionHorizon"         # how long a block freed now stays cached
    step_no: int = 0                    # schedule() calls so far (the current one included)

    @property
    def reload_cost(self) -> "ReloadCostModel":
        """PrefillReload: reload from the host tier when there is one, else recompute."""
        return self.offload_cost if self.kv.host is not None else self.prefill_cost

    @staticmethod
    def program_arrival(req: Request) -> float:
        return req.program_arrival

    def is_pinned(self, req: Request) -> bool:
        return req.program_id in self.pins


class Policy:
    name: str = ""
    config_cls: ClassVar[type | None] = None   # the policy's knobs (a frozen dataclass); None: none
    ctx: PolicyContext

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "Policy":
        """The policy with its knobs read by name from ``options`` (``SchedulerConfig
        .policy_options``: every policy's knobs; the others' are ignored)."""
        from continuum.knobs import pick
        return cls() if cls.config_cls is None else cls(pick(cls.config_cls, options))

    def bind(self, ctx: PolicyContext) -> None:
        self.ctx = ctx

    def waiting_key(self, req: Request) -> tuple:
        raise NotImplementedError

    def victim_key(self, req: Request) -> tuple:
        raise NotImplementedError

    def on_finish(self, req: Request, now: float) -> FinishAction:
        return FREE

    def on_step(self, now: float) -> list[tuple[str, FinishAction]]:
        return []

    def admit(self, req: Request, now: float) -> bool:
        return True

    def on_admit(self, req: Request, now: float) -> None:
        """A waiting request was admitted (its prefix hit is in ``num_cached_tokens``)."""

    def ttl_after_drift(self, tool: str, context_tokens: int) -> float | None:
        """The TTL a pin held for a call of ``tool`` should have now that the tool's history
        was reset after a detected shift; None: keep the pin's TTL (policies whose TTL does not
        come from the duration CDF)."""
        return None

    def snapshot(self) -> dict[str, float]:
        """Policy-specific counters (``continuum.snapshot``): keys no other layer reports."""
        return {}


class VllmPolicy(Policy):
    """Request-level FCFS, as in vLLM: preempted requests first (they already held memory),
    then by arrival; the latest arrival is preempted first; finished requests free their KV."""

    name = "vllm"

    def waiting_key(self, req: Request) -> tuple:
        return (req.status != RequestStatus.PREEMPTED, req.arrival_time, req.seq_no)

    def victim_key(self, req: Request) -> tuple:
        return (req.arrival_time, req.seq_no)


def make_policy(name: str, config: "SchedulerConfig | None" = None) -> Policy:
    """Policy ``name`` of the registry, with its knobs from ``config`` (default: defaults)."""
    from continuum.errors import ConfigError
    from continuum.scheduler.policies import POLICIES
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ConfigError(f"unknown scheduling policy {name!r}; choose one of {sorted(POLICIES)}") from None
    return cls.from_options(config.policy_options if config is not None else {})
