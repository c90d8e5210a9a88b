"""GGUF files (llama.cpp's format): config from metadata, dequantised HF-named weights, tokenizer.

The file is parsed once, by :mod:`continuum.models.gguf_file` (fast, mmap-backed); every
function here takes that parse. The tokenizer is converted by transformers on a file's first
load and cached (:mod:`continuum.models.tokenizer_cache`). Weights are dequantised to float32 with the ``gguf`` package (any quant type it implements:
Q4_0/Q4_1/Q8_0/K-quants/F16/BF16...), one tensor at a time, so peak memory is the model plus
one fp32 tensor. llama.cpp's converter permutes the rows of Q and K of ``llama``-arch models
(it interleaves the two rotary halves of each head for its GPT-J-style rope kernel); we undo
that so the weights fit our HF-style "rotate half" rope. ``qwen2``/``qwen3`` archs are stored
unpermuted (llama.cpp runs them with NeoX rope). The rows are reordered before dequantising
(GGUF quantises each row on its own, so that is exact and moves fewer bytes).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from continuum.errors import ModelLoadError, UnsupportedArchitectureError
from continuum.models import tokenizer_cache
from continuum.models.gguf_file import GGUFFile, open_gguf_file

logger = logging.getLogger(__name__)

# GGUF general.architecture -> (HF architecture, model_type)
GGUF_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}

# Per-block GGUF tensor base name -> HF module path below model.layers.N
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# llama.cpp's Llama 3.1 rope scaling as per-frequency divisors; handled by the caller.
ROPE_FREQS = "rope_freqs.weight"


def _gguf():
    try:
        import gguf
    except ImportError as e:  # an optional extra: say how to get it
        raise ModelLoadError("reading GGUF files needs the 'gguf' package: pip install gguf") from e
    return gguf


def open_gguf(path: Path) -> GGUFFile:
    """Parse ``path`` once; every function below reads from the result (never the file again)."""
    _gguf()
    return open_gguf_file(path)


def metadata(reader: GGUFFile, key: str, default=None):
    """A scalar (int/float/bool/str) metadata value, or ``default`` when absent."""
    value = reader.metadata.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float, bool, str)):
        raise ModelLoadError(f"GGUF metadata {key} is an array, expected a scalar")
    return value


def gguf_config(reader: GGUFFile):
    """A transformers config built from the GGUF metadata (architectures set)."""
    from transformers import AutoConfig

    arch = metadata(reader, "general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"GGUF architecture {arch!r} is not supported (supported: {sorted(GGUF_ARCHITECTURES)})")
    hf_arch, model_type = GGUF_ARCHITECTURES[arch]

    def need(key):
        value = metadata(reader, f"{arch}.{key}")
        if value is None:
            raise ModelLoadError(f"GGUF metadata lacks {arch}.{key}")
        return value

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = int(metadata(reader, f"{arch}.attention.key_length", hidden // heads))
    rot_dim = metadata(reader, f"{arch}.rope.dimension_count", head_dim)
    if int(rot_dim) != head_dim:
        raise UnsupportedArchitectureError(f"partial rotary ({rot_dim} of {head_dim} dims) is not supported")
    vocab = metadata(reader, f"{arch}.vocab_size")
    if vocab is None:
        tokens = reader.metadata.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise ModelLoadError("GGUF metadata has neither a vocab size nor a token list")
        vocab = len(tokens)
    kwargs = dict(
        architectures=[hf_arch],
        vocab_size=int(vocab),
        hidden_size=hidden,
        num_hidden_layers=int(need("block_count")),
        intermediate_size=int(need("feed_forward_length")),
        num_attention_heads=heads,
        num_key_value_heads=int(metadata(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=head_dim,
        max_position_embeddings=int(need("context_length")),
        rms_norm_eps=float(metadata(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(metadata(reader, f"{arch}.rope.freq_base", 10000.0)),
        # llama.cpp omits the output matrix when it is the embedding (tied).
        tie_word_embeddings=all(t.name != "output.weight" for t in reader.tensors),
        bos_token_id=metadata(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=metadata(reader, "tokenizer.ggml.eos_token_id"),
    )
    scaling = metadata(reader, f"{arch}.rope.scaling.type")
    if scaling == "linear":
        kwargs["rope_scaling"] = {"rope_type": "linear",
                                  "factor": float(metadata(reader, f"{arch}.rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise UnsupportedArchitectureError(f"GGUF rope scaling {scaling!r} is not supported")
    return AutoConfig.for_model(model_type, **kwargs)


def gguf_eos_ids(reader: GGUFFile) -> list[int]:
    """End-of-generation ids: eos plus end-of-turn/-message ids where the file names them."""
    ids = [metadata(reader, f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def hf_name(gguf_name: str) -> str:
    """GGUF tensor name -> HF parameter name (ModelLoadError for names we do not know)."""
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(1) in _TOP_NAMES:
        return f"{_TOP_NAMES[m.group(1)]}.{m.group(2)}"
    raise ModelLoadError(f"unknown GGUF tensor {gguf_name!r}")


def unpermute_qk(w, n_heads: int):
    """Invert llama.cpp's ``permute``: per head, rows (hd/2, 2) interleaved -> (2, hd/2) halves.

    Moves whole rows only, so it works on a torch tensor or a numpy array, and on quantised
    data (``[rows, row_bytes]``) as well as on values: GGUF quantises each row on its own."""
    rows = w.shape[0]
    return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def dequantize(tensor, data: np.ndarray | None = None) -> torch.Tensor:
    """One GGUF tensor (or ``data``, its raw rows rearranged) as a float32 torch tensor in HF
    (row-major, [out, in]) shape."""
    gguf = _gguf()
    arr = gguf.quants.dequantize(tensor.data if data is None else data, tensor.tensor_type)
    # GGUF lists dims innermost first; numpy/torch want them outermost first.
    shape = tuple(reversed(tensor.shape))
    arr = np.asarray(arr, dtype=np.float32).reshape(shape)
    if not arr.flags.writeable:  # F32 tensors come straight from the read-only memmap
        arr = arr.copy()
    return torch.from_numpy(arr)


def iter_gguf_weights(reader: GGUFFile, config) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, fp32 tensor) for every weight; ``rope_freqs`` is yielded under ROPE_FREQS."""
    permuted = metadata(reader, "general.architecture") == "llama"
    for tensor in reader.tensors:
        if tensor.name == ROPE_FREQS:
            yield ROPE_FREQS, dequantize(tensor)
            continue
        name = hf_name(tensor.name)
        if permuted and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_attention_heads if "q_proj" in name else config.num_key_value_heads
            # Reorder the stored rows before dequantising: fewer bytes to move than after.
            yield name, dequantize(tensor, unpermute_qk(tensor.data, heads))
        else:
            yield name, dequantize(tensor)


def gguf_tokenizer(path: Path, reader: GGUFFile, cache: bool = True):
    """The file's tokenizer, with its chat template guaranteed set.

    transformers converts it from the GGUF metadata (seconds); with ``cache`` the result is
    kept in the tokenizer cache (:mod:`continuum.models.tokenizer_cache`, keyed by the
    metadata's hash) and later calls load it from there."""
    def convert():
        from transformers import AutoTokenizer

        where = f"; cached afterwards in {tokenizer_cache.tokenizers_dir()}" if cache else ""
        logger.info("converting the tokenizer of %s (first load of this file: 5-20 s%s)",
                    path.name, where)
        try:
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                                local_files_only=True)
        except Exception as e:
            raise ModelLoadError(f"cannot build a tokenizer from GGUF {path}: {e}") from e
        return _with_chat_template(tok, reader)

    if not cache:
        return convert()
    tok, _ = tokenizer_cache.cached_tokenizer(reader.metadata_digest, convert)
    return _with_chat_template(tok, reader)


def _with_chat_template(tok, reader: GGUFFile):
    template = metadata(reader, "tokenizer.chat_template")
    if template and not getattr(tok, "chat_template", None):
        tok.chat_template = template
    return tok
