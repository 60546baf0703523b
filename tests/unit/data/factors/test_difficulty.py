"""difficulty factor: label values, inclusive ranges, rank-based quantile bins, and pass-rate difficulty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.annotations import label_key
from framework.data.factors.base import FactorContext
from framework.data.factors.difficulty import Params, apply
from framework.errors import PoolValueError


def _ctx() -> FactorContext:
    return FactorContext(rng=np.random.default_rng(0), n_examples=2, reflection_keywords=["wait"])


def _pool(difficulty: list, pass_rate: list | None = None, ids: list[str] | None = None) -> pd.DataFrame:
    n = len(difficulty)
    ids = ids or [f"t{i:02d}" for i in range(n)]
    return pd.DataFrame(
        {
            "trace_id": ids,
            "problem_id": [f"p{i[1:]}" for i in ids],  # one trace per problem
            "difficulty": pd.Series(difficulty, dtype=object),
            "pass_rate": pd.Series(pass_rate if pass_rate is not None else [None] * n, dtype=object),
        }
    )


def _keep(frame: pd.DataFrame, **params) -> list[str]:
    return apply(frame, "lvl", Params(**params), _ctx())["trace_id"].tolist()


def test_values_match_numbers_and_their_strings() -> None:
    frame = _pool([1, 2, "3", 3.0, "hard", None, 5, "5", " 5 "])
    assert _keep(frame, values=[5]) == ["t06", "t07", "t08"]
    assert _keep(frame, values=["3"]) == ["t02", "t03"]
    assert _keep(frame, values=["hard", 1]) == ["t00", "t04"]
    assert _keep(frame, values=["easy"]) == []


def test_min_max_are_inclusive_and_missing_is_dropped() -> None:
    frame = _pool([1, 2, 3, 4, 5, 6, None, float("nan"), "4"])
    assert _keep(frame, min=3, max=5) == ["t02", "t03", "t04", "t08"]
    assert _keep(frame, min=5) == ["t04", "t05"]
    assert _keep(frame, max=1) == ["t00"]


def test_no_rule_keeps_every_row_including_missing() -> None:
    frame = _pool([1, None, "x"])
    out = apply(frame, "all", Params(), _ctx())
    assert out["trace_id"].tolist() == ["t00", "t01", "t02"]


def test_text_labels_cannot_be_ranged_and_say_where_they_are() -> None:
    """A user error (exit 2) naming the row, not a ValueError that a caller could mistake for a bug or miss."""
    frame = _pool([1, "hard", "easy"]).assign(origin=["p.jsonl:1", "p.jsonl:2", "p.jsonl:3"])
    with pytest.raises(
        PoolValueError,
        match=r"p.jsonl:2: difficulty by=label: label 'hard' \(and 1 more rows\) is not a number.*'values'",
    ):
        _keep(frame, min=1)
    with pytest.raises(PoolValueError, match=r"p.jsonl:2: .*easy/medium/hard to 1/2/3"):
        _keep(frame, bins=2, bin=0)
    assert _keep(frame, values=["hard"]) == ["t01"]  # categories are selected by value


def test_level_n_labels_read_as_their_number() -> None:
    """MATH labels its problems "Level 1".."Level 5": a documented rule orders them, whatever the case."""
    frame = _pool(["Level 1", "level 3", "LEVEL-5", 4])
    assert _keep(frame, min=3, max=4) == ["t01", "t03"]
    assert _keep(frame, values=[5]) == ["t02"]
    with pytest.raises(PoolValueError, match="'Level x' is not a number"):
        _keep(_pool(["Level 1", "Level x"]), max=2)


@pytest.mark.parametrize("marker", ["Level ?", "n/a", "N/A", "?", "none", "null", "nan", "-", " ", "level n/a"])
def test_missing_markers_are_missing_labels_not_text(marker) -> None:
    """MATH-derived data writes "Level ?" where the level is unknown: a missing label, dropped by a rule and
    counted, never an error and never a category."""
    assert label_key(marker) is None
    frame = _pool(["Level 1", marker, "Level 4"])
    ctx = _ctx()
    assert apply(frame, "lvl", Params(max=2), ctx)["trace_id"].tolist() == ["t00"]
    assert ctx.report["missing"] == 1
    ctx = _ctx()
    assert apply(frame, "lvl", Params(values=[4]), ctx)["trace_id"].tolist() == ["t02"]
    assert ctx.report["missing"] == 1
    with pytest.raises(PoolValueError, match="no trace has a difficulty"):
        _keep(_pool([marker, None]), min=1)


def test_bins_split_ties_by_trace_id_into_near_equal_bins() -> None:
    # Eight rows tie at 1: value quantiles would put them all in one bin; ranks split them by trace id.
    ids = ["t07", "t03", "t11", "t00", "t05", "t09", "t01", "t10", "t02", "t08", "t04", "t06", "t12"]
    values = [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3, None]
    frame = _pool(values, ids=ids)
    bins = [_keep(frame, bins=3, bin=b) for b in range(3)]
    assert sorted(bins[0]) == ["t00", "t01", "t03", "t05"]
    assert sorted(bins[1]) == ["t07", "t09", "t10", "t11"]
    assert sorted(bins[2]) == ["t02", "t04", "t06", "t08"]
    assert bins[1] == ["t07", "t11", "t09", "t10"]  # the frame's row order, not rank order
    # the report says how many of a bin's problems are as hard as problems of another bin
    tied = []
    for b in range(3):
        ctx = _ctx()
        apply(frame, "lvl", Params(bins=3, bin=b), ctx)
        tied.append(ctx.report["tied_with_other_bins"])
    assert tied == [4, 4, 0]  # bins 0 and 1 are all value 1; bin 2 (values 2 and 3) shares none


def test_bin_sizes_differ_by_at_most_one_and_cover_all_rows() -> None:
    frame = _pool([i % 4 for i in range(10)])
    bins = [_keep(frame, bins=3, bin=b) for b in range(3)]
    assert [len(b) for b in bins] == [4, 3, 3]
    assert sorted(t for b in bins for t in b) == frame["trace_id"].tolist()
    easiest = frame.set_index("trace_id").loc[bins[0], "difficulty"].tolist()
    hardest = frame.set_index("trace_id").loc[bins[2], "difficulty"].tolist()
    assert max(easiest) <= min(hardest)


def test_pass_rate_is_inverted_and_rounded() -> None:
    frame = _pool([None] * 5, pass_rate=[0.9, 0.7, 0.5, 0.2, None])
    # 1 - 0.7 is 0.30000000000000004 in floating point; the bound 0.3 must still include it.
    assert _keep(frame, by="pass_rate", max=0.3) == ["t00", "t01"]
    assert _keep(frame, by="pass_rate", bins=2, bin=1) == ["t02", "t03"]
    ctx = _ctx()
    apply(frame, "hard", Params(by="pass_rate", min=0.5), ctx)
    assert ctx.report["range"] == [0.5, 0.8]
    assert ctx.report["missing"] == 1


def test_rule_on_an_empty_column_is_an_error() -> None:
    with pytest.raises(PoolValueError, match="no trace has a pass_rate"):
        _keep(_pool([1, 2], pass_rate=[None, None]), by="pass_rate", min=0.5)
    with pytest.raises(PoolValueError, match="no trace has a difficulty"):
        _keep(_pool([None, None]), values=[1])


def test_bins_rank_problems_so_no_problem_is_split_and_each_counts_once() -> None:
    # p0..p5 of rising difficulty; p2 has five traces, one without a value: traces ranked one by one would put
    # p2's traces on both sides of the median and make the easy bin hold fewer problems than the hard one.
    problems = ["p0", "p1", "p2", "p2", "p2", "p2", "p2", "p3", "p4", "p5"]
    values = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, None, 0.6, 0.7, 0.8]
    frame = pd.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(10)],
            "problem_id": problems,
            "difficulty": pd.Series(values, dtype=object),
            "pass_rate": pd.Series([None] * 10, dtype=object),
        }
    )
    easy = apply(frame, "easy", Params(bins=2, bin=0), _ctx())
    hard = apply(frame, "hard", Params(bins=2, bin=1), _ctx())
    assert easy["problem_id"].unique().tolist() == ["p0", "p1", "p2"] and len(easy) == 7  # all of p2's traces
    assert hard["problem_id"].tolist() == ["p3", "p4", "p5"]
