"""`ablate schema`: the spec format rendered from the models themselves, so the docs cannot drift."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from framework.errors import UserError
from framework.registry import FACTORS, ResolveError, suggest
from framework.spec.ablation import AblationSpec
from framework.spec.base import is_run_only
from framework.spec.fields import _step, element_models

_BOUNDS = ((at.Ge, "ge", "≥"), (at.Gt, "gt", ">"), (at.Le, "le", "≤"), (at.Lt, "lt", "<"))


def _constraints(metadata: list[Any]) -> str:
    """`≥ 0 < 1` from pydantic's metadata (Field(ge=0, lt=1)), so a type reads `int ≥ 0`, not `Annotated[...]`."""
    out = []
    for m in metadata:
        for item in m.metadata if isinstance(m, FieldInfo) else [m]:
            out += [f"{sign} {getattr(item, attr)}" for kind, attr, sign in _BOUNDS if isinstance(item, kind)]
    return " ".join(out)


def _type_name(tp: Any, bounds: str = "") -> str:
    """A readable type: `list[int ≥ 0] | Literal['auto']`, `int ≥ 1 | None` (bounds: the field's own)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0], " ".join(filter(None, (_constraints(list(args[1:])), bounds))))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a, "" if a is type(None) else bounds) for a in args)
    if bounds:
        return f"{_type_name(tp)} {bounds}"
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None:
        return f"{getattr(origin, '__name__', repr(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", repr(tp))


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        return repr(field.default)
    if field.default_factory is not None:
        value = field.default_factory()
        return repr(value.model_dump() if isinstance(value, BaseModel) else value)
    return "required"


def _render(
    model: type[BaseModel], prefix: str, out: list[str], above: tuple[tuple[type[BaseModel], str], ...] = ()
) -> None:
    """`above`: the enclosing sections, so a section that holds its own kind (a generated pool source's problems
    are a pool source) refers to where its fields are listed instead of listing them forever."""
    above = (*above, (model, prefix))
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        out.append(f"{path}: {_type_name(field.annotation, _constraints(field.metadata))} = {_default(field)}")
        if field.description:
            out.append(f"    {field.description}" + (" (run-only: not in the job's key)" if is_run_only(field) else ""))
        for inner, how in element_models(field.annotation):
            enclosing = next((where for m, where in above if m is inner), None)
            if enclosing is not None:
                out.append(f"{path + how}.*: the fields of {enclosing or 'the spec'}, listed above")
            else:
                _render(inner, path + how, out, above)


def render_schema(section: str | None = None) -> str:
    """Every field under `section` (e.g. 'train', 'eval.sampling', 'factors.keywords') or the whole spec."""
    out: list[str] = []
    if section and section.startswith("factors.") and section.count(".") == 1:
        kind = section.split(".", 1)[1]
        try:
            factor = FACTORS.resolve(kind)
        except ResolveError as e:
            raise UserError(f"schema: {e}") from None
        out.append(f"factor {kind} ({factor.phase}): {factor.description.strip()}")
        out.append("level parameters:")
        _render(factor.params, "", out)
        return "\n".join(out)
    model: Any = AblationSpec
    prefix = ""
    parts = section.split(".") if section else []
    for i, part in enumerate(parts):
        sections = [n for n, f in model.model_fields.items() if element_models(f.annotation)]
        members = element_models(_step(model, part))  # `pool` and `factors` hold models as list items / dict values
        if not members:
            where = ".".join(parts[:i])
            known = (
                f"sections{' of ' + where if where else ''}: {', '.join(sections)}"
                if sections
                else (f"{where} has no sections (`ablate schema {where}` lists its fields)")
            )
            raise UserError(f"schema: no section {section!r}{suggest(part, sections)}; {known}")
        model, how = members[0]
        prefix = f"{prefix}.{part}{how}" if prefix else f"{part}{how}"
    if model.__doc__:
        out.append(inspect.cleandoc(model.__doc__))
    _render(model, prefix, out)
    if not section:
        out.append("")
        out.append("factor kinds (see `ablate schema factors.<kind>`): " + ", ".join(FACTORS.names()))
    return "\n".join(out)
