"""Incremental detokenization with stop-string handling (vLLM's prefix/read-offset scheme).

Each step decodes only a short window of tokens: ``tokens[prefix_offset:]`` minus the text of
``tokens[prefix_offset:read_offset]``. Decoding from a few tokens *before* the new ones gives
the tokenizer the context it needs (SentencePiece drops the leading space of the first token of
any decode; byte-level BPE may need earlier bytes to complete a character), and subtracting the
prefix text leaves exactly the new text. While the window's text ends in U+FFFD the last token
is an incomplete UTF-8 sequence, so nothing is emitted and the window grows until it completes.

Stop strings are matched by one Aho–Corasick automaton per stop list (``stop_matcher``) fed
only the new text, so the cost per step depends on neither the output length nor the number of
stop strings. A match is the first position where any stop string ends (the longest one ending
there), whatever the split of the text into deltas. For streaming, the longest suffix of the
text that is a proper prefix of some stop string is held back (at most ``max(len(stop)) - 1``
characters; the automaton's state gives it in O(1)), so emitted text is never retracted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from continuum.engine.stop_matcher import StopMatcher
from continuum.sampling_params import SamplingParams

# How many prompt tokens seed the decode window (vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET).
INITIAL_OFFSET = 5
_REPLACEMENT = "\ufffd"


@dataclass
class DetokenizerUpdate:
    """Result of one ``update``.

    ``text_delta`` is new text safe to emit now: appending every delta (and ``flush()``) gives
    ``output_text``. ``stopped_by`` is the stop string that matched this step, if any; the
    request must then finish with reason "stop" and no further updates are accepted.
    """

    text_delta: str
    stopped_by: str | None = None


def _make_decode(tokenizer: Any, skip_special_tokens: bool) -> Callable[[list[int]], str]:
    """A ``ids -> str`` function for a HF tokenizer or a raw ``tokenizers.Tokenizer``.

    A HF fast tokenizer is unwrapped to its backend: same text without the wrapper's overhead
    and without ``clean_up_tokenization_spaces`` (which would make the window's prefix text not
    a prefix of the window's text).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "decode"):
        tokenizer = backend
    elif hasattr(tokenizer, "convert_ids_to_tokens"):  # HF slow tokenizer
        return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens,
                                            clean_up_tokenization_spaces=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


class IncrementalDetokenizer:
    """Turns one request's output tokens into text, step by step.

    Invariants:
      * ``self._tokens`` holds the prompt's last ``INITIAL_OFFSET`` tokens followed by the
        decoded output tokens; ``prefix_offset <= read_offset <= len(self._tokens)``;
        tokens from ``read_offset`` on are not yet reflected in ``output_text``.
      * ``output_text[:self._emitted]`` is exactly the text handed out through deltas, and it
        never contains (any part of) a matched stop string unless include_stop_str_in_output.
      * After a stop string matched or ``flush()``, the detokenizer is finished.
    """

    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], params: SamplingParams):
        self._decode = _make_decode(tokenizer, params.skip_special_tokens)
        self._tokens: list[int] = list(prompt_token_ids[-INITIAL_OFFSET:])
        self.prefix_offset = 0
        self.read_offset = len(self._tokens)
        self._prefix_text: str | None = None  # cache of decode(tokens[prefix:read])
        self.output_text = ""
        self._emitted = 0
        self.num_output_tokens = 0
        self._min_tokens = params.min_tokens
        self._matcher = StopMatcher(params.stop) if params.stop else None
        self._include_stop = params.include_stop_str_in_output
        self.stopped_by: str | None = None
        self.finished = False

    # ------------------------------------------------------------------ public API
    def update(self, new_token_ids: list[int], stop_terminated: bool = False) -> DetokenizerUpdate:
        """Feed this step's new token ids (usually one); return the text safe to emit.

        ``stop_terminated=True`` says the last id is the eos / stop token that ends the request;
        like vLLM it is then not decoded unless include_stop_str_in_output. The caller still
        calls ``flush()`` afterwards to release held-back text.
        """
        if self.finished:
            return DetokenizerUpdate("", None)
        self.num_output_tokens += len(new_token_ids)
        ids = list(new_token_ids)
        if stop_terminated and ids and not self._include_stop:
            ids.pop()
        new_text = ""
        if ids:
            self._tokens.extend(ids)
            new_text = self._decode_step(final=False)
        stop = self._append(new_text) if new_text else None
        return DetokenizerUpdate(self._take(), stop)

    def flush(self) -> str:
        """Finish the request (for a reason other than a stop string); return held-back text.

        Includes the text of a trailing incomplete character (as U+FFFD, exactly what
        ``tokenizer.decode`` gives), so the concatenated deltas equal the decode of the output.
        """
        if self.finished:
            return ""
        if self.read_offset < len(self._tokens):
            pending = self._decode_step(final=True)
            if pending and self._append(pending) is not None:
                return self._take()
        self.finished = True
        return self._take()

    # ------------------------------------------------------------------ decoding
    def _decode_step(self, final: bool) -> str:
        """vLLM's detokenize_incrementally: new text of tokens[read_offset:], or "" if not ready."""
        if self._prefix_text is None:
            self._prefix_text = self._decode(self._tokens[self.prefix_offset:self.read_offset])
        prefix_text = self._prefix_text
        full = self._decode(self._tokens[self.prefix_offset:])
        if not final and (len(full) <= len(prefix_text) or full.endswith(_REPLACEMENT)):
            # Incomplete UTF-8 at the end (or nothing visible yet): wait for more tokens.
            return ""
        if full.startswith(prefix_text):
            new_text = full[len(prefix_text):]
        else:
            # Rare: the prefix decoded differently in context (e.g. the prompt ended in the
            # middle of a character that the first output token completes). Take what differs.
            common = 0
            for a, b in zip(full, prefix_text):
                if a != b:
                    break
                common += 1
            new_text = full[common:]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self._tokens)
        self._prefix_text = None
        return new_text

    # ------------------------------------------------------------------ stop strings
    def _append(self, new_text: str) -> str | None:
        """Append new text, cut at a stop string if one now ends inside it; return that stop."""
        prev_len = len(self.output_text)
        self.output_text += new_text
        if self._matcher is None:
            return None
        # vLLM checks stop strings only once more than min_tokens tokens were generated; the
        # matcher still reads the text before, as a stop string may start there.
        match = self._matcher.feed(new_text, check=self.num_output_tokens > self._min_tokens)
        if match is None:
            return None
        end = prev_len + match.end
        self.output_text = self.output_text[:end if self._include_stop else end - len(match.stop)]
        self.stopped_by = match.stop
        self.finished = True
        return match.stop

    def _holdback(self) -> int:
        """Characters to keep back: the longest text suffix that may start a stop string."""
        if self.finished or self._matcher is None or self._include_stop:
            # With include_stop_str_in_output the cut is after the match's end, which lies
            # in text not yet emitted, so nothing needs holding.
            return 0
        return self._matcher.holdback

    def _take(self) -> str:
        """Emit everything not yet emitted except the hold-back."""
        end = len(self.output_text) - self._holdback()
        if end <= self._emitted:
            return ""
        delta = self.output_text[self._emitted:end]
        self._emitted = end
        return delta
