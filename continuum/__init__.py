"""continuum: an LLM inference engine for agent workloads."""
__version__ = "0.1.0"
