"""``--reuse`` of the simulator's sweeps (``benchmarks/reuse.py``): which runs come from the
earlier file, which run again, a clear exit when it was made with other knobs, and what a
missing run does (the admission sweep exits, the matrix reruns it)."""
import json
from pathlib import Path

import pytest

from tests.bench.scripts import load_benchmark as _benchmark


def _sweep():
    return _benchmark("admission_sweep")


def _job(policy, jps=0.1, seed=0):
    return ("bfcl", 20, jps, policy, 100, seed, {}, "h200-llama3.1-8b")


def _earlier(tmp_path, runs):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"per_seed": [{"workload": "bfcl", "kv_gb": 20, "jps": jps, "policy": pol,
                                              "seed": seed, "jct_mean": 1.0} for pol, jps, seed in runs]}))
    return str(path)


def test_runs_of_policies_not_fresh_are_taken_from_the_earlier_file(tmp_path):
    sweep = _sweep()
    path = _earlier(tmp_path, [("vllm", 0.1, 0), ("vllm", 0.1, 1), ("continuum+", 0.1, 0)])
    jobs = [_job("vllm"), _job("continuum+"), _job("vllm", seed=1), _job("continuum+", seed=1)]
    rows, left = sweep.reused(path, ["continuum+"], jobs)
    assert [(r["policy"], r["seed"]) for r in rows] == [("vllm", 0), ("vllm", 1)]
    assert left == [_job("continuum+"), _job("continuum+", seed=1)]


def test_a_missing_earlier_run_exits_with_what_is_missing(tmp_path):
    sweep = _sweep()
    path = _earlier(tmp_path, [("vllm", 0.1, 0)])
    with pytest.raises(SystemExit, match="no run of vllm for bfcl 20 GB at 0.2 JPS, seed 0"):
        sweep.reused(path, ["continuum+"], [_job("vllm", jps=0.2)])


def test_an_earlier_file_made_with_other_knobs_is_refused(tmp_path):
    sweep = _sweep()
    path = _earlier(tmp_path, [("vllm", 0.1, 0)])
    d = json.loads(Path(path).read_text())
    Path(path).write_text(json.dumps({**d, "sched_kw": {"admission_target": 1.25}, "profile": "h200-llama3.1-8b"}))
    with pytest.raises(SystemExit, match="made with"):
        sweep.reused(path, ["continuum+"], [_job("vllm")])
    Path(path).write_text(json.dumps({**d, "sched_kw": {}, "profile": "h200-llama3.1-8b"}))
    assert len(sweep.reused(path, ["continuum+"], [_job("vllm")])[0]) == 1


def _matrix():
    return _benchmark("matrix")


def test_the_matrix_reuses_what_the_earlier_file_has_and_reruns_the_rest(tmp_path):
    matrix = _matrix()
    path = tmp_path / "results.json"
    rows = [{"workload": "bfcl", "kv_gb": 20, "jps": 0.1, "policy": pol, "seed": 0, "jct_mean": 1.0}
            for pol in ("vllm", "continuum+")]
    path.write_text(json.dumps({"profile": "h200-llama3.1-8b", "scheduler": {}, "rows": rows}))
    jobs = [("bfcl", 20, 0.1, pol, seed, 100, "h200-llama3.1-8b", {}, 0.0)
            for pol in ("vllm", "continuum+") for seed in (0, 1)]
    got = matrix.reused_rows(str(path), ["continuum+"], jobs, "h200-llama3.1-8b", {})
    assert [(r["policy"], r["seed"]) for r in got] == [("vllm", 0)]      # seed 1 and continuum+ run
    with pytest.raises(SystemExit, match="made with scheduler"):
        matrix.reused_rows(str(path), ["continuum+"], jobs, "h200-llama3.1-8b", {"admission_target": 1.5})


def test_the_matrix_never_reuses_runs_made_with_another_host_tier(tmp_path):
    matrix = _matrix()
    path = tmp_path / "results.json"
    rows = [{"workload": "bfcl", "kv_gb": 20, "jps": 0.1, "policy": "vllm", "seed": 0, "jct_mean": 1.0}]
    path.write_text(json.dumps({"profile": "h200-llama3.1-8b", "scheduler": {}, "rows": rows}))   # no host_x: 0
    jobs = [("bfcl", 20, 0.1, "vllm", 0, 100, "h200-llama3.1-8b", {}, 4.0)]
    with pytest.raises(SystemExit, match="made with host_x 0.0, not 4.0"):
        matrix.reused_rows(str(path), ["continuum+"], jobs, "h200-llama3.1-8b", {}, 4.0)
    assert len(matrix.reused_rows(str(path), ["continuum+"], jobs, "h200-llama3.1-8b", {}, 0.0)) == 1
