"""``continuum serve --record-trace FILE``: live traffic written as a program trace (JSONL).

The file is the project's program-trace format (``continuum/bench/trace.py``): it loads with
``load_trace`` and replays with ``continuum bench`` / ``continuum advise`` unchanged. Per
program: ``arrival_time`` (seconds from the first recorded request), per turn the token counts
(``input_tokens``: the new prompt tokens on top of the previous turn's prompt + output, at
least 1; ``output_tokens``), the tool the scheduler saw the turn call and ``tool_duration``:
the gap between the turn's finish and the next request of the same program (client-side tool
time plus the client's own overhead). ``meta`` keeps what the trace fields cannot say: whether
the id was given or ``inferred`` (recognised from the traffic: docs/agent-api.md), and
per turn the server's prompt length, cached tokens, time to first token and latency. No text
is written unless ``--record-text``: then each turn's ``messages`` hold its new request
messages and the reply.

Where the work happens: the event loop only stamps times and puts one tuple on a queue per
finished request (``begin``/``finish``); a writer thread groups turns into programs, builds the
JSON lines and writes them buffered, flushing whenever the queue runs dry (a turn boundary).
A program is written when it ends: a turn flagged ``is_last_step``, no new turn for
``record_program_timeout`` seconds (judged on the times of later requests, no timer), or
shutdown (``close`` writes every open program, flushes and closes the file: a clean shutdown
loses nothing). A request without a program id is a program of one turn, written at once.

Rotation: when writing a program would take the current file past
``record_trace_max_bytes`` (and it already holds a program), the next file is opened: FILE,
then FILE.1, FILE.2, ... in the order written (nothing is renamed). Every file is a trace on
its own (its own header, program ids unique within it); arrival times of all files share one
origin, so ``continuum advise FILE FILE.1 ...`` replays them together.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from continuum.bench.trace import RECORD_HEADER_TAG
from continuum.config import parse_bytes
from continuum.errors import ConfigError
from continuum.knobs import knob
from continuum.outputs import RequestOutput
from continuum.request import AgentInfo

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class RecordOptions:
    """``continuum serve``'s recording flags (knobs: one field, one flag)."""

    record_trace: str | None = knob(
        None, "write the live traffic as a program trace (JSONL: token counts, timings, tool "
              "names, program ids; no text) to FILE, rotating to FILE.1, FILE.2... by size; "
              "FILE must not exist (docs/server.md, 'Recording traffic'); default: no recording",
        metavar="FILE")
    record_text: bool = knob(False, "with --record-trace: also write each turn's new messages "
                                    "and the reply (text) into the trace")
    record_trace_max_bytes: int | str = knob(
        "100MB", "with --record-trace: the size at which the trace rotates to the next file",
        metavar="SIZE")
    record_program_timeout: float = knob(
        600.0, "seconds without a new turn after which a program is written as ended (an "
               "explicit is_last_step ends it at once); continuum serve sets it to "
               "--program-idle-timeout, when the scheduler forgets the program too", cli=False)
    settings: dict[str, Any] = knob(
        help="the serve settings written into each file's header (set by continuum serve)",
        default_factory=dict, cli=False)

    @property
    def max_bytes(self) -> int:
        return parse_bytes(self.record_trace_max_bytes)

    def check(self) -> None:
        """``ConfigError`` for bad values or a FILE (or FILE.N) already there: a second
        recording into the same name would mix two time origins and repeat program ids."""
        if self.record_trace is None:
            return
        self.max_bytes                                     # noqa: B018 - parses or raises
        if self.record_program_timeout <= 0:
            raise ConfigError("the recording's program timeout must be > 0")
        path = Path(self.record_trace)
        taken = [p for p in (path, segment_path(path, 1)) if p.exists()]
        if taken:
            raise ConfigError(f"--record-trace: {taken[0]} exists (an earlier recording?); move "
                              f"it away or choose another file")
        if not path.parent.is_dir():
            raise ConfigError(f"--record-trace: no directory {path.parent}")


def segment_path(path: Path, index: int) -> Path:
    """File ``index`` of a recording: FILE itself, then FILE.1, FILE.2, ..."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


@dataclass
class _TurnEvent:
    """One finished request as the event loop hands it to the writer (server clock times)."""

    program_id: str | None
    inferred: bool
    is_last: bool
    submit: float
    first_token: float
    finish: float
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    tool: str | None
    messages: list[dict] | str | None = None   # --record-text: chat messages / completion prompt
    reply: str | None = None


@dataclass
class _Program:
    key: str | None                           # the client's id (None: anonymous)
    inferred: bool
    turns: list[_TurnEvent] = field(default_factory=list)


_CLOSE = object()


class TraceRecorder:
    """Records finished requests into the trace file(s) of ``opts`` (module docstring).

    Event-loop side: ``begin`` at submit, ``finish`` on the final output, ``drop`` for a
    request that ended without one (aborted, failed): a few dict operations and one queue put.
    ``start`` runs the writer thread; ``close`` (idempotent) writes what is open and joins it.
    Every time handed in is on the server's clock (the engine's, as serving reads it)."""

    def __init__(self, opts: RecordOptions):
        opts.check()
        self.opts = opts
        self.path = Path(opts.record_trace)
        self.max_bytes = opts.max_bytes
        self.origin: float | None = None      # submit time of the first recorded request
        self.started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._pending: dict[str, tuple[AgentInfo, float, Any]] = {}
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.failed: BaseException | None = None
        # writer-thread state
        self._open: OrderedDict[str, _Program] = OrderedDict()   # by client id, oldest activity first
        self._file = None
        self._index = 0
        self._size = 0
        self._programs_in_file = 0
        self._ids_in_file: set[str] = set()
        self._anon = 0
        self.files: list[Path] = []
        self.programs_written = 0
        self.turns_written = 0

    # -- event-loop side --------------------------------------------------------------------
    def begin(self, request_id: str, agent: AgentInfo, now: float, text: Any = None) -> None:
        """A request was submitted at ``now``; ``text`` (messages or prompt) only with
        --record-text."""
        if self.origin is None:
            self.origin = now
        self._pending[request_id] = (agent, now, text if self.opts.record_text else None)

    def finish(self, out: RequestOutput, first_token: float, now: float) -> None:
        """``out`` is a request's final output, seen at ``now``; its first output came at
        ``first_token``."""
        entry = self._pending.pop(out.request_id, None)
        if entry is None or self._closed:
            return
        agent, submit, text = entry
        c = out.outputs[0]
        # ``inferred``: the program was recognised from the traffic, not sent by the client.
        self._q.put(_TurnEvent(
            agent.program_id, agent.inferred, agent.is_last_step, submit,
            first_token, now, len(out.prompt_token_ids), len(c.token_ids), out.num_cached_tokens,
            out.tool_name, text, c.text if self.opts.record_text else None))

    def drop(self, request_id: str) -> None:
        """The request ended without a final output: it is not recorded."""
        self._pending.pop(request_id, None)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._open_file(0)
        self._thread = threading.Thread(target=self._run, name="continuum-record", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write every open program as ended, flush and close the file (blocks until done)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._q.put(_CLOSE)
        self._thread.join()

    # -- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                ev = self._q.get()
                if ev is _CLOSE:
                    break
                self._turn(ev)
                if self._q.empty():
                    self._file.flush()              # a turn boundary with nothing queued behind
            for key in list(self._open):
                self._write(self._open.pop(key))
        except BaseException as e:                  # noqa: BLE001 - recording must not kill serving
            self.failed = e
            self._closed = True
            logger.exception("trace recording to %s failed; recording stopped", self.path)
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _turn(self, ev: _TurnEvent) -> None:
        # Programs idle for longer than the timeout have ended (judged on this turn's time).
        timeout = self.opts.record_program_timeout
        while self._open:
            key, prog = next(iter(self._open.items()))
            if prog.turns[-1].finish + timeout >= ev.submit:
                break
            self._write(self._open.pop(key))
        if ev.program_id is None:
            self._write(_Program(None, ev.inferred, [ev]))
            return
        prog = self._open.pop(ev.program_id, None) or _Program(ev.program_id, ev.inferred)
        prog.turns.append(ev)
        if ev.is_last:
            self._write(prog)
        else:
            self._open[ev.program_id] = prog        # re-inserted: now the most recent

    def _unique_id(self, key: str | None) -> str:
        if key is None:
            self._anon += 1
            key = f"anon-{self._anon}"
        pid, n = key, 1
        while pid in self._ids_in_file:
            n += 1
            pid = f"{key}~{n}"
        return pid

    def _write(self, prog: _Program) -> None:
        pid = self._unique_id(prog.key)
        line = (json.dumps(self._program_dict(pid, prog), separators=(",", ":"),
                           ensure_ascii=False) + "\n").encode()
        if self._programs_in_file and self._size + len(line) > self.max_bytes:
            self._open_file(self._index + 1)       # pid is unique there too: it is empty
        self._file.write(line)
        self._size += len(line)
        self._programs_in_file += 1
        self._ids_in_file.add(pid)
        self.programs_written += 1
        self.turns_written += len(prog.turns)

    def _program_dict(self, pid: str, prog: _Program) -> dict[str, Any]:
        """The trace line of ``prog`` (turns in submit order)."""
        turns = sorted(prog.turns, key=lambda t: t.submit)
        origin = self.origin if self.origin is not None else turns[0].submit
        out = []
        for k, t in enumerate(turns):
            prev = turns[k - 1] if k else None
            new = t.prompt_tokens - (prev.prompt_tokens + prev.output_tokens) if prev else t.prompt_tokens
            d: dict[str, Any] = {"input_tokens": max(new, 1), "output_tokens": max(t.output_tokens, 1),
                                 "tool": t.tool, "tool_duration": 0.0}
            if k + 1 < len(turns):
                d["tool_duration"] = round(max(turns[k + 1].submit - t.finish, 0.0), 6)
            else:
                d["last"] = True
            if self.opts.record_text:
                d["messages"] = _new_messages(t, prev)
            out.append(d)
        meta = {"recorded": FORMAT_VERSION, "program_id_given": prog.key is not None and not prog.inferred,
                "inferred": prog.inferred,
                "prompt_tokens": [t.prompt_tokens for t in turns],
                "cached_tokens": [t.cached_tokens for t in turns],
                "ttft": [round(t.first_token - t.submit, 6) for t in turns],
                "latency": [round(t.finish - t.submit, 6) for t in turns]}
        return {"program_id": pid, "arrival_time": round(max(turns[0].submit - origin, 0.0), 6),
                "source": "recorded", "turns": out, "meta": meta}

    def _open_file(self, index: int) -> None:
        if self._file is not None:
            self._file.close()
        path = segment_path(self.path, index)
        self._file = open(path, "xb", buffering=1 << 16)     # x: never overwrite a recording
        self.files.append(path)
        self._index, self._programs_in_file = index, 0
        self._ids_in_file = set()
        header = {"version": FORMAT_VERSION, "segment": index, "started_utc": self.started_utc,
                  "settings": self.opts.settings, "record_text": self.opts.record_text}
        head = (f"# {RECORD_HEADER_TAG} {json.dumps(header, separators=(',', ':'), default=str)}\n"
                "# times: seconds from the first recorded request; tool_duration: from a turn's "
                "finish to the program's next request\n").encode()
        self._file.write(head)
        self._size = len(head)


def _new_messages(t: _TurnEvent, prev: _TurnEvent | None) -> list[dict]:
    """--record-text: the turn's new request messages and its reply. Chat: the messages after
    the previous turn's, less the client's copy of the previous reply; completions: the
    prompt's text past the previous prompt + reply (all of it when it does not continue)."""
    msgs = t.messages
    if isinstance(msgs, str):
        before = ""
        if prev is not None and isinstance(prev.messages, str):
            before = prev.messages + (prev.reply or "")
        fresh = msgs[len(before):] if before and msgs.startswith(before) else msgs
        new = [{"role": "prompt", "content": fresh}]
    elif isinstance(msgs, list):
        start = len(prev.messages) if prev is not None and isinstance(prev.messages, list) \
            and len(msgs) >= len(prev.messages) else 0
        new = list(msgs[start:])
        if start and new and new[0].get("role") == "assistant":
            new = new[1:]
    else:
        new = []
    return new + [{"role": "assistant", "content": t.reply or ""}]
