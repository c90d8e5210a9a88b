"""Our LlamaForCausalLM against transformers' reference implementations (CPU, fp32).

Every family/option combination loads an HF model's state_dict through ``load_weights`` and
must reproduce HF's logits, both as one plain causal sequence and through the paged KV path
(two sequences batched with non-contiguous blocks, chunked prefill, and decode steps).
"""
from __future__ import annotations

import pytest
import torch
import transformers

from continuum.errors import ModelLoadError, UnsupportedArchitectureError
from continuum.layers.attention import AttentionMetadata, set_forward_context
from continuum.layers.rotary import compute_inv_freq
from continuum.models.llama import LlamaForCausalLM

VOCAB = 311
BLOCK = 16
_BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}

CONFIGS = {
    "llama3-rope-untied": lambda: transformers.LlamaConfig(
        **_BASE, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, tie_word_embeddings=False),
    "llama-bias-tied": lambda: transformers.LlamaConfig(
        **_BASE, attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    "mistral-gqa4": lambda: transformers.MistralConfig(
        **{**_BASE, "num_key_value_heads": 1}, rope_theta=1e6, tie_word_embeddings=False),
    "qwen2-bias-tied": lambda: transformers.Qwen2Config(**_BASE, tie_word_embeddings=True),
    "qwen3-qknorm-tied": lambda: transformers.Qwen3Config(
        **_BASE, head_dim=32, tie_word_embeddings=True),
    "qwen3-qknorm-untied": lambda: transformers.Qwen3Config(
        **{**_BASE, "num_key_value_heads": 4}, head_dim=24, tie_word_embeddings=False),
}


def _hf_model(config) -> torch.nn.Module:
    cls = getattr(transformers, type(config).__name__.replace("Config", "ForCausalLM"))
    torch.manual_seed(0)
    hf = cls(config).eval()
    with torch.no_grad():  # HF inits norms to 1 and biases to 0: randomise to catch mix-ups
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.1)
    return hf


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request):
    config = CONFIGS[request.param]()
    hf = _hf_model(config)
    ours = LlamaForCausalLM(config).eval()
    ours.load_weights(hf.state_dict().items())
    return hf, ours


def _hf_logits(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids[None]).logits[0].float()


def test_full_sequence_logits_match(pair):
    hf, ours = pair
    ids = torch.randint(0, VOCAB, (45,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = ours.compute_logits(ours(ids, torch.arange(len(ids))))
    assert logits.dtype == torch.float32 and logits.shape == (45, VOCAB)
    torch.testing.assert_close(logits, _hf_logits(hf, ids), atol=1e-4, rtol=1e-4)


class PagedKV:
    """Fake cache engine: per-layer caches plus metadata building for (table, start, n) runs."""

    def __init__(self, model: LlamaForCausalLM, num_blocks: int = 12):
        shape = (num_blocks, BLOCK, model.num_kv_heads, model.head_dim)
        for attn in model.attention_layers():
            # Unwritten slots hold large finite garbage: reading one unmasked breaks the match.
            # (Not NaN: the batched decode path multiplies masked slots by 0, and 0*NaN=NaN.)
            attn.k_cache = torch.full(shape, 1e4)
            attn.v_cache = torch.full(shape, -1e4)

    @staticmethod
    def meta(runs: list[tuple[list[int], int, int]]) -> AttentionMetadata:
        """runs: (block_table, first new position, number of new tokens) per sequence."""
        slots, seq_lens, qlens = [], [], []
        for table, start, n in runs:
            slots += [table[p // BLOCK] * BLOCK + p % BLOCK for p in range(start, start + n)]
            seq_lens.append(start + n)
            qlens.append(n)
        width = max(len(t) for t, _, _ in runs)
        tables = torch.tensor([t + [0] * (width - len(t)) for t, _, _ in runs])
        qsl = torch.tensor([0] + qlens).cumsum(0)
        return AttentionMetadata(slot_mapping=torch.tensor(slots), block_tables=tables,
                                 seq_lens=torch.tensor(seq_lens), query_start_loc=qsl,
                                 seq_lens_list=seq_lens, query_lens_list=qlens, block_size=BLOCK)


def _step(model, runs, seqs) -> list[torch.Tensor]:
    """Run one flattened step; return each sequence's logits for its new tokens."""
    ids = torch.cat([seq[start:start + n] for seq, (_, start, n) in zip(seqs, runs)])
    pos = torch.cat([torch.arange(start, start + n) for _, start, n in runs])
    with torch.no_grad(), set_forward_context(PagedKV.meta(runs)):
        logits = model.compute_logits(model(ids, pos))
    return list(logits.split([n for _, _, n in runs]))


def test_paged_prefill_then_decode_matches_hf(pair):
    hf, ours = pair
    gen = torch.Generator().manual_seed(2)
    a = torch.randint(0, VOCAB, (21,), generator=gen)
    b = torch.randint(0, VOCAB, (37,), generator=gen)
    ref_a, ref_b = _hf_logits(hf, a), _hf_logits(hf, b)
    table_a, table_b = [5, 2], [7, 0, 9]                 # non-contiguous, interleaved blocks
    PagedKV(ours)
    try:
        # Two sequences prefilled in one step, each stopping 3 tokens short.
        out = _step(ours, [(table_a, 0, 18), (table_b, 0, 34)], [a, b])
        torch.testing.assert_close(out[0], ref_a[:18], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out[1], ref_b[:34], atol=1e-4, rtol=1e-4)
        # Three batched decode steps (a crosses a block boundary at position 16+).
        for i in range(3):
            out = _step(ours, [(table_a, 18 + i, 1), (table_b, 34 + i, 1)], [a, b])
            torch.testing.assert_close(out[0], ref_a[18 + i:19 + i], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out[1], ref_b[34 + i:35 + i], atol=1e-4, rtol=1e-4)
    finally:
        for attn in ours.attention_layers():
            attn.k_cache = attn.v_cache = None


def test_chunked_prefill_mixed_with_decode(pair):
    hf, ours = pair
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, VOCAB, (30,), generator=gen)
    b = torch.randint(0, VOCAB, (12,), generator=gen)
    ref_a, ref_b = _hf_logits(hf, a), _hf_logits(hf, b)
    table_a, table_b = [3, 8], [1]
    PagedKV(ours)
    try:
        _step(ours, [(table_b, 0, 11)], [b])                        # b prefilled earlier
        out = _step(ours, [(table_a, 0, 10)], [a])                  # chunk 1 of a
        torch.testing.assert_close(out[0], ref_a[:10], atol=1e-4, rtol=1e-4)
        out = _step(ours, [(table_a, 10, 20), (table_b, 11, 1)], [a, b])   # chunk 2 + decode
        torch.testing.assert_close(out[0], ref_a[10:30], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out[1], ref_b[11:12], atol=1e-4, rtol=1e-4)
    finally:
        for attn in ours.attention_layers():
            attn.k_cache = attn.v_cache = None


def test_runner_attributes():
    config = CONFIGS["qwen3-qknorm-untied"]()
    model = LlamaForCausalLM(config)
    assert (model.num_layers, model.num_kv_heads, model.head_dim) == (2, 4, 24)
    assert model.config is config and len(model.attention_layers()) == 2


def test_tied_head_shares_storage():
    model = LlamaForCausalLM(CONFIGS["qwen2-bias-tied"]())
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_load_weights_errors():
    config = CONFIGS["llama3-rope-untied"]()
    hf_state = _hf_model(config).state_dict()
    model = LlamaForCausalLM(config)
    with pytest.raises(ModelLoadError, match="unexpected weight 'model.foo.weight'"):
        model.load_weights([("model.foo.weight", torch.zeros(3))])
    partial = {k: v for k, v in hf_state.items() if ".1.self_attn.k_proj" not in k}
    with pytest.raises(ModelLoadError, match=r"missing weights.*layers\.1\.self_attn\.qkv_proj\.weight\[k\]"):
        model.load_weights(partial.items())
    bad = dict(hf_state, **{"model.norm.weight": torch.ones(3)})
    with pytest.raises(ModelLoadError, match="shape"):
        model.load_weights(bad.items())


def test_own_state_dict_round_trips():
    config = CONFIGS["qwen3-qknorm-tied"]()
    a = LlamaForCausalLM(config)
    a.init_random_weights(seed=7)
    b = LlamaForCausalLM(config)
    b.load_weights(a.state_dict().items())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_unsupported_architecture():
    with pytest.raises(UnsupportedArchitectureError, match="LlamaForCausalLM"):
        LlamaForCausalLM(transformers.GPT2Config())


def test_rope_freq_factors_reproduce_llama3_scaling():
    """llama.cpp stores Llama 3.1 scaling as divisors (GGUF rope_freqs): same logits."""
    config = CONFIGS["llama3-rope-untied"]()
    hf = _hf_model(config)
    plain_config = transformers.LlamaConfig(**_BASE, rope_theta=500000.0, tie_word_embeddings=False)
    ours = LlamaForCausalLM(plain_config).eval()
    ours.load_weights(hf.state_dict().items())
    hd = ours.head_dim
    ours.set_rope_freq_factors(compute_inv_freq(hd, 500000.0) / compute_inv_freq(hd, 500000.0, LLAMA3_ROPE))
    ids = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = ours.compute_logits(ours(ids, torch.arange(40)))
    torch.testing.assert_close(logits, _hf_logits(hf, ids), atol=1e-4, rtol=1e-4)
