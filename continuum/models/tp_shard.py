"""Which slice of each checkpoint tensor a tensor-parallel rank holds (Megatron-LM layout).

Rank r of N holds:

- q heads ``[r * H/N, (r + 1) * H/N)``: rows of ``q_proj``, columns of ``o_proj``;
- KV heads ``[r * K // N, ...)``, ``max(1, K/N)`` of them: split when ``K >= N``; when
  ``K < N`` each KV head is replicated on ``N/K`` consecutive ranks, which are exactly the
  ranks whose q heads it serves (GQA group ``H/K`` = ``N/K`` ranks' worth of q heads);
- intermediate rows ``[r * I/N, ...)`` of ``gate_proj``/``up_proj``, columns of ``down_proj``;
- vocabulary rows ``[r * ceil(V/N), ...)`` of the embedding and the LM head, zero-padded;
- every norm (and Qwen3's per-head q/k norms) whole;
- the biases of the row-parallel ``o_proj``/``down_proj`` on rank 0 only (zeros elsewhere):
  the all-reduce after them adds them exactly once.

:func:`shard` cuts a tensor by its HF name (or our merged ``qkv_proj``/``gate_up_proj``
name, given whole) from anything indexable like a tensor: a tensor, or a safetensors
``get_slice`` handle, which reads only the rank's bytes from the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from continuum.errors import ConfigError


def attention_shape(config) -> tuple[int, int, int]:
    """(query heads, KV heads, head size) of an HF config: KV heads default to the query heads
    (no GQA) and the head size to hidden / heads, as in transformers."""
    heads = config.num_attention_heads
    return (heads, getattr(config, "num_key_value_heads", None) or heads,
            getattr(config, "head_dim", None) or config.hidden_size // heads)


@dataclass(frozen=True)
class TPLayout:
    """Rank ``rank`` of ``size``'s share of a model of these global sizes."""

    rank: int
    size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int

    @classmethod
    def of(cls, config, rank: int, size: int) -> "TPLayout":
        """The layout for an HF config; ConfigError if the shapes do not split ``size`` ways."""
        heads, kv, head_dim = attention_shape(config)
        inter = config.intermediate_size
        bad = []
        if heads % size:
            bad.append(f"num_attention_heads {heads}")
        if kv % size and size % kv:
            bad.append(f"num_key_value_heads {kv} (neither a multiple nor a divisor of it)")
        if inter % size:
            bad.append(f"intermediate_size {inter}")
        if bad:
            raise ConfigError(f"tensor_parallel_size {size} does not divide the model's "
                              f"{', '.join(bad)}")
        return cls(rank, size, heads, kv, head_dim, inter, config.vocab_size)

    @property
    def heads(self) -> int:
        return self.num_heads // self.size

    @property
    def kv_heads(self) -> int:
        return max(1, self.num_kv_heads // self.size)

    @property
    def kv_start(self) -> int:
        """The first global KV head this rank holds."""
        return self.rank * self.num_kv_heads // self.size

    @property
    def intermediate(self) -> int:
        return self.intermediate_size // self.size

    @property
    def vocab_per_rank(self) -> int:
        return -(-self.vocab_size // self.size)


def _rows(src: Any, start: int, n: int, dim: int) -> torch.Tensor:
    return src[start:start + n] if dim == 0 else src[:, start:start + n]


def _whole(src: Any) -> torch.Tensor:
    return src if isinstance(src, torch.Tensor) else src[:]


def shard(name: str, src: Any, lay: TPLayout) -> torch.Tensor:
    """This rank's part of tensor ``name`` (full tensor or safetensors slice ``src``)."""
    hd = lay.head_dim
    if ".qkv_proj." in name:            # merged, given whole: shard q, k and v apart
        full = _whole(src)
        q, k, v = full.split([lay.num_heads * hd, lay.num_kv_heads * hd, lay.num_kv_heads * hd])
        return torch.cat([shard(name.replace("qkv_proj", p), t, lay)
                          for p, t in (("q_proj", q), ("k_proj", k), ("v_proj", v))])
    if ".gate_up_proj." in name:
        gate, up = _whole(src).split([lay.intermediate_size] * 2)
        return torch.cat([shard(name.replace("gate_up_proj", p), t, lay)
                          for p, t in (("gate_proj", gate), ("up_proj", up))])
    if ".q_proj." in name:
        return _rows(src, lay.rank * lay.heads * hd, lay.heads * hd, 0)
    if ".k_proj." in name or ".v_proj." in name:
        return _rows(src, lay.kv_start * hd, lay.kv_heads * hd, 0)
    if ".gate_proj." in name or ".up_proj." in name:
        return _rows(src, lay.rank * lay.intermediate, lay.intermediate, 0)
    if name.endswith((".o_proj.weight", ".down_proj.weight")):
        width = lay.heads * hd if ".o_proj." in name else lay.intermediate
        return _rows(src, lay.rank * width, width, 1)
    if name.endswith((".o_proj.bias", ".down_proj.bias")):
        full = _whole(src)
        return full if lay.rank == 0 else torch.zeros_like(full)
    if name.endswith(("embed_tokens.weight", "lm_head.weight")):
        per = lay.vocab_per_rank
        start = min(lay.rank * per, lay.vocab_size)
        part = _rows(src, start, min(per, lay.vocab_size - start), 0)
        if part.shape[0] < per:          # the last rank's padding rows: never looked up
            part = torch.cat([part, part.new_zeros(per - part.shape[0], *part.shape[1:])])
        return part
    return _whole(src)


def full_shape(name: str, local: tuple[int, ...], lay: TPLayout) -> tuple[int, ...]:
    """The unsharded shape of our parameter ``name`` whose rank-local shape is ``local``
    (seeded random models draw the full tensors, so every ``size`` gives the same weights)."""
    hd = lay.head_dim
    if ".qkv_proj." in name:
        return ((lay.num_heads + 2 * lay.num_kv_heads) * hd,) + tuple(local[1:])
    if ".gate_up_proj." in name:
        return (2 * lay.intermediate_size,) + tuple(local[1:])
    if name.endswith(".o_proj.weight"):
        return (local[0], lay.num_heads * hd)
    if name.endswith(".down_proj.weight"):
        return (local[0], lay.intermediate_size)
    if name.endswith(("embed_tokens.weight", "lm_head.weight")):
        return (lay.vocab_size, local[1])
    return tuple(local)
