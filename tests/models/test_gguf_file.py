"""continuum's GGUF parser against the reference one (gguf.GGUFReader), on real files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from continuum.errors import ModelLoadError  # noqa: E402
from continuum.models import gguf_loader  # noqa: E402
from continuum.models.gguf_file import StringArray, open_gguf_file  # noqa: E402
from tests.conftest import requires_smollm2  # noqa: E402

Q = gguf.GGMLQuantizationType


def _write(path, tensors: dict[str, tuple[np.ndarray, int]], extra_kv=None) -> None:
    """A GGUF with one key of every value type and ``tensors`` ({name: (fp32 array, type)})."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.25)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo 🌍")
    w.add_array("t.strs", ["a", "", "ü", "<|im_end|>"])
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, 1.5])
    for key, value in (extra_kv or {}).items():
        w.add_string(key, value)
    for name, (arr, qtype) in tensors.items():
        data = arr if qtype in (Q.F32,) else (arr.astype(np.float16) if qtype == Q.F16
                                                   else gguf.quants.quantize(arr, qtype))
        w.add_tensor(name, data, raw_dtype=qtype)     # quantised: shape read from the bytes
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _assert_same_as_reader(path) -> None:
    ours = open_gguf_file(path)
    ref = gguf.GGUFReader(str(path))
    ref_meta = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.metadata) == list(ref_meta)
    for key, want in ref_meta.items():
        got = ours.metadata[key]
        if isinstance(got, np.ndarray):
            got = got.tolist()
        elif isinstance(got, StringArray):
            got = list(got)
        assert got == pytest.approx(want) if isinstance(want, float) else got == want, key
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors):
        assert a.tensor_type == b.tensor_type and a.shape == tuple(b.shape.tolist())
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape
        assert np.array_equal(a.data, b.data)


def test_matches_gguf_reader_on_every_value_and_tensor_type(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "m.gguf"
    _write(path, {"a.weight": (rng.standard_normal((8, 64), dtype=np.float32), Q.F32),
                  "b.weight": (rng.standard_normal((4, 32), dtype=np.float32), Q.F16),
                  "c.weight": (rng.standard_normal((6, 64), dtype=np.float32), Q.Q8_0),
                  "d.weight": (rng.standard_normal((2, 64), dtype=np.float32), Q.Q4_1)})
    _assert_same_as_reader(path)
    meta = open_gguf_file(path).metadata
    assert meta["t.u64"] == 2**63 + 5 and meta["t.bool"] is True and meta["t.str"] == "héllo 🌍"
    assert len(meta["t.strs"]) == 4 and meta["t.strs"][3] == "<|im_end|>"


@requires_smollm2
def test_matches_gguf_reader_on_the_default_model():
    from continuum.models.loader import default_model_path
    _assert_same_as_reader(default_model_path())


def test_metadata_digest_covers_metadata_not_tensors(tmp_path):
    rng = np.random.default_rng(1)
    w1, w2 = (rng.standard_normal((4, 32), dtype=np.float32) for _ in range(2))
    _write(tmp_path / "a.gguf", {"x.weight": (w1, Q.F32)})
    _write(tmp_path / "b.gguf", {"x.weight": (w2, Q.F32)})
    _write(tmp_path / "c.gguf", {"x.weight": (w1, Q.F32)}, {"tokenizer.chat_template": "{{ x }}"})
    a, b, c = (open_gguf_file(tmp_path / f"{n}.gguf").metadata_digest for n in "abc")
    assert a == b != c


def test_quantised_rows_unpermute_like_their_values(tmp_path):
    """iter_gguf_weights un-permutes Q/K rows before dequantising: same as after."""
    rng = np.random.default_rng(2)
    path = tmp_path / "q.gguf"
    _write(path, {"w.weight": (rng.standard_normal((12, 64), dtype=np.float32), Q.Q8_0)})
    t = open_gguf_file(path).tensors[0]
    after = gguf_loader.unpermute_qk(gguf_loader.dequantize(t), 3)
    before = gguf_loader.dequantize(t, gguf_loader.unpermute_qk(t.data, 3))
    assert torch.equal(before, after)


def test_bad_files_are_model_load_errors(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(40))
    with pytest.raises(ModelLoadError, match="bad magic"):
        open_gguf_file(bad)
    good = tmp_path / "good.gguf"
    _write(good, {"x.weight": (np.ones((4, 32), dtype=np.float32), Q.F32)})
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="cannot read GGUF file"):
        open_gguf_file(cut)
    with pytest.raises(ModelLoadError):
        open_gguf_file(tmp_path / "missing.gguf")
