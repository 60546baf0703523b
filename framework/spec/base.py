"""The base class every spec model shares: strict keys, documented fields, no YAML booleans as numbers."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator


def _numbers_only(annotation: Any) -> bool:
    """Whether a field takes numbers (or lists of them) and no boolean: `int`, `float | None`, `list[int]`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _numbers_only(args[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return bool(kinds) and all(_numbers_only(a) for a in kinds)
    if typing.get_origin(annotation) is list and len(args) == 1:
        return _numbers_only(args[0])
    return annotation in (int, float)


def _unset_nulls(value: Any) -> Any:
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


# Arguments passed through verbatim (`train.extra_args`, to TrainingArguments) where `arg: ~` means "not set": the
# key is dropped, so no None is passed on (in an include chain it also removes an earlier file's `arg`).
PassThroughArgs = Annotated[dict[str, Any], BeforeValidator(_unset_nulls)]


# A field that changes how a stage job runs, not what it computes (ZeRO stage, process layout, grading workers):
# the plan leaves it out of the job's key, so editing it reuses finished results. The field says so itself
# (`json_schema_extra=RUN_ONLY`), beside its description, and `ablate schema` prints it.
RUN_ONLY: dict[str, Any] = {"keyed": False}


def is_run_only(field: Any) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("keyed") is False


def run_only_fields(model: type[BaseModel]) -> dict[str, Any]:
    """`model_dump`'s `exclude` that leaves out every run-only field of `model`, in nested sections too."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if is_run_only(field):
            out[name] = True
        elif isinstance(ann, type) and issubclass(ann, BaseModel) and (inner := run_only_fields(ann)):
            out[name] = inner
    return out


class SpecModel(BaseModel):
    """Unknown keys are errors (a typo must never silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True, populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads `yes`/`true` as a boolean, and a boolean would otherwise pass as the number 1."""
        items = value if isinstance(value, list) else [value]
        if not any(isinstance(v, bool) for v in items) or info.field_name is None:
            return value
        if _numbers_only(cls.model_fields[info.field_name].annotation):
            if isinstance(value, list):
                raise ValueError(f"expected numbers, got a boolean in {json.dumps(value)}")
            raise ValueError(f"expected a number, got the boolean {json.dumps(value)}")
        return value
