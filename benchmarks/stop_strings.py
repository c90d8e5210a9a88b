"""Detokenizer time per step against the size of the request's stop list.

One request's stop strings are matched on the engine thread, inside every step that request
produces a token, so their cost is added to every other request's inter-token latency. This
times ``IncrementalDetokenizer.update`` (one byte-tokenizer token, one character, per step) with
the Aho–Corasick matcher for 0, 4 (an agent client's list) and 64 x 256 (the largest list
``SamplingParams`` accepts; random letters, and an adversarial list over the text's own two
letters, which keeps the automaton deep), and, as the baseline, the per-stop-string loops the
detokenizer had before (``LegacyDetokenizer``, copied below) on the same lists plus the
reported attack: 10,000 stop strings of 100 characters (no longer accepted). Prints a table and
writes JSON.

    python benchmarks/stop_strings.py [--steps 2000] [--attack-steps 20]
        [--out benchmarks/results/stop-strings/results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import string
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from provenance import machine, tree  # noqa: E402

from continuum.engine.detokenizer import IncrementalDetokenizer  # noqa: E402
from continuum.engine.stop_matcher import StopAutomaton  # noqa: E402
from continuum.models.byte_tokenizer import make_byte_tokenizer  # noqa: E402
from continuum.sampling_params import (MAX_STOP_STRING_CHARS, MAX_STOP_STRINGS,  # noqa: E402
                                       SamplingParams)

AGENT_STOPS = ["</tool_call>", "\nObservation:", "<|im_end|>", "\n\nUser:"]
LETTERS = string.ascii_lowercase + " "


class LegacyDetokenizer(IncrementalDetokenizer):
    """BASELINE ONLY: the stop-string loops of ``detokenizer.py`` before the Aho–Corasick
    matcher (as of commit e593728), copied unchanged; the rest of the detokenizer is today's.

    ``_append`` searches every stop string in a window of the text each step and ``_holdback``
    tests every prefix of every stop string: both scale with the size of the stop list.
    """

    def __init__(self, tokenizer, stops: list[str]):
        super().__init__(tokenizer, [], SamplingParams(max_tokens=None))
        self._stops = list(stops)     # bypasses SamplingParams' bounds, as the old code had none

    def _append(self, new_text: str) -> str | None:
        prev_len = len(self.output_text)
        self.output_text += new_text
        if not self._stops or self.num_output_tokens <= self._min_tokens:
            return None
        best: tuple[int, str] | None = None
        for s in self._stops:
            pos = self.output_text.find(s, max(0, prev_len - len(s) + 1))
            if pos != -1 and (best is None or pos < best[0]):
                best = (pos, s)
        if best is None:
            return None
        pos, s = best
        self.output_text = self.output_text[:pos + len(s) if self._include_stop else pos]
        self.stopped_by = s
        self.finished = True
        return s

    def _holdback(self) -> int:
        if self.finished or not self._stops or self._include_stop:
            return 0
        text = self.output_text
        best = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best


def random_stops(rng: random.Random, n: int, length: int, alphabet: str) -> list[str]:
    """``n`` stop strings over ``alphabet`` that end in "|", which no benchmark text contains."""
    return ["".join(rng.choices(alphabet, k=length - 1)) + "|" for _ in range(n)]


def cases(rng: random.Random) -> list[dict]:
    """(name, stop list, text alphabet) for each row; the text never contains a stop string."""
    big = (MAX_STOP_STRINGS, MAX_STOP_STRING_CHARS)
    return [
        {"name": "none", "stops": [], "alphabet": LETTERS},
        {"name": "agent-4", "stops": AGENT_STOPS, "alphabet": LETTERS},
        {"name": "max-64x256-random", "stops": random_stops(rng, *big, LETTERS),
         "alphabet": LETTERS},
        {"name": "max-64x256-adversarial", "stops": random_stops(rng, *big, "ab"),
         "alphabet": "ab"},
        {"name": "attack-10000x100", "stops": random_stops(rng, 10_000, 100, LETTERS),
         "alphabet": LETTERS, "legacy_only": True},
    ]


def time_steps(detok: IncrementalDetokenizer, ids: list[int], warmup: int) -> list[float]:
    """Seconds of each ``update`` (one token per step, as in decode) after ``warmup`` untimed
    steps: once the text is as long as the longest stop string, every step costs the same."""
    times = []
    for i, t in enumerate(ids):
        t0 = time.perf_counter()
        upd = detok.update([t])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        assert upd.stopped_by is None
    return times


def row(case: dict, impl: str, times: list[float], lookups_per_step: float | None) -> dict:
    times = sorted(times)
    us = lambda v: round(v * 1e6, 2)
    return {"case": case["name"], "impl": impl, "num_stops": len(case["stops"]),
            "stop_chars": sum(map(len, case["stops"])), "steps": len(times),
            "mean_us": us(statistics.fmean(times)), "p50_us": us(times[len(times) // 2]),
            "p99_us": us(times[min(len(times) - 1, int(len(times) * 0.99))]),
            "lookups_per_step": None if lookups_per_step is None else round(lookups_per_step, 2)}


def build_ms(stops: list[str]) -> float | None:
    """Cold build time of the automaton (the cache is bypassed), best of 3."""
    if not stops:
        return None
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        StopAutomaton(tuple(stops))
        best = min(best, time.perf_counter() - t0)
    return round(best * 1e3, 3)


def bench(case: dict, tok, steps: int, attack_steps: int, rng: random.Random) -> list[dict]:
    legacy_only = case.get("legacy_only", False)
    warmup = max(map(len, case["stops"]), default=0)
    n = warmup + (attack_steps if legacy_only else steps)
    ids = tok.encode("".join(rng.choices(case["alphabet"], k=n)), add_special_tokens=False)
    out = []
    if not legacy_only:
        detok = IncrementalDetokenizer(tok, [], SamplingParams(stop=case["stops"], max_tokens=None))
        times = time_steps(detok, ids, warmup)
        matcher = detok._matcher
        # Automaton look-ups per step over all steps, warm-up included (at most 2 per char).
        r = row(case, "aho-corasick", times, matcher.transitions / len(ids) if matcher else None)
        out.append({**r, "build_ms": build_ms(case["stops"])})
    legacy = LegacyDetokenizer(tok, case["stops"])
    out.append(row(case, "legacy-loops", time_steps(legacy, ids, warmup), None))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="decode steps per row")
    p.add_argument("--attack-steps", type=int, default=20,
                   help="steps for the 10,000-string baseline row (each takes ~0.1 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "stop-strings" / "results.json"))
    a = p.parse_args()
    rng = random.Random(a.seed)
    tok = make_byte_tokenizer()
    load_before = os.getloadavg()       # other work on the box shows up in the tails
    rows = []
    print(f"| stop list | impl | stops | chars | steps | mean us | p50 us | p99 us | "
          f"look-ups/step | build ms |\n|---|---|---|---|---|---|---|---|---|---|")
    for case in cases(rng):
        for r in bench(case, tok, a.steps, a.attack_steps, rng):
            rows.append(r)
            print(f"| {r['case']} | {r['impl']} | {r['num_stops']} | {r['stop_chars']} | "
                  f"{r['steps']} | {r['mean_us']} | {r['p50_us']} | {r['p99_us']} | "
                  f"{'' if r['lookups_per_step'] is None else r['lookups_per_step']} | "
                  f"{r.get('build_ms') or ''} |", flush=True)
    result = {"command": " ".join(["python", "benchmarks/stop_strings.py"] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "machine": machine(), "loadavg_1_5_15": {"before": load_before,
                                                       "after": os.getloadavg()},
              "tree": tree(), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
