"""The program recogniser: exact attach / do-not-merge / fork / expiry / eviction decisions.

Prompts are token lists; an answer is the token list appended after a prompt, fingerprinted as
its tuple (a ``Continuation`` that reads the tokens after the earlier prompt).
"""
from __future__ import annotations

import hashlib

import pytest

from continuum.kv_ttl.recognizer import INFERRED_PREFIX, ProgramRecognizer, TurnSignature

BS = 4
SYSTEM = list(range(1000, 1000 + 37))        # a long shared system prompt (not block-aligned)


def key(tokens) -> bytes:
    return hashlib.sha256(repr(tuple(tokens)).encode()).digest()


class Tokens:
    """Answers are the tokens right after the earlier prompt (``answer_at = (n,)``)."""

    def __init__(self, prompt):
        self.prompt = prompt

    def answer_key(self, sig: TurnSignature):
        n = sig.answer_at[0]
        tail = self.prompt[sig.prompt_len:sig.prompt_len + n]
        return key(tail) if len(tail) == n else None


def turn(rec, prompt, answer, now, tool=True, salt=None):
    """Recognise ``prompt`` and record it as answered with ``answer``; returns the attachment."""
    att = rec.recognize(prompt, Tokens(prompt), now, salt)
    rec.record(att, prompt, (len(answer),), key(answer), tool, now + 0.5, salt)
    return att


def test_a_continuation_attaches_and_a_new_prompt_starts_a_program():
    rec = ProgramRecognizer(block_size=BS)
    p1 = SYSTEM + [1, 2, 3]
    a1 = turn(rec, p1, [7, 7, 7, 7, 7], 0.0)
    assert a1.inferred and not a1.attached and a1.program_id.startswith(INFERRED_PREFIX)
    p2 = p1 + [7, 7, 7, 7, 7] + [4, 5]                  # prompt + answer + tool result
    a2 = turn(rec, p2, [8], 1.0)
    assert (a2.program_id, a2.attached) == (a1.program_id, True)
    a3 = turn(rec, p2 + [8, 9], [1], 2.0)               # the next turn continues the second
    assert (a3.program_id, a3.attached) == (a1.program_id, True)
    assert rec.snapshot()["turns_attached_total"] == 2
    assert rec.snapshot()["programs_inferred_total"] == 1
    assert len(rec) == 1                                # one signature per program: its latest


def test_users_sharing_a_system_prompt_stay_separate():
    rec = ProgramRecognizer(block_size=BS)
    ids = {turn(rec, SYSTEM + [u, u + 1], [u] * 3, 0.0).program_id for u in range(50)}
    assert len(ids) == 50
    # a user repeating another's exact first prompt (no answer after it) is a new program too
    assert rec.recognize(SYSTEM + [0, 1], Tokens(SYSTEM + [0, 1]), 1.0).attached is False
    # ... and so is one that sends the prompt with a different answer after it
    p = SYSTEM + [0, 1] + [9, 9, 9] + [5]
    assert rec.recognize(p, Tokens(p), 1.0).attached is False
    # the real continuation of user 3 finds user 3's program among the 50
    p3 = SYSTEM + [3, 4] + [3, 3, 3] + [6]
    a = rec.recognize(p3, Tokens(p3), 1.0)
    assert a.attached and a.program_id in ids


def test_the_answer_must_follow_the_whole_earlier_prompt():
    rec = ProgramRecognizer(block_size=BS)
    turn(rec, SYSTEM + [1, 2, 3], [7, 7], 0.0)
    p = SYSTEM + [1, 2] + [7, 7] + [4]                  # lacks the earlier prompt's last token
    assert not rec.recognize(p, Tokens(p), 1.0).attached
    salted = SYSTEM + [1, 2, 3] + [7, 7] + [4]          # other cache salt: other tenant
    assert not rec.recognize(salted, Tokens(salted), 1.0, cache_salt="tenant-b").attached


def test_a_turn_is_continued_once_then_forks_start_new_programs():
    rec = ProgramRecognizer(block_size=BS)
    a1 = turn(rec, SYSTEM + [1], [7], 0.0)
    p = SYSTEM + [1, 7, 2]
    first = rec.recognize(p, Tokens(p), 1.0)
    second = rec.recognize(p + [3], Tokens(p + [3]), 1.0)     # a rollout forking the same turn
    assert first.program_id == a1.program_id and first.attached
    assert not second.attached and second.fork and second.program_id != a1.program_id
    assert rec.snapshot()["program_forks_total"] == 1
    rec.release(first)                                   # the first one failed: turn given back
    retry = rec.recognize(p, Tokens(p), 2.0)
    assert retry.program_id == a1.program_id and retry.attached


def test_freshness_windows_tool_calls_and_answers():
    rec = ProgramRecognizer(block_size=BS, tool_window=100.0, answer_window=10.0)
    tool = turn(rec, SYSTEM + [1], [7], 0.0, tool=True)        # recorded at t=0.5
    chat = turn(rec, SYSTEM + [2], [8], 0.0, tool=False)
    p_tool, p_chat = SYSTEM + [1, 7, 3], SYSTEM + [2, 8, 3]
    assert rec.recognize(p_chat, Tokens(p_chat), 10.6).attached is False     # answer too old
    a = rec.recognize(p_tool, Tokens(p_tool), 50.0)
    assert a.attached and a.program_id == tool.program_id                     # a tool may be slow
    rec.recognize([1], Tokens([1]), 200.0)               # everything past both windows is dropped
    assert len(rec) == 0 and rec.snapshot()["program_signatures_expired_total"] == 2
    assert chat.program_id != tool.program_id


def test_state_is_bounded_least_recently_recorded_first():
    rec = ProgramRecognizer(block_size=BS, max_turns=8)
    atts = [turn(rec, SYSTEM + [u], [u], float(u)) for u in range(20)]
    assert len(rec) == 8 and rec.snapshot()["program_signatures_evicted_total"] == 12
    old, new = SYSTEM + [0, 0, 5], SYSTEM + [19, 19, 5]
    assert not rec.recognize(old, Tokens(old), 21.0).attached               # evicted
    assert rec.recognize(new, Tokens(new), 21.0).program_id == atts[19].program_id


def test_longest_continued_turn_wins_and_block_aligned_prompts_match():
    rec = ProgramRecognizer(block_size=BS)
    aligned = list(range(8))                            # exactly two blocks
    a = turn(rec, aligned, [9, 9, 9, 9], 0.0)
    p = aligned + [9, 9, 9, 9] + [1]
    b = turn(rec, p, [2], 1.0)
    assert b.program_id == a.program_id
    q = p + [2, 3]
    assert rec.recognize(q, Tokens(q), 2.0).program_id == a.program_id


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        ProgramRecognizer(max_turns=0)
