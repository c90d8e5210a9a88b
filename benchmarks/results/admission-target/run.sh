#!/bin/bash
# continuum+ sensitivity to --admission-target (the default, 1.0, is in ../admission/): the
# same grid, seeds and simulator as ../admission/, continuum+ only, at 1.25 and 1.5.
# About 4 min per target on the 2-core box. The simulator is deterministic: reruns are identical.
cd "$(dirname "$0")/../../.." || exit 1
for t in 1.25 1.5; do
  .venv/bin/python benchmarks/admission_sweep.py --policies continuum+ --admission-target $t \
      --no-unbounded --jobs 2 --out benchmarks/results/admission-target/t$t
done
