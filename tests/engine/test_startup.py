"""Start-up: per-phase progress lines, where LLM() shows them, and the cheap allocations."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from continuum.config import EngineArgs
from continuum.engine.cache_engine import zeros
from continuum.engine.engine import LLMEngine
from continuum.models.loader import load_model
from continuum.progress import Phases
from tests.conftest import requires_smollm2


def test_phases_log_one_line_each_with_the_injected_clock(caplog):
    now = iter([10.0, 11.0, 13.5, 14.0, 14.25, 15.0, 20.0])
    log = logging.getLogger("continuum.test_phases")
    with caplog.at_level(logging.INFO, "continuum.test_phases"):
        phases = Phases(log, "job", clock=lambda: next(now))      # start = 10.0
        with phases.phase("first"):                               # 11.0 -> 13.5
            pass
        with phases.phase("second"):                              # 14.0 -> 14.25
            pass
        with pytest.raises(RuntimeError):
            with phases.phase("failing"):                         # 15.0, never ends
                raise RuntimeError("boom")
        assert phases.total() == 10.0
    assert [r.getMessage() for r in caplog.records] == ["job: first (2.50 s)", "job: second (0.25 s)"]
    assert phases.timings == {"first": 2.5, "second": 0.25}


def _run(code: str, **env) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


SHOW = """
    import logging
    from continuum.progress import ensure_visible
    {before}
    print(ensure_visible())
    logging.getLogger("continuum.models.loader").info("a progress line")
"""


def test_llm_api_shows_info_lines_on_stderr_unless_logging_is_configured_or_off():
    fresh = _run(SHOW.format(before=""))
    assert fresh.stdout.strip() == "True" and fresh.stderr.count("a progress line") == 1
    assert "INFO" in fresh.stderr and "continuum.models.loader" in fresh.stderr
    off = _run(SHOW.format(before=""), CONTINUUM_CONFIGURE_LOGGING="0")
    assert off.stdout.strip() == "False" and "a progress line" not in off.stderr
    app = _run(SHOW.format(before="logging.basicConfig(level=logging.WARNING)"))
    assert app.stdout.strip() == "False" and "a progress line" not in app.stderr   # app decides


def test_llm_init_calls_ensure_visible():
    """LLM() is the API that shows progress by default (the CLI configures logging itself)."""
    r = _run("""
        from continuum.llm import LLM
        LLM("random:tiny", kv_cache_memory="4MiB", device="cpu", dtype="float32")
    """)
    assert r.returncode == 0, r.stderr
    assert "engine ready in" in r.stderr


def test_engine_start_up_logs_each_phase(caplog):
    with caplog.at_level(logging.INFO, "continuum"):
        LLMEngine(EngineArgs.from_kwargs(model="random:tiny", kv_cache_memory="4MiB",
                                         device="cpu", dtype="float32"))
    messages = [r.getMessage() for r in caplog.records]
    for phase in ("allocate the KV cache", "load the attention kernels"):
        assert any(m.startswith(f"engine start-up: {phase} (") for m in messages), messages
    assert any(m.startswith("engine ready in ") and "random:tiny" in m for m in messages)


@requires_smollm2
def test_gguf_load_logs_each_phase(caplog):
    with caplog.at_level(logging.INFO, "continuum.models.loader"):
        load_model(None, dtype=torch.bfloat16)
    messages = [r.getMessage() for r in caplog.records]
    prefix = "loading SmolLM2-135M-Instruct: "
    for phase in ("read the GGUF header and config", "tokenizer",
                  "dequantise 272 tensors into bfloat16"):
        assert any(m.startswith(f"{prefix}{phase} (") for m in messages), messages


def test_cpu_kv_zeros_are_zero_aligned_and_writable():
    t = zeros((3, 16, 2, 8), torch.bfloat16, torch.device("cpu"))
    assert t.shape == (3, 16, 2, 8) and t.dtype == torch.bfloat16 and t.is_contiguous()
    assert t.data_ptr() % 64 == 0 and not t.any()
    t[1, 2, 1, 3] = 2.0
    assert float(t.sum()) == 2.0


def test_models_are_allocated_in_the_requested_dtype():
    loaded = load_model("random:tiny", dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.model.model.rotary_emb.cos_sin_cache.dtype == torch.bfloat16
    fp32 = load_model("random:tiny", dtype=torch.float32)
    for (n, a), (_, b) in zip(loaded.model.named_parameters(), fp32.model.named_parameters()):
        assert torch.equal(a, b.to(torch.bfloat16)), n        # same draws, cast once
