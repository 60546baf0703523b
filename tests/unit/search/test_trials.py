"""A trial as store jobs: keyed as the plan keys its own, the validation split into rungs, the objective put
together from the rungs, and the trial checkpoint deleted once its evaluations are done."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from framework.search.study import SearchError
from framework.search.trials import TrialJobs, combine, prune_trial_checkpoint, rungs
from framework.spec.ablation import AblationSpec
from framework.store import Store
from framework.sweep.plan import Plan, build_plan, job_key
from framework.sweep.pruning import is_pruned


def _plan() -> Plan:
    data = yaml.safe_load(Path("ablations/quickstart.yaml").read_text())
    data["search"] = {
        "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}},
        "objective": {"benchmark": "toy-dev"},
        "mode": "shared",
    }
    return build_plan(AblationSpec.model_validate(data), "ablations/quickstart.yaml")


def test_rungs_deal_the_problems_round_robin() -> None:
    ids = [f"p{i}" for i in range(10)]
    assert rungs(ids, 4) == [["p0", "p4", "p8"], ["p1", "p5", "p9"], ["p2", "p6"], ["p3", "p7"]]
    assert rungs(ids[:2], 4) == [["p0"], ["p1"]]  # no empty rung


def test_the_objective_over_rungs_is_weighted_by_problems_or_samples() -> None:
    a = {"pass@1": 0.5, "maj@4": 0.5, "no_answer_rate": 0.1, "n_problems": 3.0, "n_samples": 12.0}
    b = {"pass@1": 0.2, "maj@4": 0.0, "no_answer_rate": 0.4, "n_problems": 1.0, "n_samples": 4.0}
    assert combine([a, b], "pass@1") == pytest.approx((0.5 * 3 + 0.2) / 4)
    assert combine([a, b], "maj@4") == pytest.approx(1.5 / 4)
    assert combine([a, b], "no_answer_rate") == pytest.approx((0.1 * 12 + 0.4 * 4) / 16)
    sub = {"x/pass@1": 1.0, "x/n_problems": 2.0}
    assert combine([{**a, **sub}, b], "x/pass@1") == 1.0  # a rung without the subset weighs nothing
    assert combine([{**a, "median_response_tokens": 40.0}], "median_response_tokens") == 40.0  # one rung: as is
    with pytest.raises(SearchError, match="cannot be combined"):
        combine([{**a, "median_response_tokens": 40.0}, {**b, "median_response_tokens": 9.0}], "median_response_tokens")
    with pytest.raises(SearchError, match=r"'pass@8' is not a metric.*pass@1"):
        combine([a, b], "pass@8")


def test_a_trials_jobs_are_keyed_as_the_contract_says() -> None:
    plan = _plan()
    worker = next(j for j in plan.by_stage("search") if j.config["role"] == "worker")
    study = worker.config["study"]
    params = {"learning_rate": 1e-3}
    jobs = TrialJobs(study, worker.deps, worker.cells, parts=[["a", "c"], ["b"]])
    train = jobs.train(params)
    assert train.config == {**study["train"], "params": params} and train.deps == worker.deps
    assert train.key == job_key("train", train.config, worker.deps)
    assert set(study["train"]) == {"model", "dtype", "prompt", "train", "seed"}
    evals = jobs.evals(train)
    assert [e.config["benchmark"]["problem_ids"] for e in evals] == [["a", "c"], ["b"]]
    for e in evals:
        assert e.deps == [train.id] and e.config["checkpoint"] == [train.id] and e.config["validation"] is True
        assert e.key == job_key("eval", e.config, [train.id])
        assert {k: v for k, v in e.config.items() if k not in ("checkpoint", "benchmark")} == {
            k: v for k, v in study["validation"].items() if k != "benchmark"
        }
    (whole,) = TrialJobs(study, worker.deps, worker.cells).evals(train)
    assert whole.config == {"checkpoint": [train.id], **study["validation"]}
    assert jobs.train({"learning_rate": 2e-3}).key != train.key
    assert train.key not in {j.key for j in plan.by_stage("train")}  # never a final cell's training


def test_a_pruned_trials_checkpoint_goes_after_the_rungs_it_got_and_is_kept_if_asked(tmp_path: Path) -> None:
    plan = _plan()
    worker = next(j for j in plan.by_stage("search") if j.config["role"] == "worker")
    jobs = TrialJobs(worker.config["study"], worker.deps, worker.cells, parts=[["a"], ["b"], ["c"]])
    train = jobs.train({"learning_rate": 1e-3})
    evals = jobs.evals(train)
    store = Store(tmp_path / "store")
    for job in [train, evals[0]]:
        with store.build(job.stage, job.key) as b:
            assert b is not None
            if job is train:
                (b.dir / "model").mkdir()
                (b.dir / "model" / "config.json").write_text("{}")
    assert prune_trial_checkpoint(plan, store, train, [evals[0]], keep=True) == []
    assert not is_pruned(store, train.key)
    assert prune_trial_checkpoint(plan, store, train, [evals[0]], keep=False) == [train.key]
    assert is_pruned(store, train.key) and not (store.path("train", train.key) / "model").exists()
