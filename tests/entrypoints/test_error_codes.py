"""An overload error's body names its cause through ``EngineOverloadedError.code`` (a real
attribute, so renaming it fails here instead of silently sending the generic code)."""
from continuum.distributed.replica_pool import ReplicaUnavailableError
from continuum.engine.async_engine import EngineOverloadedError
from continuum.entrypoints.openai.errors import to_openai_error


def test_overload_error_bodies_name_their_cause():
    full = to_openai_error(EngineOverloadedError("the waiting queue is full"))
    gone = to_openai_error(ReplicaUnavailableError("no engine replica is available"))
    assert (full.status, full.body()["error"]["code"]) == (503, "overloaded")
    assert (gone.status, gone.body()["error"]["code"]) == (503, "replica_unavailable")
    assert gone.headers["Retry-After"] == full.headers["Retry-After"]
