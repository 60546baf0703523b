"""Walking the spec's types: the model at a YAML path, where a misplaced key belongs, which nulls mean "default".

Error messages, `ablate schema` and null handling all read the models, so they cannot drift from the format.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from typing import Any

from pydantic import BaseModel

from framework.registry import suggest
from framework.spec.yamlsrc import Loc


def _unwrap(tp: Any) -> list[Any]:
    """The concrete member types of an annotation (Optional/Union/Annotated peeled)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _unwrap(a)]
    return [tp]


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def element_models(tp: Any) -> list[tuple[type[BaseModel], str]]:
    """The models a field holds, with how: '' itself, '[]' as list items (`pool`), '.<name>' as dict values
    (`factors`). Sections like `pool` are lists of models, so a plain isinstance test would miss them."""
    out = []
    for member in _unwrap(tp):
        origin, args = typing.get_origin(member), typing.get_args(member)
        how = "[]" if origin is list else ".<name>" if origin is dict else ""
        inner = args[-1] if how and args else member
        out += [(m, how) for m in _unwrap(inner) if is_model(m)]
    return out


def _step(tp: Any, part: Any) -> Any:
    for member in _unwrap(tp):
        origin = typing.get_origin(member)
        if is_model(member) and isinstance(part, str):
            field = member.model_fields.get(part)
            if field is not None:
                return field.annotation
        elif origin is dict and isinstance(part, str):
            return typing.get_args(member)[1]
        elif origin is list and isinstance(part, int):
            return typing.get_args(member)[0]
    return None


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    tp: Any = root
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return None
    return next((m for m in _unwrap(tp) if is_model(m)), None)


def _description(root: type[BaseModel], loc: Loc) -> str | None:
    model = _model_at(root, loc[:-1])
    field = model.model_fields.get(str(loc[-1])) if model is not None and loc else None
    return field.description if field is not None else None


def fields_at(root: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model found at `loc` (used to suggest the right spelling of an unknown key)."""
    model = _model_at(root, loc)
    return list(model.model_fields) if model is not None else []


def drop_default_nulls(data: Any, tp: Any, *, override: bool = False) -> Any:
    """Drop `key: ~` where `key` is a field of a schema model: a null there means "the default".

    In a map whose keys the user names (factors, levels, pool filter/columns, train.extra_args) a null is a value:
    a level written `keep:` is a level without parameters, never a level that silently disappears. A model that
    is such a map's value (`launcher.slurm.stages.eval`) overrides defaults set elsewhere, so there `qos: ~` is
    kept: it means "no qos for this stage", not "the launcher's qos".
    """
    members = _unwrap(tp)
    model = next((m for m in members if is_model(m)), None)
    if isinstance(data, dict) and model is not None:
        fields = model.model_fields
        return {
            k: drop_default_nulls(v, fields[k].annotation if k in fields else None)
            for k, v in data.items()
            if not (v is None and k in fields and not override)
        }
    for member in members:
        origin, args = typing.get_origin(member), typing.get_args(member)
        if origin is dict and isinstance(data, dict) and any(is_model(m) for m in _unwrap(args[1])):
            return {k: {} if v is None else drop_default_nulls(v, args[1], override=True) for k, v in data.items()}
        if origin is list and isinstance(data, list) and any(is_model(m) for m in _unwrap(args[0])):
            return [drop_default_nulls(v, args[0]) for v in data]
    return data


@functools.cache
def _homes(root: type[BaseModel]) -> dict[str, list[tuple[int, str]]]:
    """Each field name -> (depth, section) of every model that has it, shallowest first (breadth-first)."""
    homes: dict[str, list[tuple[int, str]]] = {}
    todo: list[tuple[type[BaseModel], str, int]] = [(root, "", 0)]
    seen: set[type[BaseModel]] = set()
    while todo:
        model, path, depth = todo.pop(0)
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            homes.setdefault(name, []).append((depth, path))
            sub = f"{path}.{name}" if path else name
            todo.extend((m, sub + how, depth + 1) for m, how in element_models(field.annotation))
    return homes


def _under(section: str) -> str:
    if not section:
        return "at the top level"
    if section.endswith("[]"):
        return f"in each item of `{section[:-2]}:`"
    return f"under `{section}:`"


def _schema_section(root: type[BaseModel], parent: Loc, base: str) -> str:
    """The `ablate schema` argument that lists the fields at `parent` (user-named keys and indexes skipped)."""
    parts, tp = [base] if base else [], root
    for part in parent:
        if any(is_model(m) for m in _unwrap(tp)) and isinstance(part, str):
            parts.append(part)
        tp = _step(tp, part)
        if tp is None:
            break
    section = ".".join(parts)
    return "factors" if section.startswith("factors.") and not base else section


def unknown_key_hint(root: type[BaseModel], key: str, parent: Loc, schema: str | None = "") -> str:
    """Where an unknown key belongs: a sibling it begins or ends (`gpus` -> `gpus_per_node`), then an exact field
    elsewhere (top-level `epochs` -> `train:`), then a misspelt sibling, then a misspelt field elsewhere, else the
    `ablate schema` section that lists the keys."""
    homes = _homes(root)
    siblings = fields_at(root, parent)
    if any(f.startswith(key) or key.startswith(f) for f in siblings):  # `gpus` beside `gpus_per_node`
        hint = suggest(key, siblings)
        if hint:
            return hint
    if key in homes:
        places = [_under(p) for d, p in homes[key] if d == homes[key][0][0]]
        return ": it belongs " + " or ".join([places[0], *(p.removeprefix("under ") for p in places[1:])])
    hint = suggest(key, siblings)
    if hint:
        return hint
    close = difflib.get_close_matches(key, list(homes), n=1, cutoff=0.8)
    if close:
        return f' (did you mean "{close[0]}" {_under(homes[close[0]][0][1])}?)'
    if schema is None:
        return ""
    section = _schema_section(root, parent, schema)
    if section:
        return f"; `ablate schema {section}` lists the keys here"
    return "; `ablate schema` lists the sections (a top-level key that only holds YAML anchors must start with 'x-')"
