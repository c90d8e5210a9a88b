"""The bench's report: runs on the trace's own arrivals, results written before the report."""
import json
from pathlib import Path

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


def test_default_output_is_a_fresh_run_folder_and_every_file_is_printed(tmp_path, monkeypatch, capsys):
    """Without --out nothing tracked is touched: each run writes a new folder under
    benchmarks/runs/ and prints every file it wrote."""
    from continuum.bench import cli_bench
    monkeypatch.setattr(cli_bench, "BENCHMARKS", tmp_path / "benchmarks")
    (tmp_path / "benchmarks").mkdir()
    args = ["bench", "--workload", "swe", "--num-programs", "2", "--scale", "0.05", "--jps", "1,2",
            "--policies", "vllm", *SIM]
    folders = []
    for _ in range(2):
        assert main(args) == 0
        printed = [line.removeprefix("wrote ") for line in capsys.readouterr().out.splitlines()
                   if line.startswith("wrote ")]
        (folder,) = {str(Path(p).parent) for p in printed}
        assert sorted(printed) == sorted(str(p) for p in Path(folder).iterdir())
        folders.append(folder)
    assert folders[0] != folders[1]
    assert all(f.startswith(str(tmp_path / "benchmarks" / "runs")) for f in folders)


def test_fresh_run_dir_never_reuses_a_folder(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from continuum.bench import cli_bench
    monkeypatch.setattr(cli_bench, "BENCHMARKS", tmp_path)
    now = datetime(2026, 12, 7, 15, 30, 1, tzinfo=timezone.utc)
    first = cli_bench.fresh_run_dir(now)
    assert first == tmp_path / "runs" / "20261207-153001"
    first.mkdir(parents=True)
    assert cli_bench.fresh_run_dir(now) == tmp_path / "runs" / "20261207-153001-2"


def test_the_checkouts_run_folders_are_git_ignored():
    import shutil
    import subprocess

    from continuum.bench.cli_bench import BENCHMARKS
    if shutil.which("git") is None or not (BENCHMARKS.parent / ".git").exists():
        pytest.skip("not a git checkout")
    r = subprocess.run(["git", "check-ignore", "-q", "benchmarks/runs/20261207-153001/results.json"],
                       cwd=BENCHMARKS.parent)
    assert r.returncode == 0
