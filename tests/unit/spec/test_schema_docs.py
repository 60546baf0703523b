"""The schema is the documentation: every field of every spec model (and factor params) is described."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from framework.registry import FACTORS
from framework.spec.errors import _unwrap
from framework.spec.models import AblationSpec


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
