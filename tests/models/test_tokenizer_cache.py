"""The GGUF tokenizer cache: a cached tokenizer behaves exactly like a fresh conversion."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from continuum.cache_dir import cache_root
from continuum.models import gguf_loader, tokenizer_cache
from tests.conftest import requires_smollm2

TEXTS = ["The capital of France is", "", " leading and  double  spaces\n\ttabs\n",
         "héllo 🌍 世界", "<|im_start|>user\nHi<|im_end|>", "x" * 300, "def f(a):\n    return a**2\n",
         "1234567890 3.14159 -42", "<|endoftext|>plain<|im_end|>"]
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}],
]


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("CONTINUUM_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == Path.home() / ".cache" / "continuum"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "continuum"
    monkeypatch.setenv("CONTINUUM_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_key_depends_on_the_metadata_digest():
    assert tokenizer_cache.cache_key("a" * 64) != tokenizer_cache.cache_key("b" * 64)
    assert tokenizer_cache.cache_key("a" * 64) == tokenizer_cache.cache_key("a" * 64)


@pytest.fixture(scope="module")
def gguf_file():
    from continuum.models.loader import default_model_path
    path = default_model_path()
    return path, gguf_loader.open_gguf(path)


@pytest.fixture(scope="module")
def uncached(gguf_file):
    path, reader = gguf_file
    return gguf_loader.gguf_tokenizer(path, reader, cache=False)


def _assert_same_tokenizer(a, b) -> None:
    assert type(a) is type(b) and len(a) == len(b)
    assert (a.bos_token_id, a.eos_token_id, a.pad_token_id, a.unk_token_id) == \
        (b.bos_token_id, b.eos_token_id, b.pad_token_id, b.unk_token_id)
    assert a.all_special_ids == b.all_special_ids and a.get_vocab() == b.get_vocab()
    for text in TEXTS:
        for special in (True, False):
            ids = a.encode(text, add_special_tokens=special)
            assert ids == b.encode(text, add_special_tokens=special), (text, special)
            assert a.decode(ids) == b.decode(ids)
            assert a.decode(ids, skip_special_tokens=True) == b.decode(ids, skip_special_tokens=True)
    assert a.chat_template == b.chat_template
    for conv in CONVERSATIONS:
        for gen in (True, False):
            ta = a.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert ta == b.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert a.encode(ta, add_special_tokens=False) == b.encode(ta, add_special_tokens=False)


@requires_smollm2
def test_cached_tokenizer_equals_a_fresh_conversion(gguf_file, uncached, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTINUUM_CACHE_DIR", str(tmp_path))
    path, reader = gguf_file
    calls = []

    def convert():
        calls.append(1)
        return uncached

    first, hit1 = tokenizer_cache.cached_tokenizer(reader.metadata_digest, convert)
    second, hit2 = tokenizer_cache.cached_tokenizer(reader.metadata_digest, convert)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    entries = list((tmp_path / "tokenizers").iterdir())
    assert [e.name for e in entries] == [tokenizer_cache.cache_key(reader.metadata_digest)]
    assert (entries[0] / "tokenizer.json").is_file()
    _assert_same_tokenizer(second, uncached)
    # What the loader hands out (chat template guaranteed) is the cached one too.
    _assert_same_tokenizer(gguf_loader.gguf_tokenizer(path, reader), uncached)


@requires_smollm2
def test_a_damaged_entry_is_rebuilt(gguf_file, uncached, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CONTINUUM_CACHE_DIR", str(tmp_path))
    _, reader = gguf_file
    tokenizer_cache.cached_tokenizer(reader.metadata_digest, lambda: uncached)
    entry = tmp_path / "tokenizers" / tokenizer_cache.cache_key(reader.metadata_digest)
    (entry / "tokenizer.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, "continuum.models.tokenizer_cache"):
        tok, hit = tokenizer_cache.cached_tokenizer(reader.metadata_digest, lambda: uncached)
    assert not hit and any("unreadable" in r.getMessage() for r in caplog.records)
    tok, hit = tokenizer_cache.cached_tokenizer(reader.metadata_digest, lambda: uncached)
    assert hit
    _assert_same_tokenizer(tok, uncached)


@requires_smollm2
def test_an_unwritable_cache_only_costs_time(gguf_file, uncached, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CONTINUUM_CACHE_DIR", str(blocker))
    _, reader = gguf_file
    with caplog.at_level(logging.WARNING, "continuum.models.tokenizer_cache"):
        tok, hit = tokenizer_cache.cached_tokenizer(reader.metadata_digest, lambda: uncached)
    assert tok is uncached and not hit
    assert any("could not cache" in r.getMessage() for r in caplog.records)
