"""POST /v1/completions: text or token prompts (a batch becomes one choice per prompt)."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from continuum.entrypoints.openai.errors import bad_request
from continuum.entrypoints.openai.protocol import CompletionRequest
from continuum.entrypoints.openai.recognition import (ProgramTurn, TextContinuation, assign,
                                                     text_answer_key)
from continuum.entrypoints.openai.serving import (OpenAIServing, completion_logprobs,
                                                  merge, sse, sse_stream, until_disconnect,
                                                  usage)
from continuum.engine.async_engine import RequestStream
from continuum.errors import check_text
from continuum.kv_ttl.recognizer import tokens_answer_key
from continuum.outputs import RequestOutput

MAX_BATCH = 64
# OpenAI's and vLLM's default for /v1/completions (chat's default is the rest of the context)
DEFAULT_MAX_TOKENS = 16


class OpenAIServingCompletion(OpenAIServing):
    async def create(self, req: CompletionRequest, raw: Request):
        req.unsupported()
        self.check_model(req.model)
        agent = self.agent(req, raw)
        prompts = req.prompts()
        if len(prompts) > MAX_BATCH:
            raise bad_request(f"at most {MAX_BATCH} prompts per request", "prompt")
        tok = self.engine.tokenizer
        encoded = []
        for p in prompts:
            if isinstance(p, str):
                ids = tok.encode(check_text(p, "prompt"), add_special_tokens=True)
            elif isinstance(p, list):              # token ids (strict ints: the model checked)
                ids = list(p)
            else:
                raise bad_request("prompt must be a string, a list of token ids, or a list of "
                                  "either", "prompt")
            if not ids:
                raise bad_request("prompt is empty", "prompt")
            encoded.append(ids)
        plans = [(ids, self.max_tokens(len(ids), req.max_tokens, DEFAULT_MAX_TOKENS)) for ids in encoded]
        params = [req.sampling_params(mt, req.logprobs) for _, mt in plans]   # validate all first
        rid = self.new_id("cmpl")
        # Recognition needs one answer to follow: a batch of prompts is not one program's turn.
        agent, turn = assign(self.inference if len(plans) == 1 else None, agent, encoded[0],
                             TextContinuation(encoded[0], tok.decode), req.cache_salt)
        streams: list[RequestStream] = []
        try:
            for i, ((ids, _), sp) in enumerate(zip(plans, params)):
                sub = rid if len(plans) == 1 else f"{rid}-{i}"
                text = prompts[i] if self.record_text and isinstance(prompts[i], str) else None
                streams.append(await self.submit(ids, sp, sub, agent, req.cache_salt, text))
        except BaseException:
            for s in streams:
                s.close()
            turn.close()
            raise
        created = int(time.time())
        if req.stream:
            return StreamingResponse(sse_stream(self._stream(req, rid, created, streams, turn)),
                                     media_type="text/event-stream", headers=turn.headers())
        return await until_disconnect(raw, self._full(req, rid, created, streams, turn),
                                      turn.headers())

    @staticmethod
    def _answered(turn: ProgramTurn, out: RequestOutput) -> None:
        """Choice 0 completed: recognition remembers its text and its token ids, which a
        client appends."""
        c = out.outputs[0]
        turn.complete((len(c.token_ids), len(c.text)), text_answer_key(c.text),
                      out.tool_name is not None, tokens_answer_key(c.token_ids))

    def _choice_logprobs(self, req: CompletionRequest, out: RequestOutput, start: int, off: int):
        if req.logprobs is None:
            return None
        return completion_logprobs(out.outputs[0], start, req.logprobs, off)

    async def _full(self, req, rid, created, streams, turn: ProgramTurn) -> dict:
        finals: dict[int, RequestOutput] = {}
        trackers = [self.tracker("completions", s) for s in streams]
        try:
            async for i, out in merge(streams):
                trackers[i].on_output(out)
                if out.finished:
                    finals[i] = out
                    if i == 0:
                        self._answered(turn, out)
        finally:
            for t in trackers:
                t.close()
            turn.close()
        choices, n_prompt, n_out, n_cached = [], 0, 0, 0
        for i in range(len(streams)):
            out = finals[i]
            c = out.outputs[0]
            choice = {"index": i, "text": c.text, "logprobs": self._choice_logprobs(req, out, 0, 0),
                      "finish_reason": c.finish_reason, "stop_reason": c.stop_reason}
            if req.return_token_ids:
                choice.update(prompt_token_ids=list(out.prompt_token_ids), token_ids=list(c.token_ids))
            choices.append(choice)
            n_prompt += len(out.prompt_token_ids)
            n_out += len(c.token_ids)
            n_cached += out.num_cached_tokens
        return {"id": rid, "object": "text_completion", "created": created, "model": self.model_name,
                "choices": choices, "usage": usage(n_prompt, n_out, n_cached, finals[0], turn)}

    async def _stream(self, req, rid, created, streams, turn: ProgramTurn) -> AsyncIterator[str]:
        head = {"id": rid, "object": "text_completion", "created": created, "model": self.model_name}
        seen = [0] * len(streams)          # tokens already sent, per choice
        offs = [0] * len(streams)          # text already sent, per choice (logprob offsets)
        totals = [0, 0, 0]
        first_final: RequestOutput | None = None    # choice 0's: its pin decision goes in usage
        prompt_sent: set[int] = set()
        trackers = [self.tracker("completions", s) for s in streams]
        try:
            async for i, out in merge(streams):
                trackers[i].on_output(out)
                c = out.outputs[0]
                lp = self._choice_logprobs(req, out, seen[i], offs[i])
                choice = {"index": i, "text": c.delta_text, "logprobs": lp,
                          "finish_reason": c.finish_reason, "stop_reason": c.stop_reason}
                if req.return_token_ids:
                    if i not in prompt_sent:           # once per choice, on its first chunk
                        prompt_sent.add(i)
                        choice["prompt_token_ids"] = list(out.prompt_token_ids)
                    choice["token_ids"] = list(c.token_ids[seen[i]:])
                seen[i], offs[i] = len(c.token_ids), offs[i] + len(c.delta_text)
                # one event per output, even with empty text (a partial UTF-8 character, a
                # token outside the tokenizer's vocabulary): clients count and time tokens
                yield sse({**head, "choices": [choice]})
                if out.finished:
                    first_final = out if i == 0 else first_final
                    if i == 0:
                        self._answered(turn, out)
                    totals[0] += len(out.prompt_token_ids)
                    totals[1] += len(c.token_ids)
                    totals[2] += out.num_cached_tokens
        finally:
            for t in trackers:
                t.close()
            turn.close()
        if req.include_usage:
            yield sse({**head, "choices": [], "usage": usage(*totals, first_final, turn)})
