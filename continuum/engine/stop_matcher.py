"""Stop-string matching with one Aho–Corasick automaton per stop list.

A request's stop strings are compiled into a trie with failure links (Aho–Corasick). The
detokenizer feeds each step's new text to a per-request ``StopMatcher`` one character (code
point) at a time, so the work per step depends on the length of the new text, never on the
number or the length of the stop strings: one request's long stop list cannot slow the engine
thread that every other request shares.

Semantics (streaming):
  * A match is reported at the first position where any stop string *ends*; among stop strings
    ending at that position the longest (earliest start) wins. The result depends only on the
    concatenated text, not on how it was split into deltas. (The detokenizer's earlier loop
    took, among the matches ending in one delta, the one that *started* first; the two rules
    differ only when a short stop string ends inside a longer one that arrived in the same
    delta, e.g. stops ``["abcd", "bc"]`` and the delta ``"abcd"``: now ``"bc"`` wins, as it
    always did when the text arrived one character at a time.)
  * Matching is by code points, without Unicode normalisation (like ``str.find``): a stop
    string can match inside a multi-code-point character such as a ZWJ emoji sequence.
  * ``holdback`` is the length of the longest suffix of the text fed so far that is a
    *proper* prefix of some stop string: the text a streaming caller must not emit yet, since
    the next characters may complete a stop string.

Invariants of a built ``StopAutomaton`` (node 0 is the root, the empty string; every node is
the prefix of some stop string, ``word(n)``):
  * ``depth[n] == len(word(n))``.
  * ``fail[n]`` is the node of the longest proper suffix of ``word(n)`` that is a node
    (``fail[0] == 0``), so ``depth[fail[n]] < depth[n]`` for ``n != 0``.
  * ``match[n]`` is the longest stop string that is a suffix of ``word(n)`` (``None`` if none).
  * ``hold[n]`` is the length of the longest suffix of ``word(n)`` that is a proper prefix of
    a stop string, i.e. the depth of the first node on ``n``'s failure chain with children.

Invariant of a ``StopMatcher`` after feeding text ``T``: ``state`` is the node of the longest
suffix of ``T`` that is a prefix of some stop string (so ``depth[state]`` is at most the longest
stop string's length). Feeding ``k`` characters costs at most ``2k + depth`` child look-ups
(``transitions``): each character descends at most one level, each failure link climbs at
least one, hence at most ``2`` look-ups per character amortised, whatever the stop list.

Build cost is O(total characters of the stop strings); built automata are shared through a
small LRU keyed by the tuple of stop strings, since clients send the same lists over and over.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

# Automata kept for reuse. The largest allowed stop list (64 x 256 characters, see
# SamplingParams) makes at most ~16k nodes, ~4 MB and ~6 ms to build, so the cache holds at
# most ~70 MB whatever clients send, and an agent's few recurring lists stay in it.
AUTOMATON_CACHE_SIZE = 16


@dataclass(frozen=True)
class StopMatch:
    """A stop string that ended inside one ``feed``: ``text[:end]`` of that call ends with it."""

    end: int
    stop: str


class StopAutomaton:
    """The Aho–Corasick automaton of one stop list; immutable once built (module invariants)."""

    __slots__ = ("stops", "goto", "fail", "depth", "match", "hold")

    def __init__(self, stops: tuple[str, ...]):
        if not stops or not all(stops):
            raise ValueError("stop strings must be a non-empty list of non-empty strings")
        self.stops = stops
        self.goto: list[dict[str, int]] = [{}]
        self.depth: list[int] = [0]
        self.match: list[str | None] = [None]
        for s in stops:
            self._insert(s)
        self.fail: list[int] = [0] * len(self.goto)
        self.hold: list[int] = [0] * len(self.goto)
        self._link()

    def _insert(self, s: str) -> None:
        """Add ``s`` to the trie; mark its last node (a duplicate stop string changes nothing)."""
        node = 0
        for ch in s:
            nxt = self.goto[node].get(ch)
            if nxt is None:
                nxt = len(self.goto)
                self.goto[node][ch] = nxt
                self.goto.append({})
                self.depth.append(self.depth[node] + 1)
                self.match.append(None)
            node = nxt
        if self.match[node] is None:
            self.match[node] = s

    def _link(self) -> None:
        """Failure links, longest suffix matches and hold-backs, breadth first (parents first)."""
        queue = deque(self.goto[0].values())   # depth-1 nodes: their failure link is the root
        while queue:
            node = queue.popleft()
            fail = self.fail[node]
            if self.match[node] is None:       # a node that is a stop string is its own longest
                self.match[node] = self.match[fail]
            self.hold[node] = self.depth[node] if self.goto[node] else self.hold[fail]
            for ch, child in self.goto[node].items():
                self.fail[child] = self._step(fail, ch)
                queue.append(child)

    def _step(self, node: int, ch: str) -> int:
        """The node after reading ``ch`` in ``node`` (following failure links; build time only)."""
        while True:
            nxt = self.goto[node].get(ch)
            if nxt is not None:
                return nxt
            if node == 0:
                return 0
            node = self.fail[node]

    @property
    def num_nodes(self) -> int:
        return len(self.goto)


@lru_cache(maxsize=AUTOMATON_CACHE_SIZE)
def build_automaton(stops: tuple[str, ...]) -> StopAutomaton:
    """The (cached) automaton of ``stops``; same tuple, same object while it stays cached."""
    return StopAutomaton(stops)


class StopMatcher:
    """One request's position in its stop list's automaton (see the module invariants)."""

    __slots__ = ("automaton", "state", "transitions")

    def __init__(self, stops: tuple[str, ...] | list[str]):
        self.automaton = build_automaton(tuple(stops))
        self.state = 0
        self.transitions = 0   # child look-ups so far: the work done, for tests and benchmarks

    @property
    def holdback(self) -> int:
        """Length of the longest suffix of the text fed so far that is a proper stop prefix."""
        return self.automaton.hold[self.state]

    def feed(self, text: str, check: bool = True) -> StopMatch | None:
        """Advance over ``text``; with ``check``, stop at and return the first match ending in it.

        ``check=False`` only advances (the caller ignores stop strings that end here, as during
        ``min_tokens``), so that a stop string starting in this text and ending later is found.
        """
        a = self.automaton
        goto, fail, match = a.goto, a.fail, a.match
        node, looked = self.state, 0
        for i, ch in enumerate(text):
            while True:
                looked += 1
                nxt = goto[node].get(ch)
                if nxt is not None:
                    node = nxt
                    break
                if node == 0:
                    break
                node = fail[node]
            if check and match[node] is not None:
                self.state, self.transitions = node, self.transitions + looked
                return StopMatch(i + 1, match[node])
        self.state, self.transitions = node, self.transitions + looked
        return None
