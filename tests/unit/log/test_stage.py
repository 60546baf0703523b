"""The log stage against a real MLflow sqlite store: nested runs, params, metrics and the loss curve, artifacts,
idempotence, superseded results, redaction of secrets, batching limits and fast failure without a server."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.utils.validation import validate_param_and_metric_name

from framework.errors import UserError
from framework.log.mlflow_client import TrackingUnavailable, batches, connect, find_sweep_run
from framework.log.stage import log_cell, metric_key, ui_command
from framework.redaction import REDACTED, redact, redact_text
from framework.store import Store
from framework.sweep.execute import execute
from tests.synthetic import FAKE_SECRET, Sweep, migrated_db, synthetic_sweep


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_db(tmp_path_factory)


def fresh_sweep(tmp_path: Path, template_db: Path, **kw) -> Sweep:
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template_db, db)
    return synthetic_sweep(tmp_path, **kw)


def log_all(sw: Sweep, *, force: bool = False) -> list[dict]:
    out = []
    for job in sw.plan.by_stage("log"):
        execute(sw.loaded, sw.plan, sw.store, "log", job.key, force=force)
        out.append(json.loads((sw.store.path("log", job.key) / "run.json").read_text()))
    return out


def client_for(sw: Sweep) -> tuple[MlflowClient, str]:
    client = MlflowClient(sw.loaded.spec.tracking.uri)
    return client, client.get_experiment_by_name("synth").experiment_id


def cell_runs(client: MlflowClient, exp_id: str) -> list:
    return client.search_runs([exp_id], filter_string="tags.`ablate.role` = 'cell'")


TRUNCATED = "source=human_stage4,keywords=mask,seed=1"


def test_cells_become_nested_runs_with_params_metrics_curve_and_artifacts(tmp_path, template_db):
    sw = fresh_sweep(tmp_path, template_db, truncate_cell=TRUNCATED)
    records = log_all(sw)
    client, exp_id = client_for(sw)
    parents = client.search_runs([exp_id], filter_string="tags.`ablate.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.run_name == "synth"
    runs = {r.info.run_name: r for r in cell_runs(client, exp_id)}
    assert set(runs) == {c.id for c in sw.plan.cells}  # 4 arms x 2 seeds + the base model
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in runs.values())
    assert {rec["run_id"] for rec in records} == {r.info.run_id for r in runs.values()}

    cell = next(c for c in sw.plan.cells if c.id == TRUNCATED)
    run = runs[cell.id]
    p, t = run.data.params, run.data.tags
    assert p["factor.source"] == "human_stage4" and p["factor.keywords"] == "mask" and p["seed"] == "1"
    assert p["factor.keywords.params.mode"] == "delete"
    assert p["train.learning_rate"] == "1e-05" and p["eval.sampling.max_tokens"] == "512"
    assert p["baseline"] == "none"
    jobs = sw.plan.cell_jobs[cell.id]
    assert t["ablate.cell_key"] == cell.key and t["ablate.train_key"] == jobs["train"][0].split("/")[1]
    assert t["ablate.eval_keys"] == "aime24:" + jobs["eval"][0].split("/")[1]
    assert t["ablate.sweep"] == "synth" and len(t["ablate.spec_hash"]) >= 8
    assert t["ablate.eval_warnings"] == "aime24: 25.0% of samples hit max_tokens=512"

    stored = json.loads((sw.store.path(*jobs["eval"][0].split("/")) / "metrics.json").read_text())
    m = run.data.metrics
    assert m["aime24/pass_at_1"] == pytest.approx(stored["metrics"]["pass@1"])
    assert m["aime24/maj_at_4"] == pytest.approx(stored["metrics"]["maj@4"])
    assert m["aime24/aime25/pass_at_1"] == pytest.approx(stored["metrics"]["aime25/pass@1"])
    assert m["aime24/truncation_rate"] == pytest.approx(0.25)
    assert m["aime24/n_samples"] == 48 and m["aime24/samples_per_problem"] == 4
    assert m["train/train_tokens"] == 4000 and m["train/runtime_s"] == 12.5
    curve = client.get_metric_history(run.info.run_id, "train/loss")
    assert [c.step for c in sorted(curve, key=lambda c: c.step)] == list(range(1, 31))
    assert sorted(curve, key=lambda c: c.step)[0].value == pytest.approx(2.0 * 0.97)
    assert len(client.get_metric_history(run.info.run_id, "train/lr")) == 30

    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"spec.yaml", "env.json", "cell.json", "data", "train", "eval", "generations"} <= files
    gen = Path(client.download_artifacts(run.info.run_id, "generations/aime24.jsonl", str(tmp_path / "dl")))
    assert len(gen.read_text().splitlines()) == 5  # tracking.generation_sample
    # artifacts live beside the database, not in ./mlruns of the working directory
    assert (tmp_path / "mlflow" / "mlartifacts").is_dir() and not Path("mlruns").exists()

    base = runs["baseline=base"]
    assert base.data.params["baseline"] == "base" and "factor.source" not in base.data.params
    assert "train.learning_rate" not in base.data.params and "aime24/pass_at_1" in base.data.metrics


def test_logging_again_updates_the_same_runs_without_duplicating_points(tmp_path, template_db):
    sw = fresh_sweep(tmp_path, template_db, seeds=(0,))
    first = log_all(sw)
    client, exp_id = client_for(sw)
    n_runs = len(client.search_runs([exp_id]))
    second = log_all(sw, force=True)  # the store forgets the log stages; MLflow still has the runs
    assert [r["run_id"] for r in first] == [r["run_id"] for r in second]
    assert not any(r["created"] for r in second)
    assert len(client.search_runs([exp_id])) == n_runs == len(sw.plan.cells) + 1
    run_id = first[0]["run_id"]
    assert len(client.get_metric_history(run_id, "train/loss")) == 30  # identical points deduplicated
    assert len(client.get_metric_history(run_id, "aime24/pass_at_1")) == 1


def test_changed_results_get_a_new_run_and_the_old_one_is_marked_superseded(tmp_path, template_db):
    sw = fresh_sweep(tmp_path, template_db, seeds=(0,))
    old = {r["run_name"]: r["run_id"] for r in log_all(sw)}
    data_lr = {"learning_rate": 2.0e-5, "extra_args": {"hub_token": FAKE_SECRET}}
    sw2 = synthetic_sweep(tmp_path, seeds=(0,), train=data_lr)  # same cells, new train and eval keys
    new = {r["run_name"]: r for r in log_all(sw2)}
    client, _ = client_for(sw)
    cell = "source=qwq_32b_preview,keywords=keep,seed=0"
    assert new[cell]["created"] and new[cell]["superseded"] == [old[cell]]
    assert client.get_run(old[cell]).data.tags["ablate.superseded_by"] == new[cell]["run_id"]
    assert client.get_run(new[cell]["run_id"]).data.params["train.learning_rate"] == "2e-05"
    # the baseline's results did not change: its log stage is still done, its run the same
    assert new["baseline=base"]["run_id"] == old["baseline=base"]
    assert len(client.search_runs([client_for(sw)[1]])) == 1 + 5 + 4  # parent, first cells, re-trained arms


def test_results_built_again_under_the_same_keys_get_a_run_of_their_own(tmp_path, template_db):
    sw = fresh_sweep(tmp_path, template_db, seeds=(0,))
    old = {r["run_name"]: r["run_id"] for r in log_all(sw)}
    cell = next(c for c in sw.plan.cells if c.baseline is None)
    train_key = sw.plan.cell_jobs[cell.id]["train"][0].split("/")[1]
    sw.store.invalidate("train", train_key)  # what a forced re-run of the training does
    time.sleep(0.01)  # a new build time
    with sw.store.build("train", train_key, {"stage": "train"}) as b:
        curve = [{"step": s, "loss": 1.5 * 0.97**s} for s in range(1, 31)]
        (b.dir / "metrics.json").write_text(json.dumps({"loss_curve": curve, "train_tokens": 4000}))
    log_job = sw.plan.cell_jobs[cell.id]["log"][0].split("/")[1]
    execute(sw.loaded, sw.plan, sw.store, "log", log_job, force=True)
    new = json.loads((sw.store.path("log", log_job) / "run.json").read_text())
    client, exp_id = client_for(sw)
    assert new["created"] and new["superseded"] == [old[cell.id]]
    history = client.get_metric_history(new["run_id"], "train/loss")
    assert len(history) == 30 and min(h.value for h in history if h.step == 1) == pytest.approx(1.5 * 0.97)
    assert len(client.get_metric_history(old[cell.id], "train/loss")) == 30  # the old build's curve, untouched
    assert current_runs(client, exp_id)[cell.id] == new["run_id"]
    # logging the same build again still reuses its run
    execute(sw.loaded, sw.plan, sw.store, "log", log_job, force=True)
    assert json.loads((sw.store.path("log", log_job) / "run.json").read_text())["run_id"] == new["run_id"]


def current_runs(client: MlflowClient, exp_id: str) -> dict[str, str]:
    runs = client.search_runs([exp_id], filter_string="tags.`ablate.role` = 'cell'")
    return {r.info.run_name: r.info.run_id for r in runs if "ablate.superseded_by" not in r.data.tags}


def test_undoing_a_change_makes_the_old_runs_current_again(tmp_path, template_db):
    from framework.report import write_report

    sw = fresh_sweep(tmp_path, template_db, seeds=(0,))
    old = {r["run_name"]: r["run_id"] for r in log_all(sw)}
    changed = synthetic_sweep(tmp_path, seeds=(0,), train={"learning_rate": 2.0e-5})
    log_all(changed)
    client, exp_id = client_for(sw)
    assert current_runs(client, exp_id) != old
    # Back to the first learning rate: its log stages are done under their old keys, so nothing logs again,
    # yet the UI's current runs (no superseded_by tag) must be the ones the store points at.
    undone = synthetic_sweep(tmp_path, seeds=(0,))
    assert [r["run_id"] for r in log_all(undone)] == list(old.values())
    write_report(undone.loaded, undone.plan, undone.store, tmp_path / "out")
    assert current_runs(client, exp_id) == old


def test_two_specs_of_one_name_with_their_own_results_are_two_sweeps(tmp_path, template_db):
    sw = fresh_sweep(tmp_path, template_db, seeds=(0,))
    uri = sw.loaded.spec.tracking.uri
    first = log_all(sw)
    other = synthetic_sweep(tmp_path / "elsewhere", uri=uri, seeds=(0,), n_examples=8)
    second = log_all(other)
    client, exp_id = client_for(sw)
    assert first[0]["parent_run_id"] != second[0]["parent_run_id"]
    assert not any(r["superseded"] for r in second)  # a study in another store supersedes nothing here
    runs = client.search_runs([exp_id], filter_string="tags.`ablate.role` = 'cell'")
    assert sum("ablate.superseded_by" not in r.data.tags for r in runs) == len(runs) == 2 * len(sw.plan.cells)


def test_a_cell_id_too_long_for_a_run_name_is_shortened_and_kept_whole_in_a_tag():
    from framework.log.mlflow_client import MAX_RUN_NAME, run_name

    long_id = ",".join(f"factor{i}=level{i}" for i in range(40))
    name = run_name(long_id)
    assert len(name) <= MAX_RUN_NAME and name.startswith(long_id[:200]) and name != run_name(long_id + "x")
    assert run_name("source=a,seed=0") == "source=a,seed=0"


def test_secrets_never_reach_params_tags_or_artifacts(tmp_path, template_db, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "a1" * 17)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-hunter2")
    monkeypatch.setenv("ABLATE_NOTE", "key sk-" + "x" * 24 + " in a note")
    sw = fresh_sweep(tmp_path, template_db, seeds=(0,))
    records = log_all(sw)
    client, exp_id = client_for(sw)
    secrets = [FAKE_SECRET, "a1" * 17, "hunter2-hunter2", "x" * 24]
    for run in cell_runs(client, exp_id):
        text = json.dumps([run.data.params, run.data.tags])
        assert not any(s in text for s in secrets)
    run = next(r for r in cell_runs(client, exp_id) if r.data.params["baseline"] == "none")
    assert run.data.params["train.extra_args.hub_token"] == REDACTED
    assert run.data.params["eval.sampling.max_tokens"] == "512"  # a token count is not a token
    out = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    dumped = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert not any(s in dumped for s in secrets)
    env = json.loads((out / "env.json").read_text())["env"]
    assert env["HF_TOKEN"] == REDACTED and env["MLFLOW_TRACKING_PASSWORD"] == REDACTED
    assert "ABLATE_NOTE" not in env  # recorded by an explicit list of names, not by prefix
    assert REDACTED in (out / "generations" / "aime24.jsonl").read_text()
    assert not any(s in json.dumps(records) for s in secrets)  # run.json in the store


def test_redaction_rules():
    assert redact({"hf_token": "abc", "max_tokens": 5, "tokenizer": "x", "nested": {"api_key": 1}}) == {
        "hf_token": REDACTED,
        "max_tokens": 5,
        "tokenizer": "x",
        "nested": {"api_key": REDACTED},
    }
    assert redact({"password": None, "secret": ""}) == {"password": None, "secret": ""}
    assert redact_text("https://bob:s3cret@mlflow.example.com/x") == f"https://bob:{REDACTED}@mlflow.example.com/x"
    assert redact_text("Authorization: Bearer abcdefghijkl") == f"Authorization: Bearer {REDACTED}"
    assert redact_text("AKIAABCDEFGHIJKLMNOP and ghp_" + "a" * 36) == f"{REDACTED} and {REDACTED}"
    assert redact_text("a plain sentence about tokens, sk-ills and hf_ prefixes") == (
        "a plain sentence about tokens, sk-ills and hf_ prefixes"
    )


def test_default_uri_is_a_sqlite_file_under_results(in_tmp, template_db, monkeypatch):
    sw = synthetic_sweep(in_tmp, seeds=(0,), tracking={"generation_sample": 5}, results_dir="results")
    (job,) = sw.plan.cell_jobs["baseline=base"]["log"]
    assert sw.plan.jobs[job].config["tracking"]["uri"] is None  # the key does not depend on where results are
    # Results kept under another root (--results-dir, $ABLATE_RESULTS_DIR): the database goes with them.
    shutil.move(in_tmp / "results", in_tmp / "scratch")
    shutil.copy(template_db, in_tmp / "scratch" / "mlflow.db")
    store = Store(in_tmp / "scratch" / "synth" / "store")
    execute(sw.loaded, sw.plan, store, *job.split("/"))
    record = json.loads((store.path(*job.split("/")) / "run.json").read_text())
    assert record["tracking_uri"] == f"sqlite:///{(in_tmp / 'scratch' / 'mlflow.db').resolve()}"
    assert not (in_tmp / "results").exists()
    client = MlflowClient("sqlite:///scratch/mlflow.db")
    assert client.get_run(record["run_id"]).info.run_name == "baseline=base"
    assert (in_tmp / "scratch" / "mlartifacts" / "synth").is_dir()

    import mlflow

    class Fake:  # no database needed here
        def __init__(self, tracking_uri: str) -> None:
            self.uri = tracking_uri

        def search_experiments(self, max_results: int) -> list:
            return []

    monkeypatch.setattr(mlflow, "MlflowClient", Fake)
    # A database in a directory that does not exist is a typo, not a new history: refused, nothing created.
    with pytest.raises(UserError, match=r"'sqlite:///fresh/nested/mlflow.db': directory fresh/nested does not exist"):
        connect("sqlite:///fresh/nested/mlflow.db")
    assert not (in_tmp / "fresh").exists()
    (in_tmp / "fresh").mkdir()
    assert connect("sqlite:///fresh/mlflow.db").uri == "sqlite:///fresh/mlflow.db"


def test_duplicate_parent_runs_collapse_into_the_oldest(tmp_path, template_db):
    db = tmp_path / "m.db"
    shutil.copy(template_db, db)
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    tags = {"ablate.sweep": "s", "ablate.store": "st", "ablate.role": "sweep"}
    first = client.create_run(exp, run_name="s", tags=tags, start_time=1000).info.run_id
    second = client.create_run(exp, run_name="s", tags=tags, start_time=2000).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": second}).info.run_id
    assert find_sweep_run(client, exp, "s", "st") == first
    assert client.get_run(second).info.lifecycle_stage == "deleted"
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == first
    assert find_sweep_run(client, exp, "missing", "st", create=False) is None
    assert find_sweep_run(client, exp, "s", "another-store", create=False) is None  # same name, other results


def test_concurrent_elections_of_the_parent_run_never_delete_a_run_being_finished(tmp_path, template_db):
    """Two log stages find no parent run and both create one; the second creator cleans up the first's while its
    maker is still finishing it (set_terminated on a deleted run raises). The interleaving is forced, so the test
    fails without the store's election lock every time, not only under load; with the lock it only waits."""
    import threading

    from framework.log.stage import sweep_run

    db = tmp_path / "m.db"
    shutil.copy(template_db, db)
    exp = MlflowClient(f"sqlite:///{db}").create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    store = Store(tmp_path / "store")
    both_searched = threading.Barrier(2, timeout=1.0)
    second_created, second_done = threading.Event(), threading.Event()

    def racer(name: str, out: dict) -> None:
        client = MlflowClient(f"sqlite:///{db}")
        search, create = client.search_runs, client.create_run
        searched = []

        def search_runs(*a, **kw):
            if not searched:  # both look before either creates
                searched.append(True)
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_searched.wait()
            return search(*a, **kw)

        def create_run(*a, **kw):
            if name == "second":
                run = create(*a, **kw)
                second_created.set()
                return run
            second_created.wait(1.0)  # created after the second's, so the second keeps its own and deletes ours
            run = create(*a, **kw)
            second_done.wait(2.0)  # ... before we finish ours
            return run

        client.search_runs, client.create_run = search_runs, create_run
        try:
            out[name] = sweep_run(client, exp, "s", store)
        except Exception as e:  # reported by the assertion below
            out[name] = e
        finally:
            if name == "second":
                second_done.set()

    out: dict = {}
    threads = [threading.Thread(target=racer, args=(n, out)) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(isinstance(v, Exception) for v in out.values()), out
    assert out["first"] == out["second"]
    parents = MlflowClient(f"sqlite:///{db}").search_runs([exp], filter_string="tags.`ablate.role` = 'sweep'")
    assert [r.info.run_id for r in parents] == [out["first"]]


def test_batches_respect_mlflow_limits():
    from mlflow.entities import Metric, Param, RunTag

    metrics = [Metric(f"m{i % 7}", float(i), 0, i) for i in range(2500)]
    params = [Param(f"p{i}", "v" * 5000) for i in range(230)]
    tags = [RunTag(f"t{i}", "w") for i in range(120)]
    chunks = list(batches(metrics, params, tags))
    for m, p, t in chunks:
        assert len(m) + len(p) + len(t) <= 1000 and len(p) + len(t) <= 100 and len(m) <= 1000
        assert sum(len(x.key) + len(str(x.value)) for x in [*m, *p, *t]) < 1_000_000
    assert sum(len(m) for m, _, _ in chunks) == 2500
    assert [x.key for _, p, _ in chunks for x in p] == [x.key for x in params]
    assert sum(len(t) for _, _, t in chunks) == 120


def test_metric_keys_are_valid_mlflow_names():
    assert metric_key("aime24", "pass@1") == "aime24/pass_at_1"
    assert metric_key("comp-math-24-25", "aime25/maj@64") == "comp-math-24-25/aime25/maj_at_64"
    long = "x" * 249 + "/tail"  # cut at 250 it would end in "/"
    for key in ("a/b@c", "x//y", "we:ird/k(e)y", "/lead", "aime24/..", long):
        assert validate_param_and_metric_name(metric_key(key)), metric_key(key)
        assert len(metric_key(key)) <= 250
    assert metric_key("p" * 260 + "a") != metric_key("p" * 260 + "b")  # a cut must not merge two keys


def test_unreachable_server_raises_tracking_unavailable():
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        connect(f"http://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30  # the contract launchers rely on, not a performance number


def test_ui_command_serves_local_stores_only():
    cmd = ui_command("sqlite:///results/mlflow.db", port=5123)
    assert cmd[1:4] == ["-m", "mlflow", "server"] and cmd[cmd.index("--port") + 1] == "5123"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:///results/mlflow.db"
    with pytest.raises(UserError, match="own UI"):
        ui_command("http://mlflow.example.com")


@pytest.mark.parametrize("how", ["all", "none"])
def test_generations_all_or_none(tmp_path, template_db, how):
    sw = fresh_sweep(tmp_path, template_db, seeds=(0,))
    uri = sw.loaded.spec.tracking.uri
    record = log_cell(
        MlflowClient(uri), sw.loaded, sw.plan, sw.store, "baseline=base", uri=uri, tracking={"log_generations": how}
    )
    client = MlflowClient(uri)
    names = {f.path for f in client.list_artifacts(record["run_id"], "generations")}
    if how == "none":
        assert names == set()
        return
    assert names == {"generations/aime24.parquet"}
    path = client.download_artifacts(record["run_id"], "generations/aime24.parquet", str(tmp_path / "dl"))
    frame = pd.read_parquet(path)
    assert len(frame) == 48 and FAKE_SECRET not in "".join(frame["text"]) and REDACTED in frame["text"].iloc[0]


def test_a_sample_of_generations_is_read_batch_by_batch_in_its_stable_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from framework.log.stage import _generations

    n_problems, k = 1500, 2  # 3000 rows: three reading batches
    frame = pd.DataFrame(
        {
            "problem_id": [f"p{i}" for i in range(n_problems) for _ in range(k)],
            "sample_index": [s for _ in range(n_problems) for s in range(k)],
            "text": [f"response {i}" for i in range(n_problems * k)],
        }
    )
    samples = tmp_path / "samples.parquet"
    pq.write_table(pa.Table.from_pandas(frame), samples, row_group_size=700)
    out = _generations(samples, "sample", 1600, tmp_path / "gen" / "b")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # one response per problem first (sample 0 of all 1500), in the hashed problem order, then sample 1
    assert [r["sample_index"] for r in rows] == [0] * 1500 + [1] * 100
    order = sorted(range(n_problems), key=lambda i: hashlib.sha1(f"p{i}".encode()).hexdigest())
    assert [r["problem_id"] for r in rows[:1500]] == [f"p{i}" for i in order]
    assert all(r["text"] == f"response {int(r['problem_id'][1:]) * k + r['sample_index']}" for r in rows)


def test_benchmarks_whose_names_share_a_stem_stage_their_generations_apart(tmp_path, template_db):
    from framework.log.stage import gather

    benches = ["framework.benchmarks:AIME24", "framework.benchmarks:AIME25"]  # one stem: "framework"
    eval_ = {"benchmarks": benches, "samples": 4, "sampling": {"max_tokens": 512}}
    sw = fresh_sweep(tmp_path, template_db, seeds=(0,), eval=eval_)
    cell = next(c for c in sw.plan.cells if c.baseline == "base")
    tracking = {"log_generations": "sample", "generation_sample": 5}
    record = gather(sw.loaded, sw.plan, sw.store, cell, tracking, tmp_path / "staging")
    staged = {b: record.files[f"generations/{b}.jsonl"] for b in benches}
    assert len(set(staged.values())) == 2
    for job in sw.plan.cell_jobs[cell.id]["eval"]:
        bench = sw.plan.jobs[job].config["benchmark"]["name"]
        own = pd.read_parquet(sw.store.path(*job.split("/")) / "samples.parquet")
        own = own.set_index(["problem_id", "sample_index"])
        rows = [json.loads(line) for line in staged[bench].read_text().splitlines()]
        assert len(rows) == 5
        assert all(r["answer"] == own.loc[(r["problem_id"], r["sample_index"]), "answer"] for r in rows)
    assert staged[benches[0]].read_text() != staged[benches[1]].read_text()


def test_a_baselines_own_evaluation_settings_are_its_runs_params():
    from framework.log.stage import cell_params
    from framework.spec import spec_from_dict
    from framework.sweep.grid import expand

    spec = spec_from_dict(
        {
            "name": "own",
            "model": {"name_or_path": "org/base"},
            "prompt": {"system": "Arms."},
            "baselines": [
                "base",
                {
                    "name": "math",
                    "model": {"name_or_path": "org/m"},
                    "prompt": {"system": "Step by step."},
                    "sampling": {"max_tokens": 9},
                },
            ],
        }
    )
    params = {cell.baseline: cell_params(spec, cell) for cell in expand(spec)}
    assert (params["math"]["prompt.system"], params["math"]["eval.sampling.max_tokens"]) == ("Step by step.", "9")
    assert (params["base"]["prompt.system"], params["base"]["eval.sampling.max_tokens"]) == ("Arms.", "32768")
