"""diversity factor: one topic (given or drawn among topics big enough), stratified, or any."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.data.factors.base import FactorContext
from framework.data.factors.diversity import STRATUM, Params, apply


def _ctx(n: int = 4, seed: int = 0) -> FactorContext:
    return FactorContext(rng=np.random.default_rng(seed), n_examples=n, reflection_keywords=["wait"])


def _pool() -> pd.DataFrame:
    rows = []
    # (topic, distinct problems, traces per problem)
    for topic, problems, per in [
        ("algebra", 6, 1),
        ("geometry", 3, 1),
        ("number_theory", 5, 1),
        ("combinatorics", 1, 6),  # six traces but one problem: never "big enough"
        (None, 2, 1),
        ("", 1, 1),
    ]:
        rows += [{"problem_id": f"{topic}-{p}", "topic": topic} for p in range(problems) for _ in range(per)]
    frame = pd.DataFrame(rows)
    frame.insert(0, "trace_id", [f"t{i:02d}" for i in range(len(frame))])
    return frame


def _topics(out: pd.DataFrame) -> list[str]:
    return sorted(out["topic"].unique())


def test_given_topic() -> None:
    out = apply(_pool(), "single_topic", Params(topic="geometry"), _ctx())
    assert out["trace_id"].tolist() == ["t06", "t07", "t08"]
    assert STRATUM not in out.columns


def test_drawn_topic_has_enough_distinct_problems_and_depends_on_the_rng() -> None:
    drawn = set()
    for seed in range(20):
        ctx = _ctx(n=4, seed=seed)
        out = apply(_pool(), "single_topic", Params(), ctx)
        (topic,) = _topics(out)
        assert ctx.report == {"mode": "single_topic", "topic": topic, "drawn": True}
        drawn.add(topic)
        again = apply(_pool(), "single_topic", Params(), _ctx(n=4, seed=seed))
        assert again.equals(out)
    assert drawn == {"algebra", "number_theory"}


def test_no_topic_big_enough_falls_back_to_the_largest() -> None:
    for seed in range(5):
        out = apply(_pool(), "single_topic", Params(), _ctx(n=50, seed=seed))
        assert _topics(out) == ["algebra"]
        assert len(out) == 6


def test_stratified_drops_rows_without_topic_and_marks_strata() -> None:
    ctx = _ctx()
    out = apply(_pool(), "stratified", Params(), ctx)
    pool = _pool()
    with_topic = pool[pool["topic"].notna() & (pool["topic"] != "")]
    assert out["trace_id"].tolist() == with_topic["trace_id"].tolist()
    assert (out[STRATUM] == out["topic"]).all()
    assert ctx.report["topics"] == {"algebra": 6, "combinatorics": 6, "geometry": 3, "number_theory": 5}


def test_any_keeps_every_row() -> None:
    out = apply(_pool(), "any", Params(), _ctx())
    assert out.equals(_pool())


def test_mode_param_overrides_level_name_and_unknown_level_fails() -> None:
    out = apply(_pool(), "one", Params(mode="single_topic", topic="algebra"), _ctx())
    assert _topics(out) == ["algebra"]
    with pytest.raises(ValueError, match="diversity level 'one'"):
        apply(_pool(), "one", Params(), _ctx())
