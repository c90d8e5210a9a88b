"""Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2, Qwen3) over flattened tokens.

One class covers the family; the differences are read from the HF config:

- Qwen2: bias on q/k/v (not on o); Llama/Mistral/Qwen3: bias on q/k/v/o iff ``attention_bias``.
- Qwen3: per-head RMSNorm on q and k before rotary; ``head_dim`` may differ from
  ``hidden_size // num_attention_heads``.
- rope: ``rope_theta`` and ``rope_scaling`` (``llama3``/``linear``), read from either the old
  top-level fields or transformers 5's ``rope_parameters`` dict.

For speed (vLLM/nano-vllm style) q/k/v are one ``qkv_proj`` matmul and gate/up one
``gate_up_proj`` matmul; ``load_weights`` maps HF checkpoint names into those merged params.
The batch has no batch dimension: the runner concatenates the new tokens of every sequence
and the paged :class:`~continuum.layers.attention.Attention` reads the batch layout from the
forward context.

Tensor parallelism (``group``: this rank's :class:`~continuum.layers.tp_group.TPGroup`):
the layers are built at the rank's shard shapes (``models/tp_shard.py`` says which heads,
rows and columns), o_proj and down_proj are each followed by one all-reduce, and the
embedding and LM head are vocabulary-parallel (``layers/linear_parallel.py``). Without a
group the model is exactly the single-device one.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from continuum.errors import ModelLoadError, UnsupportedArchitectureError
from continuum.layers.activation import SiluAndMul
from continuum.layers.attention import Attention
from continuum.layers.layernorm import RMSNorm
from continuum.layers.linear_parallel import ParallelLMHead, VocabParallelEmbedding
from continuum.layers.rotary import RotaryEmbedding, rope_type_of
from continuum.layers.tp_group import TPGroup
from continuum.models import tp_shard
from continuum.models.tp_shard import TPLayout

# HF architecture name -> model_type; the config's ``architectures[0]`` wins over model_type.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}


def resolve_model_type(config) -> str:
    """The family of ``config`` ('llama'|'mistral'|'qwen2'|'qwen3') or UnsupportedArchitectureError."""
    archs = getattr(config, "architectures", None) or []
    for arch in archs:
        if arch in SUPPORTED_ARCHITECTURES:
            return SUPPORTED_ARCHITECTURES[arch]
    model_type = getattr(config, "model_type", None)
    if not archs and model_type in SUPPORTED_ARCHITECTURES.values():
        return model_type
    got = archs or [model_type]
    raise UnsupportedArchitectureError(
        f"unsupported architecture {got}; continuum supports {sorted(SUPPORTED_ARCHITECTURES)}")


def rope_config(config) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling or None), from transformers 4 or 5 style configs."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        scaling = params if rope_type_of(params) != "default" else None
        return float(params["rope_theta"]), scaling
    theta = float(getattr(config, "rope_theta", None) or 10000.0)
    scaling = getattr(config, "rope_scaling", None)
    return theta, (scaling if rope_type_of(scaling) != "default" else None)


def sliding_window_of(config) -> int | None:
    """The attention window if the config enables one (we attend fully, so the loader caps
    max_model_len to it: within the window full causal attention is identical)."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    if resolve_model_type(config) in ("qwen2", "qwen3") and not getattr(config, "use_sliding_window", False):
        return None
    return int(window)


def _linear(n_in: int, n_out: int, bias: bool, dtype: torch.dtype | None = None) -> nn.Linear:
    # Uninitialised: weights come from load_weights or init_random_weights; skipping the
    # kaiming init saves seconds on multi-hundred-million-parameter models. Allocated in the
    # final dtype: casting garbage fp32 weights to bf16 afterwards cost a second per start.
    return skip_init(nn.Linear, n_in, n_out, bias=bias, dtype=dtype)


class LlamaAttention(nn.Module):
    def __init__(self, config, model_type: str, dtype: torch.dtype | None = None,
                 tp: tuple[TPLayout, TPGroup] | None = None):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads, self.num_kv_heads, self.head_dim = tp_shard.attention_shape(config)
        # tensor parallel: this rank's heads; o_proj's partial sums are all-reduced
        self.reduce = None if tp is None else tp[1].all_reduce
        if tp is not None:
            self.num_heads, self.num_kv_heads = tp[0].heads, tp[0].kv_heads
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        attention_bias = bool(getattr(config, "attention_bias", False))
        qkv_bias = attention_bias or model_type == "qwen2"
        self.qkv_proj = _linear(hidden, self.q_size + 2 * self.kv_size, qkv_bias, dtype)
        self.o_proj = _linear(self.q_size, hidden, attention_bias and model_type != "qwen2", dtype)
        self.qk_norm = model_type == "qwen3"
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, dtype)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, dtype)
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim ** -0.5)

    def forward(self, x: torch.Tensor, cs: torch.Tensor, rotary: RotaryEmbedding) -> torch.Tensor:
        T = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.qk_norm:
            q = self.q_norm(q.reshape(T, self.num_heads, self.head_dim)).view(T, -1)
            k = self.k_norm(k.reshape(T, self.num_kv_heads, self.head_dim)).view(T, -1)
        q, k = rotary.rotate(q, cs), rotary.rotate(k, cs)
        out = self.o_proj(self.attn(q, k, v))
        return out if self.reduce is None else self.reduce(out)


class LlamaMLP(nn.Module):
    def __init__(self, config, dtype: torch.dtype | None = None,
                 tp: tuple[TPLayout, TPGroup] | None = None):
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.intermediate = config.intermediate_size if tp is None else tp[0].intermediate
        self.gate_up_proj = _linear(config.hidden_size, 2 * self.intermediate, bias, dtype)
        self.down_proj = _linear(self.intermediate, config.hidden_size, bias, dtype)
        self.act_fn = SiluAndMul()
        self.reduce = None if tp is None else tp[1].all_reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.down_proj(self.act_fn(self.gate_up_proj(x)))
        return out if self.reduce is None else self.reduce(out)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config, model_type: str, dtype: torch.dtype | None = None,
                 tp: tuple[TPLayout, TPGroup] | None = None):
        super().__init__()
        self.self_attn = LlamaAttention(config, model_type, dtype, tp)
        self.mlp = LlamaMLP(config, dtype, tp)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)

    def forward(self, x, residual, cs, rotary):
        """Pre-norm block with the residual carried separately: returns (mlp_out, residual)."""
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(x, cs, rotary)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    def __init__(self, config, model_type: str, dtype: torch.dtype | None = None,
                 tp: tuple[TPLayout, TPGroup] | None = None):
        super().__init__()
        if tp is None:
            self.embed_tokens = skip_init(nn.Embedding, config.vocab_size, config.hidden_size, dtype=dtype)
        else:
            self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp[1], dtype)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, model_type, dtype, tp) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        attn = self.layers[0].self_attn
        theta, scaling = rope_config(config)
        # One table shared by all layers (a per-layer copy would cost GBs at 128k context).
        self.rotary_emb = RotaryEmbedding(attn.head_dim, config.max_position_embeddings, theta, scaling)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        cs = self.rotary_emb.get_cos_sin(positions)
        residual = None
        for layer in self.layers:
            x, residual = layer(x, residual, cs, self.rotary_emb)
        x, _ = self.norm(x, residual)
        return x


# (merged param, HF sub-module name, shard id) for the stacked projections.
_STACKED = (
    ("qkv_proj", "q_proj", "q"), ("qkv_proj", "k_proj", "k"), ("qkv_proj", "v_proj", "v"),
    ("gate_up_proj", "gate_proj", 0), ("gate_up_proj", "up_proj", 1),
)
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")


class LlamaForCausalLM(nn.Module):
    """The model the runner drives.

    ``dtype`` (default: torch's default dtype) is the parameters' dtype; buffers such as the
    rotary table are fp32 until a ``.to(dtype)``.
    Invariants: parameters are *uninitialised* after construction until ``load_weights`` or
    ``init_random_weights`` fills them; ``positions[t] < config.max_position_embeddings``;
    with a tied config ``lm_head.weight`` *is* ``model.embed_tokens.weight``.
    Attributes for the runner: ``config``, ``num_layers``, ``num_kv_heads``, ``head_dim``,
    ``hidden_size``, ``vocab_size`` and ``attention_layers()`` (where to bind KV caches).
    With a tensor-parallel ``group`` the parameters and ``num_heads``/``num_kv_heads`` are
    this rank's (``tp_layout``), ``load_weights`` takes tensors already cut by
    ``tp_shard.shard``, and ``forward``/``compute_logits`` must run on every rank together.
    """

    def __init__(self, config, dtype: torch.dtype | None = None, group: TPGroup | None = None):
        super().__init__()
        self.model_type = resolve_model_type(config)
        if getattr(config, "hidden_act", "silu") != "silu":
            raise UnsupportedArchitectureError(f"hidden_act {config.hidden_act!r} is not supported (only silu)")
        self.config = config
        self.tp_layout = None if group is None else TPLayout.of(config, group.rank, group.size)
        tp = None if group is None else (self.tp_layout, group)
        self.model = LlamaModel(config, self.model_type, dtype, tp)
        attn = self.model.layers[0].self_attn
        self.num_layers = config.num_hidden_layers
        self.num_heads = attn.num_heads
        self.num_kv_heads = attn.num_kv_heads
        self.head_dim = attn.head_dim
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        if group is None:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, False, dtype)
        else:
            self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, group, dtype)
        if self.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def attention_layers(self) -> list[Attention]:
        """The paged Attention module of each layer, in layer order."""
        return [layer.self_attn.attn for layer in self.model.layers]

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_ids, positions: LongTensor [T] (all sequences' new tokens) -> hidden [T, hidden]."""
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] (e.g. only each sequence's last token) -> logits [N, vocab] in the
        model's dtype: the sampler reads them as they are for greedy rows and upcasts to fp32
        wherever it computes anything else (a [N, vocab] fp32 copy per step is not free)."""
        return self.lm_head(hidden)

    def set_rope_freq_factors(self, factors: torch.Tensor) -> None:
        """Install llama.cpp-style per-frequency rope divisors (GGUF ``rope_freqs``)."""
        self.model.rotary_emb.set_freq_factors(factors)

    @torch.no_grad()
    def init_random_weights(self, seed: int = 0) -> None:
        """HF-style init, reproducible for a seed whatever the device/dtype: Linear/Embedding
        weights ~ N(0, initializer_range), biases 0, norm weights 1. Drawn on the CPU in fp32
        from a private generator (the global RNG is untouched). A tensor-parallel rank draws
        the full tensors in the same order and keeps its slices: the same weights at any size."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        std = float(getattr(self.config, "initializer_range", 0.02))
        lay = self.tp_layout
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif lay is None:
                p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=gen))
            else:
                full = torch.empty(tp_shard.full_shape(name, tuple(p.shape), lay), dtype=torch.float32)
                p.copy_(tp_shard.shard(name, full.normal_(0.0, std, generator=gen), lay))

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the (merged) parameters, casting to the param dtype.

        Raises ModelLoadError on an unknown name, a shape mismatch, or (after the iterable is
        exhausted) any parameter or merged shard that received nothing.
        """
        params = dict(self.named_parameters())          # tied lm_head appears once, as embed
        loaded: dict[str, set] = {}
        for name, tensor in weights:
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                name = "model.embed_tokens.weight"       # same storage; either copy will do
            target, shard = name, None
            for merged, part, shard_id in _STACKED:
                if f".{part}." in name:
                    target, shard = name.replace(f".{part}.", f".{merged}."), shard_id
                    break
            param = params.get(target)
            if param is None:
                raise ModelLoadError(f"unexpected weight {name!r} for {type(self).__name__} "
                                     f"({self.model_type}); checkpoint and config disagree")
            dst = param if shard is None else param.narrow(0, *self._shard_range(target, shard))
            if tuple(dst.shape) != tuple(tensor.shape):
                raise ModelLoadError(f"weight {name!r} has shape {tuple(tensor.shape)}, "
                                     f"expected {tuple(dst.shape)}")
            dst.copy_(tensor)
            # A merged name given whole (our own state_dict) fills every shard at once.
            done = self._expected_shards(target) if shard is None else (shard,)
            loaded.setdefault(target, set()).update(done)
        missing = []
        for name in params:
            want = self._expected_shards(name)
            got = loaded.get(name, set())
            missing += [name if s is None else f"{name}[{s}]" for s in want if s not in got]
        if missing:
            more = f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""
            raise ModelLoadError(f"checkpoint is missing weights: {missing[:8]}{more}")

    def _expected_shards(self, name: str) -> tuple:
        if ".qkv_proj." in name:
            return ("q", "k", "v")
        if ".gate_up_proj." in name:
            return (0, 1)
        return (None,)

    def _shard_range(self, name: str, shard) -> tuple[int, int]:
        """(offset, length) of a shard along dim 0 of a merged weight or bias."""
        if shard in ("q", "k", "v"):
            attn = self.model.layers[0].self_attn
            return {"q": (0, attn.q_size), "k": (attn.q_size, attn.kv_size),
                    "v": (attn.q_size + attn.kv_size, attn.kv_size)}[shard]
        inter = self.model.layers[0].mlp.intermediate
        return (shard * inter, inter)
