"""The project's hardware/model profile format, and the converter from ../shared/calibration.

A profile is JSON::

    {"name": "h200-llama3.1-8b", "device": "NVIDIA H200", "source": "...",
     "model": {"layers": 32, "kv_heads": 8, "head_dim": 128, "dtype_bytes": 2,
               "params": 8.03e9, "max_model_len": 131072},
     "memory": {"device_bytes": 1.41e11, "weights_bytes": 1.6e10},
     "bandwidth": {"h2d_Bps": 5.5e10, "d2h_Bps": 5.5e10, "swap_latency_s": 1e-4},
     "prefill": [{"cached": C, "new": N, "seconds": t}, ...],
     "decode":  [{"batch": B, "context": L, "seconds": t}, ...],
     "step_overhead_s": 0.0}

``prefill`` rows time one sequence computing N new tokens over C cached ones; ``decode`` rows
time one decode step of B sequences of L tokens each. ``step_overhead_s`` is the engine's
per-step CPU cost outside the model (scheduling, batching, sampling) when known.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROFILE_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "profiles"


def kv_bytes_per_token(profile: dict[str, Any]) -> int:
    m = profile["model"]
    return 2 * m["layers"] * m["kv_heads"] * m["head_dim"] * m["dtype_bytes"]


def load_profile(spec: str | Path) -> dict[str, Any]:
    """A path to a profile JSON, or the name of one in benchmarks/profiles (e.g. 'h200-llama3.1-8b')."""
    p = Path(spec)
    if not p.exists():
        p = PROFILE_DIR / f"{spec}.json"
    if not p.exists():
        known = sorted(x.stem for x in PROFILE_DIR.glob("*.json")) if PROFILE_DIR.exists() else []
        raise FileNotFoundError(f"no profile {spec!r}; bundled: {known}")
    prof = json.loads(p.read_text())
    for k in ("model", "memory", "prefill", "decode"):
        if k not in prof:
            raise ValueError(f"{p}: profile lacks {k!r}")
    return prof


def save_profile(profile: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1) + "\n")


def from_calibration(calib: dict[str, Any], name: str, device_bytes: float,
                     source: str = "") -> dict[str, Any]:
    """Convert a calibrate.py result. Decode rows use the CUDA-graph time (engines replay decode
    as graphs); prefill rows take the faster of eager and graph (graphs only matter for tiny
    prefills). Rows that failed (OOM) are dropped."""
    r = calib["results"]
    m = calib["model"]
    dtype_bytes = 2 if "16" in str(m.get("dtype", "bfloat16")) else 4
    prefill = [{"cached": x["cached"], "new": x["new"],
                "seconds": min(v for v in (x.get("seconds"), x.get("graph_seconds")) if v)}
               for x in r["prefill"] if "error" not in x]
    decode = [{"batch": x["batch"], "context": x["context"],
               "seconds": x.get("graph_seconds") or x["eager_seconds"]}
              for x in r["decode"] if "error" not in x]
    h, inter, layers, v = m["hidden"], m["inter"], m["layers"], m["vocab"]
    params = layers * (h * m["head_dim"] * (2 * m["heads"] + 2 * m["kv_heads"]) + 3 * h * inter) + 2 * v * h
    bw = r.get("bandwidth", {})
    return {
        "name": name, "device": calib.get("device", "?"), "source": source,
        "model": {"layers": layers, "kv_heads": m["kv_heads"], "head_dim": m["head_dim"],
                  "dtype_bytes": dtype_bytes, "params": params, "max_model_len": 131072},
        "memory": {"device_bytes": device_bytes,
                   "weights_bytes": calib.get("weights_GB", params * dtype_bytes / 1e9) * 1e9},
        "bandwidth": {"h2d_Bps": bw.get("h2d_GBps_pinned", 25.0) * 1e9,
                      "d2h_Bps": bw.get("gather_swapout_GBps", bw.get("d2h_GBps_pinned", 25.0)) * 1e9,
                      "swap_latency_s": 1e-4},
        "prefill": prefill, "decode": decode, "step_overhead_s": 0.0,
    }


def tensor_parallel(profile: dict[str, Any], tp: int, efficiency: float = 0.85) -> dict[str, Any]:
    """Approximate a TP=tp deployment: memory and link bandwidth scale by tp, step times divide
    by tp * efficiency (all-reduce and imbalance cost the rest). An approximation, documented
    as such: a measured multi-GPU profile is always better."""
    if tp == 1:
        return profile
    f = 1.0 / (tp * efficiency)
    p = json.loads(json.dumps(profile))
    p["name"] = f"{profile['name']}-tp{tp}"
    p["memory"]["device_bytes"] *= tp
    p["bandwidth"]["h2d_Bps"] *= tp
    p["bandwidth"]["d2h_Bps"] *= tp
    for row in p["prefill"] + p["decode"]:
        row["seconds"] *= f
    return p
