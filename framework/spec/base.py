"""The base class every spec model shares: strict keys, documented fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecModel(BaseModel):
    """Unknown keys are errors (a typo must never silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True, populate_by_name=True)
