"""IncrementalDetokenizer on tokenizers built offline in the test (byte-level BPE, Metaspace)."""
from __future__ import annotations

import json
import random

import pytest
from tokenizers import (SentencePieceBPETokenizer, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, trainers)
from transformers import PreTrainedTokenizerFast

from continuum.engine.detokenizer import INITIAL_OFFSET, DetokenizerUpdate, IncrementalDetokenizer
from continuum.errors import InvalidRequestError
from continuum.sampling_params import (MAX_STOP_STRING_CHARS, MAX_STOP_STRINGS, MAX_STOP_TOKEN_IDS,
                                       SamplingParams)
from tests.engine.test_stop_matcher import brute_match, random_split

CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Grüße aus München, naïve café, señor.",
    "你好世界，今天天气很好。",
    "Emoji time 🙂🚀 and more text here.",
    "The answer is 42. STOP here and then some more.",
] * 3

MULTILINGUAL = "Hello wörld! 你好世界 🙂🚀 naïve café — ünïcödé 👨‍👩‍👧 done."


def _byte_level(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|end|>"], show_progress=False))
    return tok


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    """Byte-level BPE with some merges (words are multi-char tokens)."""
    return _byte_level(400)


@pytest.fixture(scope="module")
def tiny_bpe() -> Tokenizer:
    """Byte-level BPE with almost no merges: CJK / emoji characters span 2-4 tokens."""
    return _byte_level(260)


@pytest.fixture(scope="module")
def sp_bpe() -> Tokenizer:
    """SentencePiece-style BPE (Metaspace, leading '▁' on words), trained in-test."""
    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(CORPUS, vocab_size=200, special_tokens=["<unk>", "</s>"],
                           show_progress=False)
    return sp._tokenizer


@pytest.fixture(scope="module")
def sp_byte_fallback(sp_bpe: Tokenizer) -> Tokenizer:
    """Llama-2-style: Metaspace BPE + <0xNN> byte-fallback tokens for unseen characters."""
    cfg = json.loads(sp_bpe.to_str())
    vocab = cfg["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    cfg["model"]["byte_fallback"] = True
    cfg["model"]["unk_token"] = None
    cfg["normalizer"] = None
    cfg["pre_tokenizer"] = None
    tok = Tokenizer.from_str(json.dumps(cfg))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tok


def run(tokenizer, prompt_ids: list[int], out_ids: list[int], params: SamplingParams,
        ) -> tuple[IncrementalDetokenizer, list[DetokenizerUpdate], str]:
    """Feed output ids one per step until a stop string matches; flush otherwise."""
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, params)
    updates = []
    for t in out_ids:
        u = detok.update([t])
        updates.append(u)
        if u.stopped_by is not None:
            return detok, updates, ""
    return detok, updates, detok.flush()


def joined(updates: list[DetokenizerUpdate], tail: str = "") -> str:
    return "".join(u.text_delta for u in updates) + tail


@pytest.mark.parametrize("name", ["bpe", "tiny_bpe"])
@pytest.mark.parametrize("wrap_hf", [False, True])
def test_byte_level_roundtrip_multilingual(request, name: str, wrap_hf: bool):
    tok: Tokenizer = request.getfixturevalue(name)
    prompt = tok.encode("Translate this, please: ").ids
    out = tok.encode(MULTILINGUAL).ids
    assert len(out) > len(MULTILINGUAL.encode()) // 4  # many multi-token characters
    tk = PreTrainedTokenizerFast(tokenizer_object=tok) if wrap_hf else tok
    detok, updates, tail = run(tk, prompt, out, SamplingParams())
    assert joined(updates, tail) == tok.decode(out) == MULTILINGUAL
    assert detok.output_text == MULTILINGUAL
    # Partial UTF-8 sequences are never emitted.
    assert all("\ufffd" not in u.text_delta for u in updates)


def test_emoji_spans_several_tokens_emits_once(tiny_bpe: Tokenizer):
    out = tiny_bpe.encode("a🚀b").ids
    assert len(out) >= 5  # 'a', >=2 tokens for the 4-byte emoji, 'b'
    detok, updates, tail = run(tiny_bpe, [], out, SamplingParams())
    deltas = [u.text_delta for u in updates]
    assert deltas[0] == "a"
    assert "🚀" in deltas and deltas.count("") == len(out) - 3
    assert joined(updates, tail) == "a🚀b"


def test_decode_window_stays_small(bpe: Tokenizer):
    """Cost per step is independent of the output length: only short windows are decoded."""
    calls: list[int] = []

    class Counting:
        def decode(self, ids, skip_special_tokens=True):
            calls.append(len(ids))
            return bpe.decode(ids, skip_special_tokens=skip_special_tokens)

    out = bpe.encode(MULTILINGUAL * 8).ids
    _, updates, tail = run(Counting(), bpe.encode("prompt " * 20).ids, out, SamplingParams())
    assert joined(updates, tail) == MULTILINGUAL * 8
    assert max(calls) <= INITIAL_OFFSET + 8
    assert len(calls) <= 2 * len(out) + 2


def test_sentencepiece_leading_space(sp_bpe: Tokenizer):
    prompt = sp_bpe.encode("Hello there").ids
    out = sp_bpe.encode("world again and more text").ids
    assert sp_bpe.id_to_token(out[0]).startswith("▁")
    detok, updates, tail = run(sp_bpe, prompt, out, SamplingParams())
    text = joined(updates, tail)
    # The first output word keeps its leading space: the text continues the prompt's text.
    assert text == " world again and more text"
    full = sp_bpe.decode(prompt + out)
    assert full == sp_bpe.decode(prompt) + text
    # Without a prompt there is no previous word, so no leading space (same as decode()).
    _, updates, tail = run(sp_bpe, [], out, SamplingParams())
    assert joined(updates, tail) == sp_bpe.decode(out) == "world again and more text"


def test_sentencepiece_byte_fallback_multilingual(sp_byte_fallback: Tokenizer):
    tok = sp_byte_fallback
    text = "Hello 你好 🙂 wörld"
    out = tok.encode(text).ids
    assert any(tok.id_to_token(i).startswith("<0x") for i in out)
    prompt = tok.encode("Say").ids
    detok, updates, tail = run(tok, prompt, out, SamplingParams())
    assert joined(updates, tail) == " " + text
    assert tok.decode(prompt + out) == "Say " + text
    assert all("\ufffd" not in u.text_delta for u in updates)


def _ids_for_stop(tok: Tokenizer, text: str, stop: str) -> list[int]:
    ids = tok.encode(text).ids
    # The stop string must really span a token boundary for the test to mean anything.
    assert not any(stop in tok.decode([i]) for i in ids)
    return ids


@pytest.mark.parametrize("name", ["bpe", "tiny_bpe", "sp_bpe"])
def test_stop_string_across_tokens_is_cut(request, name: str):
    tok: Tokenizer = request.getfixturevalue(name)
    text = "The answer is 42. STOP here and then some more."
    ids = _ids_for_stop(tok, text, "is 42")
    detok, updates, tail = run(tok, [], ids, SamplingParams(stop=["is 42", "never"]))
    assert updates[-1].stopped_by == "is 42"
    assert len(updates) < len(ids)  # stopped before consuming everything
    assert detok.output_text == "The answer "
    # Deltas only ever append, so this also shows no part of the stop string leaked.
    assert joined(updates) == detok.output_text
    # Finished: later calls are no-ops.
    assert detok.update(ids[-1:]).text_delta == "" and detok.flush() == ""


def test_stop_string_include_in_output(bpe: Tokenizer):
    text = "The answer is 42. STOP here and then some more."
    ids = _ids_for_stop(bpe, text, "is 42")
    detok, updates, _ = run(bpe, [], ids, SamplingParams(stop="is 42",
                                                          include_stop_str_in_output=True))
    assert updates[-1].stopped_by == "is 42"
    assert detok.output_text == "The answer is 42"
    assert joined(updates) == detok.output_text


def test_earliest_stop_string_wins(tiny_bpe: Tokenizer):
    ids = tiny_bpe.encode("xx abcdef yy").ids
    detok, updates, _ = run(tiny_bpe, [], ids, SamplingParams(stop=["def", "bcdef"]))
    assert updates[-1].stopped_by == "bcdef"
    assert detok.output_text == "xx a"


class Pieces:
    """A tokenizer whose token i decodes to ``pieces[i]``: any split of a text into tokens."""

    def __init__(self, pieces: list[str]):
        self.pieces = pieces

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.pieces[i] for i in ids)


def run_pieces(pieces: list[str], params: SamplingParams):
    return run(Pieces(pieces), [], list(range(len(pieces))), params)


def test_stop_strings_do_not_depend_on_the_split():
    rng = random.Random(99)
    for _ in range(500):
        stops = ["".join(rng.choices("ab", k=rng.randint(1, 4))) for _ in range(rng.randint(1, 4))]
        text = "".join(rng.choices("abx", k=rng.randint(1, 20)))
        want = brute_match(stops, text)
        detok, updates, tail = run_pieces(random_split(rng, text), SamplingParams(stop=stops))
        assert detok.stopped_by == (want and want.stop)
        assert detok.output_text == (text[:want.end - len(want.stop)] if want else text)
        assert joined(updates, tail) == detok.output_text


def test_short_stop_inside_a_longer_one_in_the_same_token():
    """Earliest end wins. The old loop picked the earliest *start* among matches ending in one
    delta ("abcd" here), but "bc" whenever the text arrived in smaller pieces."""
    for pieces in (["xx ", "abcd", " yy"], ["xx ", "ab", "cd", " yy"]):
        detok, updates, _ = run_pieces(pieces, SamplingParams(stop=["abcd", "bc"]))
        assert detok.stopped_by == "bc" and detok.output_text == joined(updates) == "xx a"


def test_stop_string_starting_within_min_tokens():
    detok, updates, _ = run_pieces(["xa", "b"], SamplingParams(stop=["ab"], min_tokens=1))
    assert [u.text_delta for u in updates] == ["x", ""]
    assert detok.stopped_by == "ab" and detok.output_text == "x"


def test_stop_string_within_min_tokens_is_not_held_back():
    """A whole stop string inside the first min_tokens tokens is plain text: emitted at once."""
    detok, updates, _ = run_pieces(["ab", " c", "ab"], SamplingParams(stop=["ab"], min_tokens=1))
    assert [u.text_delta for u in updates] == ["ab", " c", ""]
    assert detok.stopped_by == "ab" and detok.output_text == "ab c"


def test_matching_reads_each_character_once_whatever_the_stop_list():
    rng = random.Random(5)
    stops = ["".join(rng.choices("ab", k=MAX_STOP_STRING_CHARS - 1)) + "c"
             for _ in range(MAX_STOP_STRINGS)]
    pieces = ["".join(rng.choices("ab ", k=rng.randint(1, 6))) for _ in range(400)]
    detok, _, _ = run_pieces(pieces, SamplingParams(stop=stops))
    assert detok.stopped_by is None and detok.output_text == "".join(pieces)
    # Each step feeds only its new text: at most 2 automaton look-ups per output character.
    assert detok._matcher.transitions <= 2 * len(detok.output_text)


def test_stop_bounds():
    SamplingParams(stop=["x" * MAX_STOP_STRING_CHARS] * MAX_STOP_STRINGS,
                   stop_token_ids=list(range(MAX_STOP_TOKEN_IDS)))
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_STOP_STRINGS} stop strings.*"
                                                  f"got {MAX_STOP_STRINGS + 1}"):
        SamplingParams(stop=["x"] * (MAX_STOP_STRINGS + 1))
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_STOP_STRING_CHARS} characters, "
                                                  f"stop\\[1\\] has {MAX_STOP_STRING_CHARS + 1}"):
        SamplingParams(stop=["ok", "x" * (MAX_STOP_STRING_CHARS + 1)])
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_STOP_TOKEN_IDS} stop_token_ids"):
        SamplingParams(stop_token_ids=[7] * (MAX_STOP_TOKEN_IDS + 1))


def test_holdback_released_when_not_a_stop(tiny_bpe: Tokenizer):
    """A partial stop prefix is held back, then released when the text diverges."""
    text = "go STONE STO"
    ids = tiny_bpe.encode(text).ids
    detok = IncrementalDetokenizer(tiny_bpe, [], SamplingParams(stop=["STOP"]))
    emitted = ""
    for i, t in enumerate(ids):
        emitted += detok.update([t]).text_delta
        so_far = tiny_bpe.decode(ids[:i + 1])
        # Whatever is held is a (proper) prefix of "STOP".
        held = so_far[len(emitted):]
        assert so_far.startswith(emitted) and "STOP".startswith(held) and len(held) < 4
    assert emitted == "go STONE "
    # Request ends for another reason (length): the held-back text comes out.
    assert detok.flush() == "STO"
    assert detok.output_text == text and detok.stopped_by is None


def test_min_tokens_delays_stop_strings(tiny_bpe: Tokenizer):
    ids = tiny_bpe.encode("ab ab ab").ids
    detok, updates, tail = run(tiny_bpe, [], ids, SamplingParams(stop=["ab"], min_tokens=4))
    # The stop strings within the first 4 tokens are ignored (vLLM); the next one stops.
    assert updates[-1].stopped_by == "ab"
    assert detok.output_text == "ab ab "


def test_stop_terminated_token_not_decoded(bpe: Tokenizer):
    ids = bpe.encode("Hello world").ids
    detok = IncrementalDetokenizer(bpe, [], SamplingParams(skip_special_tokens=False))
    end = bpe.token_to_id("<|end|>")
    text = "".join(detok.update([t]).text_delta for t in ids)
    text += detok.update([end], stop_terminated=True).text_delta + detok.flush()
    assert text == "Hello world" == detok.output_text


@pytest.mark.parametrize("skip", [True, False])
def test_skip_special_tokens(bpe: Tokenizer, skip: bool):
    end = bpe.token_to_id("<|end|>")
    ids = bpe.encode("Hello").ids + [end] + bpe.encode(" world").ids
    _, updates, tail = run(bpe, [], ids, SamplingParams(skip_special_tokens=skip))
    assert joined(updates, tail) == ("Hello world" if skip else "Hello<|end|> world")


def test_flush_emits_trailing_partial_character(tiny_bpe: Tokenizer):
    ids = tiny_bpe.encode("ok 你").ids
    assert len(tiny_bpe.encode("你").ids) >= 2
    cut = ids[:-1]  # request hit max_tokens in the middle of the character
    detok, updates, tail = run(tiny_bpe, [], cut, SamplingParams())
    assert joined(updates) == "ok "
    assert joined(updates, tail) == tiny_bpe.decode(cut)
