"""A synthetic sweep with a search: the plan of tests/synthetic.py's spec plus a `search:` block, and a store
holding what every stage would have written, the studies' select jobs as the search stage's contract says
(best.json, trials.csv, history.png, importance.png). Under the shared recipe masking keywords hurts; under each
arm's own recipe it does not, so one effect survives tuning and one does not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from framework.store import write_json_atomic
from framework.sweep.grid import Cell
from framework.sweep.plan import Job
from tests.synthetic import FAKE_SECRET, Outcomes, Sweep, synthetic_sweep

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
class SearchSweep(Sweep):
    best: dict[str, dict[str, Any]]  # select key -> its best.json


def _recipe_logit(cell: Cell) -> float:
    """A cell's logit under its recipe (a baseline has none), before its seed's effect."""
    if cell.baseline is not None:
        return -1.5
    return 0.6 + sum(EFFECT.get((f, lv), {}).get(cell.recipe or "shared", 0.0) for f, lv in cell.level_map.items())


OUTCOMES = Outcomes(logit=_recipe_logit, seed_effect=0.08, rng_seed=5, spread=1.0)


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


def search_sweep(tmp: Path, *, mode: str = "per_arm", n_problems: int = 40, **spec_kw: Any) -> SearchSweep:
    """The synthetic sweep of a spec with a search block: every job but the log stage's published, each study's
    select job with what a study writes."""
    best: dict[str, dict[str, Any]] = {}

    def write_search(job: Job, out: Path) -> None:
        if job.config["role"] == "select":
            best[job.key] = _study_outputs(out, len(best), job.config["study"])
        else:
            (out / "out.txt").write_text("synthetic")

    sweep = synthetic_sweep(
        tmp,
        n_problems=n_problems,
        outcomes=OUTCOMES,
        writers={"search": write_search},
        search={**SEARCH, "mode": mode},
        **spec_kw,
    )
    return SearchSweep(sweep.loaded, sweep.plan, sweep.store, sweep.accuracy, best)
