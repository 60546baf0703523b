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
from framework.spec.yamlsrc import Loc, NullRules


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


def _type_at(root: type[BaseModel], loc: Loc) -> Any:
    tp: Any = root
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return None
    return tp


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    return next((m for m in _unwrap(_type_at(root, loc)) if is_model(m)), None)


def _description(root: type[BaseModel], loc: Loc) -> str | None:
    model = _model_at(root, loc[:-1])
    field = model.model_fields.get(str(loc[-1])) if model is not None and loc else None
    return field.description if field is not None else None


def fields_at(root: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model found at `loc` (used to suggest the right spelling of an unknown key)."""
    model = _model_at(root, loc)
    return list(model.model_fields) if model is not None else []


def drop_default_nulls(data: Any, tp: Any, *, override: bool = False) -> Any:
    """Drop the nulls that mean "the default": `key: ~` where `key` is a field of a schema model.

    The loader applies this to each file before merging its includes (`null_rules`), so such a null is as if the
    line were not written, in the top-level file and in an included base alike: the value comes from an earlier
    file, else the field's default (to reset an inherited value, write the default itself).

    Elsewhere a null is a value, kept:
    - in a map whose keys the user names (factors, levels, pool filter, train.extra_args) a null entry is an entry:
      a level written `keep:` is a level without parameters (a null that is such a map's model value becomes
      `{}`), and `train.extra_args` drops its `arg: ~` when validated (`base.PassThroughArgs`: not set);
    - a model that is such a map's value (`launcher.slurm.stages.eval`) overrides defaults set elsewhere, so there
      `qos: ~` means "no qos for this stage", not "the launcher's qos" (`extra_sbatch: ~`: no extra line).
    How a kept null merges with an earlier file's value: `null_means_none`.
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


def null_means_none(root: type[BaseModel], loc: Loc) -> bool:
    """Whether a null kept at `loc` is "none", which replaces what an earlier file set there: a field of a model that
    is a user-named map's value (`launcher.slurm.stages.eval.qos`). Any other null left after `drop_default_nulls`
    is a user-named entry (a level, an extra argument): over an earlier file's entry it removes that entry, else it
    stays (a level without parameters)."""
    if len(loc) < 2:
        return False
    model = _model_at(root, loc[:-1])
    if model is None or loc[-1] not in model.model_fields:
        return False
    holder = _type_at(root, loc[:-2])
    return any(typing.get_origin(m) is dict for m in _unwrap(holder)) and not any(
        is_model(m) and loc[-2] in m.model_fields for m in _unwrap(holder)
    )


def null_rules(root: type[BaseModel]) -> NullRules:
    """How `load_source` treats the nulls of each file of an include chain, from the schema `root`."""
    return NullRules(
        drop=functools.partial(drop_default_nulls, tp=root), means_none=functools.partial(null_means_none, root)
    )


# A field that overrides, for one item, settings whose section is elsewhere (a baseline's `sampling` over
# eval.sampling): that section stays the home of their keys, so a misplaced key is sent there.
OVERRIDES: dict[str, Any] = {"overrides": True}


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
            if field.json_schema_extra == OVERRIDES:
                continue
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


# A misspelling close enough to win over the same key in an unrelated section (`learnin_rate`, `temprature`; not
# `revision` for `precision`, 0.82).
CLOSE = 0.85


def _section(root: type[BaseModel], loc: Loc) -> str | None:
    """`loc` written as `_homes` writes sections: `launcher.slurm.stages.<name>`, `pool[]` (None: not in the schema)."""
    path, tp = "", root
    for part in loc:
        step = _step(tp, part)
        if step is None:
            return None
        if isinstance(part, str) and any(is_model(m) and part in m.model_fields for m in _unwrap(tp)):
            path = f"{path}.{part}" if path else part
        else:
            path += "[]" if isinstance(part, int) else ".<name>"
        tp = step
    return path


def _related(home: str, section: str | None) -> bool:
    """Whether `home` is `section`, inside it or one of its ancestors: a key written a level too high or too low."""
    if section is None or not home or not section:
        return True
    return any(a == b or b.startswith((f"{a}.", f"{a}[")) for a, b in ((home, section), (section, home)))


def _affixed(key: str, names: list[str]) -> list[str]:
    """The names that begin or end with `key` (`gpus` -> gpus_per_node, `batch_size` -> micro_batch_size), closest
    first; those it begins before those it ends. Not the names `key` contains (`seed` for `data_seed`)."""
    if len(key) < 3:
        return []
    found = [n for n in names if n != key and n.startswith(key)] or [n for n in names if n != key and n.endswith(key)]
    return sorted(found, key=lambda n: (-difflib.SequenceMatcher(None, key, n).ratio(), n))


def _mean(names: list[str], where: str = "") -> str:
    alternatives = " or ".join(f'"{n}"' for n in names[:2])
    return f" (did you mean {alternatives}{f' {where}' if where else ''}?)"


def _belongs(places: list[tuple[int, str]]) -> str:
    shallowest = [_under(p) for d, p in places if d == places[0][0]]
    return ": it belongs " + " or ".join([shallowest[0], *(p.removeprefix("under ") for p in shallowest[1:])])


def unknown_key_hint(root: type[BaseModel], key: str, parent: Loc, schema: str | None = "") -> str:
    """Where an unknown key belongs, nearest first:

    1. a sibling it begins or ends (`gpus` -> `gpus_per_node`, `train.batch_size` -> `micro_batch_size` or
       `global_batch_size`, top-level `seed` -> `seeds`); not a sibling the key merely contains (`data_seed`
       under eval.sampling is no `seed`: it belongs at the top level);
    2. the same field in a section inside this one or around it (top-level `epochs` -> `train:`, `eval.max_tokens`
       -> `eval.sampling:`);
    3. a sibling it misspells (`learnin_rate`);
    4. a field of an enclosing section it begins, ends or misspells (`train.seed` -> the top-level `seeds`);
    5. the same field in an unrelated section (`train.temperature` -> `eval.sampling:`): a close sibling or
       enclosing field comes first, so `train.batch_size` is not sent to the embedder's batch size under
       `annotate.topic_clusters`;
    6. a sibling it loosely resembles, then a field elsewhere it misspells;
    7. else the `ablate schema` section that lists the keys.
    """
    homes = _homes(root)
    siblings = fields_at(root, parent)
    near = _affixed(key, siblings)
    if near:
        return _mean(near)
    here = _section(root, parent)
    exact = homes.get(key, [])
    related = [(d, p) for d, p in exact if _related(p, here)]
    if related:
        return _belongs(related)
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=CLOSE)
    if close:
        return _mean(close)
    for n in range(len(parent) - 1, -1, -1):
        names = fields_at(root, parent[:n])
        near = _affixed(key, names) or difflib.get_close_matches(key, names, n=1, cutoff=CLOSE)
        if near:
            return _mean(near, _under(_section(root, parent[:n]) or ""))
    if exact:
        return _belongs(exact)
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
