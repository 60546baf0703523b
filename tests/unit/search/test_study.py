"""The Optuna side of a search in one process: suggestions from the spec's parameters, the storage URL and its
secrets, a grid queued once, how a failing trial is told and retried, and what the select job records."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from framework.errors import RetryLater
from framework.search.study import (
    SearchError,
    best_record,
    open_storage,
    open_study,
    run_worker,
    shown_storage,
    storage_url,
    suggest,
    trial_rows,
)
from framework.spec.search import SearchSpec


def _spec(**kw: Any) -> SearchSpec:
    data = {
        "params": {
            "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            "epochs": {"type": "int", "low": 2, "high": 8, "step": 2},
            "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.05},
            "lr_scheduler": {"type": "categorical", "choices": ["cosine", "linear"]},
        },
        "objective": {"benchmark": "toy-dev"},
        "heartbeat_s": 1.0,
        **kw,
    }
    return SearchSpec.model_validate(data)


def _nothing() -> contextlib.nullcontext:
    return contextlib.nullcontext()


def _study(tmp: Path, search: SearchSpec, name: str = "s") -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp / 'optuna.db'}", search)
    return open_study(storage, name, search, _nothing)


def test_suggestions_follow_each_parameter_type_range_step_and_scale(tmp_path: Path) -> None:
    search = _spec()
    study = _study(tmp_path, search)
    seen = []
    for _ in range(20):
        trial = study.ask()
        p = suggest(trial, search.params)
        seen.append(p)
        assert 1e-5 <= p["learning_rate"] <= 1e-3
        assert isinstance(p["epochs"], int) and p["epochs"] in (2, 4, 6, 8)
        assert any(math.isclose(p["warmup_ratio"], v) for v in (0.0, 0.05, 0.1, 0.15, 0.2))
        assert p["lr_scheduler"] in ("cosine", "linear")
        study.tell(trial, 0.0)
    dist = study.trials[0].distributions
    assert dist["learning_rate"].log and dist["epochs"].step == 2 and dist["warmup_ratio"].step == 0.05
    # log scale: about half the draws below the geometric middle (1e-4), not ~9% as on a linear scale
    assert sum(p["learning_rate"] < 1e-4 for p in seen) >= 5


def test_a_grid_is_queued_once_shuffled_by_the_seed_whoever_opens_the_study(tmp_path: Path) -> None:
    params = {
        "epochs": {"type": "int", "low": 1, "high": 3},
        "lr_scheduler": {"type": "categorical", "choices": ["cosine", "linear"]},
    }
    search = _spec(params=params, sampler={"kind": "grid", "seed": 1})
    first = _study(tmp_path, search)
    _study(tmp_path, search)  # a second worker, a restarted one
    waiting = first.get_trials(states=(TrialState.WAITING,))
    points = [
        (t.system_attrs["fixed_params"]["epochs"], t.system_attrs["fixed_params"]["lr_scheduler"]) for t in waiting
    ]
    assert sorted(points) == sorted((e, s) for e in (1, 2, 3) for s in ("cosine", "linear"))
    assert points != sorted(points, key=lambda p: (p[0], p[1]))  # shuffled, not the spec's order
    other = _study(tmp_path, _spec(params=params, sampler={"kind": "grid", "seed": 2}), name="t")
    assert [t.system_attrs["fixed_params"] for t in other.get_trials()] != [
        t.system_attrs["fixed_params"] for t in waiting
    ]


def test_storage_reads_variables_from_the_environment_and_never_shows_a_password(tmp_path, monkeypatch) -> None:
    assert storage_url(None, tmp_path) == f"sqlite:///{(tmp_path / 'search' / 'optuna.db').resolve()}"
    monkeypatch.setenv("DB_PW", "hunter2secret")
    url = storage_url("postgresql://me:${DB_PW}@127.0.0.1:9/studies", tmp_path)
    assert url == "postgresql://me:hunter2secret@127.0.0.1:9/studies"
    with pytest.raises(SearchError, match="NOT_SET_ANYWHERE"):
        storage_url("postgresql://me:${NOT_SET_ANYWHERE}@h/db", tmp_path)
    with pytest.raises(SearchError) as err:  # no server there (or no driver): the message names it redacted
        open_storage(url, _spec())
    assert "hunter2secret" not in str(err.value) and "127.0.0.1" in str(err.value)


def test_a_failing_trial_is_failed_retried_with_its_parameters_and_never_counted_complete(tmp_path: Path) -> None:
    search = _spec(trials=3, max_retries=1, sampler={"kind": "random"})
    study = _study(tmp_path, search)
    calls: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial, params: dict[str, Any]) -> float:
        calls.append(params)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return params["learning_rate"]

    ran = run_worker(study, search, objective, _nothing, poll_s=0.01)
    assert [r["state"] for r in ran] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and "CUDA out of memory" in trials[0].user_attrs["error"]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params  # retried first
    assert calls[1] == calls[0]
    assert trials[1].user_attrs.get("error") is None  # the retry does not carry its failed trial's error


def test_a_worker_whose_trials_all_fail_stops_with_the_error(tmp_path: Path) -> None:
    search = _spec(trials=3, max_retries=1, sampler={"kind": "random"})
    study = _study(tmp_path, search)

    def broken(trial: optuna.Trial, params: dict[str, Any]) -> float:
        raise ValueError("no GPU visible")

    with pytest.raises(SearchError, match=r"last 2 trials of this worker failed.*no GPU visible"):
        run_worker(study, search, broken, _nothing, poll_s=0.01)
    assert [t.state for t in study.get_trials()].count(TrialState.COMPLETE) == 0


def test_a_configuration_error_stops_the_worker_at_once_without_a_retry(tmp_path: Path) -> None:
    search = _spec(trials=3, max_retries=2, sampler={"kind": "random"})
    study = _study(tmp_path, search)

    def misconfigured(trial: optuna.Trial, params: dict[str, Any]) -> float:
        raise SearchError("search.objective.metric: 'pass@9' is not a metric")

    with pytest.raises(SearchError, match="pass@9"):
        run_worker(study, search, misconfigured, _nothing, poll_s=0.01)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]


def test_pruned_trials_count_toward_the_target_and_select_records_the_best(tmp_path: Path) -> None:
    search = _spec(trials=4, sampler={"kind": "random"}, objective={"benchmark": "toy-dev", "direction": "minimize"})
    study = _study(tmp_path, search)
    n = 0

    def objective(trial: optuna.Trial, params: dict[str, Any]) -> float:
        nonlocal n
        n += 1
        trial.set_user_attr("train_key", f"t{n}")
        trial.report(0.1 * n, step=0)
        if n == 2:
            raise optuna.TrialPruned()
        return 1.0 / n

    run_worker(study, search, objective, _nothing, poll_s=0.01)
    best = best_record(study, search)
    assert best["trial"] == 3 and best["value"] == pytest.approx(0.25)  # minimize: the last trial's 1/4
    assert best["params"] == study.trials[3].params
    assert best["counts"] == {"complete": 3, "pruned": 1, "failed": 0}
    assert best["metric"] == "pass@1" and best["direction"] == "minimize"
    assert set(best["importances"]) <= set(search.params)
    rows = trial_rows(study, search)
    assert [r["state"] for r in rows] == ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"]
    assert rows[1]["train_key"] == "t2" and json.loads(rows[1]["intermediate"]) == {"0": pytest.approx(0.2)}
    assert {f"params.{p}" for p in search.params} <= set(rows[0]) and rows[0]["duration_s"] >= 0
    assert rows[0]["retried_from"] is None and json.loads(rows[0]["eval_keys"]) == []


def test_select_refuses_a_study_without_a_completed_trial(tmp_path: Path) -> None:
    search = _spec()
    study = _study(tmp_path, search)
    trial = study.ask()
    study.tell(trial, state=TrialState.PRUNED)
    with pytest.raises(SearchError, match=r"no completed trial.*1 pruned"):
        best_record(study, search)


# ------------------------------------------------------------------------------ what the review found
def test_a_trial_whose_worker_died_before_its_first_beat_is_failed_and_retried(tmp_path, monkeypatch):
    """Asked, then the worker gone before its first heartbeat: Optuna never judges such a trial stale, and without
    this every worker would wait for it forever."""
    from framework.search import study as study_module

    monkeypatch.setattr(study_module, "CLOCK_SLACK_S", 0.0)
    search = SearchSpec.model_validate(
        {
            "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            "objective": {"benchmark": "toy-dev"},
            "sampler": {"kind": "random"},
            "trials": 1,
            "heartbeat_s": 1.0,
            "grace_s": 2.0,
        }
    )
    mutex = contextlib.nullcontext
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", search)
    study = open_study(storage, "s", search, mutex)
    orphan = study.ask()
    orphan.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    time.sleep(2.5)
    ran = run_worker(study, search, lambda trial, params: 0.5, mutex, poll_s=0.1)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and [r["number"] for r in ran] == [1]


def test_a_worker_warned_of_its_time_limit_stops_between_trials(tmp_path):
    search = SearchSpec.model_validate(
        {
            "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
            "objective": {"benchmark": "toy-dev"},
            "trials": 3,
        }
    )
    study = open_study(open_storage(f"sqlite:///{tmp_path / 'o.db'}", search), "s", search, contextlib.nullcontext)
    calls = []
    with pytest.raises(RetryLater):
        run_worker(
            study, search, lambda t, p: calls.append(1) or 0.1, contextlib.nullcontext, stopping=lambda: len(calls) >= 1
        )
    assert len(calls) == 1 and len(study.get_trials()) == 1


@pytest.mark.parametrize(
    ("configured", "env", "secret"),
    [
        ("postgresql//u:s3cr3t@h/db", {}, "s3cr3t"),  # no colon: no URL to parse
        ("postgresql://u:s3cr3t@h:port/db", {}, "s3cr3t"),  # a bad port
        ("postgresql://u:${PGPW}@127.0.0.1:1/db", {"PGPW": "pa ssXYZ"}, "pa ssXYZ"),  # a value with a space
        ("postgresql://u:literalpw@${PGHOST}/db", {"PGHOST": "127.0.0.1:1"}, "literalpw"),  # the host a variable
    ],
)
def test_a_storage_that_cannot_be_opened_never_shows_its_password(tmp_path, monkeypatch, configured, env, secret):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    search = SearchSpec.model_validate(
        {"params": {"epochs": {"type": "int", "low": 1, "high": 2}}, "objective": {"benchmark": "toy-dev"}}
    )
    url = storage_url(configured, tmp_path)
    with pytest.raises(SearchError) as e:
        open_storage(url, search, configured=configured)
    assert secret not in str(e.value) and "search.storage" in str(e.value)
    assert secret not in shown_storage(url, configured)


def test_workers_of_different_studies_opening_a_new_storage_at_once_all_succeed(tmp_path):
    """Four processes create one fresh sqlite storage's tables at the same moment, each under a lock of its own
    (workers of other stores): one creates them, the others find them made and open the storage."""
    import subprocess
    import sys

    code = (
        "import sys; from framework.search.study import open_storage; from framework.spec.search import SearchSpec;"
        "s = SearchSpec.model_validate({'params': {'epochs': {'type': 'int', 'low': 1, 'high': 2}},"
        " 'objective': {'benchmark': 'toy-dev'}}); open_storage(sys.argv[1], s); print('ok')"
    )
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    root = Path(__file__).resolve().parents[3]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], cwd=root, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4 and all("ok" in o for o in outs)
