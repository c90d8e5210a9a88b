"""Engine configuration: one small validated dataclass per subsystem, never mutated after
construction. ``EngineArgs`` is the flat user-facing form (CLI flags, ``LLM(**kwargs)``)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from continuum.errors import ConfigError
from continuum.knobs import knob

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


DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelConfig:
    model: str | None = None          # local HF dir, .gguf file, "random[:preset]", None = default
    dtype: str = "auto"               # one of DTYPES
    seed: int = 0
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    random_config: dict | None = None
    tensor_parallel_size: int = 1     # processes (devices) the model is split across

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.dtype not in DTYPES:
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
    """The scheduler core's knobs, and every scheduling policy's knobs by name in
    ``policy_options`` (each policy reads its own, ``Policy.from_options``). After construction
    ``policy_options`` holds every policy knob, validated, defaults filled in."""

    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    policy: str = "continuum+"
    enable_chunked_prefill: bool = True
    pin_budget_fraction: float = 0.5       # of KV blocks that pins may hold (METHOD 2.1)
    program_idle_timeout: float = 600.0    # s without activity before a program is forgotten
    policy_options: dict[str, Any] = field(default_factory=dict)   # knob name -> value

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ConfigError("max_num_batched_tokens and max_num_seqs must be >= 1")
        if not 0.0 <= self.pin_budget_fraction <= 1.0:
            raise ConfigError("pin_budget_fraction must be in [0, 1]")
        if self.program_idle_timeout <= 0:
            raise ConfigError("program_idle_timeout must be > 0")
        from continuum.scheduler.policies import policy_options
        object.__setattr__(self, "policy_options", policy_options(self.policy_options))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "SchedulerConfig":
        """Flat keywords: this config's fields and any policy knob (``admission_target=1.5``)."""
        return cls(**gather_policy_knobs(cls, kwargs, "scheduler argument"))


def gather_policy_knobs(cls: type, kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """Flat ``kwargs`` as keywords of dataclass ``cls``: its own fields as given, the policy
    knobs moved into ``policy_options`` (over any given there); ``ConfigError`` names any
    other keyword with the known ones."""
    from continuum.scheduler.policies import policy_knobs
    own_names, knobs = {f.name for f in fields(cls)}, set(policy_knobs())
    unknown = sorted(set(kwargs) - own_names - knobs)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; known: "
                          f"{sorted(own_names | knobs)}")
    own = {k: v for k, v in kwargs.items() if k in own_names}
    options = {**(own.get("policy_options") or {}), **{k: v for k, v in kwargs.items() if k in knobs}}
    return {**own, "policy_options": options}


def _policy_names() -> list[str]:
    from continuum.scheduler.policies import POLICIES
    return list(POLICIES)


@dataclass(kw_only=True)
class EngineArgs:
    """Every engine knob, flat: the one place each is declared (type, default, help). The CLI
    flags (``continuum serve / chat / bench / profile``) are made from these fields
    (``continuum/cli.py``), ``LLM(model, **kwargs)`` takes them as keywords, and
    ``model_config`` / ``cache_config`` / ``scheduler_config`` hand them to the subsystems by
    name. A knob a subsystem validates takes its default from that subsystem's config.
    Scheduling-policy knobs are declared by each policy (``scheduler/policies/``) and travel in
    ``policy_options``; ``from_kwargs`` also takes them flat (``autellix_beta=4.0``)."""

    model: str | None = knob(None, "local HF dir, .gguf file, 'random[:preset]'; default: embedded "
                                   "SmolLM2-135M-Instruct")
    dtype: str = knob(ModelConfig.dtype, "weights and activations; auto: bfloat16 on CUDA and on CPUs "
                                         "with fast bf16 matmuls, else float32",
                      choices=DTYPES)
    device: str = knob("auto", "torch device (cpu, cuda, cuda:1...); auto: cuda when available, else cpu")
    seed: int = knob(ModelConfig.seed, "seed of random-weight models ('random[:preset]'); "
                                       "`continuum chat` also seeds its sampling with it")
    max_model_len: int | None = knob(None, "longest prompt + output in tokens; default: the model's "
                                           "context length")
    random_config: dict | None = knob(None, "random-weight model: config overrides (Python API only)",
                                      cli=False)
    tensor_parallel_size: int = knob(ModelConfig.tensor_parallel_size,
                                     "split the model across N processes/devices (Megatron-style "
                                     "tensor parallelism: gloo on CPU, NCCL on CUDA devices "
                                     "cuda:0..N-1; docs/architecture.md)")
    kv_cache_memory: int | str | None = knob(
        None, "KV cache size, e.g. 2GiB; default: on CUDA what is left of 90% of the GPU's memory "
              "after the weights, 2GiB on CPU")
    gpu_memory_utilization: float = knob(CacheConfig.gpu_memory_utilization,
                                         "fraction of GPU memory for weights + KV cache when "
                                         "kv_cache_memory is not given (Python API only)", cli=False)
    block_size: int = knob(CacheConfig.block_size, "tokens per KV cache block")
    max_num_seqs: int = knob(SchedulerConfig.max_num_seqs, "most requests running in one batch")
    max_num_batched_tokens: int = knob(SchedulerConfig.max_num_batched_tokens,
                                       "most tokens (prefill chunks + decodes) in one engine step")
    scheduling_policy: str = knob(SchedulerConfig.policy, "see docs/scheduling.md",
                                  choices=_policy_names)
    enable_prefix_caching: bool = knob(CacheConfig.enable_prefix_caching,
                                       "turn the prefix cache off (every prompt is computed in full)",
                                       flag="--no-prefix-caching")
    host_kv_cache_memory: int | str | None = knob(None, "host-memory KV tier (CPU offload), e.g. "
                                                        "8GiB; default: off")
    pin_budget_fraction: float = knob(SchedulerConfig.pin_budget_fraction,
                                      "fraction of KV blocks that TTL pins may hold")
    program_idle_timeout: float = knob(SchedulerConfig.program_idle_timeout,
                                       "seconds before an idle agent program is forgotten")
    program_inference: bool = knob(True, "server: do not recognise the program of a request "
                                         "without a program id (docs/agent-api.md); each is then "
                                         "a program of one turn",
                                   flag="--no-program-inference")
    enforce_eager: bool = knob(False, "CUDA: run decode steps eagerly instead of replaying "
                                      "captured CUDA graphs (slower; for debugging)")
    num_blocks_override: int | None = knob(None, "an exact KV pool size in blocks (tests)", cli=False)
    enable_chunked_prefill: bool = knob(SchedulerConfig.enable_chunked_prefill,
                                        "split long prefills into chunks of the token budget "
                                        "(Python API only)", cli=False)
    policy_options: dict[str, Any] = knob(
        help="scheduling-policy knobs by name (each policy's config; CLI: one flag each)",
        default_factory=dict, cli=False)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "EngineArgs":
        """Flat keywords: ``EngineArgs`` fields and policy knobs; unknown ones are a
        ``ConfigError`` naming the known ones."""
        return cls(**gather_policy_knobs(cls, kwargs, "engine argument"))

    def model_config(self) -> ModelConfig:
        return ModelConfig(model=self.model, dtype=self.dtype, seed=self.seed,
                           max_model_len=self.max_model_len, random_config=self.random_config,
                           tensor_parallel_size=self.tensor_parallel_size)

    def cache_config(self) -> CacheConfig:
        mem = parse_bytes(self.kv_cache_memory) if self.kv_cache_memory is not None else None
        host = parse_bytes(self.host_kv_cache_memory) if self.host_kv_cache_memory else 0
        return CacheConfig(block_size=self.block_size, kv_cache_memory=mem,
                           gpu_memory_utilization=self.gpu_memory_utilization,
                           enable_prefix_caching=self.enable_prefix_caching,
                           num_blocks_override=self.num_blocks_override, host_kv_cache_memory=host)

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(max_num_batched_tokens=self.max_num_batched_tokens,
                               max_num_seqs=self.max_num_seqs, policy=self.scheduling_policy,
                               enable_chunked_prefill=self.enable_chunked_prefill,
                               pin_budget_fraction=self.pin_budget_fraction,
                               program_idle_timeout=self.program_idle_timeout,
                               policy_options=self.policy_options)
