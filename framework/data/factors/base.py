"""What a factor is: a typed parameter model and a function over the annotated pool.

Filters run before sampling (they decide which traces are eligible); transforms run after sampling (they rewrite
the selected traces, so arms that differ only in a transform train on the same problems: a paired design).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@dataclass
class FactorContext:
    """What a factor may use besides the pool: the seeded rng and the sweep's settings."""

    rng: np.random.Generator
    n_examples: int
    reflection_keywords: list[str]
    count_tokens: Callable[[list[str]], list[int]] | None = None
    report: dict[str, Any] = field(default_factory=dict)  # what the factor did, for plan statistics


@dataclass(frozen=True)
class Factor:
    """A registered data factor. `order` fixes the order factors are applied in, whatever the YAML order."""

    name: str
    params: type[BaseModel]
    apply: Callable[..., pd.DataFrame]  # (frame, level_name, params, ctx) -> frame
    phase: Literal["filter", "transform"]
    order: int
    description: str = ""
    # (level name, params) -> raises ValueError for a level `apply` cannot run: checked when the spec is validated
    check: Callable[[str, Any], Any] | None = None
    # Raised when `apply` changes what it produces, so that training sets built by the old code are rebuilt; a
    # function of the level's params when only some levels changed (the others keep their keys and trainings)
    version: str | Callable[[Any], str] = "1"

    def version_of(self, params: dict[str, Any]) -> str:
        return self.version(self.params.model_validate(params)) if callable(self.version) else self.version
