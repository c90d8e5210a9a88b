"""GGUF tokenizers converted once, then loaded from a cache (seconds -> a fraction of one).

transformers builds a fast tokenizer from a GGUF's vocabulary and merges on every load
(SmolLM2: 5-20 s, most of a start-up). The result is saved with ``save_pretrained`` under
``<cache root>/tokenizers/<key>/`` (see :mod:`continuum.cache_dir`) and later loads read its
``tokenizer.json`` instead.

The key is a SHA-256 over the file's whole metadata section (``GGUFFile.metadata_digest``:
vocabulary, merges, special ids, chat template, flags) plus the transformers and tokenizers
versions that did the conversion. Why not a hash of the whole file: that is seconds per
gigabyte at every start, and the tensors cannot change the tokenizer. Why not size+mtime:
a copied or re-downloaded file would miss, and an edited one with a restored mtime would
hit stale data; hashing a few MB of metadata costs ~10 ms and is exact.

Invariants: an entry is published by an atomic rename of a complete folder, so a reader
never sees a half-written one; an entry that fails to load is rebuilt (with a warning);
a cache that cannot be written only costs the conversion next time (with a warning).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from continuum.cache_dir import cache_root

logger = logging.getLogger(__name__)

# Bump when what is stored (or how it is post-processed) changes.
CACHE_FORMAT = "1"


def cache_key(metadata_digest: str) -> str:
    """The entry name for a GGUF whose metadata hashes to ``metadata_digest``."""
    import tokenizers
    import transformers

    parts = (CACHE_FORMAT, metadata_digest, transformers.__version__, tokenizers.__version__)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def tokenizers_dir() -> Path:
    return cache_root() / "tokenizers"


def _load(entry: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(entry), local_files_only=True)


def _store(entry: Path, tokenizer) -> None:
    """Save into a temporary sibling, then rename it into place (another process may win)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.exists():        # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_tokenizer(metadata_digest: str, convert: Callable[[], Any]) -> tuple[Any, bool]:
    """(tokenizer, came_from_cache). ``convert()`` builds it when there is no usable entry;
    its result is stored for next time."""
    entry = tokenizers_dir() / cache_key(metadata_digest)
    if entry.is_dir():
        try:
            return _load(entry), True
        except Exception as e:     # noqa: BLE001 - a damaged entry: rebuild it
            logger.warning("cached tokenizer %s is unreadable (%s); converting again", entry, e)
            shutil.rmtree(entry, ignore_errors=True)
    tokenizer = convert()
    try:
        _store(entry, tokenizer)
    except Exception as e:         # noqa: BLE001 - a read-only cache only costs time
        logger.warning("could not cache the tokenizer in %s (%s); the next start converts it again",
                       entry, e)
    return tokenizer, False
