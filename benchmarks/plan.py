"""Time to validate, expand and key a 10,000-cell spec (goal: <= 5 s on 2 cores).

    .venv/bin/python benchmarks/plan.py [--cells-per-factor 10] [--seeds 10]

Prints each phase's wall-clock time and the share of the goal used.
"""

from __future__ import annotations

import argparse
import time

from framework.spec import spec_from_dict
from framework.sweep.grid import expand
from framework.sweep.plan import build_plan

GOAL_S = 5.0


def big_spec(levels: int, seeds: int) -> dict:
    return {
        "name": "bench",
        "model": {"name_or_path": "Qwen/Qwen2.5-32B"},
        "pool": [{"preset": "nemotron-math-human-reasoning"}],
        "factors": {
            "source": {"levels": [f"s{i}" for i in range(levels)]},
            "length": {"levels": {f"l{i}": {"bins": levels, "bin": i} for i in range(levels)}},
            "keywords": {"levels": {f"k{i}": {"mode": "replace", "replacement": f"w{i}"} for i in range(levels)}},
        },
        "seeds": list(range(seeds)),
        "baselines": ["base"],
        "eval": {"benchmarks": ["aime24", "aime25"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells-per-factor", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    data = big_spec(args.cells_per_factor, args.seeds)

    t0 = time.perf_counter()
    spec = spec_from_dict(data)
    t1 = time.perf_counter()
    cells = expand(spec)
    t2 = time.perf_counter()
    plan = build_plan(spec)
    t3 = time.perf_counter()
    total = t1 - t0 + t3 - t1  # build_plan expands again; count expansion once
    print(f"cells: {len(cells)}  stage jobs: {len(plan.jobs)}")
    print(f"validate: {t1 - t0:.3f} s   expand: {t2 - t1:.3f} s   plan (expand + key every job): {t3 - t2:.3f} s")
    print(f"validate + plan: {total:.3f} s  = {total / GOAL_S:.2f}x of the {GOAL_S:.0f} s goal")


if __name__ == "__main__":
    main()
