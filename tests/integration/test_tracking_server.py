"""The log stage against a real `mlflow server` on 127.0.0.1: nested runs over HTTP with proxied artifacts, no
duplicate runs on re-logging, fast TrackingUnavailable while the server is down, catching up once it is back,
and concurrent stages agreeing on one parent run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from framework.log.mlflow_client import TrackingUnavailable
from framework.sweep.execute import execute
from tests.mlflow_server import Server, running_server
from tests.synthetic import synthetic_sweep

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("mlflow-server")) as srv:
        yield srv


def log_job(sw, key: str) -> dict:
    execute(sw.loaded, sw.plan, sw.store, "log", key)
    return json.loads((sw.store.path("log", key) / "run.json").read_text())


def children(client: MlflowClient, exp_id: str) -> list:
    return client.search_runs([exp_id], filter_string="tags.`ablate.role` = 'cell'")


def test_sweep_logs_over_http_survives_an_outage_and_catches_up(server: Server, tmp_path: Path):
    sw = synthetic_sweep(tmp_path, uri=server.uri, tracking={"uri": server.uri, "experiment": "outage"})
    jobs = [j.key for j in sw.plan.by_stage("log")]
    client = MlflowClient(server.uri)

    first = [log_job(sw, k) for k in jobs[:4]]
    exp_id = first[0]["experiment_id"]
    runs = {r.info.run_name: r for r in children(client, exp_id)}
    assert len(runs) == 4 and len({r["parent_run_id"] for r in first}) == 1
    run = runs["source=qwq_32b_preview,keywords=keep,seed=0"]
    assert run.data.tags["mlflow.parentRunId"] == first[0]["parent_run_id"]
    assert run.data.params["factor.source"] == "qwq_32b_preview" and run.data.params["seed"] == "0"
    (eval_job,) = sw.plan.cell_jobs[run.info.run_name]["eval"]
    stored = json.loads((sw.store.path(*eval_job.split("/")) / "metrics.json").read_text())
    assert run.data.metrics["aime24/pass_at_1"] == pytest.approx(stored["metrics"]["pass@1"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 30
    assert "spec.yaml" in {f.path for f in client.list_artifacts(run.info.run_id)}  # proxied upload
    assert first[0]["url"].startswith(server.uri)

    server.stop()
    for key in jobs[4:]:
        t0 = time.monotonic()
        with pytest.raises(TrackingUnavailable):
            execute(sw.loaded, sw.plan, sw.store, "log", key)
        assert time.monotonic() - t0 < 30  # the deferral contract, not a performance figure
        assert not sw.store.is_done("log", key)
        assert sw.store.status("log", key).detail.startswith("TrackingUnavailable")

    server.start()
    for key in jobs:
        log_job(sw, key)  # the first four are done and return at once; the rest catch up
    assert len(children(client, exp_id)) == len(sw.plan.cells) == 9
    before = len(client.search_runs([exp_id]))
    for key in jobs[::4]:  # the store forgets these log stages; MLflow still has their runs
        execute(sw.loaded, sw.plan, sw.store, "log", key, force=True)
    assert len(client.search_runs([exp_id])) == before == 10  # a parent and nine cells, still
    parents = client.search_runs([exp_id], filter_string="tags.`ablate.role` = 'sweep'")
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children(client, exp_id)} == {parents[0].info.run_id}


RACER = """
import sys
from pathlib import Path
from framework.sweep.execute import execute
from tests.synthetic import synthetic_sweep
tmp, uri, key = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sw = synthetic_sweep(tmp, uri=uri, tracking={"uri": uri, "experiment": "race"}, seeds=(0,))
execute(sw.loaded, sw.plan, sw.store, "log", key)
"""


def test_concurrent_log_stages_agree_on_one_parent_run(server: Server, tmp_path: Path):
    if server.proc is None:
        server.start()
    sw = synthetic_sweep(tmp_path, uri=server.uri, tracking={"uri": server.uri, "experiment": "race"}, seeds=(0,))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    racers = sw.plan.by_stage("log")[:3]
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), server.uri, job.key], env=env, cwd=tmp_path)
        for job in racers
    ]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0] * len(procs)
    client = MlflowClient(server.uri)
    exp_id = client.get_experiment_by_name("race").experiment_id
    parents = client.search_runs([exp_id], filter_string="tags.`ablate.role` = 'sweep'")
    assert len(parents) == 1
    cells = children(client, exp_id)
    assert len(cells) == len(racers) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in cells} == {parents[0].info.run_id}


RACE = """
import sys, time
from framework.log.mlflow_client import connect, experiment_id
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.005)
client = connect(sys.argv[1])
print(experiment_id(client, "exp", sys.argv[1]))
"""


def test_stages_opening_a_new_sqlite_database_at_once_all_get_it(tmp_path: Path):
    """MLflow creates its tables without a lock: unguarded, three processes leave the database half-migrated."""
    (tmp_path / "db").mkdir()  # a database is made in a directory that exists, never in a new one
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    start = time.time() + 8  # after each process has imported mlflow
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, uri, str(start)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err.decode()[-600:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment, the same for all
    assert MlflowClient(uri).get_experiment_by_name("exp") is not None
