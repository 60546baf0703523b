"""Spec errors: every problem located by YAML path (and file:line), with a suggestion for misspelt keys."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from framework.registry import suggest
from framework.spec.yamlsrc import Loc, Source


@dataclass(frozen=True)
class SpecError:
    """One problem in a spec."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (f"{self.file}: " if self.file else "")
        return f"{where}{self.path or '<spec>'}: {self.message}"


class SpecErrors(Exception):
    """All problems of a spec at once."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(tp: Any) -> list[Any]:
    """The concrete member types of an annotation (Optional/Union/Annotated peeled)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _unwrap(a)]
    return [tp]


def _step(tp: Any, part: str | int) -> Any:
    for member in _unwrap(tp):
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
            field = member.model_fields.get(part)
            if field is not None:
                return field.annotation
        elif origin is dict and isinstance(part, str):
            return typing.get_args(member)[1]
        elif origin is list and isinstance(part, int):
            return typing.get_args(member)[0]
    return None


def _description(root: type[BaseModel], loc: Loc) -> str | None:
    tp: Any = root
    for part in loc[:-1]:
        tp = _step(tp, part)
        if tp is None:
            return None
    for member in _unwrap(tp):
        if isinstance(member, type) and issubclass(member, BaseModel) and loc and loc[-1] in member.model_fields:
            return member.model_fields[str(loc[-1])].description
    return None


def fields_at(root: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model found at `loc` (used to suggest the right spelling of an unknown key)."""
    tp: Any = root
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    for member in _unwrap(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return list(member.model_fields)
    return []


def yaml_loc(raw: Any, loc: Loc) -> Loc:
    """Translate a validation loc into the path the user wrote.

    Drops union tags pydantic inserts (e.g. 'list[int]'), maps an index into a name->params mapping back to the
    name, and skips the synthetic 'params' level of a factor level written inline.
    """
    out: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict):
            if isinstance(part, int) and part not in node:
                keys = list(node)
                if 0 <= part < len(keys):
                    out.append(keys[part])
                    node = node[keys[part]]
                    if isinstance(node, dict) or node is None:
                        node = {"params": node or {}, "name": keys[part]}
                    continue
            if part in node:
                out.append(part)
                node = node[part]
                continue
            if part == "params":  # inline level: {name: x, k: v}
                continue
            if isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool")):
                continue
            out.append(part)
            node = None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
            if isinstance(node, str):  # list-form level or benchmark: "name"
                node = {"name": node}
        else:
            if isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool")):
                continue
            out.append(part)
            node = None
    return tuple(out)


def error_message(err: dict[str, Any], root: type[BaseModel] | None) -> str:
    """A pydantic error as a user-facing sentence; unknown keys get a did-you-mean from the model's fields."""
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        hint = suggest(key, fields_at(root, tuple(err["loc"][:-1]))) if root else ""
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        desc = _description(root, loc) if root else None
        return f"required field is missing ({desc})" if desc else "required field is missing"
    msg = err.get("msg", "invalid value")
    return msg.removeprefix("Value error, ")


def from_validation_error(
    exc: ValidationError, source: Source | None, root: type[BaseModel] | None, prefix: Loc = ()
) -> list[SpecError]:
    """One SpecError per pydantic error, deduplicated, located in the YAML."""
    raw = source.data if source else {}
    out: dict[str, SpecError] = {}
    for err in exc.errors():
        full = (*prefix, *err["loc"])
        loc = yaml_loc(raw, full)
        path = format_path(loc)
        where = source.where(loc) if source else None
        message = error_message(err, root)
        if path in out and message not in out[path].message:
            prev = out[path]
            out[path] = SpecError(path, f"{prev.message}; or {message}", prev.file, prev.line)
        elif path not in out:
            out[path] = SpecError(path, message, *(where or (None, None)))
    return list(out.values())
