"""The GPU benchmark scripts of benchmarks/kernels/ run end to end on CPU with tiny shapes.

They are otherwise only run by benchmarks/device/gpu_check.sh on a rented GPU, where a
Python-level bug (an import, a signature, the table writer) would cost scarce device time.
On CPU they time the torch reference ops (numbers meaningless) and skip the CUDA-graph rows;
each script runs as a subprocess, as gpu_check.sh runs it, and writes its JSON to tmp_path.
Skipped where CUDA exists: there gpu_check.sh runs the real benchmarks right after the tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "benchmarks" / "kernels"

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="CPU smoke test; on a GPU gpu_check.sh runs the real benchmarks")


def _run(script: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(KERNELS / script), "--out", str(out), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _load(out: Path, name: str) -> tuple[dict, list[dict]]:
    assert (out / f"{name}.md").is_file()
    data = json.loads((out / f"{name}.json").read_text())
    header, rows = data["header"], data["rows"]
    assert header["card"] == "cpu"
    assert rows
    return header, rows


def _positive(row: dict, *keys: str) -> None:
    for k in keys:
        assert isinstance(row[k], float) and row[k] > 0, (k, row)


def test_bench_decode_attention(tmp_path):
    _run("bench_decode_attention.py", tmp_path, "--contexts", "64,200", "--target-gib", "0.0005")
    header, rows = _load(tmp_path, "decode_attention")
    assert header["copy_bw_GBps"] > 0
    # batch 1 and the "about target-gib of K/V" batch (2 at 64 tokens) per context
    assert [(r["batch"], r["context"]) for r in rows] == [(1, 64), (2, 64), (1, 200)]
    for r in rows:
        _positive(r, "us", "GB/s", "pct_of_copy_bw", "ref_us", "speedup_vs_ref")
        assert r["MiB_read"] == 2 * r["batch"] * r["context"] * 8 * 128 * 2 / 2**20


def test_bench_prefill(tmp_path):
    _run("bench_prefill.py", tmp_path, "--cases", "16x64,32x128")
    _, rows = _load(tmp_path, "prefill_gather")
    assert [(r["new_tokens"], r["context"]) for r in rows] == [(16, 64), (32, 128)]
    for r in rows:
        _positive(r, "gather_sdpa_us", "contiguous_sdpa_us")
        assert isinstance(r["gather_share_pct"], float)          # may be negative: CPU noise


def test_bench_decode_step(tmp_path):
    _run("bench_decode_step.py", tmp_path, "--preset", "tiny", "--batches", "1,2", "--context", "32")
    header, rows = _load(tmp_path, "decode_step")
    assert header["context"] == 32 and header["kv_bytes_per_token"] > 0
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        _positive(r, "floor_ms", "torch_ref_ms", "cuda_eager_ms")
        for k in ("cuda_graph_ms", "graph_vs_floor", "tok_per_s"):   # no CUDA graphs on CPU
            assert r[k] == "skipped: no CUDA"


def test_bench_e2e(tmp_path):
    _run("bench_e2e.py", tmp_path, "--preset", "tiny", "--num-prompts", "2", "--prompt-len", "8",
         "--max-tokens", "4", "--batched-tokens", "64")
    _, rows = _load(tmp_path, "e2e_throughput")
    assert [r["backend"] for r in rows] == ["cuda-graph", "cuda", "torch"]
    for r in rows:
        assert r["output_tokens"] == 2 * 4          # ignore_eos: exactly max_tokens each
        _positive(r, "seconds", "output_tok_per_s", "mean_step_ms", "init_s")
        assert r["graph_replays"] == 0
    assert "no CUDA" in rows[0]["note"] and "note" not in rows[1]


def test_bench_varlen(tmp_path):
    _run("bench_varlen.py", tmp_path, "--cases", "2x32+8,1x64+16+3d@40,2x0+16,3d@20")
    header, rows = _load(tmp_path, "varlen")
    assert "reference" in header["validated"]
    assert [(r["case"], r["sequences"], r["new_tokens"]) for r in rows] == [
        ("2x32+8", 2, 16), ("1x64+16+3d@40", 4, 19), ("2x0+16", 2, 32), ("3d@20", 3, 3)]
    for r in rows:
        _positive(r, "varlen_us", "gather_sdpa_us", "speedup", "GFLOP", "MiB_kv")
        assert r["ok"] is True and r["rel_err"] < 2e-2 and r["rel_err_old"] < 2e-2
    # unique K/V bytes: 2 (K, V) x contexts x 8 heads x 128 x 2 bytes
    assert rows[1]["MiB_kv"] == 2 * (80 + 3 * 40) * 8 * 128 * 2 / 2**20
