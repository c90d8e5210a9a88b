"""Mix and chat at the matrix's budgets: vllm, continuum+ with ids, continuum+ with ids hidden
(the recogniser assigns them, as for a client that sends none), 3 seeds. Run from the
repository root (writes nothing; mix_chat_hidden.txt is its output on the tree that keeps an
inferred program admitted after an answered turn, mix_chat_hidden_before.txt on the tree before):

    PYTHONPATH=$PWD python benchmarks/results/zero-config/mix_chat_hidden.py
"""
import statistics
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import zero_config_sim as z  # noqa: E402

PROFILE = str(Path(__file__).resolve().parents[2] / "profiles" / "h200-llama3.1-8b.json")
POINTS = [("mix", 200, 20, j) for j in (0.2, 0.3, 0.5, 1.0)] + [("mix", 200, 60, j) for j in (0.5, 1.0)] \
    + [("chat", 300, 20, j) for j in (8, 32)]
SEEDS = (0, 1, 2)

if __name__ == "__main__":
    jobs = [(wl, n, gb, jps, pol, hide, seed, PROFILE) for wl, n, gb, jps in POINTS for seed in SEEDS
            for pol, hide in (("vllm", False), ("continuum+", False), ("continuum+", True))]
    with Pool(2) as p:
        rows = p.map(z.run, jobs)
    jct = {(r["workload"], r["kv_gb"], r["jps"], r["policy"], r["ids"], r["seed"]): r["jct_mean"] for r in rows}
    print("| point | continuum+ x vllm, ids | continuum+ x vllm, ids hidden | per seed (ids / hidden) |")
    print("|---|---|---|---|")
    for wl, n, gb, jps in POINTS:
        ids = [jct[(wl, gb, jps, "continuum+", True, s)] / jct[(wl, gb, jps, "vllm", True, s)] for s in SEEDS]
        hid = [jct[(wl, gb, jps, "continuum+", False, s)] / jct[(wl, gb, jps, "vllm", True, s)] for s in SEEDS]
        print(f"| {wl} {gb} GB @ {jps:g} | {statistics.mean(ids):.3f} | {statistics.mean(hid):.3f} | "
              + ", ".join(f"{a:.3f} / {b:.3f}" for a, b in zip(ids, hid)) + " |")
    rec = [r["recognition"] for r in rows if not r["ids"]]
    print(f"\nrecognition over the hidden runs: {sum(x['turns'] for x in rec)} turns, "
          f"accuracy {min(x['accuracy'] for x in rec):.3f}-{max(x['accuracy'] for x in rec):.3f}, "
          f"merges {sum(x['merges'] for x in rec)}, splits {sum(x['splits'] for x in rec)}")
