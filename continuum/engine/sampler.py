"""Token sampling for one engine step (vLLM semantics, pure torch).

Pipeline per row, in vLLM's order:

1. raw logprobs (``log_softmax`` of the untouched logits) for rows that asked for logprobs;
2. penalties: repetition (prompt + output tokens), frequency and presence (output counts);
3. min_tokens: eos (unless ``ignore_eos``) and ``stop_token_ids`` get ``-inf`` while the
   request has generated fewer than ``min_tokens`` tokens;
4. greedy rows: argmax;
5. random rows: temperature, top-k, top-p, min-p, then inverse-CDF sampling in token-id order
   with one uniform draw from the row's own generator (or the global RNG for unseeded rows).

Invariants:

* a seeded row consumes exactly one uniform from its own generator per step, and its token
  depends only on its own logits, parameters and generator state -- never on which other rows
  share the batch: top-k/top-p become per-row value thresholds (so neither the sort width nor
  the order of tied values matters) and the draw runs over token ids;
* the caller's ``logits`` tensor is never modified;
* every sampled id is in ``[0, V)``, whatever the logits hold (NaN, inf, all ``-inf``): a row
  with nothing left to draw from gets the argmax of its penalised, masked logits;
* the all-greedy, no-penalty, no-logprobs batch costs one ``argmax`` plus one python pass over
  the params (no tensor work besides the argmax, which reads the logits in the model's dtype:
  ``cpu_kernels.argmax_rows``); every other path computes on an fp32 copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from continuum.layers.cpu_kernels import argmax_rows
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
    out_ids = _pad(output_token_ids, vocab, dev)
    prompt_ids = _pad(prompt_token_ids, vocab, dev)
    out_ids = out_ids.masked_fill((out_ids < 0) | (out_ids > vocab), vocab)
    prompt_ids = prompt_ids.masked_fill((prompt_ids < 0) | (prompt_ids > vocab), vocab)
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


def _uniforms(generators: list[torch.Generator | None], device: torch.device) -> torch.Tensor:
    """One U[0, 1) float64 per row: from the row's generator, else from the global RNG.

    A seeded row consumes exactly one draw per step, whatever else is in the batch.
    """
    u = torch.empty(len(generators), dtype=torch.float64, device=device)
    unseeded = [i for i, g in enumerate(generators) if g is None]
    if len(unseeded) == len(generators):
        return u.uniform_()
    if unseeded:
        u[torch.tensor(unseeded, device=device)] = torch.rand(
            len(unseeded), dtype=torch.float64, device=device)
    for i, g in enumerate(generators):
        if g is not None:
            u[i] = torch.rand(1, dtype=torch.float64, device=device, generator=g)[0]
    return u


def _inverse_cdf(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Column index drawn with probability proportional to w [R, W] (w >= 0), or -1 for rows
    with no distribution to draw from (all weights 0, or NaN from non-finite logits), where
    the search could answer W, past the last column.

    Sums run in float64 so ``u * total < total`` holds strictly and the chosen column always
    has positive weight (the first column whose running sum exceeds the target).
    """
    c = torch.cumsum(w.double(), dim=-1)
    total = c[:, -1]
    drawn = torch.searchsorted(c, (u * total).unsqueeze(1), right=True).squeeze(1)
    return drawn.masked_fill(~(torch.isfinite(total) & (total > 0)), -1)


def _top_p_cutoff(vals: torch.Tensor, floor: torch.Tensor, top_p: torch.Tensor,
                  total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest kept value under top-p, from descending values ``vals`` [R, W].

    ``floor`` [R] is the top-k threshold (-inf if none): values below it weigh 0. A token is
    dropped once the more likely tokens already hold >= top_p of ``total`` (vLLM's rule), so
    the best token always survives. Returns (cutoff [R], covered [R]); ``covered`` is False
    where the W values seen do not reach the cutoff and a wider sort is needed.
    """
    w = torch.exp(vals - vals[:, :1]).masked_fill(vals < floor.unsqueeze(1), 0.0).double()
    exclusive = torch.cumsum(w, dim=-1) - w
    below = exclusive < (top_p * total).unsqueeze(1)
    kept = below.sum(dim=-1)  # >= 1: the first exclusive sum is 0
    off = top_p >= 1.0  # rows without top-p: no cutoff, nothing more to look at
    covered = ~below[:, -1] | off
    cutoff = vals.gather(1, (kept - 1).unsqueeze(1)).squeeze(1)
    cutoff = cutoff.masked_fill(off, float("-inf"))
    return cutoff, covered


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
            return SamplerOutput(argmax_rows(logits).tolist(), [None] * num_rows)
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

        bad = (sampled < 0) | (sampled >= vocab)
        if bool(bad.any()):
            # No distribution left to sample (non-finite logits): the best penalised, masked
            # logit instead, so a row never yields an id outside the vocabulary.
            sampled[bad] = torch.nan_to_num(x[bad], nan=float("-inf")).argmax(dim=-1)
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

    #: Width of the partial ``topk`` tried first for top-p rows without a top-k; rows whose
    #: nucleus is wider fall back to a full sort.
    TOP_P_PREFILTER = 1024

    def _sample_random(self, x: torch.Tensor, params: list[SamplingParams],
                       generators: list[torch.Generator | None]) -> torch.Tensor:
        """Sample one token id per row of x [R, V] (all rows non-greedy).

        top-k and top-p are turned into a per-row *value threshold* (sorting only to find it);
        masking and the draw then happen in token-id order. So the result never depends on the
        order a sort gave to tied values, nor on the sort width chosen for the batch: a seeded
        row's token is a function of its own logits, params and generator state only.
        Thresholds keep every token tied with the last kept one (vLLM does the same for top-k).
        """
        num_rows, vocab = x.shape
        dev = x.device
        temps = torch.tensor([p.temperature for p in params], dtype=x.dtype, device=dev)
        x = x / temps.unsqueeze(1)
        best = x.max(dim=-1, keepdim=True).values
        # Rows whose best value is not finite (a NaN anywhere, +inf, or nothing but -inf) have
        # no distribution; they draw over zeros here and answer -1 (the caller's fallback).
        dead = ~torch.isfinite(best.squeeze(1))
        if bool(dead.any()):
            x = x.masked_fill(dead.unsqueeze(1), 0.0)
            best = best.masked_fill(dead.unsqueeze(1), 0.0)
        w = torch.exp(x - best)  # the best token weighs 1

        ks = [p.top_k if 0 < p.top_k < vocab else 0 for p in params]
        tps = [p.top_p for p in params]
        filt_rows = [i for i in range(num_rows) if ks[i] or tps[i] < 1.0]
        if filt_rows:
            idx = torch.tensor(filt_rows, device=dev)
            thr = self._thresholds(x[idx], w[idx], [ks[i] for i in filt_rows],
                                   [tps[i] for i in filt_rows])
            w[idx] = w[idx].masked_fill(x[idx] < thr.unsqueeze(1), 0.0)

        min_ps = [p.min_p for p in params]
        if any(mp > 0.0 for mp in min_ps):
            # Relative to the best token (weight 1), which top-k/top-p always keep.
            col = torch.tensor(min_ps, dtype=w.dtype, device=dev).unsqueeze(1)
            w = w.masked_fill(w < col, 0.0)
        return _inverse_cdf(w, _uniforms(generators, dev)).masked_fill(dead, -1)

    def _thresholds(self, x: torch.Tensor, w: torch.Tensor, ks: list[int],
                    tps: list[float]) -> torch.Tensor:
        """Per-row minimum kept value for top-k (k > 0) then top-p (p < 1); one sort per batch."""
        num_rows, vocab = x.shape
        dev = x.device
        width = max(ks)
        if any(k == 0 and tp < 1.0 for k, tp in zip(ks, tps)):
            width = max(width, self.TOP_P_PREFILTER)
        width = min(width, vocab)
        vals = (torch.topk(x, width, dim=-1, sorted=True).values if width < vocab
                else torch.sort(x, dim=-1, descending=True).values)

        neg_inf = torch.full((num_rows,), float("-inf"), dtype=x.dtype, device=dev)
        if any(ks):
            k_idx = torch.tensor([max(k, 1) - 1 for k in ks], device=dev).unsqueeze(1)
            has_k = torch.tensor([k > 0 for k in ks], device=dev)
            thr = torch.where(has_k, vals.gather(1, k_idx).squeeze(1), neg_inf)
        else:
            thr = neg_inf
        if all(tp >= 1.0 for tp in tps):
            return thr

        # Top-p acts on the top-k survivors. Their mass is summed in token-id order, which is
        # fixed, so it does not depend on the sort width either.
        total = w.masked_fill(x < thr.unsqueeze(1), 0.0).double().sum(dim=-1)
        top_p = torch.tensor([tp if tp < 1.0 else 2.0 for tp in tps],  # 2: never cuts
                             dtype=torch.float64, device=dev)
        cutoff, covered = _top_p_cutoff(vals, thr, top_p, total)
        if width < vocab and not bool(covered.all()):
            # Flat distributions: the nucleus is wider than the prefilter. Sort those rows fully.
            miss = (~covered).nonzero().squeeze(1)
            full = torch.sort(x[miss], dim=-1, descending=True).values
            cutoff[miss] = _top_p_cutoff(full, thr[miss], top_p[miss], total[miss])[0]
        return torch.maximum(thr, cutoff)

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
