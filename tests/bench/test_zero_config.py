"""Zero-config programs end to end: generated agents and chats sharing one system prompt,
replayed through the real server with the official openai client sending no ids; and the
scorer's arithmetic on hand-made results."""
from __future__ import annotations

import asyncio

import pytest

from continuum.bench.workloads import chat, coding_agent, rescale
from continuum.bench.zero_config import TurnResult, replay, score
from tests.entrypoints.conftest import MODEL, Server


@pytest.fixture(scope="module")
def server():
    s = Server().start()
    yield s
    s.stop()


def test_few_programs_sharing_a_system_prompt_are_recognised_exactly(server):
    programs = (rescale(coding_agent(3, seed=1), tokens=0.01, max_turns=4)
                + rescale(chat(3, seed=1), tokens=0.05, max_turns=3))
    system = "You are the one assistant every user of this test talks to. " * 3
    results, cut, _ = asyncio.run(replay(server.url, MODEL, programs, shared_system=system,
                                         seed=1, max_model_len=1024, concurrency=6))
    s = score(results)
    assert not cut and s["programs"] == 6 and s["turns"] == sum(len(p.turns) for p in programs)
    assert s["continuation_turns"] > 0
    assert (s["accuracy"], s["merges"], s["splits"], s["program_ids"]) == (1.0, 0, 0, 6), s


def _r(program: str, turn: int, pid: str) -> TurnResult:
    return TurnResult(program, turn, pid, True, turn > 0, 10, 0)


def test_score_counts_merges_and_splits():
    results = [_r("a", 0, "x"), _r("a", 1, "x"), _r("a", 2, "y"),       # a split in a
               _r("b", 0, "z"), _r("b", 1, "w"),
               _r("c", 0, "w"), _r("c", 1, "w")]                         # w merges b and c
    s = score(results)
    assert (s["merges"], s["merged_programs"], s["splits"]) == (1, 2, 2)
    # right: a0, a1 (a's id x is its own); b0 (z is b's own); c's id w is shared: wrong
    assert (s["turns_right"], s["continuations_right"], s["continuation_turns"]) == (3, 1, 4)
