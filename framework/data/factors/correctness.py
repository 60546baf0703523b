"""correctness: keep traces whose final answer is right, wrong, or either (graded against expected_answer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from pydantic import Field

from framework.data.factors.base import Factor, FactorContext
from framework.spec.base import SpecModel

if TYPE_CHECKING:
    import pandas as pd

Answers = Literal["correct", "incorrect", "any"]
STATED = ("boxed", "final_answer_phrase")  # extraction methods that read an answer the trace states


class Params(SpecModel):
    answers: Answers | None = Field(
        None, description="Which traces to keep; default: the level's name (correct, incorrect or any)."
    )
    drop_ungraded: bool = Field(True, description="Leave out traces with no extractable answer.")
    stated_only: bool = Field(
        True,
        description="Grade only answers a trace states (boxed, or 'the final answer is'); a number read off the "
        "end of an unboxed trace, often one that stopped mid-thought, counts as ungraded, so the incorrect arm "
        "holds wrong answers rather than unfinished traces.",
    )


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
    if params.stated_only and "answer_method" in frame:  # pools annotated before methods were kept have none
        graded &= frame["answer_method"].isin(STATED)
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
    "correctness",
    Params,
    apply,
    phase="filter",
    order=20,
    description=__doc__ or "",
    check=resolve_answers,
    version="2",  # 2: answers read off a trace's last number are ungraded (stated_only)
)
