"""Turns a SchedulerOutput into tensors, runs the model with paged attention, and samples.

Per step it builds the flattened batch (``input_ids``, ``positions``), the paged-attention
metadata (``slot_mapping``, ``block_tables``, ``seq_lens``, ``query_start_loc``) and the
indices of the last token of each sequence that samples, whose logits go to the sampler.
"""
from __future__ import annotations

import torch

from continuum.engine.sampler import Sampler, SamplingBatch, SamplerOutput
from continuum.layers.attention import AttentionMetadata
from continuum.layers.attention_backend import AttentionBackend, select_backend
from continuum.scheduler.output import SchedulerOutput


class ModelRunner:
    def __init__(self, model: torch.nn.Module, block_size: int, device: torch.device,
                 attention: AttentionBackend | None = None):
        self.model = model
        # This runner's own attention backend (default: select_backend's pick for the device),
        # bound to the model's layers; it gets each step's metadata in execute().
        self.attention = attention or select_backend(device)
        self.attention.bind(model)
        self.block_size = block_size
        self.device = device
        self.sampler = Sampler()
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, req) -> torch.Generator | None:
        seed = req.sampling_params.seed
        if seed is None:
            return None
        g = self._generators.get(req.request_id)
        if g is None:
            g = torch.Generator(device=self.device)
            g.manual_seed(seed)
            self._generators[req.request_id] = g
        return g

    def release(self, request_ids) -> None:
        for rid in request_ids:
            self._generators.pop(rid, None)

    def prepare(self, out: SchedulerOutput) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[torch.Tensor] | list[int] = []
        starts, qlens, seq_lens, tables, logit_rows = [], [], [], [], []
        decode_only = True
        t = 0
        for s in out.scheduled:
            n = s.num_new_tokens
            input_ids.extend(s.request.all_token_ids[s.start:s.start + n])
            starts.append(s.start)
            qlens.append(n)
            seq_lens.append(s.start + n)
            tables.append(s.block_ids)
            decode_only &= n == 1
            t += n
            if s.samples:
                logit_rows.append(t - 1)
        dev = self.device
        max_blocks = max(len(b) for b in tables)
        block_tables = torch.tensor([b + [0] * (max_blocks - len(b)) for b in tables], dtype=torch.long)
        if decode_only:
            pos = torch.tensor(starts, dtype=torch.long)
            seq_idx = torch.arange(len(starts))
        else:
            pos = torch.cat([torch.arange(st, st + q) for st, q in zip(starts, qlens)])
            seq_idx = torch.repeat_interleave(torch.arange(len(qlens)), torch.tensor(qlens))
        slot_mapping = block_tables[seq_idx, pos // bs] * bs + pos % bs
        qsl = [0]
        for q in qlens:
            qsl.append(qsl[-1] + q)
        meta = AttentionMetadata(
            slot_mapping=slot_mapping.to(dev), block_tables=block_tables.to(dev),
            seq_lens=torch.tensor(seq_lens, dtype=torch.long, device=dev),
            query_start_loc=torch.tensor(qsl, dtype=torch.long, device=dev),
            seq_lens_list=seq_lens, query_lens_list=qlens, block_size=bs)
        ids = torch.tensor(input_ids, dtype=torch.long, device=dev)
        return ids, pos.to(dev), meta, logit_rows

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> tuple[list[int | None], list]:
        """Run one step. Returns sampled token ids and logprobs aligned with ``out.scheduled``
        (None for chunks that do not sample)."""
        self.release(out.finished_ids)
        if out.is_empty:
            return [], []
        ids, pos, meta, rows = self.prepare(out)
        with self.attention.step(meta):           # plan once; every layer reads it
            hidden = self.model(ids, pos)
        sampling = [s for s in out.scheduled if s.samples]
        if not sampling:
            return [None] * len(out.scheduled), [None] * len(out.scheduled)
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
        batch = SamplingBatch(
            params=[s.request.sampling_params for s in sampling],
            generators=[self._generator(s.request) for s in sampling],
            output_token_ids=[s.request.output_token_ids for s in sampling],
            prompt_token_ids=[s.request.prompt_token_ids for s in sampling],
            eos_token_ids=sampling[0].request.eos_token_ids)
        so: SamplerOutput = self.sampler(logits.float(), batch)
        it_tok, it_lp = iter(so.token_ids), iter(so.logprobs)
        toks = [next(it_tok) if s.samples else None for s in out.scheduled]
        lps = [next(it_lp) if s.samples else None for s in out.scheduled]
        return toks, lps
