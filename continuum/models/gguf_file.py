"""A fast, read-only parser for GGUF files (llama.cpp's format, versions 2 and 3, little-endian).

Why not ``gguf.GGUFReader``: it builds a numpy view per metadata element, so a 49k-token
vocabulary plus its merges costs ~3 s to parse (seconds more on a busy machine). Here the
header is walked with ``struct`` over an ``mmap`` and string arrays (vocabularies, merge
tables) are only decoded when someone reads them: parsing SmolLM2's file takes ~0.1 s.

Invariants:
- ``GGUFFile.tensors[i].data`` is exactly what ``GGUFReader`` exposes for that tensor
  (same dtype, same shape: float arrays for F32/F16/F64/I*, bytes ``[..., row_bytes]`` for
  quantised types), a read-only view of the mapped file, so ``gguf.quants.dequantize``
  accepts it unchanged. ``GGUFFile.tensors[i].shape`` is in GGUF order (innermost first).
- ``metadata`` values: scalars as Python ``int``/``float``/``bool``/``str``; arrays of
  numbers as read-only numpy arrays; arrays of strings as a lazily decoded sequence; arrays
  of arrays as lists.
- ``metadata_digest`` is the SHA-256 of the header bytes up to the end of the metadata
  section (magic, version, counts, every key and value): two files with the same digest
  have identical metadata, whatever their tensors.
"""
from __future__ import annotations

import hashlib
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from continuum.errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# GGUF value type -> (struct format, numpy dtype); 8 = string and 9 = array are variable-size.
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
            4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
            10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64)}
_STRING, _ARRAY = 8, 9
# ggml types stored as plain numbers (GGMLQuantizationType ids) -> numpy dtype, as GGUFReader.
_PLAIN_TENSOR_TYPES = {0: np.float32, 1: np.float16, 28: np.float64, 24: np.int8, 25: np.int16,
                       26: np.int32, 27: np.int64}


class StringArray(Sequence):
    """A GGUF array of strings, decoded (all at once) on first access."""

    def __init__(self, buf, start: int, count: int):
        self._buf, self._start, self._count = buf, start, count
        self._items: list[str] | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i):
        if self._items is None:
            self._items = _decode_strings(self._buf, self._start, self._count)
        return self._items[i]

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor's table entry plus its data, a view of the mapped file (see module doc)."""

    name: str
    tensor_type: int          # a gguf.GGMLQuantizationType value
    shape: tuple[int, ...]    # GGUF order: innermost dimension first
    data: np.ndarray


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensor]
    metadata_digest: str

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)


def _decode_strings(buf, pos: int, count: int) -> list[str]:
    out = []
    unpack = struct.Struct("<Q").unpack_from
    for _ in range(count):
        (n,) = unpack(buf, pos)
        pos += 8
        out.append(bytes(buf[pos:pos + n]).decode("utf-8"))
        pos += n
    return out


def _skip_strings(buf, pos: int, count: int) -> int:
    unpack = struct.Struct("<Q").unpack_from
    for _ in range(count):
        pos += 8 + unpack(buf, pos)[0]
    return pos


class _Cursor:
    """Sequential little-endian reads over the mapped file."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str):
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise ValueError("a string runs past the end of the file")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8")
        self.pos += n
        return s

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype][0])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise ValueError(f"unknown metadata value type {vtype}")
        etype, count = self.unpack("<IQ")
        if etype in _SCALARS:
            dtype = np.dtype(_SCALARS[etype][1]).newbyteorder("<")
            arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
            self.pos += arr.nbytes
            return arr
        if etype == _STRING:
            start, self.pos = self.pos, _skip_strings(self.buf, self.pos, count)
            return StringArray(self.buf, start, count)
        return [self.value(etype) for _ in range(count)]


def _tensor_data(buf, offset: int, ggml_type: int, dims: tuple[int, ...]) -> np.ndarray:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    qtype = GGMLQuantizationType(ggml_type)
    n_elems = int(np.prod(dims))
    np_dims = tuple(reversed(dims))
    if ggml_type in _PLAIN_TENSOR_TYPES:
        dtype, count = np.dtype(_PLAIN_TENSOR_TYPES[ggml_type]), n_elems
    else:
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        dtype, count = np.dtype(np.uint8), n_elems * type_size // block_size
        np_dims = quant_shape_to_byte_shape(np_dims, qtype)
    if offset + count * dtype.itemsize > len(buf):
        raise ValueError(f"tensor data at {offset} runs past the end of the file")
    return np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(np_dims)


def parse(buf, path: Path) -> GGUFFile:
    """Parse a GGUF held in ``buf`` (any buffer). Raises ValueError/struct.error on bad data."""
    cur = _Cursor(buf)
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise ValueError("not a GGUF file (bad magic)")
    cur.pos = 4
    version = cur.unpack("<I")
    if version & 0xFFFF == 0 and version:
        raise ValueError("big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (only 2 and 3)")
    n_tensors, n_kv = cur.unpack("<QQ")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.unpack("<I"))
    digest = hashlib.sha256(buf[:cur.pos]).hexdigest()
    table = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        dims = struct.unpack_from(f"<{n_dims}Q", buf, cur.pos)
        cur.pos += 8 * n_dims
        ggml_type, offset = cur.unpack("<IQ")
        table.append((name, tuple(int(d) for d in dims), ggml_type, offset))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    start = -(-cur.pos // alignment) * alignment
    names = set()
    tensors = []
    for name, dims, ggml_type, offset in table:
        if name in names:
            raise ValueError(f"duplicate tensor {name!r}")
        names.add(name)
        tensors.append(GGUFTensor(name, ggml_type, dims, _tensor_data(buf, start + offset, ggml_type, dims)))
    return GGUFFile(path, version, metadata, tensors, digest)


def open_gguf_file(path: str | Path) -> GGUFFile:
    """Map and parse ``path``. Raises ModelLoadError (missing file, not GGUF, truncated...)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return parse(buf, path)
    except ImportError as e:
        raise ModelLoadError("reading GGUF files needs the 'gguf' package: pip install gguf") from e
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise ModelLoadError(f"cannot read GGUF file {path}: {e}") from e
