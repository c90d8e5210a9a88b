"""Engine-target replay on a tiny random model, and the bench CLI end to end."""
import json

import pytest

from continuum.bench.engine_driver import run_engine
from continuum.bench.trace import ProgramTrace, Turn

ENGINE = dict(model="random:tiny", num_blocks_override=64, max_num_batched_tokens=64, max_num_seqs=8)


def _programs():
    return [ProgramTrace("a", [Turn(20, 4, "ls", 0.01), Turn(9, 3, "cat", 0.0), Turn(5, 2, None, 0.0, True)]),
            ProgramTrace("b", [Turn(40, 5, "grep", 0.02), Turn(7, 2, None, 0.0, True)]),
            ProgramTrace("c", [Turn(3, 6, None, 0.0, True)])]


def test_engine_replay_tiny_programs_no_leaks():
    r = run_engine(_programs(), [0.0, 0.01, 0.02], ENGINE, "vllm")
    progs = {p.program_id: p for p in r["programs"]}
    assert all(p.finish is not None and p.jct > 0 for p in progs.values())
    a = progs["a"]
    assert [t.output_tokens for t in a.turns] == [4, 3, 2]
    assert [t.prompt_tokens for t in a.turns] == [20, 20 + 4 + 9, 33 + 3 + 5]
    assert a.turns[1].submit >= a.turns[0].finish + 0.01 - 1e-6
    assert r["stats"]["kv_blocks_in_use"] == 0 and r["stats"]["num_requests_running"] == 0


def test_bench_cli_end_to_end(tmp_path):
    from continuum.cli import main
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(p.to_dict()) for p in _programs()) + "\n")
    out = tmp_path / "out"
    rc = main(["bench", "--target", "engine", "--workload", str(trace), "--jps", "50",
               "--policies", "vllm", "--model", "random:tiny", "--max-num-batched-tokens", "64",
               "--kv-cache-memory", "2MiB",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["runs"][0]["summary"]["completed"] == 3
    assert (out / "report.md").exists() and list(out.glob("*.png"))
    rc = main(["bench", "--target", "sim", "--workload", "swe", "--num-programs", "4", "--scale", "0.05",
               "--jps", "1,4", "--policies", "vllm", "--num-blocks", "400", "--no-progress", "--out", str(out)])
    assert rc == 0 and (out / "swe_jct_vs_load.png").exists()


def test_bench_num_blocks_sizes_the_engine_pool_exactly(tmp_path):
    """--num-blocks gives the engine target the same pool on any machine (--kv-cache-memory
    buys half the blocks where the CPU has no fast bf16 and the dtype is float32)."""
    from continuum.cli import main
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(p.to_dict()) for p in _programs()) + "\n")
    out = tmp_path / "out"
    rc = main(["bench", "--target", "engine", "--workload", str(trace), "--jps", "50", "--policies", "vllm",
               "--model", "random:tiny", "--max-num-batched-tokens", "64", "--num-blocks", "37",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert run["num_blocks"] == 37 and run["summary"]["completed"] == 3


def test_bench_cli_reports_bad_input(tmp_path, capsys):
    from continuum.cli import main
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"program_id": "x", "turns": []}\n')
    assert main(["bench", "--workload", str(bad), "--jps", "1", "--no-progress"]) == 2
    assert "bad.jsonl:1:" in capsys.readouterr().err
    assert main(["bench", "--workload", "swe", "--num-programs", "2", "--policies", "nope", "--no-progress"]) == 2
    assert "unknown policies" in capsys.readouterr().err


def test_kv_too_small_for_one_turn_is_named_before_replaying(tmp_path, capsys):
    """The largest turn (program b, turn 1: prompt 40 + 5 + 7, output 2 = 54 tokens) needs 4
    blocks of 16: 3 is a one-line error naming it, before anything runs; 4 replays in full."""
    from continuum.cli import main
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(p.to_dict()) for p in _programs()) + "\n")
    sim = ["bench", "--target", "sim", "--workload", str(trace), "--jps", "5", "--policies", "vllm",
           "--no-progress", "--out", str(tmp_path / "out")]
    assert main(sim + ["--num-blocks", "3"]) == 2
    err = capsys.readouterr().err
    assert "program 'b' turn 1 needs 54 tokens" in err and "at least 4 blocks" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert main(sim + ["--num-blocks", "4"]) == 0
    (run,) = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert [[t["output_tokens"] for t in p["turns"]] for p in run["records"]] == [[4, 3, 2], [5, 2], [6]]


def test_engine_target_checks_the_kv_before_replaying():
    from continuum.bench.replay import KVTooSmallError
    with pytest.raises(KVTooSmallError, match="program 'b' turn 1 needs 54 tokens.*at least 4 blocks"):
        run_engine(_programs(), [0.0, 0.0, 0.0], {**ENGINE, "num_blocks_override": 3}, "vllm")
