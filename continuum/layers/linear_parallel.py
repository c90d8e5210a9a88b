"""The vocabulary-parallel layers of a tensor-parallel model (Megatron-LM style).

Column-parallel linears (q/k/v, gate/up) and row-parallel ones (o, down) are plain
``nn.Linear`` of the rank's shard shape, so CPU weight packing and the fused layers apply to
them unchanged; the model adds the one all-reduce after each row-parallel pair
(``continuum/models/llama.py``). What needs its own module is the vocabulary split:

- :class:`VocabParallelEmbedding`: rank r holds rows ``[r * per_rank, (r + 1) * per_rank)``
  of the embedding (the last rank's tail past the vocabulary is zero padding); a token
  outside a rank's rows contributes zeros, and one all-reduce gives every rank the full
  embedding (exact: one non-zero term per element).
- :class:`ParallelLMHead`: the same rows of the output projection; each rank computes its
  slice of the logits and an all-gather concatenates them (exact), padding cut off.

With tied embeddings the head's ``weight`` *is* the embedding's (same rows on every rank).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from continuum.layers.tp_group import TPGroup


def _shard_weight(rows: int, cols: int, dtype: torch.dtype | None) -> nn.Parameter:
    # Uninitialised, like the model's other weights: the loader fills every row.
    return nn.Parameter(torch.empty(rows, cols, dtype=dtype), requires_grad=False)


class VocabParallelEmbedding(nn.Module):
    """Rank ``group.rank``'s ``per_rank`` rows of a ``vocab_size`` x ``dim`` embedding."""

    def __init__(self, vocab_size: int, dim: int, group: TPGroup, dtype: torch.dtype | None = None):
        super().__init__()
        self.group = group
        self.vocab_size = vocab_size
        self.per_rank = -(-vocab_size // group.size)
        self.start = group.rank * self.per_rank
        self.weight = _shard_weight(self.per_rank, dim, dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.per_rank)
        x = F.embedding(local.masked_fill(outside, 0), self.weight)
        x.masked_fill_(outside[:, None], 0.0)
        return self.group.all_reduce(x)


class ParallelLMHead(nn.Module):
    """hidden [N, dim] -> logits [N, vocab_size], this rank's rows computed here."""

    def __init__(self, vocab_size: int, dim: int, group: TPGroup, dtype: torch.dtype | None = None):
        super().__init__()
        self.group = group
        self.vocab_size = vocab_size
        self.weight = _shard_weight(-(-vocab_size // group.size), dim, dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.group.all_gather(F.linear(hidden, self.weight), dim=-1)
        return logits[:, :self.vocab_size]
