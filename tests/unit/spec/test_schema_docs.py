"""The schema is the documentation: every field of every spec model (and factor params) is described."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from framework.registry import FACTORS
from framework.spec.ablation import AblationSpec
from framework.spec.docs import render_schema
from framework.spec.fields import _unwrap


def all_models(root: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for f in m.model_fields.values():
            for member in _unwrap(f.annotation):
                for t in (member, *typing.get_args(member)):
                    if isinstance(t, type) and issubclass(t, BaseModel):
                        todo.append(t)
    return seen


def test_every_field_has_a_description():
    models = all_models(AblationSpec) | {FACTORS.resolve(n).params for n in FACTORS.names()}
    missing = [f"{m.__name__}.{n}" for m in models for n, f in m.model_fields.items() if not f.description]
    assert not missing, missing
    assert all(m.__doc__ for m in all_models(AblationSpec))


def test_every_model_forbids_unknown_keys():
    models = all_models(AblationSpec) | {FACTORS.resolve(n).params for n in FACTORS.names()}
    assert all(m.model_config.get("extra") == "forbid" for m in models)


@pytest.mark.parametrize(
    ("section", "first_field"),
    [
        ("pool", "pool[].path:"),
        ("factors", "factors.<name>.kind:"),
        ("baselines", "baselines[].name:"),
        ("eval.benchmarks", "eval.benchmarks[].name:"),
        ("launcher.slurm.stages", "launcher.slurm.stages.<name>.partition:"),
    ],
)
def test_sections_that_hold_lists_or_maps_of_models_are_documented(section, first_field):
    lines = render_schema(section).splitlines()
    assert lines[1].startswith(first_field)


def test_types_read_as_written_not_as_pydantic_internals():
    text = render_schema()
    assert "Annotated" not in text and "FieldInfo" not in text
    assert "launcher.local.gpus: list[int ≥ 0] | Literal['auto'] = 'auto'" in text
    assert "seeds: list[int ≥ 0] = [0]" in text
    assert "eval.benchmarks[].limit: int ≥ 1 | None = None" in text
    assert "Top-level keys starting with `x-` are ignored" in text  # where YAML anchors may live
