"""Request bodies of the OpenAI-compatible API (pydantic), and their SamplingParams.

Unknown fields are accepted and ignored (clients send vendor extras); the agent extension
fields are read from ``model_extra`` by ``agent.py``. Fields we cannot honour are refused with
a clear 400 (``unsupported()``) rather than silently ignored.

Types are strict (pydantic's strict mode): ``true`` is no integer, ``1`` no boolean, ``"5"``
no number; an integer is a number. A body nested deeper than ``MAX_JSON_DEPTH`` is refused
before anything walks it recursively.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from continuum.entrypoints.openai.errors import bad_request
from continuum.sampling_params import SamplingParams


# JSON nesting a request may have: tool schemas and arguments are a few levels deep; a
# thousand levels would exhaust the recursion of the template engine or the JSON encoder.
MAX_JSON_DEPTH = 64


def nested_deeper_than(obj: Any, limit: int) -> bool:
    """Whether parsed JSON has more than ``limit`` levels of lists/objects (walked level by
    level, without recursion, stopping as soon as the limit is passed)."""
    level = [obj]                      # the values inside i containers, at iteration i
    for _ in range(limit):
        level = [v for o in level if isinstance(o, (dict, list))
                 for v in (o.values() if isinstance(o, dict) else o)]
        if not level:
            return False
    return any(isinstance(o, (dict, list)) for o in level)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions (OpenAI + vLLM extensions)."""

    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _bounded_depth(cls, body: Any) -> Any:
        if nested_deeper_than(body, MAX_JSON_DEPTH):
            raise ValueError(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
        return body

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM's sampling extensions
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # vLLM's prefix-cache isolation: requests share cached KV only with the same salt
    cache_salt: str | None = Field(default=None, min_length=1, max_length=256)

    def unsupported(self) -> None:
        if self.n != 1:
            raise bad_request(f"n must be 1 (got {self.n}): send several requests instead",
                                      "n")
        if self.logit_bias:
            raise bad_request("logit_bias is not supported", "logit_bias")

    def sampling_params(self, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        return SamplingParams(
            n=self.n, temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=-1 if self.top_k is None else self.top_k,
            min_p=0.0 if self.min_p is None else self.min_p, seed=self.seed,
            presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            max_tokens=max_tokens, min_tokens=self.min_tokens, stop=self.stop,
            stop_token_ids=self.stop_token_ids, ignore_eos=self.ignore_eos, logprobs=logprobs,
            skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.include_stop_str_in_output)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingRequest):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    # vLLM's extension: each choice also carries its token ids (``prompt_token_ids`` once,
    # ``token_ids``: all of them, or the chunk's new ones when streaming)
    return_token_ids: bool | None = None

    def unsupported(self) -> None:
        super().unsupported()
        if self.echo:
            raise bad_request("echo is not supported", "echo")
        if self.suffix:
            raise bad_request("suffix is not supported", "suffix")
        if self.best_of not in (None, 1):
            raise bad_request("best_of must be 1", "best_of")

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a batch: a string, a token list, or a list of either."""
        p = self.prompt
        if isinstance(p, str) or (isinstance(p, list) and p and isinstance(p[0], int)):
            return [p]
        if not p:
            raise bad_request("prompt is empty", "prompt")
        return list(p)


class FunctionDefinition(_Strict):
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: dict[str, Any]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    add_generation_prompt: bool = True

    def unsupported(self) -> None:
        super().unsupported()
        if self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice):
            raise bad_request(
                "tool_choice 'required' or a named function needs guided decoding, which is not "
                "supported; use 'auto' or 'none'", "tool_choice")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise bad_request("response_format other than 'text' is not supported",
                                      "response_format")
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")

    @property
    def parse_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
