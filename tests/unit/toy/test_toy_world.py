"""Toy world: determinism, problems, splits, and the pool/benchmark layouts other stages read."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from framework.toy import (
    STYLES,
    all_problems,
    benchmark_rows,
    make_world,
    pool_rows,
    render_trace,
    split_problems,
    tokenizer_corpus,
    vocabulary,
)
from framework.toy.world import BENCHMARK_COLUMNS, POOL_COLUMNS

BOXED = re.compile(r"\\boxed\s*\{\s*([^{}]*?)\s*\}")


def last_boxed(text: str) -> str | None:
    found = BOXED.findall(text)
    return found[-1] if found else None


@pytest.fixture(scope="module")
def world():
    return make_world(0)


def test_world_is_a_function_of_its_seed(world):
    assert make_world(0) == world
    assert make_world(1).f != world.f
    assert make_world(0, n_values=32) != world


def test_f_and_g_are_derangements_that_never_agree(world):
    n = world.n_values
    for table in (world.f, world.g):
        assert sorted(table) == list(range(n))
        assert all(table[i] != i for i in range(n))
    assert all(a != b for a, b in zip(world.f, world.g))


def test_too_few_values_is_refused():
    with pytest.raises(ValueError, match="n_values"):
        make_world(0, n_values=4)


def test_problems_cover_every_start_value_and_hop_count(world):
    problems = all_problems(world)
    assert len(problems) == 2 * 4 * 64
    assert len({p.problem_id for p in problems}) == len(problems)
    p = next(p for p in problems if p.problem_id == "f-x9-k3")
    assert p.text == "let x = 9 . Apply f to x 3 times ."
    assert p.answer == world.f[world.f[world.f[9]]]


def test_splits_are_disjoint_deterministic_and_stratified(world):
    splits = split_problems(world, seed=0)
    assert split_problems(world, seed=0) == splits
    assert {k: len(v) for k, v in splits.items()} == {"train": 64, "dev": 100, "test": 200}
    ids = [{p.problem_id for p in v} for v in splits.values()]
    assert sum(map(len, ids)) == len(set().union(*ids))
    for name, problems in splits.items():
        counts = Counter((p.fn, p.k) for p in problems)
        assert len(counts) == 8 and max(counts.values()) - min(counts.values()) <= 1, name
    assert split_problems(world, seed=1)["test"] != splits["test"]


def test_growing_the_train_split_never_moves_the_test_split(world):
    small = split_problems(world, n_train=16)
    large = split_problems(world, n_train=200)
    assert small["test"] == large["test"] and small["dev"] == large["dev"]
    assert {p.problem_id for p in small["train"]} < {p.problem_id for p in large["train"]}


def test_overfull_stratum_is_refused(world):
    with pytest.raises(ValueError, match="stratum"):
        split_problems(world, n_train=64, n_dev=100, n_test=200, fns=("f",))


def test_pool_rows_have_the_documented_columns_and_grade_as_intended(world):
    rows = pool_rows(world)
    assert len(rows) == 64 * len(STYLES)
    assert all(tuple(row) == POOL_COLUMNS for row in rows)
    assert Counter(r["source"] for r in rows) == dict.fromkeys(STYLES, 64)
    assert {r["topic"] for r in rows} == {"f", "g"} and {r["difficulty"] for r in rows} == {2, 3, 4, 5}
    for row in rows:
        assert isinstance(row["expected_answer"], str) and isinstance(row["difficulty"], int)
        right = last_boxed(row["trace"]) == row["expected_answer"]
        assert right == (row["source"] != "long_cot_wrong"), row
    assert pool_rows(world) == rows


def test_benchmark_is_disjoint_from_the_pool_and_balanced(world):
    rows = benchmark_rows(world)
    assert len(rows) == 200 and all(tuple(r) == BENCHMARK_COLUMNS for r in rows)
    assert Counter(r["subset_for_metrics"] for r in rows) == {f"k={k}": 50 for k in (2, 3, 4, 5)}
    pool_ids = {r["problem_id"] for r in pool_rows(world, n_problems=200)}
    dev_ids = {r["id"] for r in benchmark_rows(world, split="dev")}
    test_ids = {r["id"] for r in rows}
    assert not pool_ids & test_ids and not dev_ids & test_ids and not pool_ids & dev_ids
    by_id = {p.problem_id: p for p in all_problems(world)}
    assert all(r["expected_answer"] == str(by_id[r["id"]].answer) for r in rows)
    limited = benchmark_rows(world, limit=16)
    assert limited == rows[:16] and len({r["subset_for_metrics"] for r in limited}) == 4


def test_benchmark_rejects_an_unknown_split(world):
    with pytest.raises(ValueError, match="split"):
        benchmark_rows(world, split="train")


def test_boxed_answers_extract_to_the_plain_number(world):
    problem = all_problems(world)[0]
    for style in STYLES:
        trace, answer = render_trace(world, problem, style)
        assert last_boxed(trace) == str(answer)


def test_vocabulary_covers_everything_the_world_emits(world):
    vocab = set(vocabulary(world))
    assert vocabulary(world) == sorted(vocab)
    assert {str(v) for v in range(world.n_values)} | {"\\boxed", "{", "}", "wait", "let", "f", "g"} <= vocab
    seen = set()
    for problem in all_problems(world):
        seen |= set(problem.text.split())
        for style in STYLES:
            for seed in range(3):
                seen |= set(render_trace(world, problem, style, rng=random.Random(seed))[0].split())
    assert seen <= vocab
    assert all(w.strip() == w and w for w in vocab)
    assert len(vocab) < 256  # small enough for the tiny model's word-level embedding table
    assert " ".join(tokenizer_corpus(world)).split() and set(" ".join(tokenizer_corpus(world)).split()) == vocab
