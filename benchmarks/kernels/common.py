"""Shared helpers of the GPU kernel benchmarks: timing, copy bandwidth, a fast random model,
routing attention through the CUDA backend, and result files.

Every script here prints a markdown table and writes ``<out>/<name>.json`` (+ ``.md``) whose
header names the card, so results from different GPUs never get mixed up.

Without CUDA every script still runs (on ``DEVICE == "cpu"``, with tiny shapes given on its
command line): continuum.ops serves the torch reference implementations, timings come from
``time.perf_counter``, and rows that need CUDA graphs say they were skipped. The numbers mean
nothing there; the point is that tests/ops/test_kernel_benches_cpu.py catches Python-level bugs
before device time is spent. Results then name the card ``cpu``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"       # every tensor of the benchmarks lives here


def card() -> str:
    return torch.cuda.get_device_name() if HAS_CUDA else "cpu"


def require_kernels(verbose: bool = False) -> None:
    """On CUDA, fail unless the csrc kernels are built and loaded (timing the reference there
    would be misleading). Without CUDA the reference ops are what runs: say so and go on."""
    from continuum import ops

    if HAS_CUDA:
        assert ops.load(verbose=verbose), ops.unavailable_reason()
    else:
        print(f"no CUDA device: timing the torch reference ops on CPU ({ops.unavailable_reason()})",
              flush=True)


def synchronize() -> None:
    if HAS_CUDA:
        torch.cuda.synchronize()


def empty_cache() -> None:
    if HAS_CUDA:
        torch.cuda.empty_cache()


def cuda_time(fn, iters: int = 20, warmup: int = 3) -> float:
    """Mean seconds per call of ``fn`` measured with CUDA events (after warm-up calls); with
    no CUDA device, wall-clock time (``time.perf_counter``)."""
    for _ in range(warmup):
        fn()
    if not HAS_CUDA:
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) / iters
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def copy_bandwidth(nbytes: int | None = None) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read + written (the same
    convention as ../shared/calibration). Copies 2 GiB on CUDA, 64 MiB on CPU by default."""
    if nbytes is None:
        nbytes = 2 << 30 if HAS_CUDA else 64 << 20
    x = torch.empty(nbytes, dtype=torch.uint8, device=DEVICE)
    y = torch.empty_like(x)
    t = cuda_time(lambda: y.copy_(x), iters=10)
    del x, y
    empty_cache()
    return 2 * nbytes / t


def build_random_model(preset: str = "llama3.1-8b", dtype=torch.bfloat16, overrides: dict | None = None,
                       seed: int = 0):
    """A random model of a continuum preset, initialised directly on the GPU (N(0, 0.02),
    norms 1): seconds instead of the minutes a CPU init of 8B parameters takes. Not the
    loader's seeded weights: for timing only. Without CUDA, on the CPU (use a small preset
    such as ``tiny`` there)."""
    from continuum.models.llama import LlamaForCausalLM
    from continuum.models.loader import random_config

    config = random_config(preset, overrides)
    model = LlamaForCausalLM(config)             # parameters uninitialised (never touched on CPU)
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            new = torch.empty(p.shape, dtype=dtype, device=DEVICE)
            if name.endswith("norm.weight"):
                new.fill_(1.0)
            else:
                new.normal_(0.0, 0.02, generator=gen)
            p.data = new
    return model.to(device=DEVICE, dtype=dtype).eval(), config


def weight_read_bytes(model) -> int:
    """Bytes of weights one decode step reads: every parameter but the embedding table (a
    gather of a few rows) unless it is tied to the LM head."""
    emb = model.model.embed_tokens.weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    tied = model.lm_head.weight is emb
    return total if tied else total - emb.numel() * emb.element_size()


def _cuda_forward(self, q, k, v):
    from continuum.layers import attention as attn_mod
    from continuum.layers import attention_cuda

    meta = attn_mod.current_metadata(self)   # the bound backend's step, else the global
    if meta is None or self.k_cache is None:
        return _ORIG_FORWARD[0](self, q, k, v)
    T = q.shape[0]
    q = q.view(T, self.num_heads, self.head_size)
    k = k.view(T, self.num_kv_heads, self.head_size)
    v = v.view(T, self.num_kv_heads, self.head_size)
    return attention_cuda.forward(q, k, v, self.k_cache, self.v_cache, meta, self.scale).reshape(T, -1)


_ORIG_FORWARD: list = []


@contextlib.contextmanager
def attention_backend(name: str):
    """Route every Attention layer through ``"cuda"`` (attention_cuda) or ``"torch"`` (the
    reference) for the duration: what the engine's dispatch line does, forced either way."""
    from continuum.layers import attention as attn_mod

    if not _ORIG_FORWARD:
        _ORIG_FORWARD.append(attn_mod.Attention.forward)
    prev_env = os.environ.get("CONTINUUM_ATTENTION_BACKEND")
    os.environ["CONTINUUM_ATTENTION_BACKEND"] = "torch"       # keep the engine from picking others
    attn_mod.Attention.forward = _cuda_forward if name == "cuda" else _ORIG_FORWARD[0]
    try:
        yield
    finally:
        attn_mod.Attention.forward = _ORIG_FORWARD[0]
        if prev_env is None:
            os.environ.pop("CONTINUUM_ATTENTION_BACKEND", None)
        else:
            os.environ["CONTINUUM_ATTENTION_BACKEND"] = prev_env


def write_results(out_dir: str | Path, name: str, header: dict, rows: list[dict], columns: list[str]) -> str:
    """Write ``name.json`` and ``name.md`` (a table) under out_dir; returns the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = {"card": card(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **header}
    (out / f"{name}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    lines = [f"### {name} on {header['card']}", "",
             "; ".join(f"{k}: {v}" for k, v in header.items() if k != "card"), "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    md = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(md)
    print(md, flush=True)
    return md


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)
