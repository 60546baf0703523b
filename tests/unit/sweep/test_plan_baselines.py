"""A baseline's own evaluation settings: in its eval jobs' keys only when it sets them, and a generation budget
checked against its model's context at plan time where the model's config.json is on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from framework.spec import spec_from_dict
from framework.sweep.plan import PlanError, build_plan


def eval_configs(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """cell -> the config of its (one benchmark's) eval job."""
    plan = build_plan(spec_from_dict(data))
    return {cell: plan.jobs[stages["eval"][0]].config for cell, stages in plan.cell_jobs.items()}


def with_baselines(minimal: dict[str, Any], *baselines: Any) -> dict[str, Any]:
    return {**minimal, "baselines": list(baselines)}


def test_only_a_baseline_that_sets_its_own_settings_gets_new_eval_keys(minimal):
    other = {"name": "other", "model": {"name_or_path": "org/other"}}
    before = eval_configs(with_baselines(minimal, "base", other))
    own = {"prompt": {"system": "Reason step by step."}, "sampling": {"max_tokens": 3072}, "max_model_len": 4096}
    after = eval_configs(with_baselines(minimal, "base", {**other, **own}))
    assert {c: v for c, v in after.items() if c != "baseline=other"} == {
        c: v for c, v in before.items() if c != "baseline=other"
    }
    config = after["baseline=other"]
    assert config != before["baseline=other"]
    assert config["prompt"]["system"] == "Reason step by step."
    assert config["prompt"]["user_template"] == before["baseline=other"]["prompt"]["user_template"]
    assert config["eval"]["sampling"] == {**before["baseline=other"]["eval"]["sampling"], "max_tokens": 3072}
    assert config["eval"]["max_model_len"] == 4096
    # settings equal to the spec's are the same evaluation: the same key
    same = {"sampling": {"temperature": 0.6}, "prompt": {"system": None}}
    assert eval_configs(with_baselines(minimal, "base", {**other, **same})) == before


def test_clip_to_context_is_keyed_only_when_set(minimal):
    before = eval_configs(minimal)
    assert all("clip_to_context" not in c["eval"] for c in before.values())
    after = eval_configs({**minimal, "eval": {**minimal["eval"], "clip_to_context": True}})
    assert all(c["eval"]["clip_to_context"] is True for c in after.values())
    clipped = eval_configs(with_baselines(minimal, {"name": "base", "clip_to_context": True}))
    assert clipped["baseline=base"]["eval"]["clip_to_context"] is True
    assert all("clip_to_context" not in c["eval"] for cell, c in clipped.items() if cell != "baseline=base")


@pytest.fixture
def short_model(tmp_path: Path) -> str:
    """A local checkpoint whose config declares 512 positions (as Qwen2.5-Math declares 4,096)."""
    path = tmp_path / "short"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": 512}))
    return str(path)


def test_a_budget_that_cannot_fit_the_models_context_is_a_plan_error(minimal, short_model):
    short = {"name": "short", "model": {"name_or_path": short_model}}
    with pytest.raises(PlanError) as info:
        build_plan(spec_from_dict(with_baselines(minimal, "base", short)))
    (problem,) = info.value.problems
    assert problem.startswith("baselines.short: a prompt + max_tokens 32768 does not fit the context of local model")
    assert "(512 tokens, from its config.json)" in problem
    assert "set baselines.short.sampling.max_tokens below 512" in problem and "clip_to_context: true" in problem
    build_plan(spec_from_dict(with_baselines(minimal, {**short, "sampling": {"max_tokens": 400}})))
    build_plan(spec_from_dict(with_baselines(minimal, {**short, "clip_to_context": True})))
    with pytest.raises(PlanError, match=r"baselines.short.max_model_len 1024 exceeds the context .* \(512 tokens"):
        build_plan(spec_from_dict(with_baselines(minimal, {**short, "max_model_len": 1024, "clip_to_context": True})))


def test_an_arms_budget_that_cannot_fit_the_base_models_context_is_refused_before_training(minimal, short_model):
    minimal["model"] = {"name_or_path": short_model}
    minimal["baselines"] = []
    with pytest.raises(PlanError, match=r"eval: a prompt \+ max_tokens 32768 does not fit .*\(512 tokens"):
        build_plan(spec_from_dict(minimal))
    minimal["eval"]["sampling"] = {"max_tokens": 400}
    assert build_plan(spec_from_dict(minimal)).by_stage("train")


def test_a_rope_scaled_context_is_the_one_the_engine_allows():
    from framework.model_source import context_length

    yarn = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert context_length({"max_position_embeddings": 32768, "rope_scaling": yarn}) == 131072
    assert context_length({"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default"}}) == 4096
    assert context_length({"text_config": {"max_position_embeddings": 2048}, "n_positions": 4096}) == 2048
    assert context_length({"model_type": "x"}) is None
