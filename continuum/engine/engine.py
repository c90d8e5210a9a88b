"""The synchronous engine: requests in, one ``step()`` at a time, outputs out.

It owns the scheduler (policy, KV bookkeeping), the model runner (tensors, sampling) and one
incremental detokenizer per request. Time comes from an injectable clock so that tests and
the simulator control it; the scheduler only ever sees the values it returns.
"""
from __future__ import annotations

import itertools
from collections import deque
import logging
import time
from collections.abc import Callable

import torch

from continuum.config import EngineArgs
from continuum.engine.cache_engine import CacheEngine, blocks_written, bytes_per_block, num_blocks_for
from continuum.engine.detokenizer import IncrementalDetokenizer
from continuum.engine.heap import keep_freed_memory
from continuum.engine.model_runner import ModelRunner
from continuum.layers.attention_backend import select_backend
from continuum.errors import (ConfigError, InvalidRequestError, PromptTooLongError,
                              TensorParallelError, check_text)
from continuum.layers.cpu_linear import pack_linears, packing_supported
from continuum.kv_ttl.reload_cost import OffloadCost
from continuum.kv_ttl.step_cost import MeasuredPrefill, OnlineStepCost
from continuum.models.loader import load_model
from continuum.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from continuum.progress import Phases
from continuum.request import AgentInfo, Request, RequestStatus
from continuum.sampling_params import SamplingParams
from continuum.snapshot import CallTimer, compose
from continuum.scheduler.output import ScheduledRequest, SchedulerOutput
from continuum.scheduler.scheduler import Scheduler
from continuum.threads import torch_threads

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # bf16 where the hardware has fast bf16 matmuls (CUDA; CPUs with AVX512-BF16/AMX).
        if device.type == "cuda" or packing_supported(torch.bfloat16):
            return torch.bfloat16
        return torch.float32
    return _DTYPES[name]


def split_prompt(prompt: str | list[int] | dict,
                 cache_salt: str | None = None) -> tuple[str | list[int], str | None]:
    """(text or token ids, cache salt) of a prompt. A dict is vLLM's prompt form:
    ``{"prompt": str}`` or ``{"prompt_token_ids": [...]}``, optionally with ``"cache_salt"``
    (which must agree with ``cache_salt`` when both are given). A salt is a non-empty string
    that encodes to UTF-8 (the scheduler hashes its bytes)."""
    if isinstance(prompt, dict):
        salt = prompt.get("cache_salt")
        if salt is not None and cache_salt is not None and salt != cache_salt:
            raise InvalidRequestError("the prompt's cache_salt differs from the cache_salt argument")
        cache_salt = cache_salt if salt is None else salt
        if "prompt_token_ids" in prompt:
            prompt = list(prompt["prompt_token_ids"])
        elif "prompt" in prompt:
            prompt = prompt["prompt"]
        else:
            raise InvalidRequestError("a prompt dict needs 'prompt' or 'prompt_token_ids'")
    if cache_salt is not None and not (isinstance(cache_salt, str) and cache_salt):
        raise InvalidRequestError("cache_salt must be a non-empty string")
    return prompt, cache_salt if cache_salt is None else check_text(cache_salt, "cache_salt")


class _RequestState:
    """Engine-side state of one request: its detokenizer and accumulated logprobs."""

    __slots__ = ("request", "prompt", "detok", "logprobs", "cumulative_logprob")

    def __init__(self, request: Request, prompt: str | None, detok: IncrementalDetokenizer):
        self.request = request
        self.prompt = prompt
        self.detok = detok
        self.logprobs: list[dict[int, Logprob]] | None = (
            [] if request.sampling_params.logprobs is not None else None)
        self.cumulative_logprob = 0.0 if self.logprobs is not None else None


class LLMEngine:
    def __init__(self, args: EngineArgs, clock: Callable[[], float] = time.monotonic):
        self.args = args
        self.clock = clock
        mc, cc, sc = args.model_config(), args.cache_config(), args.scheduler_config()
        self.device = resolve_device(args.device)
        self.dtype = resolve_dtype(mc.dtype, self.device)
        if self.device.type == "cpu":
            keep_freed_memory()         # steps reuse their buffers' pages (engine/heap.py)
        phases = Phases(logger, "engine start-up")     # one INFO line per phase, with its time
        # Tensor parallelism: ranks 1..N-1 start (and load their shards) beside this one, rank 0.
        self.tp_workers = None
        if mc.tensor_parallel_size > 1:
            from continuum.engine.tp_executor import TPWorkers
            with phases.phase(f"start {mc.tensor_parallel_size - 1} tensor-parallel rank(s)"):
                self.tp_workers = TPWorkers.start(args, self.device, self.dtype, mc.tensor_parallel_size)
        self.cache_engine: CacheEngine | None = None
        per_block = num_host_blocks = num_blocks = 0

        def allocate_kv(model) -> None:
            nonlocal per_block, num_host_blocks, num_blocks
            num_blocks = cc.num_blocks_override or num_blocks_for(
                model, cc.block_size, self.dtype, self.device, cc.kv_cache_memory, cc.gpu_memory_utilization)
            per_block = bytes_per_block(model, cc.block_size, self.dtype)
            num_host_blocks = cc.host_kv_cache_memory // per_block
            with phases.phase("allocate the KV cache"):
                self.cache_engine = CacheEngine(model, num_blocks, cc.block_size, self.dtype, self.device,
                                                num_host_blocks)

        try:
            # On the CPU the cache is allocated as soon as the model's modules exist, so its
            # pages fault in on the idle core while the weights load (engine/prefault.py); on
            # CUDA its size depends on the memory the weights leave.
            self.loaded = load_model(mc.model, dtype=self.dtype, device=self.device, seed=mc.seed,
                                     random_config=mc.random_config,
                                     group=self.tp_workers.group if self.tp_workers else None,
                                     on_built=allocate_kv if self.device.type == "cpu" else None)
        except BaseException:
            self.shutdown()                 # the other ranks failed the same way, or would wait
            raise
        self.tokenizer = self.loaded.tokenizer
        self.eos_token_ids = list(self.loaded.eos_token_ids)
        model = self.loaded.model
        with phases.phase("load the attention kernels"):
            attention = select_backend(self.device)
        # Before the KV cache is sized from the free memory (on CUDA; on the CPU it exists
        # already): the backend's scratch (the CUDA decode kernel's split-K workspace) counts
        # as used, and no kernel allocates after the cache took the rest.
        attention.reserve(model, sc.max_num_seqs, min(mc.max_model_len or self.loaded.max_model_len,
                                                      self.loaded.max_model_len))
        if self.cache_engine is None:
            allocate_kv(model)
        self.num_packed_linears = 0
        if self.device.type == "cpu":
            with phases.phase("pack the linear weights"), torch_threads(1):
                self.num_packed_linears = pack_linears(model)
        if mc.max_model_len and mc.max_model_len > self.loaded.max_model_len:
            # Positions past the model's rotary table have no embedding: refuse, as vLLM does.
            raise ConfigError(f"max_model_len {mc.max_model_len} exceeds the model's "
                              f"{self.loaded.max_model_len} positions (max_position_embeddings)")
        max_len = mc.max_model_len or self.loaded.max_model_len
        capacity = num_blocks * cc.block_size
        if max_len > capacity:
            logger.warning("max_model_len %d exceeds the KV cache (%d tokens); capping it", max_len, capacity)
            max_len = capacity
        self.max_model_len = max_len
        self.vocab_size = int(model.config.vocab_size)
        if self.tp_workers is None:
            self.runner = ModelRunner(model, cc.block_size, self.device, sc.max_num_seqs, max_len, attention)
        else:
            from continuum.engine.tp_executor import TPModelRunner
            with phases.phase("wait for the tensor-parallel ranks"):
                self.tp_workers.wait_loaded()
                self.tp_workers.init(num_blocks=num_blocks, block_size=cc.block_size,
                                     num_host_blocks=num_host_blocks, max_model_len=max_len,
                                     max_num_seqs=sc.max_num_seqs)
            self.runner = TPModelRunner(self.tp_workers, model, cc.block_size, self.device,
                                        sc.max_num_seqs, max_len, attention)
        self.attention_backend = self.runner.attention.name      # "cpu-kernel", "torch" or "cuda"
        if self.attention_backend == "cuda" and not args.enforce_eager and self.tp_workers is None:
            # Decode steps replay CUDA graphs (one per batch x context bucket); after the KV
            # cache is bound, since graphs capture its addresses.
            from continuum.engine.cuda_graph import DecodeGraphRunner, GraphedModel
            graphs = DecodeGraphRunner(model, cc.block_size, max_len, sc.max_num_seqs, self.device,
                                       attention=self.runner.attention)
            graphs.capture()
            self.runner.model = GraphedModel(model, graphs)
        # Tool names are parsed from the decoded output when the client gave none (METHOD 2.3).
        self.scheduler = Scheduler(sc, cc, num_blocks, max_len, num_host_blocks=num_host_blocks,
                                   output_text=self._output_text)
        # A recompute costs what this engine's own steps cost (fitted online as they run; the
        # H100 prior until enough steps are seen); a host reload, this model's KV bytes.
        self.step_cost = OnlineStepCost()
        self.scheduler.set_reload_cost(
            prefill=MeasuredPrefill(self.step_cost, sc.max_num_batched_tokens),
            offload=OffloadCost(bytes_per_token=per_block / cc.block_size))
        self.schedule_timer = CallTimer("scheduler_time")     # wall seconds inside schedule()
        self._states: dict[str, _RequestState] = {}
        self._ids = itertools.count()
        self.step_times: deque[float] = deque(maxlen=4096)   # recent execute() times, seconds
        self.cache_engine.ready()
        logger.info("engine ready in %.2f s: %s on %s (%s, attention: %s)", phases.total(),
                    self.loaded.name, self.device, str(self.dtype).removeprefix("torch."),
                    self.attention_backend)

    def _output_text(self, req: Request) -> str:
        """A finished request's text, for the tool parser; "" (no tool, so no pin) if the
        tokenizer cannot decode it, rather than failing the scheduler's step."""
        try:
            return self.tokenizer.decode(req.output_token_ids, skip_special_tokens=True)
        except Exception:                # noqa: BLE001 - a missing pin is not worth a crash
            logger.exception("could not decode the output of %s for the tool parser", req.request_id)
            return ""

    # -- requests ------------------------------------------------------------------------------
    def tokenize(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(check_text(prompt, "prompt"), add_special_tokens=True)

    def add_request(self, prompt: str | list[int] | dict, params: SamplingParams | None = None, *,
                    request_id: str | None = None, arrival_time: float | None = None,
                    agent: AgentInfo | None = None, cache_salt: str | None = None) -> Request:
        """Validate and queue a request. Raises InvalidRequestError (engine state untouched).
        ``prompt`` may be vLLM's prompt dict (see ``split_prompt``), whose ``cache_salt`` is
        how callers behind ``AsyncLLMEngine`` pass one; requests share prefix-cache blocks
        only with requests of the same ``cache_salt`` (None: with every unsalted request)."""
        params = params or SamplingParams()
        prompt, cache_salt = split_prompt(prompt, cache_salt)
        if isinstance(prompt, str):
            text, ids = prompt, self.tokenize(prompt)
        elif isinstance(prompt, (list, tuple)) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            text, ids = None, list(prompt)
        else:
            raise InvalidRequestError("prompt must be a string or a list of token ids")
        if not ids:
            raise InvalidRequestError("prompt is empty")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise InvalidRequestError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        if len(ids) >= self.max_model_len:
            raise PromptTooLongError(len(ids), self.max_model_len)
        self._check_params(params)
        rid = request_id if request_id is not None else str(next(self._ids))
        if rid in self._states:
            raise InvalidRequestError(f"request id {rid!r} is already in use")
        req = Request(rid, ids, params, self.clock() if arrival_time is None else arrival_time,
                      eos_token_ids=self.eos_token_ids, agent=agent, max_model_len=self.max_model_len,
                      cache_salt=cache_salt)
        detok = IncrementalDetokenizer(self.tokenizer, ids, params)
        self.scheduler.add_request(req)
        self._states[rid] = _RequestState(req, text, detok)
        return req

    def _check_params(self, params: SamplingParams) -> None:
        """What SamplingParams cannot check alone: ids against this model's vocabulary."""
        bad = [t for t in params.stop_token_ids if t >= self.vocab_size]
        if bad:
            raise InvalidRequestError(
                f"stop token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        if params.min_tokens > 0:
            banned = set(params.stop_token_ids)
            if not params.ignore_eos:
                banned.update(t for t in self.eos_token_ids if t < self.vocab_size)
            if len(banned) >= self.vocab_size:
                raise InvalidRequestError(
                    "min_tokens bans stop_token_ids (and eos) until it is reached, and they cover "
                    "the whole vocabulary: no token could be generated")

    def abort_request(self, request_ids: str | list[str]) -> None:
        """Abort requests now: their KV is released at once; unknown ids are ignored."""
        done = self.scheduler.finish_requests(request_ids, RequestStatus.FINISHED_ABORTED, self.clock())
        for req in done:
            self._states.pop(req.request_id, None)
        self.runner.release(r.request_id for r in done)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    @property
    def num_unfinished_requests(self) -> int:
        return self.scheduler.num_unfinished

    @property
    def num_waiting_requests(self) -> int:
        """Requests not yet admitted (queued, held at the door, or preempted)."""
        return self.scheduler.num_waiting

    # -- the step ----------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, execute, sample, detokenize. Returns one output per request that produced a
        token in this step (``finished`` set on the last one), plus a final output with
        ``finish_reason == "error"`` for each request the executor failed alone.

        A failure of the batch is narrowed to the requests that cause it (each one re-run
        alone); those finish with an error and the others go on. Only a failure that is not
        any one request's (every request of a batch of several fails alone) propagates."""
        with self.schedule_timer.timed():
            sched = self.scheduler.schedule(self.clock())
        ce = self.cache_engine
        if sched.swap_out or sched.swap_in or ce.pending_swap_out:
            # CUDA: swaps run on a copy stream; the step's compute waits for a swap-out only
            # if it writes one of its blocks (cache_engine.py). The CPU copies in place.
            writes = blocks_written(sched, ce.block_size) if ce.device.type == "cuda" else None
            if sched.swap_out or sched.swap_in:
                if self.tp_workers is not None:
                    self.tp_workers.swap(sched.swap_out, sched.swap_in)
                ce.swap(sched.swap_out, sched.swap_in, writes)
            else:
                ce.before_compute(writes)
        if sched.is_empty:
            self.runner.release(sched.finished_ids)
            return []
        t0 = time.perf_counter()
        tokens, logprobs, failed = self._execute(sched)
        dt = time.perf_counter() - t0
        self.step_times.append(dt)
        if not failed:                  # a narrowed failure re-ran requests alone: not one step
            self.step_cost.observe(((s.start, s.num_new_tokens) for s in sched.scheduled), dt)
        now = self.clock()
        outputs = [self._fail(sched.scheduled[i], err, now) for i, err in failed.items()]
        self.scheduler.update_from_output(sched, tokens, now)
        for s, tok, lp in zip(sched.scheduled, tokens, logprobs):
            if tok is None:
                continue
            state = self._states.get(s.request.request_id)
            if state is None:
                continue
            try:
                outputs.append(self._make_output(state, tok, lp))
            except Exception as e:      # noqa: BLE001 - e.g. the tokenizer choked on its output
                outputs.append(self._fail(s, e, now, kv_written=True))
        return outputs

    def _execute(self, sched: SchedulerOutput) -> tuple[list, list, dict[int, BaseException]]:
        """Run the step; returns (tokens, logprobs, failures by index into ``sched.scheduled``).

        If the batch raises, every scheduled request is re-run alone to find the ones that
        fail (re-running is safe: a chunk writes the same KV to the same slots; a seeded
        request that drew before the failure draws again). A sampled id outside the
        vocabulary fails its request too, before it can reach the embedding next step."""
        failed: dict[int, BaseException] = {}
        try:
            tokens, logprobs = self.runner.execute(sched)
        except TensorParallelError:
            raise                            # a rank died or the ranks are out of step
        except Exception as batch_error:     # noqa: BLE001 - narrowed below, or re-raised
            n = len(sched.scheduled)
            tokens, logprobs = [None] * n, [None] * n
            for i, s in enumerate(sched.scheduled):
                try:
                    (tokens[i],), (logprobs[i],) = self.runner.execute(SchedulerOutput(scheduled=[s]))
                except Exception as e:       # noqa: BLE001 - this request's own failure
                    failed[i] = e
            if n > 1 and len(failed) == n:
                raise batch_error            # not any one request's fault: the engine is broken
            logger.warning("a step of %d requests failed; re-run alone, %d of them failed", n,
                           len(failed))
        for i, tok in enumerate(tokens):
            if tok is not None and not 0 <= tok < self.vocab_size and i not in failed:
                failed[i] = RuntimeError(f"sampled token id {tok} is outside the vocabulary")
                tokens[i] = None
        for i in failed:
            tokens[i] = None
        return tokens, logprobs, failed

    def _fail(self, s: ScheduledRequest, err: BaseException, now: float,
              kv_written: bool = False) -> RequestOutput:
        """Finish a request the executor failed; its KV for this chunk is dropped from the prefix
        cache unless it was written (``kv_written``). Returns its final output."""
        req = s.request
        logger.error("request %s failed: %s: %s", req.request_id, type(err).__name__, err,
                     exc_info=err)
        self.scheduler.fail_request(req, now, None if kv_written else s.start)
        state = self._states.pop(req.request_id, None)
        self.runner.release([req.request_id])
        comp = CompletionOutput(
            index=0, text=state.detok.output_text if state else "", token_ids=list(req.output_token_ids),
            finish_reason="error", stop_reason=None)
        metrics = RequestMetrics(req.arrival_time, req.first_scheduled_time, req.first_token_time,
                                 req.finished_time, req.queued_time, req.num_preemptions)
        return RequestOutput(req.request_id, state.prompt if state else None, req.prompt_token_ids,
                             [comp], True, metrics, max(req.num_cached_tokens, 0),
                             error=f"the engine failed this request: {type(err).__name__}: {err}")

    def _make_output(self, state: _RequestState, tok: int, lp) -> RequestOutput:
        req = state.request
        # A request that just ended on eos / a stop token id: that token's text is not output.
        upd = state.detok.update([tok], stop_terminated=req.status == RequestStatus.FINISHED_STOPPED)
        delta = upd.text_delta
        if upd.stopped_by is not None and not req.is_finished:
            req.stop_reason = upd.stopped_by
            self.scheduler.finish_requests(req.request_id, RequestStatus.FINISHED_STOPPED, self.clock())
        elif req.is_finished and upd.stopped_by is None:
            delta += state.detok.flush()
        if lp is not None and state.logprobs is not None:
            entry = {t: Logprob(v, i + 1, self.tokenizer.decode([t])) for i, (t, v) in enumerate(lp.top)}
            entry[lp.token_id] = Logprob(lp.logprob, lp.rank, self.tokenizer.decode([lp.token_id]))
            state.logprobs.append(entry)
            state.cumulative_logprob += lp.logprob
        finished = req.is_finished
        if finished:
            self._states.pop(req.request_id, None)
        comp = CompletionOutput(
            index=0, text=state.detok.output_text, token_ids=list(req.output_token_ids),
            cumulative_logprob=state.cumulative_logprob, logprobs=state.logprobs,
            finish_reason=req.status.finish_reason, stop_reason=req.stop_reason,
            delta_text=delta, delta_token_ids=[tok])
        metrics = RequestMetrics(req.arrival_time, req.first_scheduled_time, req.first_token_time,
                                 req.finished_time, req.queued_time, req.num_preemptions)
        out = RequestOutput(req.request_id, state.prompt, req.prompt_token_ids, [comp], finished,
                            metrics, max(req.num_cached_tokens, 0))
        if finished:
            out.tool_name, out.pin_decision, out.pin_ttl = req.tool_name, req.pin_decision, req.pin_ttl
        return out

    def stats(self) -> dict[str, float]:
        """The engine's snapshot (``continuum.snapshot``), what /metrics, bench reports and the
        Ray client read: the scheduler's (and so every layer's below it) plus the wall time
        spent in ``schedule`` and the online step-cost fit (``step_cost_*``). O(1) in the KV
        pool's size."""
        return compose(self.scheduler.snapshot(), self.schedule_timer.snapshot(), self.step_cost.snapshot())

    def check_integrity(self) -> None:
        """The block pool's invariants; with tensor parallelism also every rank's block
        tables and pool size against rank 0's, and replicated KV heads' bytes across ranks."""
        self.scheduler.check_integrity()
        if self.tp_workers is not None:
            lay = self.runner.model.tp_layout
            self.tp_workers.check(self.runner, self.cache_engine, lay.num_kv_heads < lay.size)

    def shutdown(self) -> None:
        """Stop the tensor-parallel ranks, if any (also done when the engine is collected)."""
        if self.tp_workers is not None:
            self.tp_workers.shutdown()
