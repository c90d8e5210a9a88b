"""Zero-config programs on the server: the program of a request that sends no program id
(docs/agent-api.md, "Clients that send no program id"; the rules are in
``continuum/kv_ttl/recognizer.py``).

This file says what an *answer* is on each endpoint, so that the recogniser can check that a
new request carries an earlier turn's answer after that turn's prompt:

- chat: the assistant message the server returned, as (content stripped, [(tool name,
  arguments as canonical JSON)]); the new request must have an assistant message with the
  same fingerprint at the earlier request's message count. Comparing messages, not tokens,
  makes the check immune to the chat template's re-rendering of the assistant turn (the
  Hermes text of tool calls, an end-of-turn token, whitespace) and to text -> tokens -> text
  round trips of the model's output.
- completions (one prompt per request): the output, as text and as token ids; the new
  prompt's tokens after the earlier prompt must be those very token ids (a client that sends
  token prompts and appends the returned ``token_ids``), or decode to text that starts with the
  output text (a client that appends the text). Both are needed: the text of token ids depends
  on their neighbours (a UTF-8 character split between the prompt, the answer and the next
  input; special tokens left out of the text), so a verbatim token echo may not decode to the
  text the server returned.

Both servers (one engine, and the Ray front of several replicas) run this in front of the
engine, so the router places an id-less request by the program recognised here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from continuum.kv_ttl.recognizer import (Attachment, ProgramRecognizer, TurnSignature,
                                         tokens_answer_key)
from continuum.request import AgentInfo


def _digest(obj: Any) -> bytes:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                                     sort_keys=True).encode()).digest()


def _content_text(content: Any) -> str:
    if isinstance(content, list):        # content parts: the text ones, as the renderer joins them
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def _canonical_args(args: Any) -> Any:
    if isinstance(args, str):
        try:
            return json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            return args                  # not JSON: compared as the string it is
    return args


def chat_answer_key(content: Any, tool_calls: Sequence[dict] | None) -> bytes:
    """Fingerprint of an assistant message: stripped text content and its tool calls' names
    and arguments (ids and JSON spacing ignored)."""
    calls = []
    for c in tool_calls or ():
        fn = c.get("function") if isinstance(c.get("function"), dict) else c
        calls.append([fn.get("name"), _canonical_args(fn.get("arguments", {}))])
    return _digest([_content_text(content).strip(), calls])


def text_answer_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class ChatContinuation:
    """A chat request's messages, offered to the recogniser (answers at message indices)."""

    def __init__(self, messages: Sequence[Any]):
        self.messages = messages

    def answer_key(self, sig: TurnSignature) -> bytes | None:
        i = sig.answer_at[0]
        if i >= len(self.messages) or self.messages[i].role != "assistant":
            return None
        m = self.messages[i]
        return chat_answer_key(m.content, m.tool_calls)


class TextContinuation:
    """A completion prompt's tokens (answers: the text right after the earlier prompt)."""

    # Re-encoding an answer's text may take more tokens than generating it did (a byte
    # tokenizer re-encodes one U+FFFD as three bytes): decode this many times its tokens.
    SLACK = 4

    def __init__(self, prompt: Sequence[int], decode: Callable[[list[int]], str]):
        self.prompt, self.decode = prompt, decode

    def answer_key(self, sig: TurnSignature) -> bytes | None:
        n_tokens, n_chars = sig.answer_at
        start = sig.prompt_len
        if (sig.answer_ids_key is not None
                and tokens_answer_key(self.prompt[start:start + n_tokens]) == sig.answer_ids_key):
            return sig.answer_key            # the answer's own token ids came back verbatim
        text = self.decode(list(self.prompt[start:start + self.SLACK * n_tokens + 16]))
        return text_answer_key(text[:n_chars]) if len(text) >= n_chars else None


class ProgramTurn:
    """One request's part in recognition: ``complete`` it with its answer, ``close`` it
    always (a turn not completed gives its parent back, so a retry can continue it)."""

    def __init__(self, inference: "ProgramInference | None", att: Attachment | None,
                 prompt: Sequence[int], cache_salt: str | None):
        self.inference, self.attachment = inference, att
        self.prompt, self.cache_salt = prompt, cache_salt
        self.done = False

    @property
    def program_id(self) -> str | None:
        return None if self.attachment is None else self.attachment.program_id

    def usage_fields(self) -> dict:
        """What ``usage.continuum`` says about the program (empty: no program)."""
        a = self.attachment
        return {} if a is None else {"program_id": a.program_id, "program_inferred": a.inferred,
                                     "program_attached": a.attached}

    def headers(self) -> dict[str, str]:
        a = self.attachment
        return {} if a is None else {"X-Program-Id": a.program_id,
                                     "X-Program-Inferred": "true" if a.inferred else "false"}

    def complete(self, answer_at: tuple[int, ...], answer_key: bytes, called_tool: bool,
                 answer_ids_key: bytes | None = None) -> None:
        if self.done:
            return
        self.done = True
        if self.inference is not None and self.attachment is not None and self.attachment.inferred:
            self.inference.recognizer.record(self.attachment, self.prompt, answer_at, answer_key,
                                             called_tool, self.inference.clock(), self.cache_salt,
                                             answer_ids_key)

    def close(self) -> None:
        if not self.done:
            self.done = True
            if self.inference is not None and self.attachment is not None:
                self.inference.recognizer.release(self.attachment)


class ProgramInference:
    """The server's recogniser and clock (one per app, shared by both endpoints)."""

    def __init__(self, recognizer: ProgramRecognizer, clock: Callable[[], float]):
        self.recognizer, self.clock = recognizer, clock

    def snapshot(self) -> dict[str, float]:
        return self.recognizer.snapshot()


def assign(inference: ProgramInference | None, agent: AgentInfo, prompt: Sequence[int],
           continuation: Any, cache_salt: str | None) -> tuple[AgentInfo, ProgramTurn]:
    """The request's AgentInfo with its program, and its recognition turn. An explicit program
    id always wins (nothing is recognised or recorded for it); without one, and with
    recognition on, the recogniser picks the program; with it off, the request stays a
    program of one turn, as before."""
    if agent.program_id is not None:
        return agent, ProgramTurn(None, Attachment(agent.program_id, inferred=False), prompt,
                                  cache_salt)
    if inference is None or continuation is None:
        return agent, ProgramTurn(None, None, prompt, cache_salt)
    att = inference.recognizer.recognize(prompt, continuation, inference.clock(), cache_salt)
    return (dataclasses.replace(agent, program_id=att.program_id, inferred=att.inferred),
            ProgramTurn(inference, att, prompt, cache_salt))
