"""The stage around the study: a trial's objective runs its store jobs rung by rung (the jobs themselves faked:
their real stages have tests of their own), the worker refuses validation problems the sweep scores, and the
select job writes the contract's files. Also the train and eval stages' side of it: a trial's or a recipe's
parameters applied to the training, and a validation job's benchmark and samples."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml

from framework.eval.stage import validation_benchmark
from framework.search import stage
from framework.search.study import SearchError, open_storage, open_study, storage_url, study_name
from framework.search.trials import TrialJobs
from framework.spec import LoadedSpec
from framework.spec.ablation import AblationSpec
from framework.spec.yamlsrc import Source
from framework.store import Store, write_json_atomic
from framework.sweep.execute import results_base
from framework.sweep.plan import build_plan
from framework.sweep.pruning import is_pruned
from framework.train.stage import TrainError, searched_recipe


def _ctx(tmp: Path, role: str = "worker", **search: Any) -> SimpleNamespace:
    data = yaml.safe_load(Path("ablations/quickstart.yaml").read_text())
    data["train"]["keep_checkpoint"] = False
    data["results_dir"] = str(tmp / "results")
    data["search"] = {
        "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}},
        "objective": {"benchmark": "toy-dev"},
        "mode": "shared",
        "pruner": {"kind": "median", "rungs": 3},
        "heartbeat_s": 1.0,
        **search,
    }
    spec = AblationSpec.model_validate(data)
    loaded = LoadedSpec(spec=spec, path=None, source=Source(data=data))
    plan = build_plan(spec, "ablations/quickstart.yaml", strict=False)
    job = next(j for j in plan.by_stage("search") if j.config["role"] == role)
    store = Store(tmp / "results" / spec.name / "store")
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    return SimpleNamespace(
        spec=spec, loaded=loaded, plan=plan, job=job, store=store, out=out, build=SimpleNamespace(manifest={})
    )


class _Trial:
    """What the objective asks of an Optuna trial; prunes after `prune_after` reports."""

    def __init__(self, prune_after: int | None = None) -> None:
        self.reports: list[tuple[int, float]] = []
        self.attrs: dict[str, Any] = {}
        self.prune_after = prune_after

    def set_user_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = value

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.prune_after is not None and len(self.reports) >= self.prune_after


def _fake_execute(ran: list[str], pass1: dict[int, float]):
    """Publishes what a train job (a checkpoint) or a validation eval job (metrics of its rung) would."""

    def execute(loaded, plan, store, stage_name, key) -> bool:
        job = plan.find(stage_name, key)
        assert job is not None and all(store.is_done(*d.split("/")) for d in job.deps if d.startswith("train/"))
        with store.build(stage_name, key) as b:
            if b is None:
                return False
            ran.append(job.id)
            if stage_name == "train":
                (b.dir / "model").mkdir()
                (b.dir / "model" / "config.json").write_text("{}")
            else:
                n = len(job.config["benchmark"]["problem_ids"])
                rung = len([r for r in ran if r.startswith("eval/")]) - 1
                metrics = {"pass@1": pass1[rung], "n_problems": float(n), "n_samples": 4.0 * n}
                write_json_atomic(b.dir / "metrics.json", {"metrics": metrics})
        return True

    return execute


def _jobs(ctx: SimpleNamespace, ids: list[str]) -> TrialJobs:
    return TrialJobs(ctx.job.config["study"], ctx.job.deps, ctx.job.cells, [ids[r::3] for r in range(3)])


def test_a_trial_evaluates_rung_by_rung_and_reports_the_running_objective(tmp_path, monkeypatch) -> None:
    ctx = _ctx(tmp_path)
    ran: list[str] = []
    monkeypatch.setattr(stage, "execute", _fake_execute(ran, {0: 0.5, 1: 0.0, 2: 1.0}))
    trial = _Trial()
    value = stage.objective(ctx, _jobs(ctx, [f"p{i}" for i in range(8)]), trial, {"learning_rate": 1e-3})
    # rungs of 3, 3 and 2 problems
    assert value == pytest.approx((0.5 * 3 + 0 * 3 + 1.0 * 2) / 8)
    assert trial.reports == [(0, 0.5), (1, pytest.approx(0.25)), (2, pytest.approx(value))]
    train_key = trial.attrs["train_key"]
    assert ran[0] == f"train/{train_key}" and [r.split("/")[1] for r in ran[1:]] == trial.attrs["eval_keys"]
    assert f"train/{train_key}" in ctx.plan.jobs  # registered, so `execute` and the eval stage find them


def test_a_pruned_trial_stops_between_rungs_and_its_checkpoint_goes(tmp_path, monkeypatch) -> None:
    ctx = _ctx(tmp_path)
    ran: list[str] = []
    monkeypatch.setattr(stage, "execute", _fake_execute(ran, {0: 0.0, 1: 0.0, 2: 0.0}))
    trial = _Trial(prune_after=1)
    with pytest.raises(optuna.TrialPruned):
        stage.objective(ctx, _jobs(ctx, [f"p{i}" for i in range(6)]), trial, {"learning_rate": 1e-3})
    assert len(ran) == 2  # the training and the first rung only
    assert is_pruned(ctx.store, trial.attrs["train_key"])


def test_a_repeated_suggestion_reuses_its_evaluations_without_training_again(tmp_path, monkeypatch) -> None:
    ctx = _ctx(tmp_path)
    ran: list[str] = []
    monkeypatch.setattr(stage, "execute", _fake_execute(ran, {0: 0.5, 1: 0.5, 2: 0.5}))
    jobs = _jobs(ctx, [f"p{i}" for i in range(6)])
    first = stage.objective(ctx, jobs, _Trial(), {"learning_rate": 1e-3})
    n = len(ran)
    assert stage.objective(ctx, jobs, _Trial(), {"learning_rate": 1e-3}) == first
    assert len(ran) == n  # nothing ran again: no retraining of a checkpoint already evaluated


def test_the_worker_refuses_validation_problems_the_sweep_scores(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert len(stage.validation_problems(ctx)) > 0
    leaky = _ctx(tmp_path, objective={"benchmark": "toy"})
    with pytest.raises(SearchError, match=r"validation problem\(s\) are also in eval.benchmarks\[0\] \(toy\)"):
        stage.validation_problems(leaky)


def test_select_writes_best_trials_and_plots_of_the_finished_study(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, role="select")
    search = ctx.spec.search
    name = study_name(ctx.job.config["study"], ctx.job.deps)
    url = storage_url(None, results_base(ctx.store) / ctx.spec.name)
    study = open_study(open_storage(url, search), name, search, lambda: ctx.store.mutex("t"))
    for value in (0.2, 0.6, None):
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True)
        study.tell(trial, value, state=None if value is not None else optuna.trial.TrialState.FAIL)
    stage.select(ctx)
    best = json.loads((ctx.out / "best.json").read_text())
    assert set(best) == {
        "study", "storage", "arm", "params", "trial", "value", "metric", "direction", "counts", "importances",
    }  # fmt: skip
    assert best["study"] == name and best["value"] == 0.6 and best["trial"] == 1
    assert best["counts"] == {"complete": 2, "pruned": 0, "failed": 1} and best["storage"] == url
    assert best["arm"] == ctx.job.config["study"]["arm"]
    rows = pd.read_csv(ctx.out / "trials.csv")
    assert list(rows.columns) == [
        "number", "state", "value", "duration_s", "retried_from", "train_key", "eval_keys",
        "params.learning_rate", "intermediate",
    ]  # fmt: skip
    assert list(rows["state"]) == ["COMPLETE", "COMPLETE", "FAIL"]
    for png in ("history.png", "importance.png"):
        assert (ctx.out / png).read_bytes()[:4] == b"\x89PNG"


def test_a_trial_trains_with_its_parameters_and_a_cell_with_its_studys_choice(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    train, record = searched_recipe(SimpleNamespace(spec=ctx.spec, job=SimpleNamespace(config={"seed": 0})))
    assert train == ctx.spec.train and record is None
    trial = SimpleNamespace(spec=ctx.spec, job=SimpleNamespace(config={"params": {"learning_rate": 2e-3}}))
    train, record = searched_recipe(trial)
    assert train.learning_rate == 2e-3 and train.epochs == ctx.spec.train.epochs and record["params"]
    select = next(j for j in ctx.plan.by_stage("search") if j.config["role"] == "select")
    with ctx.store.build("search", select.key) as b:
        write_json_atomic(b.dir / "best.json", {"params": {"epochs": 7}, "study": "ablate-x", "trial": 4})
    cell = SimpleNamespace(
        spec=ctx.spec,
        job=SimpleNamespace(config={"recipe": select.key}),
        input_dir=lambda jid: ctx.store.path(*jid.split("/")),
    )
    train, record = searched_recipe(cell)
    assert train.epochs == 7 and train.learning_rate == ctx.spec.train.learning_rate
    assert record == {"params": {"epochs": 7}, "study": "ablate-x", "trial": 4, "select": select.key}
    bad = SimpleNamespace(spec=ctx.spec, job=SimpleNamespace(config={"params": {"learning_rate": -1.0}}))
    with pytest.raises(TrainError, match="not valid train settings"):
        searched_recipe(bad)


def test_a_validation_job_evaluates_the_objectives_benchmark_on_its_rung_with_its_samples(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, objective={"benchmark": {"name": "toy-dev", "limit": 30}, "samples": 3})
    jobs = _jobs(ctx, ["a", "b", "c"])
    rung = jobs.evals(jobs.train({"learning_rate": 1e-3}))[1]
    bench, ev = validation_benchmark(ctx.spec, rung.config, ctx.spec.eval)
    assert bench.name == "toy-dev" and bench.limit == 30 and bench.problem_ids == ["b"] and ev.samples == 3
    (whole,) = TrialJobs(ctx.job.config["study"], ctx.job.deps, ctx.job.cells).evals(jobs.train({}))
    bench, _ = validation_benchmark(ctx.spec, whole.config, ctx.spec.eval)
    assert bench.problem_ids is None
