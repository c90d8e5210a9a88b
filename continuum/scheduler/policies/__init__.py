"""The registry of scheduling policies: ``POLICIES`` is the one table that ``--scheduling-policy``
(its choices), the policy knobs' flags, ``continuum bench --policies`` and the engine
(``make_policy``) read. Adding a policy: one file here, one line in the tuple below
(docs/scheduling.md, "Adding a policy"). See docs/scheduling.md for what each one does.

Everything reads the table when it runs (nothing copies it at import). Invariant: knob names
are unique across policies (they are flat ``EngineArgs`` keywords and CLI flags); a clash
fails at import.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from continuum.errors import ConfigError
from continuum.knobs import pick
from continuum.scheduler.policies.autellix import AutellixPolicy
from continuum.scheduler.policies.continuum import ContinuumPolicy
from continuum.scheduler.policies.continuum_plus import ContinuumPlusPolicy
from continuum.scheduler.policies.fixed_ttl import FixedTTLPolicy
from continuum.scheduler.policies.infercept import InferCeptPolicy
from continuum.scheduler.policies.program_fcfs import ProgramFCFSPolicy
from continuum.scheduler.policy import Policy, VllmPolicy

POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (VllmPolicy, ProgramFCFSPolicy, FixedTTLPolicy, ContinuumPolicy,
                        ContinuumPlusPolicy, AutellixPolicy, InferCeptPolicy)
}


def policy_configs() -> list[type]:
    """Each policy's knob dataclass once, in registry order (a subclass that declares no
    config of its own shares its parent's)."""
    return list(dict.fromkeys(p.config_cls for p in POLICIES.values() if p.config_cls is not None))


def policy_knobs() -> dict[str, dataclasses.Field]:
    """Every policy knob by name, in registry order; ``TypeError`` if two configs declare one."""
    knobs: dict[str, dataclasses.Field] = {}
    for cfg in policy_configs():
        for f in dataclasses.fields(cfg):
            if f.name in knobs:
                raise TypeError(f"policy knob {f.name!r} is declared twice ({cfg.__name__} too)")
            knobs[f.name] = f
    return knobs


policy_knobs()      # a clash fails at import, not at the first engine built


def policy_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Every policy knob's value: ``options`` over the defaults, validated by each policy's
    config (``ConfigError`` on a bad value or an unknown name)."""
    known = policy_knobs()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown policy knob(s) {unknown}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    for cfg in policy_configs():
        out.update(dataclasses.asdict(pick(cfg, options)))
    return out
