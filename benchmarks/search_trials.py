"""How many trials a search needs to find a recipe within noise of the best one a grid finds, on the toy world,
with real trainings (DeepSpeed) and validation evaluations (vLLM).

    .venv/bin/python benchmarks/search_trials.py [--dir /tmp/search-bench] [--repeats 10] [--trials 12]

1. A grid study: the long chain-of-thought arm of ablations/toy-search.yaml, learning rate x epochs on a grid
   (5 x 3 points), every point trained once at seed 0 and scored on 50 toy-dev problems x 4 samples.
2. TPE and random studies on the same points (the same parameters as categorical choices), `--repeats` sampler
   seeds each, `--trials` trials per study: every suggestion is a grid point, so its training and evaluation are
   the grid's finished store jobs (the search reuses them by key) and a study costs seconds.
3. A point is "within noise" of the grid's best when a paired t test over the validation problems (the two
   checkpoints' per-problem pass rates) cannot tell it from the best at 5%, and it is not below the best by more
   than that test's 95% half-width. Printed per sampler: the trials (and distinct trainings) each study needed
   before its best-so-far was within noise, as median and range, and how many studies got there within 4, 8 and
   `--trials` trials; and how many tried the grid's best point itself. TPE's first `startup_trials` are random
   draws, so with the same seed a TPE and a random study start alike.

The search space is the grid's points so that each suggestion reuses a real result: a continuous range would
need a training per trial. A point's noise is one seed's: the search's own (trial) noise, not the seed-to-seed
spread the final cells' replicates measure.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
LEARNING_RATES = [1.0e-4, 2.0e-4, 5.0e-4, 1.0e-3, 2.0e-3]
EPOCHS = [10, 20, 40]


def spec(sampler: dict[str, Any], trials: int) -> dict[str, Any]:
    base = yaml.safe_load((ROOT / "ablations" / "toy-search.yaml").read_text())
    out = copy.deepcopy(base)
    out["name"] = "search-bench"
    out["factors"] = {"source": {"levels": {"long_cot": {"sources": ["long_cot"]}}}}
    out["seeds"] = [0]
    out["search"] = {
        "mode": "shared",
        "params": {
            "learning_rate": {"type": "categorical", "choices": LEARNING_RATES},
            "epochs": {"type": "categorical", "choices": EPOCHS},
        },
        "objective": {"benchmark": {"name": "toy-dev", "limit": 50}, "samples": 4},
        "trials": trials,
        "sampler": sampler,
        "workers": 1,
    }
    out["launcher"] = {"kind": "local", "local": {"cpu_slots": 2}}
    return out


def run_study(workdir: Path, data: dict[str, Any]) -> Path:
    """Plan the spec (its cheap stages built), then its study's worker and select jobs; returns the select job's
    output directory."""
    from framework.spec import spec_from_dict
    from framework.sweep.plan import build_plan

    path = workdir / f"{data['search']['sampler']['kind']}-{data['search']['sampler'].get('seed', 0)}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "ABLATE_RESULTS_DIR": str(workdir)}
    cli = [sys.executable, "-m", "framework.cli"]
    subprocess.run([*cli, "plan", str(path)], cwd=workdir, env=env, check=True, capture_output=True)
    plan = build_plan(spec_from_dict(data), path)
    jobs = plan.by_stage("search")
    for job in sorted(jobs, key=lambda j: j.config["role"] != "worker"):  # the workers, then select
        proc = subprocess.run(
            [*cli, "exec", "search", job.key, "--spec", str(path)], cwd=workdir, env=env, capture_output=True, text=True
        )
        if proc.returncode:
            raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    select = next(j for j in jobs if j.config["role"] == "select")
    return workdir / data["name"] / "store" / "search" / select.key


def per_problem(store: Path, eval_key: str) -> pd.Series:
    table = pd.read_parquet(store / "eval" / eval_key / "problems.parquet")
    return table.set_index("problem_id")["pass@1"]


def within_noise(grid: pd.DataFrame, store: Path) -> dict[tuple[float, int], bool]:
    """Grid point -> whether a paired t test over problems cannot put it below the best point."""
    best = grid.loc[grid["value"].idxmax()]
    best_scores = per_problem(store, json.loads(best["eval_keys"])[0])
    out = {}
    for row in grid.itertuples():
        point = _point(row)
        diff = per_problem(store, json.loads(row.eval_keys)[0]).loc[best_scores.index] - best_scores
        if diff.std(ddof=1) == 0:
            out[point] = bool(diff.mean() == 0)
            continue
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
        out[point] = bool(-diff.mean() <= half)
    return out


def _point(row: Any) -> tuple[float, int]:
    values = row._asdict()
    return float(values["params_learning_rate"]), int(values["params_epochs"])


def trials_needed(
    select_dir: Path, ok: dict[tuple[float, int], bool], top: tuple[float, int]
) -> tuple[int | None, int | None, int | None]:
    """(trials, distinct trainings) until the best-so-far is within noise, and trials until the grid's best point
    itself was tried; None if never."""
    rows = pd.read_csv(select_dir / "trials.csv").sort_values("number")
    rows = rows.rename(columns=lambda c: c.replace("params.", "params_"))
    points = [_point(row) for row in rows.itertuples()]
    exact = next((i for i, p in enumerate(points, start=1) if p == top), None)
    best = -1.0
    for i, row in enumerate(rows.itertuples(), start=1):
        if row.value > best:
            best, best_point = row.value, points[i - 1]
        if ok[best_point]:
            return i, len(set(points[:i])), exact
    return None, None, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/search-bench")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    grid_dir = run_study(workdir, spec({"kind": "grid", "seed": 0}, len(LEARNING_RATES) * len(EPOCHS)))
    store = grid_dir.parents[1]
    grid = pd.read_csv(grid_dir / "trials.csv").rename(columns=lambda c: c.replace("params.", "params_"))
    ok = within_noise(grid, store)
    top = _point(next(grid.loc[[grid["value"].idxmax()]].itertuples()))
    print(f"grid: {len(grid)} points in {time.monotonic() - t0:.0f} s")
    table = grid.assign(within_noise=[ok[_point(r)] for r in grid.itertuples()])
    print(table[["params_learning_rate", "params_epochs", "value", "within_noise"]].sort_values("value").to_string())
    print(f"{sum(ok.values())} of {len(ok)} points are within noise of the best ({grid['value'].max():.3f})")
    for kind in ("tpe", "random"):
        needed = []
        for seed in range(args.repeats):
            sampler = {"kind": kind, "seed": seed, **({"startup_trials": 4} if kind == "tpe" else {})}
            needed.append(trials_needed(run_study(workdir, spec(sampler, args.trials)), ok, top))
        found = [n for n, _, _ in needed if n is not None]
        distinct = [d for _, d, _ in needed if d is not None]
        exact = [e for _, _, e in needed if e is not None]
        if found:
            print(
                f"{kind}: trials to a recipe within noise: median {np.median(found):g} (range {min(found)}-"
                f"{max(found)}), distinct trainings median {np.median(distinct):g}; within 4: "
                f"{sum(n <= 4 for n in found)}/{args.repeats}, within 8: {sum(n <= 8 for n in found)}/{args.repeats}, "
                f"within {args.trials}: {len(found)}/{args.repeats}"
            )
        else:
            print(f"{kind}: no study of {args.trials} trials reached a recipe within noise")
        print(
            f"{kind}: the grid's best point itself tried within {args.trials} trials by {len(exact)}/{args.repeats}"
            + (f" (median at trial {np.median(exact):g})" if exact else "")
        )
    print(f"total {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
