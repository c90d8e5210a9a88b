"""Zero-config programs: which agent program a request without a program id belongs to.

A request continues an earlier turn when its prompt *covers that turn's whole prompt and its
answer*:

1. prompt: its token ids start with every token of the earlier turn's prompt (same cache
   salt). Checked with the prefix cache's chained block hashes (``hash_block``): each stored
   turn is indexed by the hash of its prompt's last full block (its *anchor*) and identified
   by a hash of its whole prompt (the anchor chained with the partial last block), so a new
   prompt is matched by hashing its own blocks once and looking up each block boundary,
   longest first. The new prompt must be strictly longer than the earlier one.
2. answer: what follows that prefix is the earlier turn's answer as the client sends it back.
   How an answer is fingerprinted and found again is the caller's (``Continuation``): the chat
   server compares the assistant message at the earlier turn's message count with the message
   it returned (content and tool calls, normalised), which is immune to how the chat template
   re-renders the assistant turn; the completions server compares the text after the prefix.
3. freshness: the earlier turn ended in a tool call less than ``tool_window`` seconds ago, or
   was answered less than ``answer_window`` seconds ago.
4. once: a turn is continued by at most one request. The first request that covers it takes
   the program; any later request covering the same turn (a retry racing the first, RL
   rollouts forking one context) starts a new program and is counted as a fork. If the
   request that took the turn does not complete (aborted, failed), the turn is given back.

Requests that merely share a prefix (one system prompt for many users, a common document) do
not cover each other's *answers*, so they stay separate programs: covering a whole earlier
prompt plus the answer that followed it is the key, not sharing blocks.

State is bounded: at most ``max_turns`` signatures, evicted least recently recorded first
(a program keeps one: its latest turn's; a claimed turn is dropped when its continuation
completes, so forks are counted while the first continuation runs); signatures older than
both windows are dropped as they are met at the head of that order. Pure bookkeeping: callers
inject ``now``; one thread (the server's event loop) calls it.
"""
from __future__ import annotations

import hashlib
import itertools
import struct
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from continuum.kv.block_pool import BlockHash, hash_block, root_hash
from continuum.kv_ttl.programs import MAX_PROGRAMS

TOOL_WINDOW_S = 3600.0      # a turn that called a tool waits on the tool (a CI run can take long)
ANSWER_WINDOW_S = 1800.0    # an answered turn waits on a person (30 min: 99.5% of think times
                            # of the chat generator, lognormal median 2 min, sigma 1.06)
BLOCK_SIZE = 16
INFERRED_PREFIX = "auto-"


@dataclass
class TurnSignature:
    """What a finished turn leaves for the next one to be recognised by."""
    turn_no: int                 # recording order (the LRU key)
    program_id: str
    prompt_len: int
    prompt_key: bytes            # hash of every prompt token (anchor + partial last block)
    anchor: BlockHash            # chained hash of the prompt's full blocks
    answer_at: tuple[int, ...]   # where the answer is, in the continuation's terms
    answer_key: bytes            # fingerprint of the answer, in the continuation's terms
    finished_at: float
    called_tool: bool
    claimed: bool = False        # a later request has continued it
    answer_ids_key: bytes | None = None   # the answer's token ids (``tokens_answer_key``), when
                                          # a continuation may send them back verbatim


class Continuation(Protocol):
    """The part of a new request after a candidate earlier prompt."""

    def answer_key(self, sig: TurnSignature) -> bytes | None:
        """Fingerprint of what follows ``sig``'s prompt in this request, made like
        ``sig.answer_key`` (None: nothing that could be an answer)."""


def tokens_answer_key(tokens: Sequence[int]) -> bytes:
    """Fingerprint of an answer given as token ids (``TokenContinuation``'s)."""
    return hashlib.sha256(struct.pack(f"<{len(tokens)}q", *tokens)).digest()


class TokenContinuation:
    """Answers as token ids appended verbatim after the earlier prompt (``answer_at`` = (number
    of answer tokens,)): clients that send token prompts, and trace replay."""

    def __init__(self, prompt: Sequence[int]):
        self.prompt = prompt

    def answer_key(self, sig: TurnSignature) -> bytes | None:
        n = sig.answer_at[0]
        tail = self.prompt[sig.prompt_len:sig.prompt_len + n]
        return tokens_answer_key(tail) if len(tail) == n else None


@dataclass(frozen=True)
class Attachment:
    """The program a request was given. ``inferred``: by recognition (not the client);
    ``attached``: it continues an earlier turn of that program (else the program is new)."""
    program_id: str
    inferred: bool
    attached: bool = False
    parent: TurnSignature | None = None
    fork: bool = False           # it covered a turn already continued (so: a new program)


@dataclass
class RecognizerStats:
    programs_inferred: int = 0   # id-less requests that started a new program
    turns_attached: int = 0      # id-less requests attached to an earlier turn's program
    forks: int = 0               # of the new programs, those that covered a claimed turn
    evicted: int = 0             # signatures dropped for the cap
    expired: int = 0             # signatures dropped for age

    def snapshot(self, stored: int) -> dict[str, float]:
        """Flat numbers for /metrics (``_total``: counter)."""
        return {"programs_inferred_total": self.programs_inferred,
                "turns_attached_total": self.turns_attached,
                "program_forks_total": self.forks,
                "program_signatures": stored,
                "program_signatures_evicted_total": self.evicted,
                "program_signatures_expired_total": self.expired}


def _tail_key(anchor: BlockHash, tail: Sequence[int]) -> bytes:
    """Hash of a prompt given its full blocks' chained hash and its partial last block."""
    return hashlib.sha256(anchor + b"tail" + struct.pack(f"<{len(tail)}q", *tail)).digest()


@dataclass
class _Index:
    """Signatures by anchor -> prompt length -> prompt key -> turn numbers (newest last)."""
    by_anchor: dict[BlockHash, dict[int, dict[bytes, list[int]]]] = field(default_factory=dict)

    def add(self, sig: TurnSignature) -> None:
        (self.by_anchor.setdefault(sig.anchor, {}).setdefault(sig.prompt_len, {})
         .setdefault(sig.prompt_key, []).append(sig.turn_no))

    def remove(self, sig: TurnSignature) -> None:
        lengths = self.by_anchor[sig.anchor]
        keys = lengths[sig.prompt_len]
        turns = keys[sig.prompt_key]
        turns.remove(sig.turn_no)
        if not turns:
            del keys[sig.prompt_key]
            if not keys:
                del lengths[sig.prompt_len]
                if not lengths:
                    del self.by_anchor[sig.anchor]


class ProgramRecognizer:
    """See the module docstring. ``recognize`` on arrival, then ``record`` when the request
    completed or ``release`` when it did not."""

    def __init__(self, *, block_size: int = BLOCK_SIZE, max_turns: int = MAX_PROGRAMS,
                 tool_window: float = TOOL_WINDOW_S, answer_window: float = ANSWER_WINDOW_S):
        if block_size < 1 or max_turns < 1 or tool_window <= 0 or answer_window <= 0:
            raise ValueError("block_size, max_turns and both windows must be positive")
        self.block_size = block_size
        self.max_turns = max_turns
        self.tool_window, self.answer_window = tool_window, answer_window
        self.stats = RecognizerStats()
        self._turns: OrderedDict[int, TurnSignature] = OrderedDict()   # recording order
        self._index = _Index()
        self._turn_no = itertools.count()

    def __len__(self) -> int:
        return len(self._turns)

    def snapshot(self) -> dict[str, float]:
        return self.stats.snapshot(len(self._turns))

    # -- arrivals -----------------------------------------------------------------------------
    def recognize(self, prompt: Sequence[int], continuation: Continuation, now: float,
                  cache_salt: str | None = None) -> Attachment:
        """The program of an id-less request: the program of the longest fresh, unclaimed
        earlier turn it continues (that turn is claimed), else a new inferred program."""
        self._expire(now)
        bs = self.block_size
        hashes = [root_hash(cache_salt)]
        for i in range(0, len(prompt) // bs * bs, bs):
            hashes.append(hash_block(hashes[-1], prompt[i:i + bs]))
        fork = False
        for nblocks in range(len(hashes) - 1, -1, -1):
            lengths = self._index.by_anchor.get(hashes[nblocks])
            if not lengths:
                continue
            for length in sorted(lengths, reverse=True):
                if length >= len(prompt):         # it must carry the answer too
                    continue
                turns = lengths[length].get(_tail_key(hashes[nblocks], prompt[nblocks * bs:length]))
                for turn_no in reversed(turns or ()):
                    sig = self._turns[turn_no]
                    if not self._fresh(sig, now) or continuation.answer_key(sig) != sig.answer_key:
                        continue
                    if sig.claimed:
                        fork = True
                        continue
                    sig.claimed = True
                    self.stats.turns_attached += 1
                    return Attachment(sig.program_id, inferred=True, attached=True, parent=sig)
        self.stats.programs_inferred += 1
        self.stats.forks += fork
        return Attachment(INFERRED_PREFIX + uuid.uuid4().hex[:16], inferred=True, fork=fork)

    # -- completions --------------------------------------------------------------------------
    def record(self, att: Attachment, prompt: Sequence[int], answer_at: tuple[int, ...],
               answer_key: bytes, called_tool: bool, now: float,
               cache_salt: str | None = None,
               answer_ids_key: bytes | None = None) -> TurnSignature:
        """The request of ``att`` completed: remember its turn so its continuation can be
        recognised (``answer_ids_key``: its answer's token ids, for continuations that may
        carry them verbatim). Its parent, if any, stays claimed (and is no longer needed:
        dropped)."""
        if att.parent is not None:
            self._drop(att.parent)
        bs = self.block_size
        nfull = len(prompt) // bs
        anchor = root_hash(cache_salt)
        for i in range(0, nfull * bs, bs):
            anchor = hash_block(anchor, prompt[i:i + bs])
        sig = TurnSignature(next(self._turn_no), att.program_id, len(prompt),
                            _tail_key(anchor, prompt[nfull * bs:]), anchor, answer_at,
                            answer_key, now, called_tool, answer_ids_key=answer_ids_key)
        while len(self._turns) >= self.max_turns:
            self._drop(next(iter(self._turns.values())))
            self.stats.evicted += 1
        self._turns[sig.turn_no] = sig
        self._index.add(sig)
        self._expire(now)
        return sig

    def release(self, att: Attachment) -> None:
        """The request of ``att`` did not complete: its parent turn may be continued again."""
        if att.parent is not None and att.parent.turn_no in self._turns:
            att.parent.claimed = False

    # -- bookkeeping --------------------------------------------------------------------------
    def _fresh(self, sig: TurnSignature, now: float) -> bool:
        age = now - sig.finished_at
        return age <= self.answer_window or (sig.called_tool and age <= self.tool_window)

    def _expire(self, now: float) -> None:
        """Drop signatures past both windows from the head of the recording order (turns are
        recorded in clock order, so the head is the oldest)."""
        horizon = max(self.tool_window, self.answer_window)
        while self._turns:
            sig = next(iter(self._turns.values()))
            if now - sig.finished_at <= horizon:
                break
            self._drop(sig)
            self.stats.expired += 1

    def _drop(self, sig: TurnSignature) -> None:
        if self._turns.pop(sig.turn_no, None) is not None:
            self._index.remove(sig)
