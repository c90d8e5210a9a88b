"""continuum: an LLM inference engine for agent workloads."""
__version__ = "0.1.0"

from continuum.sampling_params import SamplingParams  # noqa: E402
from continuum.request import AgentInfo  # noqa: E402


def __getattr__(name):
    # LLM pulls in torch and the model code: import it only when asked for.
    if name == "LLM":
        from continuum.llm import LLM
        return LLM
    raise AttributeError(name)


__all__ = ["LLM", "SamplingParams", "AgentInfo", "__version__"]
