"""``benchmarks/matrix.py`` with ad-hoc patch files applied first: the way scheduler variants
are measured before one is adopted.

    python benchmarks/results/matrix-tool-gate/run_patched.py PATCH.py [PATCH2.py ...] MATRIX_ARGS...
"""
import sys
from pathlib import Path

patches = []
while sys.argv[1].endswith(".py"):
    patches.append(sys.argv.pop(1))
for p in patches:
    exec(open(p).read(), {})
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))      # benchmarks/
import matrix  # noqa: E402

sys.exit(matrix.main(sys.argv[1:]))
