"""Metrics: pass@k against brute force, maj@n and avg@n on hand-worked cases, order invariance, subset keys."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.grading.metrics import benchmark_metrics, majority_vote, pass_at_k, problem_table


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (c of them correct) that contain at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@st.composite
def n_c_k(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(1, 10))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@given(n_c_k())
def test_pass_at_k_equals_brute_force(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


@given(st.integers(1, 2000), st.data())
def test_pass_at_k_matches_binomials_for_large_n(n: int, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-9)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 0, 5) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0
    for bad in [(4, 1, 5), (4, 5, 1), (4, 1, 0), (0, 0, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


@pytest.mark.parametrize(
    ("answers", "correct", "expected"),
    [
        (["5", "5", "4"], [True, True, False], True),
        (["4", "5", "5"], [False, True, True], True),
        (["4", "4", "5"], [False, False, True], False),
        # Ties: the tied answer seen first wins.
        (["5", "4"], [True, False], True),
        (["4", "5"], [False, True], False),
        (["4", "5", "5", "4"], [False, True, True, False], False),
        (["5", "4", "4", "5"], [True, False, False, True], True),
        # Missing answers never win, however many there are.
        ([None, None, None, "5"], [False, False, False, True], True),
        ([None, None], [False, False], False),
        ([], [], False),
        # Votes count normalized answers: "1,000" and "1000" are one answer.
        (["1,000", "7", "1000"], [True, False, True], True),
        # One sample of the winning answer failed to grade (e.g. timed out): the answer still counts as correct.
        (["5", "5", "4"], [True, False, False], True),
    ],
)
def test_majority_vote(answers: list[str | None], correct: list[bool], expected: bool) -> None:
    assert majority_vote(answers, correct) is expected


def test_majority_vote_length_mismatch() -> None:
    with pytest.raises(ValueError):
        majority_vote(["1"], [True, False])


def frame(rows: list[tuple]) -> pd.DataFrame:
    columns = ["problem_id", "sample_index", "correct", "answer", "finish_reason", "n_tokens", "subset"]
    return pd.DataFrame(rows, columns=columns[: len(rows[0])])


HAND = frame(
    [
        # p1: 3 of 4 correct, majority "5" correct; one truncated response with no answer
        ("p1", 0, True, "5", "stop", 100, "aime24"),
        ("p1", 1, True, "5", "stop", 200, "aime24"),
        ("p1", 2, False, None, "length", 300, "aime24"),
        ("p1", 3, True, "5", "stop", 400, "aime24"),
        # p2: 2 of 4 correct, a 2-2 tie between "8" (seen first, wrong) and "9" (correct): maj@4 is wrong
        ("p2", 0, False, "8", "stop", 1000, "aime24"),
        ("p2", 1, True, "9", "stop", 1000, "aime24"),
        ("p2", 2, True, "9", "stop", 1000, "aime24"),
        ("p2", 3, False, "8", "stop", 1000, "aime24"),
        # p3: 0 of 4, all truncated, no answers
        ("p3", 0, False, None, "length", 4000, "hmmt"),
        ("p3", 1, False, None, "length", 4000, "hmmt"),
        ("p3", 2, False, None, "length", 4000, "hmmt"),
        ("p3", 3, False, None, "length", 4000, "hmmt"),
    ]
)


def test_problem_table_hand_worked() -> None:
    table = problem_table(HAND).set_index("problem_id")
    assert table.loc["p1", ["n", "c"]].tolist() == [4, 3]
    assert table["pass@1"].tolist() == [0.75, 0.5, 0.0]
    assert table["maj@n"].tolist() == [True, False, False]
    assert table["no_answer_rate"].tolist() == [0.25, 0.0, 1.0]
    assert table["truncation_rate"].tolist() == [0.25, 0.0, 1.0]
    assert table["mean_tokens"].tolist() == [250.0, 1000.0, 4000.0]


def test_benchmark_metrics_hand_worked() -> None:
    m = benchmark_metrics(HAND, ks=(1, 2, 4, 8))
    assert m["pass@1"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert m["pass@2"] == pytest.approx((1.0 + (1 - 1 / 6) + 0.0) / 3)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert "pass@8" not in m  # k > n is left out
    assert m["maj@4"] == pytest.approx(1 / 3)
    assert m["no_answer_rate"] == pytest.approx(5 / 12)
    assert m["truncation_rate"] == pytest.approx(5 / 12)
    assert m["mean_response_tokens"] == pytest.approx(np.mean(HAND["n_tokens"]))
    assert m["median_response_tokens"] == 1000.0
    assert m["n_problems"] == 3 and m["n_samples"] == 12
    assert "reflection_per_response" not in m
    # Per-subset keys carry the same metrics.
    assert m["aime24/pass@1"] == pytest.approx(0.625)
    assert m["aime24/maj@4"] == pytest.approx(0.5)
    assert m["hmmt/pass@1"] == 0.0 and m["hmmt/truncation_rate"] == 1.0
    overall = {k for k in m if "/" not in k}
    for subset in ("aime24", "hmmt"):
        assert {k.split("/", 1)[1] for k in m if k.startswith(f"{subset}/")} == overall


def test_reflections_and_missing_subset_column() -> None:
    df = HAND.drop(columns="subset").assign(reflection_count=range(12))
    m = benchmark_metrics(df)
    assert m["reflection_per_response"] == pytest.approx(5.5)
    assert not any("/" in k for k in m)
    assert "mean_reflections" in problem_table(df).columns


def test_uneven_sample_counts_name_maj_generically() -> None:
    m = benchmark_metrics(HAND.iloc[:-1], ks=(1, 4))
    assert "maj@n" in m and "pass@4" not in m


def test_repeated_problem_ids_across_subsets_stay_apart() -> None:
    df = frame([("1", 0, True, "3", "stop", 10, "aime24"), ("1", 0, False, "4", "stop", 10, "aime25")])
    m = benchmark_metrics(df)
    assert m["n_problems"] == 2 and m["aime24/pass@1"] == 1.0 and m["aime25/pass@1"] == 0.0


def test_invalid_input() -> None:
    with pytest.raises(ValueError, match="lack columns"):
        benchmark_metrics(HAND.drop(columns="n_tokens"))
    with pytest.raises(ValueError, match="duplicate"):
        benchmark_metrics(pd.concat([HAND, HAND.iloc[:1]]))


@st.composite
def sample_frames(draw: st.DrawFn) -> pd.DataFrame:
    n_problems = draw(st.integers(1, 6))
    n = draw(st.integers(1, 6))
    answers = st.one_of(st.none(), st.sampled_from(["1", "2", "3", "1,000", "1000"]))
    rows = []
    for p in range(n_problems):
        subset = draw(st.sampled_from(["a", "b"]))
        for i in range(n):
            answer = draw(answers)
            rows.append(
                (
                    f"p{p}",
                    i,
                    answer in ("1", "1000", "1,000"),
                    answer,
                    draw(st.sampled_from(["stop", "length"])),
                    draw(st.integers(1, 5000)),
                    subset,
                )
            )
    return frame(rows).assign(reflection_count=[draw(st.integers(0, 9)) for _ in rows])


@settings(max_examples=20, deadline=None)
@given(sample_frames(), st.randoms(use_true_random=False))
def test_invariant_to_sample_order(df: pd.DataFrame, rnd: random.Random) -> None:
    shuffled = df.sample(frac=1.0, random_state=rnd.randint(0, 2**31)).reset_index(drop=True)
    assert benchmark_metrics(shuffled, ks=(1, 2, 4)) == benchmark_metrics(df, ks=(1, 2, 4))
    pd.testing.assert_frame_equal(problem_table(shuffled), problem_table(df))


@settings(max_examples=20, deadline=None)
@given(sample_frames())
def test_pass_at_1_is_avg_at_n_and_bounds(df: pd.DataFrame) -> None:
    m = benchmark_metrics(df, ks=(1, 2, 3))
    per_problem = df.groupby("problem_id")["correct"].mean()
    assert m["pass@1"] == pytest.approx(per_problem.mean())
    ks = sorted(int(k.split("@")[1]) for k in m if k.startswith("pass@"))
    values = [m[f"pass@{k}"] for k in ks]
    assert values == sorted(values)  # pass@k never decreases in k
    assert all(0.0 <= v <= 1.0 for k, v in m.items() if k.endswith(("@1", "rate")))
