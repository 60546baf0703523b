"""Grid expansion: designs, include/exclude rules, baselines, readable ids and stable keys."""

from __future__ import annotations

import pytest

from framework.errors import UserError
from framework.spec import spec_from_dict
from framework.sweep.grid import expand


def test_factorial_product_times_seeds_plus_baselines(minimal):
    cells = expand(spec_from_dict(minimal))
    assert [c.id for c in cells] == [
        "source=qwq_32b_preview,keywords=keep,seed=0",
        "source=qwq_32b_preview,keywords=keep,seed=1",
        "source=qwq_32b_preview,keywords=mask,seed=0",
        "source=qwq_32b_preview,keywords=mask,seed=1",
        "source=human_stage4,keywords=keep,seed=0",
        "source=human_stage4,keywords=keep,seed=1",
        "source=human_stage4,keywords=mask,seed=0",
        "source=human_stage4,keywords=mask,seed=1",
        "baseline=base",
    ]
    assert len({c.key for c in cells}) == len(cells)
    assert cells[0].arm_id == "source=qwq_32b_preview,keywords=keep"


def test_exclude_and_include_rules(minimal):
    minimal["grid"] = {"exclude": [{"source": "human_stage4", "keywords": ["keep", "mask"]}]}
    ids = [c.arm_id for c in expand(spec_from_dict(minimal)) if c.baseline is None]
    assert all("human_stage4" not in i for i in ids) and len(set(ids)) == 2
    minimal["factors"]["keywords"]["reference"] = "mask"
    minimal["grid"] = {"exclude": [{"source": "human_stage4"}], "include": [{"source": "human_stage4"}]}
    # exclude wins over include: a rule that removes a cell removes it however it got in
    ids = {c.arm_id for c in expand(spec_from_dict(minimal))}
    assert "source=human_stage4,keywords=mask" not in ids


def test_include_adds_a_cell_with_reference_levels(minimal):
    minimal["grid"] = {"design": "one_at_a_time", "include": [{"source": "human_stage4", "keywords": "mask"}]}
    ids = [c.arm_id for c in expand(spec_from_dict(minimal)) if c.baseline is None]
    assert list(dict.fromkeys(ids)) == [
        "source=qwq_32b_preview,keywords=keep",  # all references
        "source=human_stage4,keywords=keep",  # vary source
        "source=qwq_32b_preview,keywords=mask",  # vary keywords
        "source=human_stage4,keywords=mask",  # the included extra
    ]


def test_one_at_a_time_counts(minimal):
    minimal["factors"]["length"] = {
        "levels": {"short": {"bins": 3, "bin": 0}, "mid": {"bins": 3, "bin": 1}, "long": {"bins": 3, "bin": 2}}
    }
    minimal["grid"] = {"design": "one_at_a_time"}
    minimal["baselines"] = []
    cells = expand(spec_from_dict(minimal))
    assert len(cells) == (1 + 1 + 1 + 2) * 2  # reference + one per non-reference level, x 2 seeds


def test_no_factors_is_one_arm(minimal):
    minimal["factors"] = {}
    minimal["baselines"] = []
    assert [c.id for c in expand(spec_from_dict(minimal))] == ["seed=0", "seed=1"]


def test_baselines_and_no_factors_only_evaluate_and_need_no_pool(minimal):
    from framework.spec import SpecErrors
    from framework.sweep.plan import build_plan

    minimal["factors"] = {}
    minimal["baselines"] = ["base", {"name": "instruct", "model": {"name_or_path": "Qwen/Qwen2.5-32B-Instruct"}}]
    del minimal["pool"]
    spec = spec_from_dict(minimal)
    assert not spec.trains and [c.id for c in expand(spec)] == ["baseline=base", "baseline=instruct"]
    plan = build_plan(spec)
    assert {j.stage for j in plan.jobs.values()} == {"eval", "log"}  # no pool, data or training job
    minimal["factors"] = {"source": {"levels": ["a", "b"]}}
    with pytest.raises(SpecErrors, match="pool: a spec that trains needs at least one source"):
        spec_from_dict(minimal)


def test_cell_key_ignores_yaml_order_but_not_params(minimal):
    def keyed(spec_dict):
        return {(frozenset(c.levels), c.seed, c.baseline): c for c in expand(spec_from_dict(spec_dict))}

    a = keyed(minimal)
    minimal["factors"] = dict(reversed(list(minimal["factors"].items())))
    assert {k: c.key for k, c in keyed(minimal).items()} == {k: c.key for k, c in a.items()}
    minimal["factors"]["keywords"]["levels"]["mask"]["words"] = ["wait"]
    b = keyed(minimal)
    changed = [a[k].id for k in a if a[k].key != b[k].key]
    assert len(changed) == 4 and all("keywords=mask" in i for i in changed)


def test_an_exclude_that_removes_every_arm_is_an_error(minimal):
    minimal["grid"] = {"exclude": [{"keywords": ["keep", "mask"]}]}
    with pytest.raises(UserError, match="removes all 4 arms"):
        expand(spec_from_dict(minimal))
