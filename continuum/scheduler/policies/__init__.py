"""Scheduling policies by name (``--scheduling-policy``). See docs/scheduling.md."""
from __future__ import annotations

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
