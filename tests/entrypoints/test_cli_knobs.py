"""Engine flags are made from the knobs (``EngineArgs`` fields, each policy's config): names,
defaults and values agree everywhere, and a policy added to the registry gets its flags, its
``--scheduling-policy`` choice, its bench name and its knobs without any other edit."""
import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from continuum.bench.runner import BenchConfig, available_policies, load_workload, run_bench
from continuum.cli import build_parser, engine_kwargs
from continuum.config import EngineArgs, SchedulerConfig
from continuum.errors import ConfigError
from continuum.knobs import add_knob_args, knob, knob_values
from continuum.scheduler import policies as registry
from continuum.scheduler.policy import Policy, make_policy

ENGINE_COMMANDS = ["bench", "chat", "profile", "serve"]

# Every engine flag spelled as users, README.md, docs/ and benchmarks/ spell it: none may change.
FLAGS = ["--model", "--dtype", "--device", "--seed", "--max-model-len", "--kv-cache-memory",
         "--block-size", "--max-num-seqs", "--max-num-batched-tokens", "--scheduling-policy",
         "--no-prefix-caching", "--host-kv-cache-memory", "--pin-budget-fraction",
         "--program-idle-timeout", "--fixed-ttl", "--autellix-num-queues", "--autellix-base-quantum",
         "--autellix-beta", "--admission-target", "--door-max-wait",
         "--enforce-eager", "--swap-budget-tokens", "--tensor-parallel-size"]


def _parse(argv: list[str]) -> argparse.Namespace:
    extra = ["--output", "x.json"] if argv[0] == "profile" else []
    return build_parser().parse_args(argv + extra)


def _flags(cmd: str) -> set[str]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[cmd]
    return {s for a in sub._actions for s in a.option_strings}


@pytest.mark.parametrize("cmd", ENGINE_COMMANDS)
def test_every_engine_flag_keeps_its_name(cmd):
    assert set(FLAGS) <= _flags(cmd)


@pytest.mark.parametrize("cmd", ENGINE_COMMANDS)
def test_flag_defaults_are_the_dataclass_defaults(cmd):
    args = EngineArgs.from_kwargs(**engine_kwargs(_parse([cmd])))     # every policy knob given
    assert args == EngineArgs(policy_options=SchedulerConfig().policy_options)
    assert args.scheduler_config() == EngineArgs().scheduler_config() == SchedulerConfig()
    assert SchedulerConfig().policy_options == {
        "fixed_ttl": 2.0, "admission_target": 1.0, "door_max_wait": 180.0, "autellix_num_queues": 7,
        "autellix_base_quantum": 1, "autellix_beta": 8.0, "swap_budget_tokens": 4096}


def test_flags_reach_the_engine_args_and_the_policy():
    a = _parse(["serve", "--no-prefix-caching", "--enforce-eager", "--swap-budget-tokens", "8",
                "--autellix-beta", "3", "--kv-cache-memory", "4MiB", "--max-model-len", "64",
                "--scheduling-policy", "infercept"])
    args = EngineArgs.from_kwargs(**engine_kwargs(a))
    assert (args.enable_prefix_caching, args.enforce_eager) == (False, True)
    assert (args.kv_cache_memory, args.max_model_len) == ("4MiB", 64)
    sc = args.scheduler_config()
    assert make_policy(sc.policy, sc).swap_budget_tokens == 8
    assert make_policy("autellix", sc).beta == 3.0


def test_bad_knobs_are_config_errors():
    with pytest.raises(ConfigError, match="unknown engine argument.*'swap_budget_tokens'"):
        EngineArgs.from_kwargs(swap_budget_token=1)
    with pytest.raises(ConfigError, match="swap_budget_tokens must be >= 0"):
        EngineArgs.from_kwargs(swap_budget_tokens=-1).scheduler_config()
    with pytest.raises(ConfigError, match="unknown policy knob"):
        SchedulerConfig(policy_options={"ttl": 1.0})
    with pytest.raises(SystemExit):
        _parse(["chat", "--scheduling-policy", "sjf"])


# -- adding a policy: the file docs/scheduling.md shows, and one registry line ----------------
def _doc_policy() -> type[Policy]:
    """Run the example file of docs/scheduling.md ("Adding a policy") as written."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scheduling.md").read_text()
    code = re.search(r"### Adding a policy.*?```python\n(.*?)```", doc, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/scheduling.md", "exec"), namespace)
    return namespace["SJFPolicy"]


def test_the_documented_policy_is_everywhere_after_one_registry_line(monkeypatch):
    sjf = _doc_policy()
    monkeypatch.setitem(registry.POLICIES, "sjf", sjf)                 # the registry line
    a = _parse(["serve", "--scheduling-policy", "sjf", "--sjf-output-guess", "64"])
    args = EngineArgs.from_kwargs(**engine_kwargs(a))
    policy = make_policy(args.scheduling_policy, args.scheduler_config())
    assert isinstance(policy, sjf) and policy.guess == 64
    assert EngineArgs.from_kwargs(sjf_output_guess=7).scheduler_config().policy_options["sjf_output_guess"] == 7
    assert "sjf" in available_policies()
    workload = load_workload("swe", 3, 0, 1.0)
    run = run_bench([workload], BenchConfig(policies=["sjf"], loads=[0.1], progress=False))["runs"][0]
    assert run["policy"] == "sjf" and run["summary"]["completed"] == 3


def test_two_policies_may_not_declare_one_knob(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Clash:
        fixed_ttl: float = knob(1.0, "clashes with fixed-ttl's knob")

    class ClashPolicy(Policy):
        name = "clash"
        config_cls = Clash

    monkeypatch.setitem(registry.POLICIES, "clash", ClashPolicy)
    with pytest.raises(TypeError, match="'fixed_ttl' is declared twice"):
        registry.policy_knobs()


def test_a_field_that_is_not_a_knob_is_refused():
    @dataclasses.dataclass
    class Plain:
        size: int = 3

    with pytest.raises(TypeError, match=r"\['size'\] are not knobs"):
        add_knob_args(argparse.ArgumentParser(), Plain)

    @dataclasses.dataclass
    class OnByDefault:
        fast: bool = knob(True, "no negative flag given")

    with pytest.raises(TypeError, match="give its negative flag"):
        add_knob_args(argparse.ArgumentParser(), OnByDefault)
    with pytest.raises(ValueError, match="help text"):
        knob(1)


def test_negative_flag_round_trip():
    @dataclasses.dataclass
    class Cache:
        enable_cache: bool = knob(True, "turn the cache off", flag="--no-cache")
        size: str | None = knob(None, "a size, e.g. 2GiB")
        ratio: float = knob(0.5, "a ratio, 100% = 1")

    p = argparse.ArgumentParser()
    add_knob_args(p, Cache)
    assert knob_values(p.parse_args([]), Cache) == {"enable_cache": True, "size": None, "ratio": 0.5}
    assert knob_values(p.parse_args(["--no-cache", "--size", "2GiB", "--ratio", "0.25"]), Cache) == {
        "enable_cache": False, "size": "2GiB", "ratio": 0.25}
    assert "100% = 1" in p.format_help()
