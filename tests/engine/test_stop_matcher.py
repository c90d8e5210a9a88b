"""StopMatcher (Aho–Corasick) against a brute-force reference, whatever the split into deltas."""
from __future__ import annotations

import random

import pytest

from continuum.engine.stop_matcher import (AUTOMATON_CACHE_SIZE, StopAutomaton, StopMatch,
                                           StopMatcher, build_automaton)


def brute_match(stops: list[str], text: str) -> StopMatch | None:
    """The first end position of any stop string in ``text``; the longest one ending there."""
    for end in range(1, len(text) + 1):
        ending = [s for s in stops if text[:end].endswith(s)]
        if ending:
            return StopMatch(end, max(ending, key=len))
    return None


def brute_holdback(stops: list[str], text: str) -> int:
    """The longest suffix of ``text`` that is a proper prefix of a stop string."""
    return max((k for s in stops for k in range(len(s)) if text.endswith(s[:k])), default=0)


def random_split(rng: random.Random, text: str) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, len(text) - 1))) if text else []
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def feed_all(matcher: StopMatcher, deltas: list[str]) -> StopMatch | None:
    """Feed deltas until a match; the match's ``end`` is made relative to the whole text."""
    offset = 0
    for d in deltas:
        m = matcher.feed(d)
        if m is not None:
            return StopMatch(offset + m.end, m.stop)
        offset += len(d)
    return None


def test_random_against_brute_force():
    rng = random.Random(1234)
    for _ in range(3000):
        alphabet = "ab" if rng.random() < 0.5 else "abc"
        stops = ["".join(rng.choices(alphabet, k=rng.randint(1, 5)))
                 for _ in range(rng.randint(1, 6))]
        text = "".join(rng.choices(alphabet + "x", k=rng.randint(0, 30)))
        want = brute_match(stops, text)
        for _ in range(3):
            deltas = random_split(rng, text)
            assert feed_all(StopMatcher(stops), deltas) == want, (stops, deltas)
        if want is None:
            # No match anywhere: the hold-back after every prefix equals the reference's.
            m = StopMatcher(stops)
            fed = ""
            for d in random_split(rng, text):
                assert m.feed(d) is None
                fed += d
                assert m.holdback == brute_holdback(stops, fed), (stops, fed)


@pytest.mark.parametrize("text,want", [
    ("xabca", StopMatch(3, "ab")),   # "ab" and "b" end together: the longer wins
    ("xbca", StopMatch(2, "b")),
    ("bca", StopMatch(1, "b")),
    ("xca", None),
])
def test_overlapping_patterns(text: str, want: StopMatch | None):
    stops = ["ab", "b", "abc", "bca"]
    assert StopMatcher(stops).feed(text) == want == brute_match(stops, text)


def test_short_stop_inside_long_one_wins_in_one_delta():
    """The earliest *end* wins even when the longer stop string arrived in the same delta."""
    assert StopMatcher(["abcd", "bc"]).feed("xabcd") == StopMatch(4, "bc")


@pytest.mark.parametrize("stops", [["ab", "abc"], ["abc", "ab"]])
def test_pattern_that_is_a_prefix_of_another(stops: list[str]):
    m = StopMatcher(stops)
    assert m.feed("xa") is None and m.holdback == 1
    assert m.feed("bc") == StopMatch(1, "ab")


def test_unchecked_text_advances_without_matching():
    """check=False (min_tokens): stop strings ending there are ignored, not those starting there."""
    m = StopMatcher(["abc", "zz"])
    assert m.feed("zz ab", check=False) is None
    assert m.holdback == 2
    assert m.feed("cd") == StopMatch(1, "abc")
    # A completed stop string that nothing extends is not held back (it is not a proper prefix).
    m = StopMatcher(["abc"])
    assert m.feed("xabc", check=False) is None and m.holdback == 0


def test_unicode_code_points():
    family = "👨‍👩‍👧"   # 5 code points joined by ZWJ
    stops = [family, "🚀", "é"]
    text = "naïve 👨‍👩‍👧 🚀"
    want = StopMatch(len("naïve ") + 5, family)
    for cut in range(len(text) + 1):
        assert feed_all(StopMatcher(stops), [text[:cut], text[cut:]]) == want
    m = StopMatcher(stops)
    assert m.feed("go 👨\u200d") is None and m.holdback == 2     # a partial ZWJ sequence is held
    assert m.feed("👩‍👧") == StopMatch(3, family)
    # No normalisation: a decomposed "é" (e + combining acute) is not the precomposed stop.
    assert StopMatcher(stops).feed("cafe\u0301") is None
    assert StopMatcher(stops).feed("café") == StopMatch(4, "é")


def test_work_per_character_does_not_grow_with_the_stop_list():
    rng = random.Random(7)
    text = "".join(rng.choices("ab", k=2000))
    one = ["abba" * 64]
    # 63 more stop strings the text never touches: exactly the same look-ups as with one.
    many = one + ["".join(rng.choices("xyz", k=256)) for _ in range(63)]
    counts = []
    for stops in (one, many):
        m = StopMatcher(stops)
        assert m.feed(text) is None
        counts.append(m.transitions)
    assert counts[0] == counts[1]
    # Overlapping stop strings (dense failure links): at most 2 look-ups per character overall,
    # and per delta at most 2 per character plus the depth it started from.
    for n in (1, 8, 64):
        stops = ["".join(rng.choices("ab", k=rng.randint(8, 256))) + "c" for _ in range(n)]
        m = StopMatcher(stops)
        for d in random_split(rng, text):
            before, depth = m.transitions, m.automaton.depth[m.state]
            assert m.feed(d) is None
            assert m.transitions - before <= 2 * len(d) + depth
        assert m.transitions <= 2 * len(text)


def test_automaton_invariants():
    rng = random.Random(3)
    stops = tuple("".join(rng.choices("abc", k=rng.randint(1, 6))) for _ in range(20))
    a = StopAutomaton(stops)
    words = [""] * a.num_nodes
    for node in range(a.num_nodes):            # children always have larger ids than parents
        for ch, child in a.goto[node].items():
            words[child] = words[node] + ch
    nodes = {w: n for n, w in enumerate(words)}
    for n, w in enumerate(words):
        assert a.depth[n] == len(w)
        assert words[a.fail[n]] == max((w[i:] for i in range(1, len(w) + 1) if w[i:] in nodes),
                                       key=len, default="")
        assert a.match[n] == max((s for s in stops if w.endswith(s)), key=len, default=None)
        assert a.hold[n] == brute_holdback(list(stops), w)


def test_automata_are_shared_through_a_bounded_cache():
    assert StopMatcher(["</tool_call>", "\nObservation:"]).automaton is \
        StopMatcher(("</tool_call>", "\nObservation:")).automaton
    assert build_automaton.cache_info().maxsize == AUTOMATON_CACHE_SIZE
    with pytest.raises(ValueError):
        StopAutomaton(("ok", ""))
