"""Names the user picks (sweep, factors, levels, baselines): the allowed form, and YAML scalars that are not names.

A name ends up in paths and cell ids, so it must be plain; and YAML reads an unquoted `yes`, `off` or `1.10` as a
boolean or a number, which would silently become the level 'True' or '1.1'.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic_core import PydanticCustomError

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_RULE = "use letters, digits, '.', '_' and '-', starting with a letter or digit"
# The default tracking database sits beside the sweeps: results/mlflow.db (and SQLite's files next to it).
RESERVED_SWEEP_NAMES = ("mlflow.db", "mlflow.db-journal", "mlflow.db-wal", "mlflow.db-shm")
SCALAR_NAME_ERROR = "yaml_scalar_name"


def is_name(text: str) -> bool:
    """`re.match` with `$` would accept a trailing newline ("a\\n"): match the whole string."""
    return re.fullmatch(NAME_RE.strip("^$"), text) is not None


def plain_name(value: Any) -> Any:
    """Reject a boolean or float where a name is expected (pydantic would report only 'not a string')."""
    if isinstance(value, bool | float):
        raise PydanticCustomError(SCALAR_NAME_ERROR, "YAML reads this name as {value}", {"value": json.dumps(value)})
    return value


def scalar_name_message(value: Any, text: str | None) -> str:
    """ "YAML reads `yes` as true; quote it ('yes')", with the text the user wrote when the loader kept it."""
    shown = text or (json.dumps(value) if isinstance(value, bool) else repr(value))
    what = json.dumps(value) if isinstance(value, bool) else f"the number {value!r}"
    return f"YAML reads `{shown}` as {what}; quote it ('{shown}') to use it as a name"


def normalize_levels(raw: Any) -> Any:
    """Accept `[a, b]`, `[{name: a, ...}]` or `{a: {...}, b: {...}}`; return a list of {name, params}.

    Integers become names ('1'); booleans and floats are left for `plain_name` to reject, since the text the user
    wrote (`yes`, `1.10`) is lost.
    """
    if isinstance(raw, dict):
        return [{"name": _name(k), "params": v if v is not None else {}} for k, v in raw.items()]
    if isinstance(raw, list):
        out = []
        for item in raw:
            if isinstance(item, str | int | float):
                out.append({"name": _name(item), "params": {}})
            elif isinstance(item, dict) and "name" in item and "params" not in item:
                out.append({"name": item["name"], "params": {k: v for k, v in item.items() if k != "name"}})
            else:
                out.append(item)
        return out
    return raw


def _name(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
