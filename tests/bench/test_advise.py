"""``continuum advise``: the grid it runs, the recommendation rule, and the whole command on a
small trace (in-process and over a worker pool)."""
import json

from continuum.bench.advise import AdviseConfig, Setting, advise, recommend, round_one, round_two
from continuum.bench.generators import generate
from continuum.bench.trace import RECORD_HEADER_TAG, save_trace
from continuum.cli import main
from continuum.scheduler.policies import POLICIES


def _trace(tmp_path, settings: dict | None = None, n: int = 6):
    """A small SWE-like trace with arrival times, as a recording has them; with ``settings``
    a recording's header line."""
    progs = generate("swe", n, seed=3, scale=0.05)
    for i, p in enumerate(progs):
        p.arrival_time = 0.5 * i
    path = tmp_path / "t.jsonl"
    save_trace(progs, path)
    if settings is not None:
        head = f"# {RECORD_HEADER_TAG} " + json.dumps({"version": 1, "segment": 0, "settings": settings})
        path.write_text(head + "\n" + path.read_text())
    return path, sum(len(p.turns) for p in progs)


def test_the_grid_tries_policies_then_kv_sizes_and_the_knobs_each_policy_reads():
    cur = Setting("continuum+", 10.0)
    assert round_one(["vllm", "continuum+"], cur) == [Setting("vllm", 10.0), cur]
    assert round_one(["vllm"], cur) == [cur, Setting("vllm", 10.0)]          # current always runs
    two = round_two(Setting("vllm", 10.0), cur, [0.5, 2.0], knobs=True)
    # the best (vllm) reads none of the main knobs: KV sizes only
    assert [s.label for s in two] == ["vllm @ 5 GB", "vllm @ 20 GB", "continuum+ @ 5 GB", "continuum+ @ 20 GB"]
    two = round_two(cur, Setting("vllm", 10.0), [2.0], knobs=True)
    # continuum+ reads the pin budget and its door
    assert [s.label for s in two] == ["continuum+ @ 20 GB", "vllm @ 20 GB",
                                      "continuum+ @ 10 GB, pin_budget_fraction=0.25",
                                      "continuum+ @ 10 GB, pin_budget_fraction=0.75",
                                      "continuum+ @ 10 GB, admission_target=0.8",
                                      "continuum+ @ 10 GB, admission_target=1.25"]
    fixed = round_two(Setting("fixed-ttl", 10.0, (("pin_budget_fraction", 0.8),)), cur, [], knobs=True)
    assert [s.label for s in fixed if s.policy == "fixed-ttl"] == [
        "fixed-ttl @ 10 GB, pin_budget_fraction=0.4", "fixed-ttl @ 10 GB, pin_budget_fraction=1",
        "fixed-ttl @ 10 GB, fixed_ttl=1, pin_budget_fraction=0.8",      # the other knobs stay
        "fixed-ttl @ 10 GB, fixed_ttl=4, pin_budget_fraction=0.8"]


def _row(s: Setting, jct: float, completed: int = 5):
    return {"setting": s, "policy": s.policy, "kv_gb": s.kv_gb, "knobs": dict(s.knobs), "label": s.label,
            "jct_mean": jct, "jct_p95": jct, "ttft_p50": 1.0, "ttft_p99": 2.0, "completed": completed}


def test_a_change_is_recommended_only_past_the_margin():
    cur, a, b = Setting("continuum+", 10.0), Setting("vllm", 10.0), Setting("autellix", 10.0)
    big = Setting("continuum+", 20.0)
    rec = recommend([_row(cur, 100.0), _row(a, 98.5), _row(big, 60.0)], cur, 5, margin=0.02)
    assert rec["keep_current"] and rec["recommended"]["policy"] == "continuum+"
    assert rec["best_at_current_kv"]["policy"] == "vllm"
    assert rec["kv_sizes"] == [{"kv_gb": 20.0, "policy": "continuum+", "jct_mean": 60.0, "ttft_p99": 2.0,
                                "jct_change": -0.4, "error": None}]
    rec = recommend([_row(cur, 100.0), _row(a, 97.0), _row(b, 90.0, completed=4)], cur, 5, margin=0.02)
    assert not rec["keep_current"] and rec["recommended"]["policy"] == "vllm"   # b left programs unfinished
    assert abs(rec["change_vs_current"]["jct_mean"] + 0.03) < 1e-12


def test_advise_runs_end_to_end_and_names_a_policy(tmp_path, capsys):
    path, _ = _trace(tmp_path, settings={"scheduling_policy": "vllm", "max_num_seqs": 64})
    out = tmp_path / "adv"
    assert main(["advise", str(path), "--policies", "vllm,continuum+", "--kv-gb", "0.3", "--kv-scales", "2",
                 "--jobs", "1", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads((out / "advise.json").read_text())
    assert (out / "advise.png").stat().st_size > 0
    assert res["current"] == "vllm @ 0.3 GB"                      # from the recording's header
    best_is_vllm = res["recommendation"]["best_at_current_kv"]["policy"] == "vllm"
    assert [r["label"] for r in res["rows"]] == [
        "vllm @ 0.3 GB", "continuum+ @ 0.3 GB",
        *(["vllm @ 0.6 GB"] if best_is_vllm else
          ["continuum+ @ 0.6 GB", "vllm @ 0.6 GB"] + [f"continuum+ @ 0.3 GB, {k}" for k in (
              "pin_budget_fraction=0.25", "pin_budget_fraction=0.75", "admission_target=0.8",
              "admission_target=1.25")])]
    assert all(r["completed"] == 6 for r in res["rows"])
    pick = res["recommendation"]["recommended"]["policy"]
    assert pick in POLICIES and "Recommendation:" in text and pick in text.split("Recommendation:")[1]


def test_advise_over_a_worker_pool_counts_every_simulated_turn(tmp_path):
    path, turns = _trace(tmp_path)
    res = advise([path], AdviseConfig(policies=["vllm", "continuum"], kv_gb=0.3, kv_scales=(2.0,),
                                      knobs=False, jobs=2, progress=False))
    assert res["current"] == "continuum+ @ 0.3 GB"                # no header: the default policy
    assert len(res["rows"]) == 3 + len({res["recommendation"]["best_at_current_kv"]["policy"], "continuum+"})
    assert res["turns_simulated"] == turns * len(res["rows"])


def test_the_current_knobs_are_the_recorded_ones_that_differ_from_the_defaults():
    from continuum.bench.advise import scheduler_knobs
    from continuum.cli import build_parser, engine_kwargs
    served = engine_kwargs(build_parser().parse_args(["serve", "--pin-budget-fraction", "0.3",
                                                      "--admission-target", "1.5"]))
    assert scheduler_knobs(served) == {"pin_budget_fraction": 0.3, "admission_target": 1.5}
