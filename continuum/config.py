"""Engine configuration: one small validated dataclass per subsystem, never mutated after
construction. ``EngineArgs`` is the flat user-facing form (CLI flags, ``LLM(**kwargs)``)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from continuum.errors import ConfigError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | float | str) -> int:
    """'2GiB' -> 2147483648, '512MB' -> 512000000, 1024 -> 1024."""
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ConfigError(f"memory size must be positive, got {value}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot parse memory size {value!r}: use e.g. '2GiB', '512MiB', '1e9'")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ConfigError(f"memory size must be positive, got {value!r}")
    return n


@dataclass(frozen=True)
class ModelConfig:
    model: str | None = None          # local HF dir, .gguf file, "random[:preset]", None = default
    dtype: str = "auto"               # auto | float32 | bfloat16 | float16
    seed: int = 0
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    random_config: dict | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ConfigError(f"max_model_len must be >= 2, got {self.max_model_len}")


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16
    kv_cache_memory: int | None = None       # bytes; None = gpu_memory_utilization on GPU, 2 GiB on CPU
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    num_blocks_override: int | None = None   # tests: an exact pool size
    host_kv_cache_memory: int = 0            # bytes of host-memory KV tier (CPU offload); 0 = off

    def __post_init__(self) -> None:
        if self.host_kv_cache_memory < 0:
            raise ConfigError("host_kv_cache_memory must be >= 0")
        if self.block_size < 1 or self.block_size & (self.block_size - 1) or self.block_size > 256:
            raise ConfigError(f"block_size must be a power of two <= 256, got {self.block_size}")
        if not (0.05 <= self.gpu_memory_utilization <= 0.99):
            raise ConfigError("gpu_memory_utilization must be in [0.05, 0.99]")
        if self.num_blocks_override is not None and self.num_blocks_override < 1:
            raise ConfigError("num_blocks_override must be >= 1")


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    policy: str = "continuum+"
    enable_chunked_prefill: bool = True
    pin_budget_fraction: float = 0.5       # of KV blocks that pins may hold (METHOD 2.1)
    program_idle_timeout: float = 600.0    # s without activity before a program is forgotten
    fixed_ttl: float = 2.0                 # fixed-ttl policy: the TTL and the tool-mean bound
    autellix_num_queues: int = 7
    autellix_base_quantum: int = 1         # steps in queue 0; doubles per queue
    autellix_beta: float = 8.0             # starvation ratio that promotes to queue 0
    admission_target: float = 1.0         # continuum+: working set (peak estimate) / KV blocks
    door_max_wait: float = 600.0           # continuum+: s a new program waits at the door at most

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ConfigError("max_num_batched_tokens and max_num_seqs must be >= 1")
        if not 0.0 <= self.pin_budget_fraction <= 1.0:
            raise ConfigError("pin_budget_fraction must be in [0, 1]")
        if self.program_idle_timeout <= 0 or self.fixed_ttl < 0:
            raise ConfigError("program_idle_timeout must be > 0 and fixed_ttl >= 0")
        if self.autellix_num_queues < 1 or self.autellix_base_quantum < 1 or self.autellix_beta <= 0:
            raise ConfigError("autellix_num_queues and autellix_base_quantum must be >= 1, autellix_beta > 0")
        if self.admission_target <= 0 or self.door_max_wait <= 0:
            raise ConfigError("admission_target and door_max_wait must be > 0")


@dataclass
class EngineArgs:
    """Every engine knob, flat. ``LLM(model, **kwargs)`` and the CLI both build one of these."""

    model: str | None = None
    dtype: str = "auto"
    seed: int = 0
    max_model_len: int | None = None
    random_config: dict | None = None
    block_size: int = 16
    kv_cache_memory: int | str | None = None
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    num_blocks_override: int | None = None
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    scheduling_policy: str = "continuum+"
    enable_chunked_prefill: bool = True
    device: str = "auto"
    host_kv_cache_memory: int | str | None = None
    pin_budget_fraction: float = 0.5
    program_idle_timeout: float = 600.0
    fixed_ttl: float = 2.0
    autellix_num_queues: int = 7
    autellix_base_quantum: int = 1
    autellix_beta: float = 8.0
    admission_target: float = 1.0
    door_max_wait: float = 600.0

    @classmethod
    def from_kwargs(cls, **kwargs) -> "EngineArgs":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown engine argument(s) {unknown}; known: {sorted(known)}")
        return cls(**kwargs)

    def model_config(self) -> ModelConfig:
        return ModelConfig(self.model, self.dtype, self.seed, self.max_model_len, self.random_config)

    def cache_config(self) -> CacheConfig:
        mem = parse_bytes(self.kv_cache_memory) if self.kv_cache_memory is not None else None
        host = parse_bytes(self.host_kv_cache_memory) if self.host_kv_cache_memory else 0
        return CacheConfig(self.block_size, mem, self.gpu_memory_utilization,
                           self.enable_prefix_caching, self.num_blocks_override, host)

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(self.max_num_batched_tokens, self.max_num_seqs,
                               self.scheduling_policy, self.enable_chunked_prefill,
                               self.pin_budget_fraction, self.program_idle_timeout, self.fixed_ttl,
                               self.autellix_num_queues, self.autellix_base_quantum, self.autellix_beta,
                               self.admission_target, self.door_max_wait)
