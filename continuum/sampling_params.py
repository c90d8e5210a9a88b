"""Per-request sampling parameters (vLLM's names and semantics)."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from continuum.errors import InvalidRequestError, check_text

# Seeds are int64, as in vLLM and torch.Generator.manual_seed (which overflows beyond).
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
# Below this a repetition penalty is not a penalty any more but a logit multiplier of 100+
# (and at ~1e-38 it is 0 in float32: logits / 0).
MIN_REPETITION_PENALTY = 0.01


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x: object) -> bool:
    """An integer (numpy's too), but not a bool: ``True`` is no token id or length."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


# Bounds on what one request may ask the engine thread to match each step. Agent clients send a
# handful of short stop strings (role tags, "</tool_call>", "\nObservation:"); OpenAI allows 4,
# vLLM sets no bound. 64 x 256 is far above real use yet keeps the worst stop-string automaton
# at ~16k nodes: ~6 ms to build once (then cached), ~4 MB, same per-character matching cost.
MAX_STOP_STRINGS = 64
MAX_STOP_STRING_CHARS = 256
# The scheduler tests every sampled token against the list, and the sampler masks the whole
# list while under min_tokens, so the list as sent (duplicates count) is bounded: 1,024 covers
# every stop/eos token of real vocabularies (a handful) with room for banning a token class.
MAX_STOP_TOKEN_IDS = 1024


@dataclass
class SamplingParams:
    """How to sample one request's tokens.

    temperature == 0 means greedy. top_k <= 0 (or -1) disables top-k; top_p == 1 and
    min_p == 0 disable theirs. ``seed`` makes a request's random draws reproducible and
    independent of what else is in the batch. ``stop`` strings are matched on the detokenized
    text (across token boundaries) and are not included in the output text (unless
    ``include_stop_str_in_output``): the text ends where a stop string first *ends*, and among
    stop strings ending there the longest wins, however the text was split into tokens. At most
    ``MAX_STOP_STRINGS`` stop strings of at most ``MAX_STOP_STRING_CHARS`` characters, and at
    most ``MAX_STOP_TOKEN_IDS`` ``stop_token_ids``.
    ``logprobs=N`` returns the sampled token's logprob plus the top-N alternatives.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.stop or [], (list, tuple)):
            raise InvalidRequestError(f"stop must be a string or a list of strings, got {self.stop!r}")
        if not isinstance(self.stop_token_ids or [], (list, tuple)):
            raise InvalidRequestError(f"stop_token_ids must be a list of integers, got {self.stop_token_ids!r}")
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.validate()

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise InvalidRequestError(msg)

        if self.n != 1:
            bad(f"n must be 1 (got {self.n!r}); sample several requests instead")
        # (name, value, low, high, low excluded); NaN and non-numbers fail every range
        for name, value, lo, hi, open_lo in (
                ("temperature", self.temperature, 0.0, 100.0, False),
                ("top_p", self.top_p, 0.0, 1.0, True),
                ("min_p", self.min_p, 0.0, 1.0, False),
                ("presence_penalty", self.presence_penalty, -2.0, 2.0, False),
                ("frequency_penalty", self.frequency_penalty, -2.0, 2.0, False),
                ("repetition_penalty", self.repetition_penalty, MIN_REPETITION_PENALTY, 2.0, False)):
            if not (_is_real(value) and (lo < value if open_lo else lo <= value) and value <= hi):
                bad(f"{name} must be a number in {'(' if open_lo else '['}{lo}, {hi}], got {value!r}")
        if not _is_int(self.top_k) or (self.top_k < -1):
            bad(f"top_k must be -1 (disabled), 0 (disabled) or a positive integer, got {self.top_k!r}")
        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 1):
            bad(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not _is_int(self.min_tokens) or self.min_tokens < 0:
            bad(f"min_tokens must be an integer >= 0, got {self.min_tokens!r}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            bad(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        if self.logprobs is not None and not (_is_int(self.logprobs) and 0 <= self.logprobs <= 20):
            bad(f"logprobs must be an integer in [0, 20], got {self.logprobs!r}")
        if self.seed is not None and not (_is_int(self.seed) and SEED_MIN <= self.seed <= SEED_MAX):
            bad(f"seed must be an integer in [-2^63, 2^63 - 1], got {self.seed!r}")
        if not all(isinstance(b, bool) for b in (self.ignore_eos, self.skip_special_tokens,
                                                  self.include_stop_str_in_output)):
            bad("ignore_eos, skip_special_tokens and include_stop_str_in_output must be booleans")
        if len(self.stop) > MAX_STOP_STRINGS:
            bad(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(self.stop)}")
        for i, s in enumerate(self.stop):
            if not isinstance(s, str) or not s:
                bad(f"stop strings must be non-empty strings, got {s!r}")
            if len(s) > MAX_STOP_STRING_CHARS:
                bad(f"stop strings must be at most {MAX_STOP_STRING_CHARS} characters, "
                    f"stop[{i}] has {len(s)}")
            check_text(s, "a stop string")
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            bad(f"at most {MAX_STOP_TOKEN_IDS} stop_token_ids are allowed, "
                f"got {len(self.stop_token_ids)}")
        for t in self.stop_token_ids:
            if not _is_int(t) or t < 0:
                bad(f"stop_token_ids must be non-negative integers, got {t!r}")

    @property
    def uses_penalties(self) -> bool:
        return (self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
                or self.repetition_penalty != 1.0)
