"""correctness: keep traces whose final answer is right, wrong, or either (graded against expected_answer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from pydantic import Field

from framework.factors.base import Factor, FactorContext
from framework.spec.base import SpecModel

if TYPE_CHECKING:
    import pandas as pd

Answers = Literal["correct", "incorrect", "any"]


class Params(SpecModel):
    answers: Answers | None = Field(
        None, description="Which traces to keep; default: the level's name (correct, incorrect or any)."
    )
    drop_ungraded: bool = Field(True, description="Leave out traces with no extractable answer.")


def resolve_answers(level: str, params: Params) -> str:
    """The explicit `answers`, else the level's name."""
    answers = params.answers or level
    if answers not in get_args(Answers):
        raise ValueError(
            f"correctness level {level!r} names no mode: call it correct, incorrect or any, or set params.answers"
        )
    return answers


def apply(frame: pd.DataFrame, level: str, params: Params, ctx: FactorContext) -> pd.DataFrame:
    """`correct` is tri-state: True, False, or missing (no answer could be extracted or graded)."""
    answers = resolve_answers(level, params)
    graded = frame["correct"].notna()
    right = frame["correct"].where(graded, False).astype(bool)
    if answers == "correct":
        keep = graded & right
    elif answers == "incorrect":
        keep = graded & ~right
    else:
        keep = graded | (not params.drop_ungraded)
    ctx.report.update({"answers": answers, "ungraded": int((~graded).sum()), "correct": int((graded & right).sum())})
    return frame[keep]


FACTOR = Factor(
    "correctness", Params, apply, phase="filter", order=20, description=__doc__ or "", check=resolve_answers
)
