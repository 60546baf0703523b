"""length factor: rank-based token-length bins and inclusive token ranges."""

from __future__ import annotations

import numpy as np
import pandas as pd

from framework.data.factors.base import FactorContext
from framework.data.factors.length import Params, apply, rank_bins


def _ctx() -> FactorContext:
    return FactorContext(rng=np.random.default_rng(0), n_examples=2, reflection_keywords=["wait"])


def _pool(tokens: list[int], ids: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {"trace_id": ids or [f"t{i:02d}" for i in range(len(tokens))], "n_tokens": tokens, "x": range(len(tokens))}
    )


def _keep(frame: pd.DataFrame, **params) -> list[str]:
    return apply(frame, "lvl", Params(**params), _ctx())["trace_id"].tolist()


def test_bin_zero_is_shortest_and_bins_partition_the_pool() -> None:
    frame = _pool([900, 100, 500, 300, 700, 200, 800, 400, 600])
    assert _keep(frame, bins=3, bin=0) == ["t01", "t03", "t05"]
    assert _keep(frame, bins=3, bin=1) == ["t02", "t07", "t08"]
    assert _keep(frame, bins=3, bin=2) == ["t00", "t04", "t06"]


def test_ties_are_split_by_trace_id() -> None:
    frame = _pool([50] * 6, ids=["f", "a", "e", "b", "d", "c"])
    assert _keep(frame, bins=2, bin=0) == ["a", "b", "c"]
    assert _keep(frame, bins=2, bin=1) == ["f", "e", "d"]


def test_min_max_tokens_are_inclusive() -> None:
    frame = _pool([100, 200, 300, 400])
    assert _keep(frame, min_tokens=200, max_tokens=300) == ["t01", "t02"]
    assert _keep(frame, min_tokens=400) == ["t03"]
    assert _keep(frame, max_tokens=100) == ["t00"]


def test_no_rule_and_match_total_tokens_keep_everything() -> None:
    frame = _pool([5, 1, 3])
    out = apply(frame, "any", Params(match_total_tokens=True), _ctx())
    assert out.equals(frame)


def test_rank_bins_marks_missing_values() -> None:
    values = pd.Series([3.0, None, 1.0, 2.0], index=[7, 8, 9, 10])
    bins = rank_bins(values, pd.Series(["a", "b", "c", "d"], index=values.index), 3)
    assert bins.to_dict() == {7: 2, 8: -1, 9: 0, 10: 1}


def test_report_has_the_kept_token_range() -> None:
    ctx = _ctx()
    apply(_pool([10, 20, 30, 40]), "long", Params(bins=2, bin=1), ctx)
    assert ctx.report == {"missing": 0, "range": [30.0, 40.0]}
