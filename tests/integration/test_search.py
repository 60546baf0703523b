"""The toy search end to end, with real DeepSpeed trainings and vLLM evaluations: ablations/toy-search.yaml cut to
one seed and two trials per arm, each study pulled by two workers at once from one sqlite Optuna storage. From the
store and the Optuna storage: every trial ran once (each its own training and validation), the two workers of a
study ran at the same time, the best parameters trained the final cells, and the report and MLflow show both
recipes."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from tests.helpers import run_sweep

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def toy_search_spec() -> dict:
    spec = yaml.safe_load((ROOT / "ablations" / "toy-search.yaml").read_text())
    spec = copy.deepcopy(spec)
    spec["name"] = "search-it"
    spec["seeds"] = [0]
    spec["eval"]["benchmarks"] = [{"name": "toy", "limit": 20}]
    spec["eval"]["samples"] = 2
    spec["eval"]["sampling"]["max_tokens"] = 256
    search = spec["search"]
    search["params"]["epochs"] = {"type": "int", "low": 5, "high": 10, "step": 5}
    search["objective"]["benchmark"]["limit"] = 12
    search["trials"] = 2
    search["sampler"]["startup_trials"] = 2
    assert search["workers"] == 2 and search["mode"] == "per_arm"
    # a slot pair for each of the four workers: the launcher starts ready jobs in no promised order, and with
    # fewer slots it may start one worker of each study first, which then runs both trials alone
    spec["launcher"]["local"]["cpu_slots"] = 8
    return spec


def test_toy_search(tmp_path: Path):
    results = run_sweep(tmp_path, toy_search_spec(), timeout_s=1500)
    store = results / "store"
    selects = {
        p.name: json.loads((p / "manifest.json").read_text())
        for p in (store / "search").iterdir()
        if (p / "best.json").is_file()
    }
    assert len(selects) == 2  # one study per arm
    storage = optuna.storages.RDBStorage(f"sqlite:///{results / 'search' / 'optuna.db'}")
    trained_keys, concurrent = [], 0
    for key, manifest in selects.items():
        best = json.loads((store / "search" / key / "best.json").read_text())
        study = optuna.load_study(study_name=best["study"], storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # exactly the trials asked, none failed
        rows = pd.read_csv(store / "search" / key / "trials.csv")
        assert sorted(rows["number"]) == [t.number for t in trials]
        for t, row in zip(sorted(trials, key=lambda t: t.number), rows.sort_values("number").itertuples()):
            train = store / "train" / row.train_key
            result = json.loads((train / "metrics.json").read_text())
            assert result["search"]["params"] == t.params  # the trial's own training, with its parameters
            (eval_key,) = json.loads(row.eval_keys)
            metrics = json.loads((store / "eval" / eval_key / "metrics.json").read_text())
            assert metrics["benchmark"] == "toy-dev" and metrics["n_problems"] == 12
            assert metrics["metrics"]["pass@1"] == pytest.approx(t.value)  # the objective is the validation score
            trained_keys.append(row.train_key)
        # each trial was pulled by exactly one of the study's two workers
        workers = [d for d in manifest["inputs"] if d.startswith("search/")]
        ran = [[t["number"] for t in json.loads((store / w / "trials.json").read_text())["trials"]] for w in workers]
        assert len(workers) == 2 and sorted(n for r in ran for n in r) == [0, 1]
        if all(ran):  # one trial each: they ran at the same time
            (a, b) = trials
            assert a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
            concurrent += 1
        # the best trial's parameters trained the final cells of the recipes that use this study
        finals = [
            json.loads((p / "metrics.json").read_text())
            for p in (store / "train").iterdir()
            if (p / "manifest.json").is_file()
            and json.loads((p / "manifest.json").read_text())["config"].get("recipe") == key
        ]
        assert finals and all(f["search"]["params"] == best["params"] for f in finals)
        assert all(f["search"]["trial"] == best["trial"] for f in finals)
        assert best["value"] == max(t.value for t in trials)
    # all four workers start together (8 CPU slots, 2 a training): a study's two take a trial each at once
    assert concurrent >= 1
    assert len(set(trained_keys)) == 4  # every trial trained once, each its own job
    # 4 trial trainings + 3 final ones (the reference arm's two recipes are one training)
    assert len([p for p in (store / "train").iterdir() if (p / "metrics.json").is_file()]) == 7
    # the report sets the source effect under the shared recipe and each arm's own side by side
    survive = pd.read_csv(results / "tables" / "survive.csv")
    row = survive[(survive["factor"] == "source") & (survive["level"] == "terse")]
    assert len(row) == 1 and isinstance(row["verdict"].iloc[0], str)
    report = (results / "report.md").read_text()
    assert "survive" in report.lower() and "## Search" in report
    cells = pd.read_csv(results / "tables" / "cells.csv")
    assert set(cells["recipe"].dropna()) == {"shared", "own"}
    # MLflow: a run per study, each trial a run nested under it
    db = sqlite3.connect(results.parent / "mlflow.db")
    studies = db.execute("select run_uuid from tags where key='ablate.role' and value='study'").fetchall()
    assert len(studies) == 2
    nested = db.execute(
        "select count(*) from tags where key='mlflow.parentRunId' and value in ({})".format(",".join("?" * 2)),
        [s[0] for s in studies],
    ).fetchone()[0]
    assert nested == 4
