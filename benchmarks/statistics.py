"""Coverage of the report's 95% intervals and size of its headline test, design by design, at full size.

    .venv/bin/python benchmarks/statistics.py [--reps 3000] [--seed 0]

Runs the simulated designs of tests/unit/report/simulation.py (the suite runs them at 300 repetitions each): per
design the treated arm's interval coverage, the difference's coverage, and how often equal arms whose seeds differ
are called different (the test's size, nominal 5%); then two-arm designs and skewed difficulty. A coverage estimated
from R repetitions has standard error sqrt(0.95 * 0.05 / R): 0.004 at 3,000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the simulation lives with the tests it serves

from tests.unit.report.simulation import DESIGNS, Design, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    extra = [Design(p, 3, sd, k, arms=2) for p in (60, 256) for sd in (0.0, 0.3, 0.8) for k in (4, 16)]
    extra += [
        Design(p, s, sd, 16, beta=(0.2, 0.6), arms=4 if s == 2 else 3)
        for p in (60, 256)
        for s in (2, 3)
        for sd in (0.3, 0.8)
    ]
    # arms far apart in accuracy pool their seed variance: two near 0% and one near 100% beside the tested ones
    extra += [Design(p, s, 0.8, 16, others=(-5.0, -5.0, 3.0)) for p in (60, 256) for s in (2, 3)]
    print(f"{'design':<52} {'arm':>6} {'diff':>6} {'size':>6}")  # coverage of 95% intervals; size at 5%
    worst = {"arm": 1.0, "diff": 1.0, "size": 0.0}
    start = time.perf_counter()
    for d in [*DESIGNS, *extra]:
        r = simulate(d, args.reps, args.seed)
        if r.generalized < 1:  # the report prints no test over training runs for such a design: nothing to score
            print(f"{d!s:<52} intervals for these fine-tunes only in {1 - r.generalized:.0%} of sweeps", flush=True)
            continue
        worst = {
            "arm": min(worst["arm"], r.arm_cover),
            "diff": min(worst["diff"], r.diff_cover),
            "size": max(worst["size"], r.null_reject if r.null_reject == r.null_reject else 0.0),
        }
        print(f"{d!s:<52} {r.arm_cover:6.3f} {r.diff_cover:6.3f} {r.null_reject:6.3f}", flush=True)
    print(
        f"lowest arm coverage {worst['arm']:.3f}, lowest difference coverage {worst['diff']:.3f}, "
        f"highest size {worst['size']:.3f} ({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
