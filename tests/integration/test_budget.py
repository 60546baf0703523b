"""A sample budget end to end with real vLLM: two checkpoints (the shipped toy teacher at two temperatures, so
nothing trains) each get a first round, then a second round allocated from the OTHER one's first round. From the
store: round 2 drew exactly what the allocation of the other's outcomes says, with seeds apart from round 1's;
the report merged both rounds; and a rerun does nothing new."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framework.eval.budget import checkpoint_allocation
from framework.spec.models import SampleBudget
from tests.helpers import run_sweep

pytestmark = pytest.mark.integration

BUDGET = {"budget": 4, "first_round": 2, "max": 10}
SPEC = {
    "name": "budget-it",
    "model": {"name_or_path": "toy:teacher"},
    "baselines": ["base", {"name": "hot", "model": {"name_or_path": "toy:teacher"}, "sampling": {"temperature": 1.2}}],
    "prompt": {"user_template": "{problem}"},
    "eval": {
        "benchmarks": [{"name": "toy", "limit": 12}],
        "samples": BUDGET,
        "sampling": {"temperature": 0.6, "max_tokens": 160},
    },
}


def counts(samples: pd.DataFrame) -> pd.DataFrame:
    return samples.groupby("problem_id", sort=False)["correct"].agg(c="sum", n="count")


def test_budget_sweep(tmp_path: Path):
    results = run_sweep(tmp_path, SPEC, timeout_s=600)
    store = results / "store" / "eval"
    jobs = {p.name: json.loads((p / "manifest.json").read_text()) for p in store.iterdir() if p.is_dir()}
    seconds = {k: m for k, m in jobs.items() if m["config"].get("round") == 2}
    assert len(jobs) == 4 and len(seconds) == 2
    for key, manifest in seconds.items():
        cfg = manifest["config"]
        [ref] = cfg["reference"]
        assert ref != cfg["first_round"]  # cross-fitted: the other checkpoint's first round
        merged = pd.read_parquet(store / key / "samples.parquet")
        first = pd.read_parquet(store / cfg["first_round"] / "samples.parquet")
        other = counts(pd.read_parquet(store / ref / "samples.parquet"))
        # round 1 is the first-round job's samples, unchanged
        pd.testing.assert_frame_equal(merged[merged["round"] == 1].drop(columns="round"), first)
        order = first["problem_id"].drop_duplicates().tolist()
        other = other.loc[order]
        alloc = checkpoint_allocation(
            {ref: (other["c"].to_numpy(), other["n"].to_numpy())}, [ref], SampleBudget(**BUDGET), len(order)
        )
        drawn = merged.groupby("problem_id")["correct"].count().loc[order].to_numpy()
        assert (drawn == alloc.total).all() and drawn.sum() == BUDGET["budget"] * len(order)
        if ((other["c"] > 0) & (other["c"] < other["n"])).any():  # a problem the other both solved and failed
            assert len(set(drawn)) > 1  # gets more samples than one it always solved or failed
        metrics = json.loads((store / key / "metrics.json").read_text())
        assert metrics["n_samples"] == pytest.approx(BUDGET["budget"])
        assert metrics["design"]["max_drawn"] == drawn.max()
        # maj and the response statistics are the first round's: the same samples per problem for every checkpoint
        first_metrics = json.loads((store / cfg["first_round"] / "metrics.json").read_text())["metrics"]
        assert "maj@n" not in metrics["metrics"] and metrics["metrics"]["maj@2"] == first_metrics["maj@2"]
        assert metrics["metrics"]["truncation_rate"] == first_metrics["truncation_rate"]
        per_problem = merged.groupby("problem_id")["correct"].mean()
        assert metrics["metrics"]["pass@1"] == pytest.approx(per_problem.mean())
        # on CPU the engine is seeded, not the request: round 2's engine seed lies past every round-1 seed
        second = merged[merged["round"] == 2]
        assert second["seed"].min() >= 0 + 2 * len(order) and set(second["seed"]).isdisjoint(set(first["seed"]))
    # each checkpoint samples its own random stream: the two first rounds share no seed
    firsts = [pd.read_parquet(store / m["config"]["first_round"] / "samples.parquet") for m in seconds.values()]
    assert set(firsts[0]["seed"]).isdisjoint(set(firsts[1]["seed"]))
    # the report read both rounds and states the design
    report = (results / "report.md").read_text()
    assert "adaptive samples (2 of 2 evaluated cells)" in report
    cells = pd.read_csv(results / "tables" / "cells.csv")
    assert (cells["samples_per_problem"] == BUDGET["budget"]).all()
    # a rerun finds every job done
    proc = subprocess.run(
        [sys.executable, "-m", "framework.cli", "run", "spec.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "start" not in proc.stdout
    assert {p.name for p in store.iterdir() if p.is_dir()} == set(jobs)
    assert np.isfinite(cells["pass@1"]).all()
