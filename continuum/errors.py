"""Typed errors raised to users. Every error a caller can provoke with bad input is one of these."""


class ContinuumError(Exception):
    """Base class of continuum's own errors."""


class InvalidRequestError(ContinuumError, ValueError):
    """A request (prompt or sampling parameters) is malformed; nothing was scheduled."""


class PromptTooLongError(InvalidRequestError):
    """The prompt (plus at least one generated token) does not fit max_model_len."""

    def __init__(self, prompt_len: int, max_model_len: int):
        self.prompt_len = prompt_len
        self.max_model_len = max_model_len
        super().__init__(
            f"prompt has {prompt_len} tokens but max_model_len is {max_model_len}: "
            f"the prompt plus at least one generated token must fit")


class ModelLoadError(ContinuumError):
    """The model could not be located or loaded (missing path, bad files)."""


class UnsupportedArchitectureError(ModelLoadError):
    """The model's architecture is not one continuum implements."""


class ConfigError(ContinuumError, ValueError):
    """An engine argument is out of range or inconsistent."""


def check_text(text: str, what: str = "text") -> str:
    """Return ``text`` if a tokenizer can take it. A lone UTF-16 surrogate (what a JSON
    ``"\\ud800"`` escape decodes to) has no UTF-8 encoding and makes tokenizers raise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequestError(f"invalid Unicode in {what}: a lone UTF-16 surrogate at character "
                                  f"{e.start}") from None
    return text


class TensorParallelError(ContinuumError, RuntimeError):
    """A tensor-parallel rank died, hung past the collective timeout, or failed a step: the
    engine's ranks no longer agree, so the engine is broken (every later step raises this)."""
