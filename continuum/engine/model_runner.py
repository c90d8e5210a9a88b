"""Turns a SchedulerOutput into tensors, runs the model with paged attention, and samples.

Per step it builds the flattened batch (``input_ids``, ``positions``), the paged-attention
metadata (``slot_mapping``, ``block_tables``, ``seq_lens``, ``query_start_loc``) and the
indices of the last token of each sequence that samples, whose logits go to the sampler.
The block tables persist across steps (``InputBatch``): a step writes only the ids that
changed, and the batch runs in the persistent rows' order (results are mapped back to the
scheduler's order).
"""
from __future__ import annotations

import torch

from continuum.engine.input_batch import InputBatch
from continuum.engine.sampler import Sampler, SamplingBatch, SamplerOutput
from continuum.layers.attention import AttentionMetadata
from continuum.layers.attention_backend import AttentionBackend, select_backend
from continuum.scheduler.output import SchedulerOutput


class ModelRunner:
    def __init__(self, model: torch.nn.Module, block_size: int, device: torch.device,
                 max_num_seqs: int = 8, max_model_len: int = 256,
                 attention: AttentionBackend | None = None):
        self.model = model
        # This runner's own attention backend (default: select_backend's pick for the device),
        # bound to the model's layers; it gets each step's metadata in execute().
        self.attention = attention or select_backend(device)
        self.attention.bind(model)
        self.block_size = block_size
        self.device = torch.device(device)
        self.batch = InputBatch(max_num_seqs, -(-max_model_len // block_size))
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
        """Forget finished requests (their rows leave the batch at the next step anyway)."""
        for rid in request_ids:
            self._generators.pop(rid, None)

    def prepare(self, out: SchedulerOutput) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int], list[int]]:
        """The step's inputs, in the persistent batch's row order.

        Returns (input_ids, positions, metadata, logit rows, order): ``order[r]`` is the index
        into ``out.scheduled`` of the sequence in batch row r; logit rows are in row order.
        Host work is O(sequences + new tokens) (plus the rows that enter the batch), never
        O(context): the block table rows persist across steps (``InputBatch``)."""
        sched = out.scheduled
        order = self.batch.update([s.request.request_id for s in sched], [s.block_ids for s in sched])
        bs = self.block_size
        input_ids: list[int] = []
        starts, qlens, seq_lens, logit_rows = [], [], [], []
        t = 0
        for i in order:
            s = sched[i]
            n = s.num_new_tokens
            input_ids.extend(s.request.all_token_ids[s.start:s.start + n])
            starts.append(s.start)
            qlens.append(n)
            seq_lens.append(s.start + n)
            t += n
            if s.samples:
                logit_rows.append(t - 1)
        S = len(order)
        table = self.batch.table[:S]
        starts_t = torch.tensor(starts, dtype=torch.long)
        qsl = torch.zeros(S + 1, dtype=torch.long)
        if t == S:                                   # pure decode: one token per sequence
            pos, seq_idx = starts_t, torch.arange(S)
            torch.arange(S + 1, out=qsl)
        else:
            qlens_t = torch.tensor(qlens, dtype=torch.long)
            torch.cumsum(qlens_t, 0, out=qsl[1:])
            seq_idx = torch.repeat_interleave(torch.arange(S), qlens_t)
            pos = (starts_t - qsl[:-1])[seq_idx] + torch.arange(t)
        slot_mapping = table[seq_idx, pos // bs] * bs + pos % bs
        ids = torch.tensor(input_ids, dtype=torch.long)
        seq_lens_t = torch.tensor(seq_lens, dtype=torch.long)
        dev = self.device
        if dev.type != "cpu":
            # One host-to-device copy for the five small tensors; the block table rows the
            # step reads (up to its longest table) go in a second one.
            nb = -(-max(seq_lens) // bs)
            packed = torch.cat([ids, pos, slot_mapping, seq_lens_t, qsl]).pin_memory().to(dev, non_blocking=True)
            ids, pos, slot_mapping, seq_lens_t, qsl = packed.split([t, t, t, S, S + 1])
            table = table[:, :nb].pin_memory().to(dev, non_blocking=True)
        meta = AttentionMetadata(
            slot_mapping=slot_mapping, block_tables=table, seq_lens=seq_lens_t,
            query_start_loc=qsl, seq_lens_list=seq_lens, query_lens_list=qlens, block_size=bs)
        return ids, pos, meta, logit_rows, order

    def execute(self, out: SchedulerOutput) -> tuple[list[int | None], list]:
        """Run one step. Returns sampled token ids and logprobs aligned with ``out.scheduled``
        (None for chunks that do not sample)."""
        self.release(out.finished_ids)
        return self.run(out)

    def forward(self, out: SchedulerOutput) -> tuple[torch.Tensor, list[int], list[int]]:
        """The model over the step's tokens: (hidden [T, hidden], logit rows, order) with
        ``prepare``'s rows and order. Call it under ``torch.inference_mode()`` (``run`` does;
        one context per step). A tensor-parallel rank other than 0 runs only this and
        ``compute_logits`` on the rows (it samples nothing)."""
        try:
            ids, pos, meta, rows, order = self.prepare(out)
            with self.attention.step(meta):           # plan once; every layer reads it
                hidden = self.model(ids, pos)
        except BaseException:
            self.batch.clear()       # a half-applied update must not survive; rebuilt next step
            raise
        return hidden, rows, order

    @torch.inference_mode()
    def run(self, out: SchedulerOutput) -> tuple[list[int | None], list]:
        """``execute`` without releasing ``out.finished_ids`` first."""
        if out.is_empty:
            return [], []
        hidden, rows, order = self.forward(out)
        n = len(out.scheduled)
        sampling = [out.scheduled[i] for i in order if out.scheduled[i].samples]
        if not sampling:
            return [None] * n, [None] * n
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
        batch = SamplingBatch(
            params=[s.request.sampling_params for s in sampling],
            generators=[self._generator(s.request) for s in sampling],
            output_token_ids=[s.request.output_token_ids for s in sampling],
            prompt_token_ids=[s.request.prompt_token_ids for s in sampling],
            eos_token_ids=sampling[0].request.eos_token_ids)
        so: SamplerOutput = self.sampler(logits, batch)
        toks: list[int | None] = [None] * n
        lps: list = [None] * n
        k = 0
        for i in order:
            if out.scheduled[i].samples:
                toks[i], lps[i] = so.token_ids[k], so.logprobs[k]
                k += 1
        return toks, lps
