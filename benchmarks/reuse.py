"""``--reuse RESULTS_JSON --fresh POLICIES`` for the simulator's sweeps (``matrix.py``,
``admission_sweep.py``): the simulator is deterministic, so a change to one policy reruns only
that policy and takes the others' runs from the earlier file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

RunKey = tuple        # (workload, kv_gb, jps, policy, seed): one simulator run


def earlier_runs(path: str, rows_key: str, knobs: dict[str, object],
                 defaults: dict[str, object] | None = None) -> dict[RunKey, dict]:
    """The runs recorded in ``path`` (its list ``rows_key``), by run key. Exits with a clear
    message if the file records one of ``knobs`` (e.g. the profile, the scheduler knobs) with
    another value: its runs would not be this sweep's. A knob the file does not record is taken
    as its value in ``defaults`` (what files written before the sweep recorded it ran with), or
    not checked if it has none there."""
    prev = json.loads(Path(path).read_text())
    defaults = defaults or {}
    for key, want in knobs.items():
        have = prev.get(key, defaults.get(key, want))
        if have != want:
            sys.exit(f"--reuse {path}: made with {key} {have!r}, not {want!r}")
    return {(r["workload"], r["kv_gb"], r["jps"], r["policy"], r["seed"]): r for r in prev[rows_key]}
