"""The report from a synthetic store (tests/synthetic.py): numbers in report.md and the CSVs must be the store's
numbers."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest

from framework.errors import UserError
from framework.grading.metrics import benchmark_metrics
from framework.report import COLUMNS, report_frame, write_report
from tests.synthetic import Sweep, migrated_db, synthetic_sweep

# --------------------------------------------------------------------------------------------------- tests
TRUNCATED = "source=human_stage4,keywords=mask,seed=1"


@pytest.fixture
def sweep(tmp_path: Path) -> Sweep:
    return synthetic_sweep(tmp_path, truncate_cell=TRUNCATED)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_db(tmp_path_factory)


def eval_result(sw: Sweep, cell_id: str) -> dict:
    (job,) = sw.plan.cell_jobs[cell_id]["eval"]
    return json.loads((sw.store.path(*job.split("/")) / "metrics.json").read_text())


def test_frame_has_one_row_per_cell_and_benchmark_with_the_stores_numbers(sweep):
    frame = report_frame(sweep.plan, sweep.store)
    assert len(frame) == len(sweep.plan.cells) == 9
    fixed = [c for c in COLUMNS if c in frame.columns]
    assert fixed == list(COLUMNS) and list(frame.columns[:6]) == [
        "cell",
        "arm",
        "seed",
        "baseline",
        "source",
        "keywords",
    ]
    row = frame.set_index("cell").loc[TRUNCATED]
    stored = eval_result(sweep, TRUNCATED)["metrics"]
    assert row["pass@1"] == pytest.approx(stored["pass@1"]) and row["maj@n"] == pytest.approx(stored["maj@4"])
    assert row["truncation_rate"] == pytest.approx(0.25) and "max_tokens=512" in row["warnings"]
    assert row["aime25/pass@1"] == pytest.approx(stored["aime25/pass@1"])
    assert (row["n_problems"], row["n_samples"], row["samples_per_problem"]) == (12, 48, 4)
    assert (row["train_examples"], row["train_tokens"], row["train_steps"]) == (4, 4000, 30)
    assert row["train_final_loss"] == pytest.approx(2.0 * 0.97**30)
    assert (row["source"], row["keywords"], row["seed"]) == ("human_stage4", "mask", 1)
    assert row["train_key"] == sweep.plan.cell_jobs[TRUNCATED]["train"][0].split("/")[1]
    base = frame.set_index("cell").loc["baseline=base"]
    assert pd.isna(base["seed"]) and base["baseline"] == "base" and pd.isna(base["train_tokens"])
    assert str(frame["seed"].dtype) == "Int64" and frame["evaluated"].all()


def test_cells_not_evaluated_yet_have_missing_metrics_and_the_report_says_so(sweep, tmp_path):
    (job,) = sweep.plan.cell_jobs[TRUNCATED]["eval"]
    sweep.store.invalidate(*job.split("/"))
    frame = report_frame(sweep.plan, sweep.store).set_index("cell")
    assert not frame.loc[TRUNCATED, "evaluated"] and pd.isna(frame.loc[TRUNCATED, "pass@1"])
    text = write_report(sweep.loaded, sweep.plan, sweep.store, tmp_path / "out", track=False).read_text()
    assert "8 of 9 cells evaluated" in text
    assert "source=human_stage4,keywords=mask has 1 of 2 seeds evaluated" in text


def test_cells_that_share_no_problem_are_a_warning_not_a_crash(sweep, tmp_path):
    (job,) = sweep.plan.cell_jobs[TRUNCATED]["eval"]
    path = sweep.store.path(*job.split("/")) / "samples.parquet"
    samples = pd.read_parquet(path)
    samples.assign(problem_id="other-" + samples["problem_id"]).to_parquet(path, index=False)
    text = write_report(sweep.loaded, sweep.plan, sweep.store, tmp_path / "out", track=False).read_text()
    assert "No comparison on aime24: its cells share no problem" in text
    assert "aime24: no problem is shared by every evaluated cell" in text


@pytest.mark.parametrize("cut", ["metrics.json", "samples.parquet"])
def test_a_finished_evaluation_cut_short_is_an_error_naming_it(sweep, tmp_path, cut):
    """A user error (exit 2) that says which file and how to get it back, not a decoder's traceback."""
    (job,) = sweep.plan.cell_jobs[TRUNCATED]["eval"]
    path = sweep.store.path(*job.split("/")) / cut
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UserError, match=r"cannot be read .*delete .* and `ablate run`") as raised:
        write_report(sweep.loaded, sweep.plan, sweep.store, tmp_path / "out", track=False)
    assert str(path.parent) in str(raised.value)


def test_report_tables_and_markdown_carry_the_stores_numbers(sweep, tmp_path):
    out = tmp_path / "out"
    path = write_report(sweep.loaded, sweep.plan, sweep.store, out, track=False)
    text = path.read_text()
    assert path == out / "report.md"
    assert "Does the trace source matter" in text and "12 problems x 4 samples per problem" in text
    assert "25.0% of samples hit max_tokens=512" in text  # the eval stage's truncation warning
    frame = report_frame(sweep.plan, sweep.store)
    arm_means = frame.groupby("arm")["pass@1"].mean()  # pass@1 of an arm: the mean of its seeds' pass@1
    arms = pd.read_csv(out / "tables" / "arms.csv").set_index("arm")
    for arm, mean in arm_means.items():
        assert arms.loc[arm, "estimate"] == pytest.approx(mean)
        assert arms.loc[arm, "ci_low"] <= mean <= arms.loc[arm, "ci_high"]
        assert f"{100 * mean:.1f}% [" in text
    assert arms.loc["baseline=base", "baseline"] and arms.loc["baseline=base", "n_seeds"] == 1
    effects = pd.read_csv(out / "tables" / "effects.csv").set_index(["factor", "level"])
    m = arm_means
    expected = (
        m["source=human_stage4,keywords=keep"]
        - m["source=qwq_32b_preview,keywords=keep"]
        + m["source=human_stage4,keywords=mask"]
        - m["source=qwq_32b_preview,keywords=mask"]
    ) / 2
    assert effects.loc[("source", "human_stage4"), "estimate"] == pytest.approx(expected)
    assert effects.loc[("source", "human_stage4"), "ci_high"] < 0  # the synthetic effect is large (-1.2 logits)
    assert f"{100 * expected:+.1f} pp [" in text
    pairs = pd.read_csv(out / "tables" / "comparisons.csv")
    assert len(pairs) == 4 and set(pairs["benchmark"]) == {"aime24"} and pairs["p_value"].between(0, 1).all()
    vs_base = pd.read_csv(out / "tables" / "baselines.csv")
    assert len(vs_base) == 4 and set(vs_base["vs_baseline"]) == {"baseline=base"}
    arm_means = pd.read_csv(out / "tables" / "arms.csv").set_index("arm")["estimate"]
    for _, r in vs_base.iterrows():
        assert r["estimate"] == pytest.approx(arm_means[r["arm"]] - arm_means["baseline=base"])
    assert "### Arms against the baselines" in text
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert len(cells) == 9 and "pass@1" in cells.columns
    for png in ("aime24-levels.png", "aime24-length.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG" and f"plots/{png}" in text


def test_a_factor_named_like_a_column_gets_its_own_column_in_every_table(tmp_path):
    """A factor called `arm` or `estimate` must neither overwrite the arm's id or its pass@1 nor break the report."""
    factors = {
        "arm": {"kind": "source", "levels": ["qwq_32b_preview", "human_stage4"]},
        "estimate": {"kind": "keywords", "levels": {"keep": {}, "mask": {"mode": "delete"}}},
    }
    sw = synthetic_sweep(tmp_path, factors=factors)
    out = tmp_path / "out"
    text = write_report(sw.loaded, sw.plan, sw.store, out, track=False).read_text()
    arms = pd.read_csv(out / "tables" / "arms.csv").set_index("arm")
    ref = "arm=qwq_32b_preview,estimate=keep"
    assert ref in arms.index and arms.loc[ref, "factor.arm"] == "qwq_32b_preview"
    assert arms.loc["arm=human_stage4,estimate=mask", "factor.estimate"] == "mask"
    assert arms["estimate"].between(0, 1).all()
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert {"factor.arm", "factor.estimate"} <= set(cells.columns)
    assert cells.loc[cells["baseline"].isna(), "arm"].str.startswith("arm=").all()
    assert "| factor.arm | factor.estimate |" in text


def test_report_files_are_attached_to_the_sweeps_parent_run(tmp_path, template_db):
    from mlflow import MlflowClient

    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copy(template_db, db)
    sw = synthetic_sweep(tmp_path, seeds=(0,))
    text = write_report(sw.loaded, sw.plan, sw.store, tmp_path / "out").read_text()
    assert "MLflow: attached to the sweep's parent run" in text
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("synth").experiment_id
    (parent,) = client.search_runs([exp], filter_string="tags.`ablate.role` = 'sweep'")
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/tables", "report/plots"} <= files
    tables = {f.path for f in client.list_artifacts(parent.info.run_id, "report/tables")}
    assert "report/tables/effects.csv" in tables


def test_unreachable_tracking_is_a_note_not_an_error(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sw = synthetic_sweep(tmp_path, seeds=(0,), uri=f"http://127.0.0.1:{port}")
    text = write_report(sw.loaded, sw.plan, sw.store, tmp_path / "out").read_text()
    assert "MLflow: not reachable, report not attached" in text
    assert "warning: MLflow: not reachable" in capsys.readouterr().err  # said on the console too


def test_results_schema_doc_lists_every_column():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "results-schema.md").read_text()
    for name, (dtype, _) in COLUMNS.items():
        assert f"| `{name}` | {dtype} |" in doc, name


def test_a_pass_k_asked_for_after_the_evaluation_comes_from_its_samples(tmp_path):
    """pass_k does not key the eval stage (no new generations for a new k): the report computes it."""
    sw = synthetic_sweep(tmp_path, eval={"benchmarks": ["aime24"], "samples": 4, "pass_k": [1, 2]})
    frame = report_frame(sw.plan, sw.store).set_index("cell")
    cell = "source=qwq_32b_preview,keywords=keep,seed=0"
    (job,) = sw.plan.cell_jobs[cell]["eval"]
    samples = pd.read_parquet(sw.store.path(*job.split("/")) / "samples.parquet")
    assert "pass@2" not in eval_result(sw, cell)["metrics"]  # the stage ran with pass_k [1]
    expected = benchmark_metrics(samples, ks=(1, 2))
    assert frame.loc[cell, "pass@2"] == pytest.approx(expected["pass@2"])
    assert frame.loc[cell, "aime24/pass@2"] == pytest.approx(expected["aime24/pass@2"])


def test_cells_that_read_different_commits_of_a_hub_benchmark_are_named(sweep, tmp_path):
    def read_commit(cell_id: str, commit: str) -> None:
        (job,) = sweep.plan.cell_jobs[cell_id]["eval"]
        path = sweep.store.path(*job.split("/")) / "metrics.json"
        hub = {"dataset": "org/aime", "split": "train", "revision": None, "commit": commit}
        path.write_text(json.dumps({**json.loads(path.read_text()), "hub_data": hub}))

    for cell in sweep.plan.cells:
        read_commit(cell.id, "a" * 40)
    same = write_report(sweep.loaded, sweep.plan, sweep.store, tmp_path / "same", track=False)
    assert "different commits" not in same.read_text()
    read_commit(TRUNCATED, "b" * 40)
    text = write_report(sweep.loaded, sweep.plan, sweep.store, tmp_path / "mixed", track=False).read_text()
    assert f"aime24: the cells read different commits of the hub dataset ({'a' * 12} by 8 cell(s), " in text
    assert f"{'b' * 12} by 1 cell(s))" in text and "pin `revision:`" in text


def test_training_examples_cut_at_max_seq_len_are_a_warning(sweep, tmp_path):
    cell = "source=human_stage4,keywords=keep,seed=0"
    (job,) = sweep.plan.cell_jobs[cell]["train"]
    path = sweep.store.path(*job.split("/")) / "metrics.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "examples": {"kept": 4, "dropped": 0, "truncated": 3}}))
    frame = report_frame(sweep.plan, sweep.store).set_index("cell")
    assert frame.loc[cell, "train_truncated"] == 3 and frame["train_truncated"].isna().sum() == 8
    text = write_report(sweep.loaded, sweep.plan, sweep.store, tmp_path / "out", track=False).read_text()
    assert f"{cell}: 3 of 4 training examples were cut at train.max_seq_len 16384" in text
