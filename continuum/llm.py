"""The offline Python API: ``LLM(model, **engine_args).generate(...)`` and ``.chat(...)``."""
from __future__ import annotations

from collections.abc import Sequence

import jinja2
from tqdm.auto import tqdm

from continuum.config import EngineArgs
from continuum.engine.engine import LLMEngine
from continuum.entrypoints.chat_utils import ChatRenderer, load_chat_template
from continuum.errors import InvalidRequestError
from continuum.outputs import RequestOutput
from continuum.progress import ensure_visible
from continuum.sampling_params import SamplingParams

Prompt = str | list[int] | dict
Message = dict


class LLM:
    """An engine for offline batch generation.

    ``model``: a local Hugging Face directory (config.json + safetensors + tokenizer), a
    ``.gguf`` file, ``"random"`` / ``"random:<preset>"`` (seeded random weights, byte-level
    tokenizer), or None for the embedded default (SmolLM2-135M-Instruct). Keyword arguments
    are ``EngineArgs`` fields (``kv_cache_memory="2GiB"``, ``max_num_seqs``, ``dtype``...) and
    scheduling-policy knobs (``admission_target``...; docs/scheduling.md).
    ``chat_template``: the template ``chat()`` uses, a path to a Jinja file or the Jinja text
    (default: the tokenizer's); as in vLLM, ``chat(chat_template=...)`` overrides it per call.
    A template that ignores ``tools`` gets them as a Hermes-style system section
    (``continuum.entrypoints.chat_utils``); parse the answer with
    ``continuum.kv_ttl.tool_parser.parse_tool_calls``.
    """

    def __init__(self, model: str | None = None, chat_template: str | None = None, **kwargs):
        template = load_chat_template(chat_template)       # a bad path fails before the load
        ensure_visible()     # start-up progress on stderr unless the application set up logging
        self.engine = LLMEngine(EngineArgs.from_kwargs(model=model, **kwargs))
        self._renderer = ChatRenderer(self.engine.tokenizer, template)

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate for each prompt (a string, a list of token ids, or vLLM's prompt dict
        ``{"prompt": str}`` / ``{"prompt_token_ids": [...]}`` with an optional
        ``"cache_salt"``). Outputs come back in prompt order."""
        if isinstance(prompts, (str, dict)) or (
                isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            return []
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params = [sampling_params or SamplingParams()] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise InvalidRequestError(
                    f"got {len(prompts)} prompts but {len(params)} sampling params")
        return self._run(prompts, params, use_tqdm)

    def chat(self, messages: Sequence[Message] | Sequence[Sequence[Message]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             use_tqdm: bool = True, add_generation_prompt: bool = True,
             tools: list[dict] | None = None, chat_template: str | None = None) -> list[RequestOutput]:
        """Apply the chat template to one conversation (a list of messages) or several, then
        generate. ``chat_template`` (a Jinja file or text) overrides ``LLM(chat_template=)``."""
        if messages and isinstance(messages[0], dict):
            messages = [messages]
        renderer = self._renderer_for(chat_template)
        prompts = [self._render(renderer, conv, add_generation_prompt, tools) for conv in messages]
        return self.generate(prompts, sampling_params, use_tqdm)

    def apply_chat_template(self, conversation: Sequence[Message], add_generation_prompt: bool = True,
                            tools: list[dict] | None = None, chat_template: str | None = None) -> list[int]:
        """The prompt token ids of one conversation (see ``chat``)."""
        return self._render(self._renderer_for(chat_template), conversation,
                            add_generation_prompt, tools)

    def _renderer_for(self, chat_template: str | None) -> ChatRenderer:
        if chat_template is None:
            return self._renderer
        return ChatRenderer(self.engine.tokenizer, load_chat_template(chat_template))

    @staticmethod
    def _render(renderer: ChatRenderer, conversation: Sequence[Message], add_generation_prompt: bool,
                tools: list[dict] | None) -> list[int]:
        for m in conversation:
            if not isinstance(m, dict) or "role" not in m:
                raise InvalidRequestError(f"each message needs a 'role' (and 'content'), got {m!r}")
        try:
            text = renderer.render(list(conversation), tools, add_generation_prompt)
        except jinja2.TemplateError as e:           # includes the template's raise_exception()
            raise InvalidRequestError(f"the chat template rejected the conversation: {e}") from None
        # The template already wrote the special tokens (BOS etc.): do not add them twice.
        return renderer.tokenizer.encode(text, add_special_tokens=False)

    def _run(self, prompts: list[Prompt], params: list[SamplingParams],
             use_tqdm: bool) -> list[RequestOutput]:
        engine = self.engine
        added = []
        try:
            for p, sp in zip(prompts, params):
                added.append(engine.add_request(p, sp).request_id)
        except Exception:
            engine.abort_request(added)   # all-or-nothing: a bad prompt leaves nothing queued
            raise
        order = {rid: i for i, rid in enumerate(added)}
        results: list[RequestOutput | None] = [None] * len(added)
        bar = tqdm(total=len(added), desc="Processed prompts", disable=not use_tqdm, dynamic_ncols=True)
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in order:
                        results[order[out.request_id]] = out
                        bar.update(1)
        except BaseException:
            engine.abort_request(added)
            raise
        finally:
            bar.close()
        return results
