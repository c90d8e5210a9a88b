"""The registry of scheduling policies: ``POLICIES`` is the one table that ``--scheduling-policy``
(its choices), the policy knobs' flags, ``continuum bench --policies`` and the engine
(``make_policy``) read. Adding a policy: one file here, one line in the tuple below
(docs/scheduling.md, "Adding a policy"). See docs/scheduling.md for what each one does.

Invariant: knob names are unique across policies (they are flat ``EngineArgs`` keywords and
CLI flags); a clash fails at import.
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


def _knobs() -> dict[str, dataclasses.Field]:
    knobs: dict[str, dataclasses.Field] = {}
    for cls in POLICIES.values():
        for f in dataclasses.fields(cls.config_cls) if cls.config_cls is not None else ():
            if knobs.get(f.name, f) is not f:
                raise TypeError(f"policy knob {f.name!r} is declared twice (by {cls.__name__} too)")
            knobs[f.name] = f
    return knobs


# Every policy's knobs by name, in registry order (a subclass shares its parent's config).
POLICY_KNOBS: dict[str, dataclasses.Field] = _knobs()


def policy_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Every policy knob's value: ``options`` over the defaults, validated by each policy's
    config (``ConfigError`` on a bad value or an unknown name)."""
    unknown = sorted(set(options) - set(POLICY_KNOBS))
    if unknown:
        raise ConfigError(f"unknown policy knob(s) {unknown}; known: {sorted(POLICY_KNOBS)}")
    out: dict[str, Any] = {}
    for cls in POLICIES.values():
        if cls.config_cls is not None:
            out.update(dataclasses.asdict(pick(cls.config_cls, options)))
    return out
