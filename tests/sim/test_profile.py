"""Profiles: the bundled H200/H100 profiles are the converted shared calibration; TP scaling."""
import json
from pathlib import Path

import pytest

from continuum.sim.cost_model import CostModel
from continuum.sim.profile import from_calibration, load_profile, tensor_parallel

CALIB = Path(__file__).resolve().parents[2] / ".." / "shared" / "calibration"


@pytest.mark.skipif(not CALIB.exists(), reason=f"{CALIB} absent (the shared calibration folder)")
@pytest.mark.parametrize("dev, mem", [("h200", 141e9), ("h100", 80e9)])
def test_bundled_profile_is_the_converted_calibration(dev, mem):
    calib = json.loads((CALIB / f"{dev}-llama3.1-8b-torch-reference.json").read_text())
    conv = from_calibration(calib, f"{dev}-llama3.1-8b", mem)
    bundled = load_profile(f"{dev}-llama3.1-8b")
    assert conv["prefill"] == bundled["prefill"] and conv["decode"] == bundled["decode"]
    assert conv["model"] == bundled["model"]


def test_kv_capacity_and_tp_scaling():
    p = load_profile("h200-llama3.1-8b")
    m = CostModel(p)
    assert m.bytes_per_token == 128 * 1024
    assert 60e9 < m.kv_capacity_tokens() * m.bytes_per_token < 120e9   # METHOD/brief: 60-120 GB
    m2 = CostModel(tensor_parallel(p, 2))
    assert m2.step_time([(0, 2048)]) == pytest.approx(m.step_time([(0, 2048)]) / (2 * 0.85), rel=0.02)
    assert m2.kv_capacity_tokens() > 2 * m.kv_capacity_tokens()


def test_turn_time_counts_chunks():
    m = CostModel(load_profile("h200-llama3.1-8b"))
    one = m.turn_time(0, 4096, 1, chunk=4096)
    two = m.turn_time(0, 4096, 1, chunk=2048)
    assert two > one        # two chunks pay the per-step floor twice
    assert m.turn_time(0, 100, 10, 2048) == pytest.approx(
        m.step_time([(0, 100)]) + sum(m.step_time([(100 + i, 1)]) for i in range(9)))


def test_fit_recovers_a_known_cost_including_mixed_steps():
    def t(n=0, c=0, b=0, l=0):
        mixed = n > 0 and b > 0
        return (0.01 + 1e-4 * n + 1e-8 * n * (c + n / 2) + 1e-3 * b + 1e-6 * b * l + (0.02 if b else 0)
                + (2e-3 * b if mixed else 0))
    prof = {"model": {"layers": 2, "kv_heads": 2, "head_dim": 8, "dtype_bytes": 4},
            "memory": {"device_bytes": 1e9, "weights_bytes": 0},
            "prefill": [{"cached": c, "new": n, "seconds": t(n, c)} for c in (0, 512, 2048) for n in (8, 64, 256)],
            "decode": [{"batch": b, "context": l, "seconds": t(b=b, l=l)} for b in (1, 4, 8) for l in (64, 1024)],
            "mixed": [{"cached": 2048, "new": n, "batch": b, "context": l, "seconds": t(n, 2048, b, l)}
                      for n in (128, 256) for b in (4, 8) for l in (256, 1024)]}
    m = CostModel(prof)
    assert m.summary()["fit_max_abs_rel_error"] < 1e-6
    assert m.step_time([(2048, 100), (500, 1), (700, 1)]) == pytest.approx(
        t(100, 2048, 2, 0) + 1e-6 * (501 + 701), rel=1e-6)
