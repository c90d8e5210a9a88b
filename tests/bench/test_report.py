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
    assert "### arr @ trace arrivals (3 programs)" in report


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


def _table(lines: list[str], title: str) -> list[list[str]]:
    """The cells of the aligned table printed under the line ``title`` (header first, rule skipped)."""
    i = lines.index(title)
    assert lines[i + 1] == "" and lines[i + 2].startswith("| ")
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [rows[0]] + rows[2:]


def test_the_printed_summary_is_one_short_table_per_point_then_the_glossary_once(tmp_path, capsys):
    """stdout: per (workload, load) a table of exactly policy, mean/P95 JCT, x ideal, x vllm,
    TTFT P99, hit rate, each line <= 100 characters; no raw counter names; the glossary once.
    report.md: the glossary at the top, the same short tables, then every counter."""
    from continuum.bench.report import GLOSSARY, SUMMARY_HEAD
    out = tmp_path / "out"
    assert main(["bench", "--workload", "swe", "--num-programs", "3", "--scale", "0.05", "--jps", "1,2",
                 "--policies", "vllm,fixed-ttl", *SIM, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert SUMMARY_HEAD == ["policy", "mean JCT s", "P95 JCT s", "x ideal", "x vllm mean / P95", "TTFT P99 s",
                           "hit rate"]
    for jps in (1, 2):
        head, *rows = _table(printed, f"swe @ {jps} JPS (3 programs)")
        assert head == SUMMARY_HEAD
        vllm, ttl = (next(r["summary"] for r in runs if r["jps"] == jps and r["policy"] == p)
                     for p in ("vllm", "fixed-ttl"))
        assert rows == [
            ["vllm", f"{vllm['jct_mean']:.2f}", f"{vllm['jct_p95']:.2f}", f"{vllm['jct_over_ideal_mean']:.2f}",
             "1.00 / 1.00", f"{vllm['ttft_p99']:.2f}", f"{vllm['prefix_hit_rate']:.3f}"],
            ["fixed-ttl", f"{ttl['jct_mean']:.2f}", f"{ttl['jct_p95']:.2f}", f"{ttl['jct_over_ideal_mean']:.2f}",
             f"{ttl['jct_mean'] / vllm['jct_mean']:.2f} / {ttl['jct_p95'] / vllm['jct_p95']:.2f}",
             f"{ttl['ttft_p99']:.2f}", f"{ttl['prefix_hit_rate']:.3f}"]]
    tables = printed[:next(i for i, line in enumerate(printed) if line.startswith("Every counter"))]
    assert max(len(line) for line in tables) <= 100          # the lines after it are file paths
    text = "\n".join(printed)
    assert "pins_made_total" not in text and "preempt" not in text
    assert all(text.count(f"{term}: ") == 1 for term, _ in GLOSSARY)
    report = (out / "report.md").read_text()
    top = report.split("Command:")[0]
    assert all(f"- **{term}**: {definition}" in top for term, definition in GLOSSARY)
    summary, full = report.split("## Every counter")
    assert "### swe @ 2 JPS (3 programs)" in summary and " pins_made_total |" in full


def test_the_glossary_in_the_docs_is_the_one_printed():
    """docs/benchmarks.md defines every term in the same words as the bench prints."""
    from continuum.bench.report import GLOSSARY
    docs = " ".join((Path(__file__).parents[2] / "docs" / "benchmarks.md").read_text().split())
    for term, definition in GLOSSARY:
        assert f"**{term}**: {definition}" in docs, term


def test_rates_keep_three_significant_digits():
    """The full table's out tok/s (and the progress display): small rates are not rounded to integers."""
    from continuum.bench.report import fmt_sig, markdown_table
    assert [fmt_sig(x) for x in (0.041234, 0.4123, 4.123, 41.23, 412.3, 4123.4, 0.0, None)] == \
        ["0.0412", "0.412", "4.12", "41.2", "412", "4123", "0", "-"]
    summary = {"jct_mean": 1.0, "output_tok_per_s": 3.456, "prefix_hit_rate": 0.5}
    row = markdown_table([{"workload": "w", "jps": 1.0, "policy": "vllm", "summary": summary}]).splitlines()[2]
    assert "| 3.46 |" in row
