"""The `search:` block's schema: every problem found at once with its path, names suggested, nothing that only
says how a job runs searched, and grids that are finite."""

from __future__ import annotations

import copy

import pytest

from framework.spec import spec_from_dict
from framework.spec.errors import SpecErrors
from framework.spec.search import SearchParam
from tests.helpers import MINIMAL

SEARCH = {
    "params": {
        "learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0e-4, "log": True},
        "epochs": {"type": "int", "low": 1, "high": 5, "step": 2},
        "lr_scheduler": {"type": "categorical", "choices": ["cosine", "linear"]},
    },
    "objective": {"benchmark": "math-500"},
}


def with_search(**over) -> dict:
    data = copy.deepcopy(MINIMAL)
    data["search"] = {**copy.deepcopy(SEARCH), **over}
    return data


def problems(data: dict) -> str:
    with pytest.raises(Exception) as e:
        spec_from_dict(data)
    return str(e.value)


def test_a_search_block_validates_with_its_defaults():
    spec = spec_from_dict(with_search())
    s = spec.search
    assert s is not None and s.mode == "per_arm" and s.sampler.kind == "tpe" and s.pruner.kind == "none"
    assert s.n_trials == 8 and spec.trial_seed == MINIMAL["seeds"][0]
    assert s.objective.benchmark.name == "math-500" and s.objective.metric == "pass@1"


def test_an_unknown_train_field_is_named_with_a_suggestion():
    data = with_search(params={"learning_rat": {"type": "float", "low": 1e-5, "high": 1e-4}})
    assert 'did you mean "learning_rate"' in problems(data)


@pytest.mark.parametrize("name", ["zero_stage", "processes", "nodes"])
def test_fields_that_say_how_a_job_runs_are_not_searched(name):
    data = with_search(params={name: {"type": "categorical", "choices": [1, 2]}})
    assert "cannot be searched" in problems(data)


def test_values_outside_a_train_fields_schema_are_refused():
    data = with_search(params={"warmup_ratio": {"type": "float", "low": 0.0, "high": 1.5}})
    assert "warmup_ratio: 1.5 is not a valid value" in problems(data)


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ({"type": "float", "low": 2.0, "high": 1.0}, "above high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "low > 0"),
        ({"type": "int", "low": 1.5, "high": 3}, "integer `low`"),
        ({"type": "categorical"}, "needs `choices`"),
        ({"type": "categorical", "choices": ["a", "a"]}, "unique"),
        ({"type": "float", "low": 1e-5}, "needs `low` and `high`"),
        ({"type": "float", "low": 1e-5, "high": 1e-4, "log": True, "step": 1e-5}, "cannot be combined"),
    ],
)
def test_inconsistent_parameters_are_refused(param, message):
    with pytest.raises(ValueError, match=message):
        SearchParam.model_validate(param)


def test_grid_values_are_every_point_of_the_range():
    assert SearchParam(type="int", low=1, high=5, step=2).values() == [1, 3, 5]
    assert SearchParam(type="float", low=0.1, high=0.3, step=0.1).values() == [0.1, 0.2, 0.3]
    assert SearchParam(type="float", low=0.1, high=0.3).values() is None
    spec = spec_from_dict(
        with_search(
            params={k: v for k, v in SEARCH["params"].items() if k != "learning_rate"}, sampler={"kind": "grid"}
        )
    )
    assert spec.search.n_trials == 6 and len(spec.search.grid_points()) == 6


def test_a_grid_needs_finite_values_and_no_more_trials_than_points():
    assert "give ['learning_rate'] a `step`" in problems(with_search(sampler={"kind": "grid"}))
    data = with_search(params={"epochs": SEARCH["params"]["epochs"]}, sampler={"kind": "grid"}, trials=4)
    assert "exceeds the grid's 3 points" in problems(data)


def test_a_search_needs_a_training_and_fixed_validation_samples():
    data = with_search()
    data["factors"] = {}
    assert "trains nothing" in problems(data)
    data = with_search(objective={"benchmark": {"name": "math-500", "samples": 4}})
    assert "search.objective.samples" in problems(data)


def test_unknown_keys_in_the_block_are_errors():
    assert "trails" in problems(with_search(trails=3))


def test_validate_reports_the_yaml_path(tmp_path):
    import yaml

    from framework.spec import load_spec

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(with_search(sampler={"kind": "bayes"})))
    with pytest.raises(SpecErrors) as e:
        load_spec(path)
    assert "search.sampler.kind" in str(e.value)
