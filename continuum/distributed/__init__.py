"""Multi-replica serving: a pure program-affinity router (``router``, ``policies``), Ray engine
replicas behind the ``AsyncLLMEngine`` interface (``client``, ``replica_pool``, ``replica``),
the server runner (``server``) and the multi-replica simulator (``sim_routing``).

Only ``router``/``policies``/``merge`` import nothing heavy; Ray and torch load on demand.
"""
from continuum.distributed.policies import POLICIES as ROUTING_POLICIES
from continuum.distributed.router import Decision, NoReplicaError, Router

__all__ = ["ROUTING_POLICIES", "Decision", "NoReplicaError", "Router"]
