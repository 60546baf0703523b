"""`ablate schema`: the spec format rendered from the models themselves, so the docs cannot drift."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from framework.errors import UserError
from framework.registry import FACTORS, ResolveError, suggest
from framework.spec.errors import _step, _unwrap
from framework.spec.models import AblationSpec


def _type_name(tp: Any) -> str:
    text = repr(tp) if typing.get_origin(tp) else getattr(tp, "__name__", repr(tp))
    return text.replace("typing.", "").replace("framework.spec.models.", "").replace("framework.spec.launch.", "")


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        return repr(field.default)
    if field.default_factory is not None:
        value = field.default_factory()
        return repr(value.model_dump() if isinstance(value, BaseModel) else value)
    return "required"


def _render(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        out.append(f"{path}: {_type_name(field.annotation)} = {_default(field)}")
        if field.description:
            out.append(f"    {field.description}")
        for member in _unwrap(field.annotation):
            origin = typing.get_origin(member)
            args = typing.get_args(member)
            inner = args[-1] if origin in (dict, list) and args else member
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                _render(inner, path + (".<name>" if origin is dict else "[]" if origin is list else ""), out)


def _is_model(m: Any) -> bool:
    return isinstance(m, type) and issubclass(m, BaseModel)


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
    parts = section.split(".") if section else []
    for i, part in enumerate(parts):
        sections = [n for n, f in model.model_fields.items() if any(_is_model(m) for m in _unwrap(f.annotation))]
        model = _step(model, part)
        members = [m for m in _unwrap(model) if _is_model(m)]
        if model is None or not members:
            where = ".".join(parts[:i])
            known = (
                f"sections{' of ' + where if where else ''}: {', '.join(sections)}"
                if sections
                else (f"{where} has no sections (`ablate schema {where}` lists its fields)")
            )
            raise UserError(f"schema: no section {section!r}{suggest(part, sections)}; {known}")
        model = members[0]
    if model.__doc__:
        out.append(model.__doc__.strip())
    _render(model, section or "", out)
    if not section:
        out.append("")
        out.append("factor kinds (see `ablate schema factors.<kind>`): " + ", ".join(FACTORS.names()))
    return "\n".join(out)
