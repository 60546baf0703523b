"""correctness factor: tri-state `correct` (True, False, missing) and the drop_ungraded switch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.data.factors.base import FactorContext
from framework.data.factors.correctness import Params, apply


def _ctx() -> FactorContext:
    return FactorContext(rng=np.random.default_rng(0), n_examples=2, reflection_keywords=["wait"])


@pytest.fixture(params=["object", "boolean"])
def pool(request: pytest.FixtureRequest) -> pd.DataFrame:
    correct = [True, False, None, True, False, None]
    column = pd.Series(correct, dtype="boolean") if request.param == "boolean" else pd.Series(correct, dtype=object)
    return pd.DataFrame({"trace_id": [f"t{i}" for i in range(6)], "correct": column, "note": list("abcdef")})


@pytest.mark.parametrize(
    ("level", "params", "expected"),
    [
        ("correct", {}, ["t0", "t3"]),
        ("incorrect", {}, ["t1", "t4"]),
        ("any", {}, ["t0", "t1", "t3", "t4"]),
        ("any", {"drop_ungraded": False}, ["t0", "t1", "t2", "t3", "t4", "t5"]),
        ("correct", {"drop_ungraded": False}, ["t0", "t3"]),
        ("incorrect", {"drop_ungraded": False}, ["t1", "t4"]),
        ("right_only", {"answers": "correct"}, ["t0", "t3"]),
    ],
)
def test_levels_keep_exactly(pool: pd.DataFrame, level: str, params: dict, expected: list[str]) -> None:
    out = apply(pool, level, Params.model_validate(params), _ctx())
    assert out["trace_id"].tolist() == expected
    assert out["note"].tolist() == [pool.set_index("trace_id").loc[t, "note"] for t in expected]


def test_report_counts(pool: pd.DataFrame) -> None:
    ctx = _ctx()
    apply(pool, "correct", Params(), ctx)
    assert ctx.report == {"answers": "correct", "ungraded": 2, "correct": 2}


def test_unknown_level_without_mode_is_an_error(pool: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="correctness level 'right'"):
        apply(pool, "right", Params(), _ctx())


def test_an_answer_read_off_the_last_number_is_ungraded_unless_asked_for() -> None:
    """The incorrect arm must hold wrong answers, not traces that stopped mid-thought (whose last number the
    fallback extraction reads as an answer)."""
    pool = pd.DataFrame(
        {
            "trace_id": ["boxed-right", "boxed-wrong", "phrase-wrong", "cut-off"],
            "correct": [True, False, False, False],
            "answer_method": ["boxed", "boxed", "final_answer_phrase", "last_number"],
        }
    )
    ids = lambda level, **p: apply(pool, level, Params(**p), _ctx())["trace_id"].tolist()  # noqa: E731
    assert ids("incorrect") == ["boxed-wrong", "phrase-wrong"]
    assert ids("incorrect", stated_only=False) == ["boxed-wrong", "phrase-wrong", "cut-off"]
    assert ids("any") == ["boxed-right", "boxed-wrong", "phrase-wrong"]
    ctx = _ctx()
    apply(pool, "correct", Params(), ctx)
    assert ctx.report["ungraded"] == 1
