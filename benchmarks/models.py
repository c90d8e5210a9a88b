"""Model folders every side of a benchmark can load: the same weights in a Hugging Face
safetensors directory, so continuum, transformers and vLLM compare on identical inputs.

- ``smollm2-135m``: the embedded SmolLM2-135M-Instruct GGUF, dequantised once to bf16.
- ``llama-80m``: a seeded random Llama (continuum's ``llama-80m`` preset shape, 81M params)
  with the offline byte-level tokenizer; prompts are random token ids, outputs forced.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CACHE = Path(__file__).resolve().parent / ".cache" / "models"


def prepare(name: str) -> Path:
    out = CACHE / name
    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if name == "smollm2-135m":
        _export_gguf(out)
    elif name == "llama-80m":
        _export_random(out, "llama-80m")
    else:
        raise SystemExit(f"unknown benchmark model {name!r}: smollm2-135m or llama-80m")
    return out


def _save(out: Path, config, tensors: dict[str, torch.Tensor], tokenizer, eos: list[int]) -> None:
    from safetensors.torch import save_file
    config.torch_dtype = "bfloat16"
    config.save_pretrained(out)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))


def _export_gguf(out: Path) -> None:
    from continuum.models import gguf_loader as g
    from continuum.models.loader import default_model_path
    path = default_model_path()
    reader = g.open_gguf(path)
    config = g.gguf_config(reader)
    tensors = dict(g.iter_gguf_weights(reader, config))
    if "lm_head.weight" not in tensors:
        config.tie_word_embeddings = True
    _save(out, config, tensors, g.gguf_tokenizer(path, reader), g.gguf_eos_ids(reader))


def _export_random(out: Path, preset: str) -> None:
    import transformers
    from continuum.models.byte_tokenizer import make_byte_tokenizer
    from continuum.models.loader import random_config
    tok = make_byte_tokenizer()
    config = random_config(preset)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    _save(out, config, {k: v for k, v in model.state_dict().items()}, tok, [tok.eos_token_id])
