"""A search in the plan: studies as worker and select jobs, cells per recipe, final trainings that wait for the
parameters their study chose, its price and what `plan` says; validation kept apart from the test benchmarks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep.cost import estimate_cost
from framework.sweep.grid import reference_arm
from framework.sweep.plan import PlanError, build_plan
from tests.helpers import MINIMAL

SEARCH = {
    "params": {"learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0e-4, "log": True}},
    "objective": {"benchmark": "math-500"},
    "trials": 6,
}


def with_search(**over) -> dict:
    data = copy.deepcopy(MINIMAL)
    data["search"] = {**copy.deepcopy(SEARCH), **over}
    return data


def studies(plan) -> dict[str, list]:
    """select job id -> its worker jobs."""
    selects = [j for j in plan.by_stage("search") if j.config["role"] == "select"]
    return {s.id: [d for d in s.deps if d.startswith("search/")] for s in selects}


def test_per_arm_studies_every_arm_and_trains_both_recipes():
    plan = build_plan(spec_from_dict(with_search(workers=2)))
    trained = [c for c in plan.cells if c.baseline is None]
    arms = {c.levels for c in trained}
    assert {c.recipe for c in trained} == {"shared", "own"} and len(trained) == 2 * len(arms) * 2
    found = studies(plan)
    assert len(found) == len(arms) and all(len(w) == 2 for w in found.values())
    ref = reference_arm(plan.spec)
    for cell in trained:
        search = plan.cell_jobs[cell.id]["search"]
        select = plan.jobs[search[-1]]
        studied = ref if cell.recipe == "shared" else cell.levels
        assert select.config["study"]["arm"] == [list(x) for x in _definition(plan, studied)]
        (train_id,) = plan.cell_jobs[cell.id]["train"]
        train = plan.jobs[train_id]
        assert train.config["recipe"] == select.key and select.id in train.deps
        assert train.config["seed"] == cell.seed
    # the reference arm's two recipes are one study's best: the same trainings
    ref_cells = [c for c in trained if c.levels == ref]
    assert len({plan.cell_jobs[c.id]["train"][0] for c in ref_cells}) == len(plan.spec.seeds)
    ids = list(plan.jobs)
    for job in plan.jobs.values():  # insertion order stays a topological order
        assert all(ids.index(d) < ids.index(job.id) for d in job.deps)


def _definition(plan, arm):
    from framework.sweep.grid import arm_definition

    return arm_definition(plan.spec, arm)


def test_shared_mode_studies_the_reference_arm_once():
    plan = build_plan(spec_from_dict(with_search(mode="shared")))
    assert len(studies(plan)) == 1
    assert {c.recipe for c in plan.cells if c.baseline is None} == {"shared"}


def test_workers_and_storage_say_how_a_study_runs_not_what_it_finds():
    one = build_plan(spec_from_dict(with_search(workers=1)))
    three = build_plan(spec_from_dict(with_search(workers=3, storage="postgresql://u:pw@db/x", heartbeat_s=5)))
    assert set(studies(one)) == set(studies(three))  # the same select jobs, so the same final trainings
    assert {j.id for j in one.by_stage("train")} == {j.id for j in three.by_stage("train")}
    assert sum(len(w) for w in studies(three).values()) == 3 * len(studies(three))


def test_what_a_study_finds_is_keyed():
    base = build_plan(spec_from_dict(with_search()))
    for over in ({"trials": 7}, {"sampler": {"seed": 1}}, {"seed": 1}, {"objective": {"benchmark": "aime24"}}):
        other = build_plan(spec_from_dict(with_search(**over)))
        assert set(studies(other)).isdisjoint(studies(base)), over


def test_trials_share_the_arms_data_at_the_search_seed():
    plan = build_plan(spec_from_dict(with_search(seed=1)))
    for select, workers in studies(plan).items():
        job = plan.jobs[select]
        assert job.config["study"]["train"]["seed"] == 1
        data = [d for d in job.deps if d.startswith("data/")]
        assert len(data) == 1 and plan.jobs[data[0]].config["seed"] == 1
        assert all(plan.jobs[w].deps == job.deps[: len(plan.jobs[w].deps)] for w in workers)


def test_specs_without_a_search_keep_their_cells():
    plan = build_plan(spec_from_dict(copy.deepcopy(MINIMAL)))
    assert all(c.recipe is None and "recipe" not in c.id for c in plan.cells)
    assert not plan.by_stage("search")


TOY = {
    "name": "toy-search",
    "model": {"name_or_path": "toy:base"},
    "pool": [{"preset": "toy"}],
    "factors": {"source": {"levels": {"long_cot": {"sources": ["long_cot"]}, "terse": {}}}},
    "seeds": [0],
    "eval": {"benchmarks": [{"name": "toy", "limit": 20}], "samples": 2, "sampling": {"max_tokens": 256}},
}


def toy_with(objective: dict) -> dict:
    return {**copy.deepcopy(TOY), "search": {**copy.deepcopy(SEARCH), "objective": objective}}


def test_validating_on_test_problems_is_refused_by_text(tmp_path):
    with pytest.raises(PlanError, match=r"validation problem\(s\) are also in eval.benchmarks\[0\] \(toy\)"):
        build_plan(spec_from_dict(toy_with({"benchmark": {"name": "toy", "limit": 5}})))
    build_plan(spec_from_dict(toy_with({"benchmark": "toy-dev"})))  # the dev split shares none
    # a stranger's file with other ids but a test problem's text (case and spacing aside)
    from framework.benchmarks.loading import load_benchmark
    from framework.spec.models import BenchmarkSpec

    test = load_benchmark(BenchmarkSpec(name="toy", limit=3), lambda p: None)
    rows = [
        {"id": f"mine-{i}", "problem": "  " + p.upper(), "expected_answer": "1"} for i, p in enumerate(test["problem"])
    ]
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PlanError, match="3 validation problem"):
        build_plan(spec_from_dict(toy_with({"benchmark": {"name": "toy", "path": str(path)}})))


def test_plan_prices_the_trials_and_says_what_it_searches(tmp_path):
    spec = spec_from_dict(with_search(workers=2))
    plan = build_plan(spec)
    cost = estimate_cost(plan, Store(tmp_path / "store"), None).to_dict()
    search = next(s for s in cost["stages"] if s["stage"] == "search")
    assert search["todo"] == len(studies(plan)) and search["gpu_hours"] > 0
    fewer = estimate_cost(build_plan(spec_from_dict(with_search(trials=3))), Store(tmp_path / "s2"), None).to_dict()
    fewer_h = next(s for s in fewer["stages"] if s["stage"] == "search")["gpu_hours"]
    assert fewer_h == pytest.approx(search["gpu_hours"] / 2)  # linear in trials
    (note,) = [n for n in plan.notes if n.startswith("search:")]
    assert "6 tpe trials" in note and "learning_rate" in note and "math-500" in note


def test_a_password_in_the_storage_url_is_never_printed():
    plan = build_plan(spec_from_dict(with_search(storage="postgresql://me:hunter2@db.example/optuna")))
    assert not any("hunter2" in n for n in plan.notes)
    assert "hunter2" not in json.dumps([j.config for j in plan.jobs.values()])


def test_every_search_job_is_in_a_stage_the_launchers_know(tmp_path):
    from framework.sweep.stages import job_device, trains

    plan = build_plan(spec_from_dict(with_search()))
    for job in plan.by_stage("search"):
        worker = job.config["role"] == "worker"
        assert job_device("search", job.config) == ("gpu" if worker else "cpu")
        assert trains("search", job.config) == worker


def test_the_cli_refuses_an_overlap_with_exit_2(tmp_path):
    import subprocess
    import sys

    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(toy_with({"benchmark": {"name": "toy", "limit": 5}})))
    out = subprocess.run(
        [sys.executable, "-m", "framework.cli", "plan", str(path), "--results-dir", str(tmp_path / "r")],
        capture_output=True, text=True, cwd=Path(__file__).parents[3],
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr and "validation problem" in out.stderr


def _study_names(plan) -> set[str]:
    from framework.search.study import study_name

    return {study_name(j.config["study"], j.deps) for j in plan.by_stage("search")}


def test_a_study_is_named_by_its_trials_data_so_new_data_is_a_new_study():
    """The Optuna storage outlives a sweep's keys: a study named by its config alone would hand trials tuned on
    other data (another pool, n_examples, data seed) to a new sweep, or to another sweep sharing the storage."""
    base = build_plan(spec_from_dict(with_search()))
    names = _study_names(base)
    assert len(names) == len(studies(base))  # a study's workers and select job agree on its name
    other = with_search()
    other["n_examples"] = 10
    assert _study_names(build_plan(spec_from_dict(other))).isdisjoint(names)


def test_editing_a_searched_field_or_the_mode_keeps_what_a_study_found():
    base = build_plan(spec_from_dict(with_search()))
    edited = with_search()
    edited["train"] = {"learning_rate": 3.0e-5}  # searched: every trial and final cell sets its own
    plan = build_plan(spec_from_dict(edited))
    assert set(studies(plan)) == set(studies(base)) and _study_names(plan) == _study_names(base)
    assert {j.id for j in plan.by_stage("train")} == {j.id for j in base.by_stage("train")}
    shared = build_plan(spec_from_dict(with_search(mode="shared")))
    assert set(studies(shared)) < set(studies(base))  # the reference arm's study is the same one
    unsearched = with_search()
    unsearched["train"] = {"warmup_ratio": 0.2}  # not searched: every trial trains with it
    assert set(studies(build_plan(spec_from_dict(unsearched)))).isdisjoint(studies(base))


def test_a_mistyped_validation_benchmark_is_a_spec_error(tmp_path):
    import yaml

    from framework.spec import SpecErrors, load_spec

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(with_search(objective={"benchmark": {"name": "math-50"}})))
    with pytest.raises(SpecErrors, match=r"search.objective.benchmark.name: unknown benchmark 'math-50'"):
        load_spec(path)


def test_searched_values_the_train_field_refuses_and_a_short_grace_are_spec_errors():
    with pytest.raises(Exception, match="global_batch_size"):
        spec_from_dict(with_search(params={"global_batch_size": {"type": "float", "low": 4, "high": 8}}))
    stepped = {"global_batch_size": {"type": "float", "low": 8, "high": 64, "step": 8}}  # every value whole
    assert spec_from_dict(with_search(params=stepped)).search is not None
    with pytest.raises(Exception, match="under two heartbeats"):
        spec_from_dict(with_search(heartbeat_s=30, grace_s=5))


def test_a_pass_at_k_objective_needs_k_validation_samples():
    with pytest.raises(PlanError, match=r"pass@8 needs at least 8 samples per validation problem, which gets 4"):
        build_plan(spec_from_dict(with_search(objective={"benchmark": "math-500", "metric": "pass@8"})))
    with pytest.raises(PlanError, match=r"pass@8 is not computed: add 8 to eval.pass_k"):
        build_plan(spec_from_dict(with_search(objective={"benchmark": "math-500", "metric": "pass@8", "samples": 8})))
    fine = with_search(objective={"benchmark": "math-500", "metric": "pass@8", "samples": 8})
    fine["eval"].update(pass_k=[1, 8], samples=8)
    build_plan(spec_from_dict(fine))
