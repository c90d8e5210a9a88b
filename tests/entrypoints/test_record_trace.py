"""``continuum serve --record-trace``: live traffic through the real server (official ``openai``
client) comes out as a program trace that the trace loader reads and the simulator replays.

The engine runs on a manual clock that the test sets before each request, so every recorded
time (arrival, tool duration, TTFT, latency) is exact."""
from __future__ import annotations

import json

import pytest

from continuum.bench.trace import load_trace, read_record_header as read_header
from continuum.entrypoints.openai.record import RecordOptions, TraceRecorder, segment_path
from continuum.errors import ConfigError
from continuum.outputs import CompletionOutput, RequestMetrics, RequestOutput
from continuum.request import AgentInfo
from tests.entrypoints.conftest import MODEL, Server
from tests.polling import HANG_GUARD_S

SECRET = "SECRET-MARKER-7f3a"
TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "run a shell command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}]


class ManualClock:
    """The engine's and server's clock: stands still until the test moves it."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _client(server):
    import openai
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                         timeout=HANG_GUARD_S)


def _tool_name(usage) -> str | None:
    ext = (usage.model_extra or {}).get("continuum")
    return ext["tool_name"] if ext else None


def _agent_turn(client, messages, program, last, turn):
    """One turn of a tool loop: the scripted model calls bash; returns (usage, messages)."""
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,
                                       extra_body={"program_id": program, "is_last_step": last})
    call = r.choices[0].message.tool_calls[0]
    messages = messages + [{"role": "assistant", "content": r.choices[0].message.content,
                            "tool_calls": [call.model_dump()]},
                           {"role": "tool", "tool_call_id": call.id, "content": f"file{turn}.py\n" * 4}]
    return r.usage, messages


def _stream_turn(client, messages, program, last):
    """A streamed turn with usage in the last chunk; returns (usage, text)."""
    usage, text = None, ""
    for ch in client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                             stream_options={"include_usage": True},
                                             extra_body={"program_id": program, "is_last_step": last}):
        if ch.choices:
            text += ch.choices[0].delta.content or ""
        usage = ch.usage or usage
    return usage, text


def _expected_turns(usages, gaps, tools):
    """The trace turns the recorder must write for responses with ``usages`` whose next
    request came ``gaps`` seconds after they finished."""
    out = []
    for k, u in enumerate(usages):
        new = u.prompt_tokens if k == 0 else \
            u.prompt_tokens - usages[k - 1].prompt_tokens - usages[k - 1].completion_tokens
        out.append({"input_tokens": max(new, 1), "output_tokens": u.completion_tokens,
                    "tool": tools[k], "tool_duration": gaps[k] if k < len(gaps) else 0.0,
                    "last": k == len(usages) - 1})
    return out


def _turn_dicts(program):
    return [{"input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "tool": t.tool,
             "tool_duration": t.tool_duration, "last": t.last} for t in program.turns]


def test_recorded_traffic_is_a_trace_with_exact_counts_and_times(tmp_path):
    path = tmp_path / "live.jsonl"
    clock = ManualClock(100.0)
    server = Server(clock=clock, record=RecordOptions(record_trace=str(path),
                                                      settings={"scheduling_policy": "vllm"})).start()
    try:
        client = _client(server)
        a_msgs = [{"role": "system", "content": f"You are an agent. {SECRET}"},
                  {"role": "user", "content": "SCRIPT[hermes] list the repository files"}]
        b_msgs = [{"role": "user", "content": f"SCRIPT[plain] {SECRET} capital of France?"}]
        a, b = [], []
        u, a_msgs = _agent_turn(client, a_msgs, "agent-A", False, 0); a.append(u)
        clock.t = 101.5
        u, reply = _stream_turn(client, b_msgs, "chat-B", False); b.append(u)
        clock.t = 103.0
        anon = client.completions.create(model=MODEL, prompt=f"{SECRET} SCRIPT[plain]", max_tokens=5)
        clock.t = 104.25
        u, a_msgs = _agent_turn(client, a_msgs, "agent-A", False, 1); a.append(u)
        clock.t = 106.0
        b_msgs += [{"role": "assistant", "content": reply},
                   {"role": "user", "content": "SCRIPT[plain] and of Italy?"}]
        u, _ = _stream_turn(client, b_msgs, "chat-B", True); b.append(u)
        clock.t = 107.0
        u, a_msgs = _agent_turn(client, a_msgs, "agent-A", True, 2); a.append(u)
        clock.t = 108.0
        c, _ = _agent_turn(client, [{"role": "user", "content": "SCRIPT[hermes] go"}], "agent-C", False, 0)
        server.wait_idle()
    finally:
        server.stop()                        # clean shutdown: agent-C, still open, is written

    progs = load_trace(path)
    # Lines in the order programs ended: B and A (last step sent), then at shutdown C and the
    # id-less request, which recognition made a program of its own (``auto-...``) that a later
    # request could still have continued.
    ids = [p.program_id for p in progs]
    anon_id = next(i for i in ids if i.startswith("auto-"))
    assert ids[:2] == ["chat-B", "agent-A"] and sorted(ids[2:]) == sorted(["agent-C", anon_id])
    by = {p.program_id: p for p in progs}
    by["anon-1"] = by[anon_id]
    assert [by[k].arrival_time for k in ("agent-A", "chat-B", "anon-1", "agent-C")] == [0.0, 1.5, 3.0, 8.0]
    assert _turn_dicts(by["agent-A"]) == _expected_turns(a, [4.25, 2.75], [_tool_name(u) for u in a])
    assert [t.tool for t in by["agent-A"].turns[:2]] == ["bash", "bash"]
    assert _turn_dicts(by["chat-B"]) == _expected_turns(b, [4.5], [None, None])
    assert _turn_dicts(by["anon-1"]) == _expected_turns([anon.usage], [], [None])
    assert _turn_dicts(by["agent-C"]) == _expected_turns([c], [], [_tool_name(c)])
    meta = by["agent-A"].meta
    assert meta["program_id_given"] is True and meta["inferred"] is False
    assert meta["prompt_tokens"] == [u.prompt_tokens for u in a]
    assert meta["cached_tokens"] == [u.prompt_tokens_details.cached_tokens for u in a]
    assert meta["cached_tokens"][2] > 0                      # the program's prefix was reused
    assert meta["ttft"] == meta["latency"] == [0.0, 0.0, 0.0]  # the clock stood still per request
    assert by["anon-1"].meta["program_id_given"] is False and by["anon-1"].meta["inferred"] is True
    # No text by default: neither prompts, tool results nor replies are in the file.
    raw = path.read_bytes()
    for text in (SECRET, "file0.py", "ls -la", "Paris", "capital"):
        assert text.encode() not in raw, text
    assert read_header(path)["settings"] == {"scheduling_policy": "vllm"}

    # The recorded file replays in the simulator through the unchanged bench command.
    from continuum.cli import main
    out = tmp_path / "bench"
    assert main(["bench", "--target", "sim", "--workload", str(path), "--policies", "vllm,continuum+",
                 "--no-progress", "--out", str(out)]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["summary"]["completed"] for r in runs] == [4, 4]


def test_record_text_keeps_new_messages_and_replies(tmp_path):
    path = tmp_path / "text.jsonl"
    server = Server(clock=ManualClock(5.0),
                    record=RecordOptions(record_trace=str(path), record_text=True)).start()
    try:
        client = _client(server)
        msgs = [{"role": "user", "content": f"SCRIPT[hermes] {SECRET}"}]
        _, msgs = _agent_turn(client, msgs, "p", False, 0)
        r = client.chat.completions.create(model=MODEL, messages=msgs, tools=TOOLS,
                                           extra_body={"program_id": "p", "is_last_step": True})
        server.wait_idle()
    finally:
        server.stop()
    (prog,) = load_trace(path)
    first, second = prog.turns[0].messages, prog.turns[1].messages
    assert first[0] == {"role": "user", "content": f"SCRIPT[hermes] {SECRET}"}
    assert first[-1]["role"] == "assistant" and "<tool_call>" in first[-1]["content"]
    # turn 2's new messages: the tool result (the client's copy of the reply is left out)
    assert [m["role"] for m in second] == ["tool", "assistant"]
    assert second[0]["content"] == "file0.py\n" * 4
    assert r.choices[0].message.tool_calls[0].function.name == "bash"


# -- the recorder itself: rotation, ids, refusals --------------------------------------------
def _output(rid: str, prompt: int, output: int, tool: str | None = None) -> RequestOutput:
    return RequestOutput(rid, None, list(range(prompt)),
                         [CompletionOutput(0, "", list(range(output)), finish_reason="stop")],
                         True, RequestMetrics(0.0), tool_name=tool)


def _record(rec: TraceRecorder, rid: str, agent: AgentInfo, t: float, prompt=10, output=3, tool=None):
    rec.begin(rid, agent, t)
    rec.finish(_output(rid, prompt, output, tool), t, t + 0.5)


def test_rotation_at_a_tiny_size_gives_one_file_per_program(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = TraceRecorder(RecordOptions(record_trace=str(path), record_trace_max_bytes="1"))
    rec.start()
    for i in range(5):
        _record(rec, f"q{i}", AgentInfo(), float(i))
    # a program open across rotations stays whole: written at close, in the last file
    _record(rec, "x0", AgentInfo("prog", tool_name="grep"), 10.0, tool="grep")
    _record(rec, "x1", AgentInfo("prog"), 12.0, prompt=20)
    rec.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["r.jsonl"] + [f"r.jsonl.{i}" for i in range(1, 6)]
    assert rec.files == [segment_path(path, i) for i in range(6)]
    ids = [[p.program_id for p in load_trace(f)] for f in rec.files]
    assert ids == [["anon-1"], ["anon-2"], ["anon-3"], ["anon-4"], ["anon-5"], ["prog"]]
    assert [read_header(f)["segment"] for f in rec.files] == list(range(6))
    (prog,) = load_trace(rec.files[-1])
    assert [(t.input_tokens, t.output_tokens, t.tool, t.tool_duration) for t in prog.turns] == \
        [(10, 3, "grep", 1.5), (7, 3, None, 0.0)]
    assert prog.arrival_time == 10.0


def test_one_file_below_the_limit_and_ids_stay_unique(tmp_path):
    path = tmp_path / "one.jsonl"
    rec = TraceRecorder(RecordOptions(record_trace=str(path), record_program_timeout=5.0))
    rec.start()
    _record(rec, "a", AgentInfo("job"), 0.0)
    _record(rec, "b", AgentInfo("job", is_last_step=True), 1.0)
    _record(rec, "c", AgentInfo("job"), 2.0)                      # the id again: a new program
    _record(rec, "d", AgentInfo("anon-1"), 3.0)                   # a client id like ours
    _record(rec, "e", AgentInfo(), 20.0)                          # job and anon-1 idle > 5 s
    rec.begin("f", AgentInfo("aborted"), 21.0)
    rec.drop("f")                                                 # never finished: not recorded
    rec.close()
    assert rec.files == [path]
    progs = load_trace(path)
    assert [p.program_id for p in progs] == ["job", "job~2", "anon-1", "anon-1~2"]
    assert [len(p.turns) for p in progs] == [2, 1, 1, 1]
    assert [p.arrival_time for p in progs] == [0.0, 2.0, 3.0, 20.0]


def test_an_existing_file_or_a_bad_size_is_refused(tmp_path):
    path = tmp_path / "taken.jsonl"
    path.write_text("")
    with pytest.raises(ConfigError, match="exists"):
        RecordOptions(record_trace=str(path)).check()
    with pytest.raises(ConfigError, match="memory size|parse"):
        RecordOptions(record_trace=str(tmp_path / "new.jsonl"), record_trace_max_bytes="lots").check()
    with pytest.raises(ConfigError, match="no directory"):
        RecordOptions(record_trace=str(tmp_path / "nope" / "t.jsonl")).check()


def test_record_text_of_completions_keeps_the_new_prompt_text(tmp_path):
    path = tmp_path / "c.jsonl"
    rec = TraceRecorder(RecordOptions(record_trace=str(path), record_text=True))
    rec.start()
    turns = [("Q: 2+2?", "A: 4"), ("Q: 2+2?A: 4\nQ: and 3+3?", "A: 6"), ("fresh start", "ok")]
    for i, (prompt, reply) in enumerate(turns):
        rec.begin(f"c{i}", AgentInfo("calc", is_last_step=i == 2), float(i), prompt)
        out = _output(f"c{i}", 10 * (i + 1), 2)
        out.outputs[0].text = reply
        rec.finish(out, float(i), float(i))
    rec.close()
    (prog,) = load_trace(path)
    assert [t.messages for t in prog.turns] == [
        [{"role": "prompt", "content": "Q: 2+2?"}, {"role": "assistant", "content": "A: 4"}],
        [{"role": "prompt", "content": "\nQ: and 3+3?"}, {"role": "assistant", "content": "A: 6"}],
        [{"role": "prompt", "content": "fresh start"}, {"role": "assistant", "content": "ok"}]]


def test_serve_refuses_a_taken_file_before_loading_the_model(tmp_path, capsys):
    from continuum.cli import main
    taken = tmp_path / "old.jsonl"
    taken.write_text("")
    assert main(["serve", str(tmp_path / "no-model"), "--record-trace", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "no-model" not in err
    assert main(["serve", str(tmp_path / "no-model"), "--record-text"]) == 2
    assert "--record-text needs --record-trace" in capsys.readouterr().err
