"""Token sampling for one engine step (vLLM semantics, pure torch).

Pipeline per row, in vLLM's order:

1. raw logprobs (``log_softmax`` of the untouched logits) for rows that asked for logprobs;
2. penalties: repetition (prompt + output tokens), frequency and presence (output counts);
3. min_tokens: eos (unless ``ignore_eos``) and ``stop_token_ids`` get ``-inf`` while the
   request has generated fewer than ``min_tokens`` tokens;
4. greedy rows: argmax;
5. random rows: temperature, top-k, top-p, min-p, then an exponential race
   ``argmax(probs / q)`` with ``q ~ Exp(1)`` drawn per token id from the row's own generator.

Invariants:

* a seeded row draws exactly ``V`` exponentials from its own generator per step, indexed by token
  id, so its token depends only on its own logits, parameters and generator state -- never on
  which other rows share the batch or on how the batch was truncated (top-k via ``topk``);
* the caller's ``logits`` tensor is never modified;
* the all-greedy, no-penalty, no-logprobs batch costs one ``argmax`` plus one python pass over
  the params.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from continuum.sampling_params import SamplingParams


@dataclass
class SamplingBatch:
    """Per-step sampling inputs, one row per sequence that samples this step.

    All lists have the same length as the logits' first dimension. ``generators[i]`` is the
    request's own ``torch.Generator`` (seeded requests) or None (use the global RNG); it must
    live on the logits' device. ``eos_token_ids`` are the model's end-of-sequence ids, shared
    by every row.
    """

    params: list[SamplingParams]
    generators: list[torch.Generator | None]
    output_token_ids: list[list[int]]
    prompt_token_ids: list[list[int]]
    eos_token_ids: list[int]


@dataclass
class TokenLogprobs:
    """Logprob of the sampled token, its rank (1 = most likely) and the top-N alternatives.

    Values come from the raw logits (before penalties and temperature), as vLLM v1 does by
    default. ``top`` is sorted best first and has ``params.logprobs`` entries (may be empty).
    """

    token_id: int
    logprob: float
    rank: int
    top: list[tuple[int, float]]


@dataclass
class SamplerOutput:
    """One sampled token per row; ``logprobs[i]`` is None where ``params.logprobs`` is None."""

    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


def _pad(rows: list[list[int]], pad: int, device: torch.device) -> torch.Tensor:
    """Right-pad ragged token lists into an int64 [R, max_len] tensor (max_len >= 1)."""
    width = max(1, max((len(r) for r in rows), default=0))
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows],
                        dtype=torch.long, device=device)


def apply_penalties(logits: torch.Tensor, prompt_token_ids: list[list[int]],
                    output_token_ids: list[list[int]], repetition_penalties: torch.Tensor,
                    frequency_penalties: torch.Tensor,
                    presence_penalties: torch.Tensor) -> torch.Tensor:
    """Return penalised copies of ``logits`` [R, V] (vLLM's ``apply_penalties``).

    * repetition (column [R]): for every token in prompt + output, positive logits are divided
      by the penalty and negative ones multiplied by it (1.0 = off);
    * frequency: ``logit -= frequency * count_in_output``;
    * presence: ``logit -= presence * (count_in_output > 0)``.

    Token ids outside ``[0, V)`` are ignored. The input tensor is not modified.
    """
    num_rows, vocab = logits.shape
    dev = logits.device
    # Pad with id ``vocab`` into one spare column so ragged rows need no python masking;
    # the spare column is dropped afterwards.
    out_ids = _pad(output_token_ids, vocab, dev).clamp_(0, vocab)
    prompt_ids = _pad(prompt_token_ids, vocab, dev).clamp_(0, vocab)
    counts = torch.zeros(num_rows, vocab + 1, dtype=logits.dtype, device=dev)
    counts.scatter_add_(1, out_ids, torch.ones_like(out_ids, dtype=logits.dtype))
    counts = counts[:, :vocab]
    seen = torch.zeros(num_rows, vocab + 1, dtype=torch.bool, device=dev)
    seen.scatter_(1, prompt_ids, True)
    seen = seen[:, :vocab] | (counts > 0)

    rep = repetition_penalties.to(logits.dtype).unsqueeze(1)
    penalised = torch.where(logits > 0, logits / rep, logits * rep)
    out = torch.where(seen, penalised, logits)
    out = out - frequency_penalties.to(logits.dtype).unsqueeze(1) * counts
    out = out - presence_penalties.to(logits.dtype).unsqueeze(1) * (counts > 0).to(logits.dtype)
    return out


def _fast_path_ok(batch: SamplingBatch) -> bool:
    """True when argmax of the raw logits is the whole answer for every row."""
    for p, out in zip(batch.params, batch.output_token_ids):
        if (not p.greedy or p.logprobs is not None or p.uses_penalties
                or len(out) < p.min_tokens):
            return False
    return True


class Sampler:
    """Stateless sampler; call it once per step with that step's logits and batch."""

    def __call__(self, logits: torch.Tensor, batch: SamplingBatch) -> SamplerOutput:
        num_rows = logits.shape[0]
        assert len(batch.params) == num_rows, "one SamplingParams per logits row"
        if _fast_path_ok(batch):
            return SamplerOutput(logits.argmax(dim=-1).tolist(), [None] * num_rows)
        return self._general(logits, batch)

    # ------------------------------------------------------------------ general path
    def _general(self, logits: torch.Tensor, batch: SamplingBatch) -> SamplerOutput:
        params = batch.params
        num_rows, vocab = logits.shape
        dev = logits.device
        raw = logits.float()

        # Raw logprobs are taken before anything touches the logits (vLLM v1 "raw_logprobs").
        lp_rows = [i for i, p in enumerate(params) if p.logprobs is not None]
        raw_logprobs = torch.log_softmax(raw[lp_rows], dim=-1) if lp_rows else None

        x = raw
        pen_rows = [i for i, p in enumerate(params) if p.uses_penalties]
        if pen_rows:
            idx = torch.tensor(pen_rows, device=dev)
            penalised = apply_penalties(
                x[idx], [batch.prompt_token_ids[i] for i in pen_rows],
                [batch.output_token_ids[i] for i in pen_rows],
                torch.tensor([params[i].repetition_penalty for i in pen_rows], device=dev),
                torch.tensor([params[i].frequency_penalty for i in pen_rows], device=dev),
                torch.tensor([params[i].presence_penalty for i in pen_rows], device=dev))
            x = x.clone()  # never write into the caller's tensor
            x[idx] = penalised

        x = self._mask_min_tokens(x, batch, x is raw)

        sampled = x.argmax(dim=-1)  # correct for greedy rows; random rows overwritten below
        rand_rows = [i for i, p in enumerate(params) if not p.greedy]
        if rand_rows:
            idx = torch.tensor(rand_rows, device=dev)
            sampled[idx] = self._sample_random(
                x[idx], [params[i] for i in rand_rows], [batch.generators[i] for i in rand_rows])

        token_ids = sampled.tolist()
        logprobs: list[TokenLogprobs | None] = [None] * num_rows
        if raw_logprobs is not None:
            chosen = sampled[torch.tensor(lp_rows, device=dev)]
            top_ns = [params[i].logprobs for i in lp_rows]
            for i, lp in zip(lp_rows, self._logprobs(raw_logprobs, chosen, top_ns)):
                logprobs[i] = lp
        return SamplerOutput(token_ids, logprobs)

    @staticmethod
    def _mask_min_tokens(x: torch.Tensor, batch: SamplingBatch, must_copy: bool) -> torch.Tensor:
        """-inf on eos (unless ignore_eos) and stop_token_ids for rows still under min_tokens."""
        vocab = x.shape[1]
        rows: list[int] = []
        cols: list[int] = []
        for i, (p, out) in enumerate(zip(batch.params, batch.output_token_ids)):
            if len(out) >= p.min_tokens:
                continue
            banned = set(p.stop_token_ids or ())
            if not p.ignore_eos:
                banned.update(batch.eos_token_ids)
            for t in banned:
                if 0 <= t < vocab:
                    rows.append(i)
                    cols.append(t)
        if not rows:
            return x
        if must_copy:
            x = x.clone()
        x[torch.tensor(rows, device=x.device), torch.tensor(cols, device=x.device)] = float("-inf")
        return x

    @staticmethod
    def _sample_random(x: torch.Tensor, params: list[SamplingParams],
                       generators: list[torch.Generator | None]) -> torch.Tensor:
        """Sample one token id per row of x [R, V] (all rows non-greedy)."""
        num_rows, vocab = x.shape
        dev = x.device
        temps = torch.tensor([p.temperature for p in params], dtype=x.dtype, device=dev)
        x = x / temps.unsqueeze(1)

        # One sort for the whole batch. When every row has a top-k, a partial topk to the
        # largest k is far cheaper than sorting the full vocabulary.
        ks = [p.top_k if 0 < p.top_k < vocab else vocab for p in params]
        kmax = max(ks)
        if kmax < vocab:
            vals, ids = torch.topk(x, kmax, dim=-1, sorted=True)
        else:
            vals, ids = torch.sort(x, dim=-1, descending=True, stable=True)
        width = vals.shape[1]
        pos = torch.arange(width, device=dev).unsqueeze(0)
        if any(k < width for k in ks):
            k_col = torch.tensor(ks, device=dev).unsqueeze(1)
            vals = vals.masked_fill(pos >= k_col, float("-inf"))
        probs = torch.softmax(vals, dim=-1)

        top_ps = [p.top_p for p in params]
        if any(tp < 1.0 for tp in top_ps):
            # Rows without top-p get a threshold of 2 so float rounding in the cumsum can
            # never drop their tail.
            p_col = torch.tensor([tp if tp < 1.0 else 2.0 for tp in top_ps],
                                 dtype=probs.dtype, device=dev).unsqueeze(1)
            exclusive = torch.cumsum(probs, dim=-1) - probs
            # Drop a token once the more likely tokens already hold >= p of the mass (vLLM's
            # rule); the best token always survives since its exclusive mass is 0 < p.
            probs = probs.masked_fill(exclusive >= p_col, 0.0)

        min_ps = [p.min_p for p in params]
        if any(mp > 0.0 for mp in min_ps):
            # Relative to the best token, so renormalising after top-k/top-p is unnecessary.
            mp_col = torch.tensor(min_ps, dtype=probs.dtype, device=dev).unsqueeze(1)
            probs = probs.masked_fill(probs < mp_col * probs[:, :1], 0.0)

        # Exponential race: argmax(p / q), q ~ Exp(1), is an exact draw from p (unnormalised
        # is fine). q is drawn in token-id space so a seeded row's draw does not depend on
        # the batch's sort width or order.
        q = torch.empty(num_rows, vocab, dtype=probs.dtype, device=dev)
        unseeded = [i for i, g in enumerate(generators) if g is None]
        if len(unseeded) == num_rows:
            q.exponential_()
        else:
            if unseeded:
                u = torch.tensor(unseeded, device=dev)
                q[u] = torch.empty(len(unseeded), vocab, dtype=q.dtype, device=dev).exponential_()
            for i, g in enumerate(generators):
                if g is not None:
                    q[i].exponential_(generator=g)
        choice = (probs / q.gather(1, ids)).argmax(dim=-1, keepdim=True)
        return ids.gather(1, choice).squeeze(1)

    @staticmethod
    def _logprobs(raw_logprobs: torch.Tensor, chosen: torch.Tensor,
                  top_ns: list[int]) -> list[TokenLogprobs]:
        """Build TokenLogprobs from raw log-softmax rows [R, V] and the sampled ids [R]."""
        chosen_lp = raw_logprobs.gather(1, chosen.unsqueeze(1))
        ranks = (raw_logprobs > chosen_lp).sum(dim=-1) + 1
        n_max = max(top_ns)
        if n_max > 0:
            top_vals, top_ids = torch.topk(raw_logprobs, min(n_max, raw_logprobs.shape[1]), dim=-1)
            top_vals_l, top_ids_l = top_vals.tolist(), top_ids.tolist()
        out = []
        for r, (tok, lp, rank, n) in enumerate(zip(chosen.tolist(), chosen_lp.squeeze(1).tolist(),
                                                    ranks.tolist(), top_ns)):
            top = list(zip(top_ids_l[r][:n], top_vals_l[r][:n])) if n > 0 else []
            out.append(TokenLogprobs(tok, lp, rank, top))
        return out
