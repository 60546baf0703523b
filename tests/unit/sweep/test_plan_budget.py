"""A sample budget in the plan: a second-round eval job per cell and benchmark, cross-fitted on other checkpoints'
first rounds, each checkpoint on its own random stream; and its price in `plan`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep.cost import estimate_cost
from framework.sweep.plan import REFERENCES, build_plan
from tests.helpers import MINIMAL

BUDGET = {"budget": 16, "first_round": 4, "max": 64}


def with_samples(samples, **extra) -> dict:
    data = copy.deepcopy(MINIMAL)
    data["eval"] = {**data["eval"], "samples": samples, **extra}
    return data


def test_second_rounds_are_cross_fitted_on_other_checkpoints():
    plan = build_plan(spec_from_dict(with_samples(BUDGET)))
    assert len(plan.by_stage("eval")) == 18  # 9 checkpoints x (first round + second round)
    by_cell = {c.id: c for c in plan.cells}
    for cell in plan.cells:
        stages = plan.cell_jobs[cell.id]
        [own], [second_id] = stages["eval_first_round"], stages["eval"]
        second = plan.jobs[second_id]
        assert second.config["round"] == 2 and second.config["first_round"] == own.split("/")[1]
        refs = [f"eval/{k}" for k in second.config["reference"]]
        assert own not in refs  # its own samples never decide its allocation
        assert set(refs) <= set(second.deps) and own in second.deps
        assert set(stages["train"]) <= set(second.deps)  # the checkpoint it samples
        ref_cells = {c for r in refs for c in plan.jobs[r].cells}
        if cell.baseline is None:  # the other seed of its arm
            assert {by_cell[c].arm_id for c in ref_cells} == {cell.arm_id} and cell.id not in ref_cells
        else:  # a baseline has no other seed: a fixed few others (REFERENCES), picked by rendezvous hashing
            assert len(refs) == REFERENCES
        assert plan.jobs[stages["log"][0]].deps == stages["train"] + [second_id]
    ids = list(plan.jobs)
    for job in plan.by_stage("eval"):  # insertion order stays a topological order
        assert all(ids.index(d) < ids.index(job.id) for d in job.deps)


def test_each_checkpoint_samples_its_own_random_stream_under_a_budget():
    """Without it every checkpoint draws sample k of problem i with one seed: similar models' outcomes would be
    correlated, and the others' first rounds that set a checkpoint's second would partly be its own."""
    fixed = build_plan(spec_from_dict(with_samples(4)))
    budget = build_plan(spec_from_dict(with_samples(BUDGET)))
    firsts = [budget.jobs[j] for c in budget.cells for j in budget.cell_jobs[c.id]["eval_first_round"]]
    offsets = [j.config["seed_offset"] for j in firsts]
    assert len(set(offsets)) == len(firsts) and all(0 <= o < 2**31 - 131072 for o in offsets)
    for job in firsts:  # the second round continues its first round's stream
        (second,) = [j for j in budget.by_stage("eval") if j.config.get("first_round") == job.key]
        assert second.config["seed_offset"] == job.config["seed_offset"]
    # apart from the offset, a first round is the fixed evaluation it equals; a fixed spec has no offset at all
    stripped = {json.dumps({k: v for k, v in j.config.items() if k != "seed_offset"}, sort_keys=True) for j in firsts}
    assert stripped == {json.dumps(j.config, sort_keys=True) for j in fixed.by_stage("eval")}
    assert all("round" not in j.config and "seed_offset" not in j.config for j in fixed.by_stage("eval"))
    assert {j.id for j in fixed.by_stage("train")} == {j.id for j in budget.by_stage("train")}


def test_references_stay_few_and_stay_put_when_cells_are_added():
    """A checkpoint without other seeds of its arm reads REFERENCES others, picked by rendezvous hashing: adding a
    cell moves a pick only where the new one ranks first, so most finished second rounds keep their keys."""
    base = with_samples(BUDGET, benchmarks=["aime24"])
    base["seeds"] = [0]
    more = copy.deepcopy(base)
    more["baselines"] = ["base", {"name": "other", "model": {"name_or_path": "Qwen/Qwen2.5-1.5B"}}]
    a, b = (build_plan(spec_from_dict(d)) for d in (base, more))
    seconds = lambda p: {j.id for j in p.by_stage("eval") if j.config.get("round") == 2}  # noqa: E731
    assert all(len(j.config["reference"]) == REFERENCES for j in b.by_stage("eval") if j.config.get("round") == 2)
    kept = seconds(a) & seconds(b)
    assert len(kept) >= len(seconds(a)) // 2, (len(kept), len(seconds(a)))


def test_a_benchmark_budget_of_its_own_and_a_target():
    data = with_samples(4)
    data["eval"]["benchmarks"] = [{"name": "aime24", "samples": {**BUDGET, "target_half_width": 0.03}}, "aime25"]
    plan = build_plan(spec_from_dict(data))
    seconds = [j for j in plan.by_stage("eval") if j.config.get("round") == 2]
    assert len(seconds) == 9 and {j.config["benchmark"]["name"] for j in seconds} == {"aime24"}
    trained = [j for j in seconds if "checkpoint" in j.config]
    assert {j.config["seeds_per_arm"] for j in trained} == {2}
    for cell in plan.cells:
        budgeted, fixed = plan.cell_jobs[cell.id]["eval"]  # aime25 stays one fixed evaluation of 4
        assert plan.jobs[budgeted].config.get("round") == 2 and "round" not in plan.jobs[fixed].config


def test_a_different_budget_rekeys_the_second_round_only():
    a = build_plan(spec_from_dict(with_samples(BUDGET)))
    b = build_plan(spec_from_dict(with_samples({**BUDGET, "budget": 24})))
    rounds = lambda p, r: {j.id for j in p.by_stage("eval") if (j.config.get("round") == 2) == r}  # noqa: E731
    assert rounds(a, False) == rounds(b, False) and not rounds(a, True) & rounds(b, True)


def test_validation_of_the_budget():
    with pytest.raises(Exception, match="first_round <= budget <= max"):
        spec_from_dict(with_samples({"budget": 2, "first_round": 4}))
    with pytest.raises(Exception, match="pass_k"):
        spec_from_dict(with_samples({"budget": 16, "first_round": 2}, pass_k=[1, 4]))
    with pytest.raises(Exception, match="target_half_width"):
        spec_from_dict(with_samples({**BUDGET, "target_half_width": 0}))


def test_cost_counts_budget_times_problems(tmp_path: Path):
    model = tmp_path / "model"
    model.mkdir()
    config = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
    (model / "config.json").write_text(json.dumps({**config, "vocab_size": 1000, "num_key_value_heads": 1}))

    def eval_hours(samples) -> float:
        data = with_samples(samples)
        data["model"] = {"name_or_path": str(model)}
        cost = estimate_cost(build_plan(spec_from_dict(data)), Store(tmp_path / "store"), None, gpu="h100")
        return next(s for s in cost.stages if s.stage == "eval").gpu_hours

    assert eval_hours(BUDGET) == pytest.approx(eval_hours(16))
    assert eval_hours(BUDGET) == pytest.approx(4 * eval_hours(4))


def test_the_views_show_a_failed_first_round(write_spec, in_tmp, capsys):
    """The report and log read the second round; status and plan must still show the first, or a failed first
    round would leave its cell's evaluation 'pending' with nothing to say why."""
    from framework.cli import main
    from framework.sweep.view import cell_state

    path = write_spec(with_samples(BUDGET))
    assert main(["plan", str(path), "--json", "--no-build"]) == 0
    cell = json.loads(capsys.readouterr().out)["cells"][0]
    assert len(cell["stages"]["eval"]) == 2  # the first round, then the second
    plan = build_plan(spec_from_dict(with_samples(BUDGET)))
    first = plan.cell_jobs[plan.cells[0].id]["eval_first_round"][0]
    store = Store(in_tmp / "results" / "mini" / "store")
    (store.root / "eval").mkdir(parents=True, exist_ok=True)
    store._record_failure("eval", first.split("/")[1], RuntimeError("the engine ran out of memory"))
    assert main(["status", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["stages"]
    assert any(r["stage"] == "eval" and r["key"] == first.split("/")[1] and r["state"] == "failed" for r in rows)
    states = {first: "failed"}
    assert cell_state(states, plan.stage_jobs(plan.cells[0].id, "eval")) == "failed"
