"""HTTP-target replay against our own OpenAI server (random tiny model, 127.0.0.1, random port)."""
import importlib.util
import socket
import subprocess
import sys

import pytest

from continuum.bench.trace import ProgramTrace, Turn
from tests.polling import HANG_GUARD_S, wait_for

pytestmark = pytest.mark.skipif(importlib.util.find_spec("continuum.entrypoints.openai.api_server") is None,
                                reason="the OpenAI server (continuum/entrypoints) is not there yet")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    import httpx

    from continuum.layers import cpu_kernels
    # A fresh checkout JIT-builds the CPU kernel (a minute or more on a busy machine): do it
    # here, with no deadline, so that the server below starts from the built kernel.
    cpu_kernels.load()
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "continuum.cli", "serve", "--model", "random:tiny",
                             "--host", "127.0.0.1", "--port", str(port), "--kv-cache-memory", "4MiB",
                             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.skip(f"server exited at start: {proc.stderr.read().decode()[-500:]}")
        try:
            return httpx.get(f"{url}/v1/models", timeout=HANG_GUARD_S).status_code == 200
        except httpx.ConnectError:               # not listening yet
            return False

    try:
        wait_for(up, "server did not come up")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_http_replay_two_programs(server):
    from continuum.bench.http_driver import run_http
    progs = [ProgramTrace("a", [Turn(20, 4, "ls", 0.05), Turn(9, 3, None, 0.0, True)]),
             ProgramTrace("b", [Turn(30, 5, None, 0.0, True)])]
    r = run_http(progs, [0.0, 0.02], server, timeout=HANG_GUARD_S)
    a, b = r["programs"]
    assert a.finish is not None and b.finish is not None
    assert [t.output_tokens for t in a.turns] == [4, 3]
    assert a.turns[1].prompt_tokens == 20 + 4 + 9
    assert a.turns[1].submit >= a.turns[0].finish + 0.05 - 1e-3
    assert all(t.ttft is not None and t.ttft >= 0 for t in a.turns + b.turns)


def test_http_replay_extends_contexts_with_the_returned_output_ids(server):
    """The driver asks for ``return_token_ids``: the next turn's prompt carries the real output
    ids, so the returning turn hits every full block of prompt + output (40 + 11 computed
    tokens: 3 blocks of 16 = 48). Filler ids would hit only the prompt's 2 full blocks (32)."""
    from continuum.bench.http_driver import run_http
    r = run_http([ProgramTrace("c", [Turn(40, 12, "ls", 0.05), Turn(5, 2, None, 0.0, True)])],
                 [0.0], server, timeout=HANG_GUARD_S)
    (c,) = r["programs"]
    assert c.turns[1].cached_tokens == 48       # (turn 0 may hit the other test's seeded ids)



def test_bench_cli_on_an_http_target_warns_that_policies_are_the_servers(server, tmp_path, capsys):
    """--policies with an http target: one warning line, one run labelled 'server' per load;
    without --policies no warning. No KV timeline, so no pinned_kv.png; the progress bar
    counts the 3 turns."""
    import json

    from continuum.bench.trace import save_trace
    from continuum.cli import main
    trace = tmp_path / "t.jsonl"
    save_trace([ProgramTrace("a", [Turn(20, 4, "ls", 0.01), Turn(9, 3, None, 0.0, True)]),
                ProgramTrace("b", [Turn(30, 5, None, 0.0, True)])], trace)
    base = ["bench", "--target", server, "--workload", str(trace), "--jps", "20"]
    out = tmp_path / "out"
    assert main(base + ["--policies", "vllm,continuum", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.replace("\r", "\n").splitlines() if "warning" in line]
    assert warnings == [f"continuum: warning: --policies is ignored with --target {server}: the server runs "
                        "its own scheduling policy (rows say 'server')"]
    assert "3/3" in err
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["policy"] for r in runs] == ["server"]
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json", "t_jct_cdf.png"]
    assert main(base + ["--no-progress", "--out", str(tmp_path / "out2")]) == 0
    assert "warning" not in capsys.readouterr().err
