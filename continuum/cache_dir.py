"""Where continuum keeps what it builds once per machine (JIT kernels, converted tokenizers).

``$CONTINUUM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/continuum``, else
``~/.cache/continuum``. Everything under it can be deleted at any time: it is rebuilt on the
next start (which is then slower, and says so).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root (not created here; each user makes its own sub-folder)."""
    env = os.environ.get("CONTINUUM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "continuum"
