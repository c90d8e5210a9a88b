"""The bench's plots: nothing empty is written, and every series keeps its own colour and style."""
import json
import warnings

from continuum.bench.plots import make_plots, pinned_kv_figure, policy_colors
from continuum.cli import main

SIM = ["--target", "sim", "--num-blocks", "400", "--no-progress"]
SWE = ["--workload", "swe", "--num-programs", "4", "--scale", "0.05", "--jps", "1"]


def _runs(tmp_path, policies: str):
    """(runs of results.json, out folder) of a small sim bench, with every warning an error."""
    out = tmp_path / policies.replace(",", "_")
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # matplotlib's "No artists with labels" included
        assert main(["bench", *SWE, "--policies", policies, *SIM, "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())["runs"], out


def test_no_pinned_kv_plot_when_no_policy_pinned(tmp_path, capsys):
    """vllm never pins: no swe_pinned_kv.png (not an empty one), none printed, no warning."""
    runs, out = _runs(tmp_path, "vllm")
    assert all(p["pinned_blocks"] == 0 for p in runs[0]["timeline"]) and runs[0]["timeline"]
    assert not (out / "swe_pinned_kv.png").exists()
    assert "_pinned_kv.png" not in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json", "swe_jct_cdf.png"]


def test_runs_without_a_timeline_or_a_finished_program_write_no_plot(tmp_path):
    """An http run has no KV timeline; a run where no program finished has no JCT: no file, no warning."""
    summary = {"jct_mean": None, "programs": 1}
    runs = [{"workload": "w", "jps": 1.0, "policy": "server", "jcts": [], "timeline": [], "summary": summary}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_plots(runs, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_every_pinned_kv_series_has_its_own_colour_and_style(tmp_path):
    """All policies at one load: each policy one colour; its pinned line solid, its KV in use
    dotted; a policy that never pinned draws no flat pinned line; no two lines alike."""
    runs, out = _runs(tmp_path, "all")
    assert (out / "swe_pinned_kv.png").exists()
    policies = [r["policy"] for r in runs]
    colors = policy_colors(policies)
    fig = pinned_kv_figure("swe", runs, colors)
    lines = fig.axes[0].get_lines()
    styles = [(tuple(line.get_color()), line.get_linestyle()) for line in lines]
    assert len(set(styles)) == len(styles)
    pinned = {r["policy"] for r in runs if any(p["pinned_blocks"] for p in r["timeline"])}
    assert pinned and pinned != set(policies)
    assert sorted(line.get_label() for line in lines) == sorted(
        [f"{p} KV in use" for p in policies] + [f"{p} pinned" for p in pinned])
    for line in lines:
        label = line.get_label()
        policy = label.removesuffix(" pinned").removesuffix(" KV in use")
        assert tuple(line.get_color()) == tuple(colors[policy])
        assert line.get_linestyle() == ("-" if label.endswith(" pinned") else ":")


def test_policy_colours_stay_distinct_past_the_default_cycle():
    for n in (7, 10, 14, 20, 33):
        colors = list(policy_colors([f"p{i}" for i in range(n)]).values())
        assert len(set(colors)) == n
