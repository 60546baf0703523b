"""A synthetic sweep with a search: the plan of tests/synthetic.py's spec plus a `search:` block, and a store
holding what every stage would have written, the studies' select jobs as the search stage's contract says
(best.json, trials.csv, history.png, importance.png). Under the shared recipe masking keywords hurts; under each
arm's own recipe it does not, so one effect survives tuning and one does not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.special import expit

from framework.grading.metrics import benchmark_metrics
from framework.spec import LoadedSpec, spec_from_dict
from framework.spec.yamlsrc import Source
from framework.store import Store, write_json_atomic
from framework.sweep.plan import Plan, build_plan
from tests.synthetic import FAKE_SECRET, synthetic_spec

SEARCH = {
    "params": {
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "epochs": {"type": "int", "low": 2, "high": 6, "step": 2},
    },
    "objective": {"benchmark": "toy-dev"},
    "trials": 4,
    "workers": 2,
}
# the logit effect of a level under each recipe: keywords=mask hurts only when every arm shares one recipe
EFFECT = {
    ("source", "human_stage4"): {"shared": -1.6, "own": -1.6},
    ("keywords", "mask"): {"shared": -1.4, "own": 0.0},
}
STORAGE = f"postgresql://optuna:{FAKE_SECRET}@db.example:5432/studies"  # a password the log must never send


@dataclass
class SearchSweep:
    loaded: LoadedSpec
    plan: Plan
    store: Store
    best: dict[str, dict[str, Any]]  # select key -> its best.json


def _logit(levels: dict[str, str], recipe: str | None, baseline: str | None) -> float:
    if baseline is not None:
        return -1.5
    return 0.6 + sum(EFFECT.get((f, lv), {}).get(recipe or "shared", 0.0) for f, lv in levels.items())


def _samples(rng: np.random.Generator, difficulty: np.ndarray, p_logit: float, k: int) -> pd.DataFrame:
    rows = []
    for i, d in enumerate(difficulty):
        for s in range(k):
            correct = bool(rng.random() < expit(p_logit + d))
            rows.append(
                {
                    "problem_id": f"p{i:02d}", "sample_index": s, "subset": "aime24",
                    "text": f"Wait, the answer is {i if correct else -1}.", "n_tokens": 200 + 10 * i,
                    "finish_reason": "stop", "seed": s, "answer": str(i if correct else -1), "correct": correct,
                    "reflection_count": 1,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def _png(path: Path, title: str) -> None:
    fig = Figure(figsize=(2, 1.5))
    ax = fig.subplots()
    ax.plot([0, 1, 2], [0.2, 0.4, 0.5])
    ax.set_title(title, fontsize=6)
    fig.savefig(path, dpi=40)


def _study_outputs(out: Path, n: int, search: dict[str, Any]) -> dict[str, Any]:
    """best.json, trials.csv and the two plots of a study with four trials: complete, pruned, failed, complete."""
    lrs = [1e-4 * (n + 1), 3e-4, 5e-4, 2e-4 * (n + 1)]
    values = [0.40 + 0.05 * n, None, None, 0.55 + 0.05 * n]
    states = ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    rows = [
        {
            "number": i, "state": states[i], "value": values[i], "duration_s": 30.0 + i,
            "retried_from": 2 if i == 3 else None, "train_key": f"t{n}{i:014d}", "eval_keys": json.dumps([f"e{n}{i}"]),
            "params.learning_rate": lrs[i], "params.epochs": 2 * (i % 3 + 1),
            "intermediate": json.dumps({"0": 0.3 + 0.01 * i, "1": 0.35 + 0.01 * i} if states[i] != "FAIL" else {}),
        }
        for i in range(4)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "trials.csv", index=False)
    best = {
        "study": f"study-{n}",
        "storage": STORAGE,
        "arm": search["arm"],
        "params": {"learning_rate": lrs[3], "epochs": 2},
        "trial": 3,
        "value": values[3],
        "metric": "pass@1",
        "direction": "maximize",
        "counts": {"complete": 2, "pruned": 1, "failed": 1},
        "importances": {"learning_rate": 0.8, "epochs": 0.2},
    }
    write_json_atomic(out / "best.json", best)
    _png(out / "history.png", "history")
    _png(out / "importance.png", "importance")
    return best


def search_sweep(
    tmp: Path, *, mode: str = "per_arm", n_problems: int = 40, seeds: tuple[int, ...] = (0, 1), **spec_kw: Any
) -> SearchSweep:
    """Plan the synthetic spec with a search block and publish every job but the log stage's."""
    data = synthetic_spec(tmp, seeds=seeds, search={**SEARCH, "mode": mode}, **spec_kw)
    spec = spec_from_dict(data)
    loaded = LoadedSpec(spec=spec, path=None, source=Source(data=data))
    plan = build_plan(spec)
    store = Store(Path(spec.results_dir) / spec.name / "store")
    rng = np.random.default_rng(5)
    difficulty = rng.normal(0.0, 1.0, n_problems)
    cells = {c.id: c for c in plan.cells}
    best: dict[str, dict[str, Any]] = {}
    for job in plan.jobs.values():
        if job.stage == "log":
            continue
        cell = cells[job.cells[0]]  # a job shared by recipes (the reference arm's) is the same under both
        with store.build(job.stage, job.key, {"stage": job.stage, "cells": job.cells}) as b:
            assert b is not None
            if job.stage == "search" and job.config["role"] == "select":
                best[job.key] = _study_outputs(b.dir, len(best), job.config["study"])
            elif job.stage == "train":
                curve = [{"step": s, "loss": 2.0 * 0.9**s} for s in range(1, 6)]
                write_json_atomic(b.dir / "metrics.json", {"loss_curve": curve, "train_tokens": 400, "examples": 4})
            elif job.stage == "eval":
                seed_shift = 0.0 if cell.seed is None else 0.08 * (cell.seed - 0.5)
                logit = _logit(cell.level_map, cell.recipe, cell.baseline) + seed_shift
                samples = _samples(rng, difficulty, logit, spec.eval.samples)
                samples.to_parquet(b.dir / "samples.parquet", index=False)
                result = {
                    "benchmark": job.config["benchmark"]["name"],
                    "n_problems": n_problems,
                    "n_samples": spec.eval.samples,
                    "metrics": benchmark_metrics(samples),
                    "warnings": [],
                }
                write_json_atomic(b.dir / "metrics.json", result)
            else:
                (b.dir / "out.txt").write_text("synthetic")
    return SearchSweep(loaded, plan, store, best)
