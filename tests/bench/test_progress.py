"""The bench's progress display counts turns (not programs) with elapsed time, ETA and tok/s."""
import io

from continuum.bench.engine_driver import run_engine
from continuum.bench.progress import ReplayProgress
from continuum.bench.trace import ProgramTrace, Turn

ENGINE = dict(model="random:tiny", num_blocks_override=64, max_num_batched_tokens=64, max_num_seqs=8)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_tok_per_s_is_per_run_and_keeps_small_rates():
    clock = FakeClock()
    p = ReplayProgress(10, file=io.StringIO(), clock=clock)
    p.start_run("swe @ 0.5 vllm")
    assert p.postfix() == "swe @ 0.5 vllm"
    clock.t += 8.0
    p.turn_done(3)
    assert p.postfix() == "swe @ 0.5 vllm, 0.375 out tok/s"
    p.start_run("swe @ 0.5 continuum")
    clock.t += 2.0
    p.turn_done(2000)
    assert (p.turns, p.tokens, p.bar.n) == (1, 2000, 2)
    assert p.postfix() == "swe @ 0.5 continuum, 1000 out tok/s"
    sim = ReplayProgress(10, show_rate=False, file=io.StringIO(), clock=clock)
    sim.start_run("swe @ 0.5 vllm")
    clock.t += 1.0
    sim.turn_done(50)
    assert sim.postfix() == "swe @ 0.5 vllm"


def test_the_engine_target_reports_every_turn():
    """Three programs of 3, 2 and 1 turns: the bar reaches 6/6 turns, counting every output
    token, and its rendered line shows turns with elapsed and remaining time."""
    progs = [ProgramTrace("a", [Turn(20, 4, "ls", 0.01), Turn(9, 3, "cat", 0.0), Turn(5, 2, None, 0.0, True)]),
             ProgramTrace("b", [Turn(40, 5, "grep", 0.02), Turn(7, 2, None, 0.0, True)]),
             ProgramTrace("c", [Turn(3, 6, None, 0.0, True)])]
    screen = io.StringIO()
    with ReplayProgress(6, file=screen) as bar:
        bar.start_run("t @ 50 vllm")
        run_engine(progs, [0.0, 0.01, 0.02], ENGINE, "vllm", progress=bar)
        assert (bar.bar.n, bar.turns, bar.tokens) == (6, 6, 4 + 3 + 2 + 5 + 2 + 6)
    last = screen.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "6/6" in last and "turn/s" in last and "<00:00" in last and "out tok/s" in last


def test_the_bench_bar_totals_every_turn_of_every_run(tmp_path, capsys):
    """sim target, 2 loads x 2 policies of 3 programs: the bar ends at 4 x (their turns)."""
    import json

    from continuum.cli import main
    out = tmp_path / "out"
    assert main(["bench", "--workload", "swe", "--num-programs", "3", "--scale", "0.05", "--jps", "1,2",
                 "--policies", "vllm,continuum", "--target", "sim", "--num-blocks", "400", "--out", str(out)]) == 0
    run = json.loads((out / "results.json").read_text())["runs"][0]
    total = 4 * run["summary"]["turns"]
    err = capsys.readouterr().err.replace("\r", "\n")
    assert f"{total}/{total}" in err and "turn" in err and "out tok/s" not in err
