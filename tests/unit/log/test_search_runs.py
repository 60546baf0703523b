"""A search in MLflow (real sqlite store): each study a run under the sweep's parent run, each trial a run under
its study, cells tagged with their recipe and trained parameters; created once, even by concurrent log jobs, and
never duplicated by a rerun; the storage URL's password never sent."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from framework.log.mlflow_client import connect, experiment_id
from framework.log.stage import log_study, sweep_run
from framework.sweep.execute import execute
from tests.synthetic import FAKE_SECRET, migrated_db
from tests.unit.report.search_sweep import SearchSweep, search_sweep


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_db(tmp_path_factory)


def fresh(tmp_path: Path, template_db: Path) -> SearchSweep:
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template_db, db)
    return search_sweep(tmp_path, seeds=(0,), n_problems=12)


def log_all(sw: SearchSweep, *, force: bool = False) -> None:
    for job in sw.plan.by_stage("log"):
        execute(sw.loaded, sw.plan, sw.store, "log", job.key, force=force)


def runs_by_role(sw: SearchSweep) -> tuple[MlflowClient, dict[str, list]]:
    client = MlflowClient(sw.loaded.spec.tracking.uri)
    exp = client.get_experiment_by_name("synth").experiment_id
    out: dict[str, list] = {}
    for r in client.search_runs([exp], max_results=1000):
        out.setdefault(r.data.tags.get("ablate.role"), []).append(r)
    return client, out


def test_studies_and_trials_nest_under_the_sweep_and_cells_carry_their_recipe(tmp_path, template_db):
    sw = fresh(tmp_path, template_db)
    log_all(sw)
    client, runs = runs_by_role(sw)
    (sweep,) = runs["sweep"]
    studies = {r.data.tags["ablate.study"]: r for r in runs["study"]}
    assert set(studies) == set(sw.best) and len(runs["trial"]) == 4 * len(sw.best)
    assert all(r.data.tags["mlflow.parentRunId"] == sweep.info.run_id for r in studies.values())
    for key, study in studies.items():
        best = sw.best[key]
        assert study.data.tags["ablate.best.learning_rate"] == str(best["params"]["learning_rate"])
        assert study.data.metrics["best/pass_at_1"] == pytest.approx(best["value"])
        assert study.data.metrics["trials/pruned"] == 1 and study.data.params["search.objective.metric"] == "pass@1"
        assert study.data.params["search.params.learning_rate.type"] == "float"
        files = {f.path for f in client.list_artifacts(study.info.run_id)}
        assert {"best.json", "trials.csv", "history.png", "importance.png"} <= files
        trials = {int(r.data.tags["ablate.trial"]): r for r in runs["trial"] if r.data.tags["ablate.study"] == key}
        assert set(trials) == {0, 1, 2, 3}
        assert all(r.data.tags["mlflow.parentRunId"] == study.info.run_id for r in trials.values())
        last = trials[3]
        assert last.data.params["learning_rate"] == str(best["params"]["learning_rate"])
        assert last.data.metrics["pass_at_1"] == pytest.approx(best["value"]) and last.info.status == "FINISHED"
        history = client.get_metric_history(last.info.run_id, "intermediate/pass_at_1")
        assert sorted((m.step, round(m.value, 4)) for m in history) == [(0, 0.33), (1, 0.38)]
        assert trials[1].data.tags["ablate.state"] == "PRUNED" and trials[1].info.status == "KILLED"
        assert trials[2].info.status == "FAILED" and "pass_at_1" not in trials[2].data.metrics
    for cell in runs["cell"]:
        recipe = cell.data.tags.get("ablate.recipe")
        if cell.data.params["baseline"] != "none":
            assert recipe is None and "ablate.study_run" not in cell.data.tags
            continue
        study = cell.data.tags["ablate.study"]
        assert recipe in ("shared", "own") and cell.data.params["recipe"] == recipe
        assert (
            cell.data.tags["ablate.study_run"] == studies[study].info.run_id and cell.data.tags["ablate.trial"] == "3"
        )
        assert cell.data.params["train.learning_rate"] == str(sw.best[study]["params"]["learning_rate"])
    everything = [*runs["sweep"], *runs["study"], *runs["trial"], *runs["cell"]]
    assert not any(FAKE_SECRET in json.dumps([r.data.params, r.data.tags]) for r in everything)
    study = runs["study"][0]
    assert "[REDACTED]" in study.data.tags["ablate.storage"] and FAKE_SECRET not in study.data.tags["ablate.storage"]
    best_file = Path(client.download_artifacts(study.info.run_id, "best.json", str(tmp_path / "dl")))
    assert FAKE_SECRET not in best_file.read_text()


def test_logging_again_duplicates_no_study_and_no_trial(tmp_path, template_db):
    sw = fresh(tmp_path, template_db)
    log_all(sw)
    _, first = runs_by_role(sw)
    log_all(sw, force=True)  # the store forgets the log stages; MLflow still has every run
    _, second = runs_by_role(sw)
    for role in ("sweep", "study", "trial", "cell"):
        assert sorted(r.info.run_id for r in second[role]) == sorted(r.info.run_id for r in first[role]), role


def test_concurrent_log_jobs_of_one_study_create_it_once(tmp_path, template_db):
    sw = fresh(tmp_path, template_db)
    uri = sw.loaded.spec.tracking.uri
    client = connect(uri)
    exp = experiment_id(client, "synth", uri)  # artifacts beside the database, not in ./mlruns
    parent = sweep_run(client, exp, "synth", sw.store)
    study = next(iter(sw.best))
    start, ids, errors = threading.Barrier(4), [], []

    def log() -> None:
        try:
            start.wait()
            ids.append(log_study(connect(uri), exp, parent, sw.plan, sw.store, study))
        except Exception as e:  # reported below: a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=log) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1
    _, runs = runs_by_role(sw)
    assert len(runs["study"]) == 1 and len(runs["trial"]) == 4
