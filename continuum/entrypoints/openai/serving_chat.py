"""POST /v1/chat/completions: the tokenizer's chat template, tools and ``tool_calls``.

Assistant turns that carry ``tool_calls`` are rendered for the template: as structured
``tool_calls`` (arguments as objects) when the template mentions them, else as Hermes
``<tool_call>{json}</tool_call>`` text appended to the content, so the model sees its own calls
and a program's next turn shares the longest possible prefix with the previous one.

The template is the tokenizer's, or ``--chat-template``'s; one that ignores ``tools`` gets them
as a generic Hermes-style system section (``continuum/entrypoints/chat_utils.py``), so the model
sees the tools and its ``<tool_call>`` answers come back as ``tool_calls``.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import jinja2
from fastapi import Request
from fastapi.responses import StreamingResponse

from continuum.engine.async_engine import RequestStream
from continuum.entrypoints.chat_utils import ChatRenderer
from continuum.entrypoints.openai.errors import bad_request
from continuum.entrypoints.openai.protocol import (MAX_JSON_DEPTH, ChatCompletionRequest,
                                                   ChatMessage, nested_deeper_than)
from continuum.entrypoints.openai.recognition import (ChatContinuation, ProgramTurn, assign,
                                                     chat_answer_key)
from continuum.entrypoints.openai.serving import (OpenAIServing, chat_logprobs, sse,
                                                  sse_stream, until_disconnect, usage)
from continuum.errors import check_text
from continuum.kv_ttl.tool_parser import StreamingToolParser, ToolCall, parse_tool_calls


def _call_parts(call: dict) -> tuple[str, object]:
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("each tool call needs a function name", "messages")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            raise bad_request(f"tool call {name!r} has arguments that are not valid JSON (or are "
                              f"nested too deeply)", "messages") from None
    if nested_deeper_than(args, MAX_JSON_DEPTH):
        raise bad_request(f"the arguments of tool call {name!r} are nested more than "
                          f"{MAX_JSON_DEPTH} levels deep", "messages")
    return name, args


def _message(m: ChatMessage, template_knows_tool_calls: bool) -> dict:
    content = m.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request("only text content parts are supported", "messages")
            texts.append(part["text"])
        content = "\n".join(texts)
    d: dict = {"role": m.role, "content": content or ""}
    if m.name:
        d["name"] = m.name
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    if m.role == "assistant" and m.tool_calls:
        calls = [_call_parts(c) for c in m.tool_calls]
        if template_knows_tool_calls:
            d["tool_calls"] = [{"type": "function", "id": c.get("id"),
                                "function": {"name": n, "arguments": a}}
                               for c, (n, a) in zip(m.tool_calls, calls)]
        else:
            rendered = "\n".join(
                "<tool_call>\n" + json.dumps({"name": n, "arguments": a}, ensure_ascii=False)
                + "\n</tool_call>" for n, a in calls)
            d["content"] = (d["content"] + "\n" if d["content"] else "") + rendered
    return d


class OpenAIServingChat(OpenAIServing):
    def __init__(self, engine, model_name: str, metrics, chat_template: str | None = None,
                 inference=None, recorder=None):
        super().__init__(engine, model_name, metrics, inference, recorder)
        self._template_override = chat_template
        self._renderer: ChatRenderer | None = None

    @property
    def renderer(self) -> ChatRenderer:
        """Built on first use (it renders a probe conversation through the template)."""
        if self._renderer is None:
            self._renderer = ChatRenderer(self.engine.tokenizer, self._template_override)
        return self._renderer

    def render(self, req: ChatCompletionRequest) -> list[int]:
        r = self.renderer
        if not r.template:
            raise bad_request("this model's tokenizer has no chat template: start the server "
                              "with --chat-template, or use /v1/completions")
        conv = [_message(m, r.knows_tool_calls) for m in req.messages]
        tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
        try:
            text = r.render(conv, tools, req.add_generation_prompt)
        except jinja2.TemplateError as e:        # includes the template's raise_exception()
            raise bad_request(f"the chat template rejected the messages: {e}", "messages") from None
        # the template wrote the special tokens (BOS...): do not add them twice
        return r.tokenizer.encode(check_text(text, "the messages or tools"), add_special_tokens=False)

    async def create(self, req: ChatCompletionRequest, raw: Request):
        req.unsupported()
        self.check_model(req.model)
        agent = self.agent(req, raw)
        prompt = self.render(req)
        params = req.sampling_params(self.max_tokens(len(prompt), req.requested_max_tokens),
                                     req.num_logprobs)
        rid = self.new_id("chatcmpl")
        agent, turn = assign(self.inference, agent, prompt, ChatContinuation(req.messages),
                             req.cache_salt)
        text = [m.model_dump(exclude_none=True) for m in req.messages] if self.record_text else None
        try:
            stream = await self.submit(prompt, params, rid, agent, req.cache_salt, text)
        except BaseException:
            turn.close()
            raise
        created = int(time.time())
        if req.stream:
            return StreamingResponse(sse_stream(self._stream(req, rid, created, stream, turn)),
                                     media_type="text/event-stream", headers=turn.headers())
        return await until_disconnect(raw, self._full(req, rid, created, stream, turn),
                                      turn.headers())

    def _answered(self, req: ChatCompletionRequest, turn: ProgramTurn, content: str | None,
                  calls: list[dict], final) -> None:
        """The turn completed: recognition remembers the answer the client will send back."""
        turn.complete((len(req.messages),), chat_answer_key(content, calls),
                      bool(calls) or final.tool_name is not None)

    async def _full(self, req: ChatCompletionRequest, rid: str, created: int,
                    stream: RequestStream, turn: ProgramTurn) -> dict:
        tracker, final = self.tracker("chat", stream), None
        try:
            async for out in stream:
                tracker.on_output(out)
                final = out
        finally:
            stream.close()
            tracker.close()
            if final is None or not final.finished:
                turn.close()
        c = final.outputs[0]
        content, calls = parse_tool_calls(c.text) if req.parse_tools else (c.text, [])
        message: dict = {"role": "assistant", "content": content}
        finish = c.finish_reason
        if calls:
            message["tool_calls"] = [tc.to_openai() for tc in calls]
            finish = "tool_calls" if finish == "stop" else finish
        choice = {"index": 0, "message": message, "finish_reason": finish,
                  "stop_reason": c.stop_reason,
                  "logprobs": chat_logprobs(c, 0, req.top_logprobs or 0) if req.logprobs else None}
        self._answered(req, turn, content, message.get("tool_calls", []), final)
        return {"id": rid, "object": "chat.completion", "created": created,
                "model": self.model_name, "choices": [choice],
                "usage": usage(len(final.prompt_token_ids), len(c.token_ids), final.num_cached_tokens,
                               final, turn)}

    async def _stream(self, req: ChatCompletionRequest, rid: str, created: int,
                      stream: RequestStream, turn: ProgramTurn) -> AsyncIterator[str]:
        head = {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": self.model_name}

        def chunk(delta: dict, finish: str | None = None, logprobs=None) -> str:
            return sse({**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                             "finish_reason": finish}]})

        def tool_deltas(calls: list[ToolCall]) -> list[dict]:
            out = []
            for tc in calls:
                out.append({"index": n_calls[0], **tc.to_openai()})
                n_calls[0] += 1
            return out

        parser = StreamingToolParser() if req.parse_tools else None
        tracker, sent, n_calls = self.tracker("chat", stream), 0, [0]
        content, all_calls = "", []          # the whole answer, as the client reassembles it
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for out in stream:
                tracker.on_output(out)
                c = out.outputs[0]
                text, calls = parser.feed(c.delta_text) if parser else (c.delta_text, [])
                if out.finished and parser:
                    more_text, more_calls = parser.finish()
                    text, calls = text + more_text, calls + more_calls
                lp = chat_logprobs(c, sent, req.top_logprobs or 0) if req.logprobs else None
                sent = len(c.token_ids)
                delta: dict = {}
                content += text
                all_calls += [tc.to_openai() for tc in calls]
                if text:
                    delta["content"] = text
                if calls:
                    delta["tool_calls"] = tool_deltas(calls)
                finish = None
                if out.finished:
                    finish = c.finish_reason
                    if n_calls[0] and finish == "stop":
                        finish = "tool_calls"
                if out.finished:
                    self._answered(req, turn, content, all_calls, out)
                if delta or finish or lp:
                    yield chunk(delta, finish, lp)
                if out.finished and req.include_usage:
                    yield sse({**head, "choices": [], "usage": usage(
                        len(out.prompt_token_ids), len(c.token_ids), out.num_cached_tokens, out,
                        turn)})
        finally:
            stream.close()
            tracker.close()
            turn.close()
