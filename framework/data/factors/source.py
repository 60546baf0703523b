"""source: keep traces written by one kind of author (reasoning model, non-reasoning model, human stage k)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from framework.data.factors.base import Factor, FactorContext
from framework.spec.base import SpecModel

if TYPE_CHECKING:
    import pandas as pd


class Params(SpecModel):
    sources: list[str] = Field(default_factory=list, description="Source labels to keep; default: the level's name.")


def apply(frame: pd.DataFrame, level: str, params: Params, ctx: FactorContext) -> pd.DataFrame:
    """Exact label match, so a typo in a level name shows up as an empty cell rather than a silent superset."""
    sources = list(params.sources) or [level]
    out = frame[frame["source"].isin(sources)]
    ctx.report.update({"sources": sources, "kept": {s: int((out["source"] == s).sum()) for s in sources}})
    present = set(frame["source"])
    if unknown := [s for s in sources if s not in present]:
        labels = ", ".join(sorted(present)[:20]) + (" ..." if len(present) > 20 else "")
        ctx.report["hint"] = f"no trace has source {', '.join(map(repr, unknown))}; the sources here: {labels}"
    return out


FACTOR = Factor("source", Params, apply, phase="filter", order=10, description=__doc__ or "")
