"""The bench's report: runs on the trace's own arrivals, results written before the report."""
import json

import pytest

from continuum.bench.trace import ProgramTrace, Turn, save_trace
from continuum.cli import main


def _trace_with_arrivals(path):
    """Three small programs whose arrivals come from the trace (so ``jps`` is None)."""
    progs = [ProgramTrace(f"p{i}", [Turn(40, 4, "ls", 0.2), Turn(10, 3, None, 0.0, True)], arrival_time=i * 0.5)
             for i in range(3)]
    save_trace(progs, path)
    return path


SIM = ["--target", "sim", "--num-blocks", "400", "--no-progress"]


def test_trace_arrivals_with_two_policies_report_every_run(tmp_path, capsys):
    trace = _trace_with_arrivals(tmp_path / "arr.jsonl")
    out = tmp_path / "out"
    assert main(["bench", "--workload", str(trace), "--policies", "vllm,continuum", *SIM, "--out", str(out)]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["jps"], r["policy"]) for r in runs] == [(None, "vllm"), (None, "continuum")]
    report = (out / "report.md").read_text()
    assert "arr @ trace arrivals: continuum mean JCT" in report


def test_results_are_written_before_the_report(tmp_path, monkeypatch):
    """A report that fails (here: rendering the table) leaves results.json complete on disk."""
    from continuum.bench import report

    def broken(*_):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(report, "markdown_table", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="rendering failed"):
        main(["bench", "--workload", "swe", "--num-programs", "2", "--scale", "0.05", "--jps", "1",
              "--policies", "vllm", *SIM, "--out", str(out)])
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["summary"]["completed"] == 2
