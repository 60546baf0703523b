"""diversity: all examples from one topic, or stratified evenly across topics."""

from __future__ import annotations

from typing import Literal, get_args

import pandas as pd
from pydantic import Field

from framework.data.factors.base import Factor, FactorContext
from framework.spec.base import SpecModel

Mode = Literal["single_topic", "stratified", "any"]
STRATUM = "_stratum"  # selection samples round-robin over this column's values when it is present


class Params(SpecModel):
    mode: Mode | None = Field(
        None, description="single_topic, stratified (even across topics) or any; default: the level's name."
    )
    topic: str | None = Field(
        None,
        description="For single_topic: which topic; default: one drawn with the selection seed among "
        "topics with enough traces.",
    )


def _has_topic(frame: pd.DataFrame) -> pd.Series:
    topic = frame["topic"]
    return topic.notna() & (topic.astype(str).str.strip() != "")


def _draw_topic(frame: pd.DataFrame, ctx: FactorContext) -> str | None:
    """Among topics with enough distinct problems for a full cell (else the largest), sorted by name, draw one."""
    problems = frame.groupby(frame["topic"].astype(str), sort=True)["problem_id"].nunique()
    if problems.empty:
        return None
    enough = problems[problems >= ctx.n_examples]
    candidates = enough if len(enough) else problems[problems == problems.max()]
    names = sorted(candidates.index)
    return names[int(ctx.rng.integers(len(names)))]


def resolve_mode(level: str, params: Params) -> str:
    """The explicit mode, else the level's name."""
    mode = params.mode or level
    if mode not in get_args(Mode):
        raise ValueError(
            f"diversity level {level!r} names no mode: call it single_topic, stratified or any, or set params.mode"
        )
    return mode


def apply(frame: pd.DataFrame, level: str, params: Params, ctx: FactorContext) -> pd.DataFrame:
    """Traces without a topic (missing or blank) cannot be placed in a topic, so single_topic and stratified drop them."""
    mode = resolve_mode(level, params)
    if mode == "any":
        ctx.report.update({"mode": mode})
        return frame
    with_topic = frame[_has_topic(frame)]
    if mode == "single_topic":
        topic = params.topic if params.topic is not None else _draw_topic(with_topic, ctx)
        ctx.report.update({"mode": mode, "topic": topic, "drawn": params.topic is None})
        return with_topic[with_topic["topic"].astype(str) == topic]
    out = with_topic.assign(**{STRATUM: with_topic["topic"].astype(str)})
    counts = out[STRATUM].value_counts().sort_index()
    ctx.report.update({"mode": mode, "topics": {str(k): int(v) for k, v in counts.items()}})
    return out


FACTOR = Factor("diversity", Params, apply, phase="filter", order=50, description=__doc__ or "", check=resolve_mode)
