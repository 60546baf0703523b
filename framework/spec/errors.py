"""Spec errors: every problem located by YAML path (and file:line), with a suggestion for misspelt keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from framework.spec.fields import _description, unknown_key_hint
from framework.spec.names import NAME_RE, NAME_RULE, SCALAR_NAME_ERROR, scalar_name_message
from framework.spec.yamlsrc import Loc, Source, format_path


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


def yaml_loc(raw: Any, loc: Loc) -> Loc:
    """Translate a validation loc into the path the user wrote.

    Drops union tags pydantic inserts (e.g. 'list[int]'), maps an index into a name->params mapping back to the
    name, and skips the synthetic 'name'/'params' of a level or benchmark written as a bare name or a key (the
    error then points at that name), and the 'params' level of a factor level written inline.
    """
    out: list[Any] = []
    node = raw
    synthetic = False  # node is {name, params} made from a bare name or a `name: params` entry
    for i, part in enumerate(loc):
        if synthetic and part in ("name", "params"):
            node, synthetic = node[part], False
            continue
        synthetic = False
        if isinstance(node, dict):
            # An index into a `name: params` mapping of levels, unless the mapping has that very key (`1 == True`).
            is_key = any(k == part and type(k) is type(part) for k in node)
            if isinstance(part, int) and (not is_key or loc[i + 1 : i + 2] in (("name",), ("params",))):
                keys = list(node)
                if 0 <= part < len(keys):
                    out.append(keys[part])
                    node = node[keys[part]]
                    if isinstance(node, dict) or node is None:
                        node, synthetic = {"params": node or {}, "name": keys[part]}, True
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
            if node is not None and not isinstance(node, dict | list):  # list-form level or benchmark: "name"
                node, synthetic = {"name": node}, True
        else:
            if isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool")):
                continue
            out.append(part)
            node = None
    return tuple(out)


def error_message(err: dict[str, Any], root: type[BaseModel] | None, schema: str | None = "") -> str:
    """A pydantic error as a user-facing sentence: unknown keys say where they belong, names say what a name is.

    `schema` is the `ablate schema` section of `root` ('' for the whole spec, None when there is none).
    """
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        hint = unknown_key_hint(root, key, loc[:-1], schema) if root else ""
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        desc = _description(root, loc) if root else None
        return f"required field is missing ({desc})" if desc else "required field is missing"
    if kind == SCALAR_NAME_ERROR:
        return scalar_name_message(err.get("input"), None)
    if kind == "string_pattern_mismatch":
        value = err.get("input")
        if err.get("ctx", {}).get("pattern") == NAME_RE:
            use = "it becomes the directory results/<name>/" if loc == ("name",) else "it is part of cell ids"
            return f"{value!r} is not a valid name: {NAME_RULE} ({use})"
        desc = _description(root, loc) if root else None
        return f"{value!r} is not in the expected form" + (f": {desc}" if desc else "")
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
        if err["type"] == SCALAR_NAME_ERROR:  # quote what the user wrote (`yes`), which the data no longer holds
            message = scalar_name_message(err.get("input"), source.texts.get(loc) if source else None)
        else:
            message = error_message(err, root)
        if path in out and message not in out[path].message:
            prev = out[path]
            out[path] = SpecError(path, f"{prev.message}; or {message}", prev.file, prev.line)
        elif path not in out:
            out[path] = SpecError(path, message, *(where or (None, None)))
    return list(out.values())
