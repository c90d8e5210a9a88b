"""A short run of benchmarks/fuzz_server.py against a real `continuum serve` subprocess: no 5xx,
the engine alive, KV integrity and no block in use afterwards. (The recorded run sends
thousands: benchmarks/results/fuzz/.)"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fuzz_server_short_run(tmp_path):
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_server.py"), "--requests", "400",
                           "--workers", "4", "--seed", "11", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["passed"] and r["requests"] == 400 and r["responses_5xx_or_transport"] == 0
    assert r["by_status"].get("200", 0) > 20 and r["by_status"].get("400", 0) > 200
    assert r["kv_integrity_ok"] and r["kv_blocks_in_use"] == 0
