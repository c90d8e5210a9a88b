"""The progress display of ``continuum bench``: turns completed of every turn the run replays.

Programs make a poor unit on real-time targets: an agent program finishes only at its last
turn, so a real-time engine run sits at ``0/16 programs`` with no ETA for minutes. Turns
finish all along (a program of 10 turns reports 10 times), so the bar moves, and tqdm's
rate gives an ETA. Every driver (sim, engine, http) calls ``turn_done`` once per finished
turn; the total is the sum of every program's turns over every workload, load and policy
of one ``run_bench`` call (the CLI makes one per workload).
"""
from __future__ import annotations

import time
from typing import Callable, TextIO

from tqdm.auto import tqdm

from continuum.bench.report import fmt_sig


class ReplayProgress:
    """A tqdm bar in turns (elapsed, ETA, turns/s) whose postfix names the run being
    replayed and, on real-time targets (``show_rate``), its output tokens/s in 3 significant
    digits (0.412 does not print as 0). The simulator's virtual time has no wall-clock rate.

    Invariant: ``turns`` counts ``turn_done`` calls and ``tokens`` their output tokens since
    the last ``start_run``; ``clock`` (injectable for tests) times the current run's tok/s.
    """

    def __init__(self, total_turns: int, enabled: bool = True, show_rate: bool = True,
                 file: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.bar = tqdm(total=total_turns, desc="replay", unit="turn", disable=not enabled, file=file)
        self.clock = clock
        self.show_rate = show_rate
        self.label = ""
        self.turns = self.tokens = 0
        self._run_start = self._last_refresh = clock()

    def start_run(self, label: str) -> None:
        """A new (workload, load, policy) run begins: its label and tok/s start afresh."""
        self.label, self.tokens, self.turns = label, 0, 0
        self._run_start = self.clock()
        self.bar.set_postfix_str(label)

    def postfix(self) -> str:
        """``<label>, <tok/s> out tok/s`` of the current run (the label alone before a token)."""
        dt = self.clock() - self._run_start
        if not self.show_rate or not self.tokens or dt <= 0:
            return self.label
        return f"{self.label}, {fmt_sig(self.tokens / dt)} out tok/s"

    def turn_done(self, output_tokens: int) -> None:
        """One turn finished with ``output_tokens`` output tokens."""
        self.turns += 1
        self.tokens += output_tokens
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        self.bar.update(1)

    def turns_done(self, n: int) -> None:
        """``n`` turns finished elsewhere (a worker process of ``continuum advise``)."""
        self.turns += n
        self.bar.update(n)

    def add_total(self, n: int) -> None:
        """``n`` more turns to replay than the bar was started with (a later round of runs)."""
        self.bar.total = (self.bar.total or 0) + n
        self.bar.refresh()

    def tick(self, every: float = 1.0) -> None:
        """Redraw (elapsed time, tok/s) at most once per ``every`` seconds while no turn
        finishes: real-time drivers call it from their wait loops."""
        now = self.clock()
        if now - self._last_refresh >= every:
            self._last_refresh = now
            self.bar.set_postfix_str(self.postfix())

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "ReplayProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
