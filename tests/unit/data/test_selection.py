"""Selection: filter order, sampling (seeded, paired, one trace per problem, stratified), token budget, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from framework.data.factors import correctness, diversity, keywords, length, source
from framework.data.selection import Selection, TooFewTraces, select
from framework.spec.pool import DEFAULT_REFLECTION_KEYWORDS

KW = list(DEFAULT_REFLECTION_KEYWORDS)
TOPICS = ["algebra", "geometry", "number_theory"]


def make_pool(problems: int = 30, traces_per_problem: int = 1) -> pd.DataFrame:
    """Problem p has `traces_per_problem` traces; source, topic, correctness and length vary with p and the trace."""
    rows = []
    for p in range(problems):
        for k in range(traces_per_problem):
            i = len(rows)
            rows.append(
                {
                    "trace_id": f"p{p:02d}-t{k}",
                    "problem_id": f"p{p:02d}",
                    "problem": f"problem {p}",
                    "trace": f"Step one. Wait, check {p}. Step two. Done {k}." if p % 2 else f"Plain {p}. Done {k}.",
                    "source": "a" if p % 3 else "b",
                    "topic": TOPICS[p % 3] if p % 10 else None,
                    "n_tokens": 100 + (37 * i) % 91,
                    "correct": p % 5 != 0,
                    "reflection_count": 1 if p % 2 else 0,
                    "free": i,
                }
            )
    return pd.DataFrame(rows)


def arm(*levels: tuple[str, str, dict]) -> list:
    modules = {"source": source, "correctness": correctness, "length": length, "diversity": diversity}
    modules["keywords"] = keywords
    return [(name, level, modules[name].FACTOR, params) for name, level, params in levels]


def run(pool: pd.DataFrame, levels: list, n: int = 8, seed: int = 0, **kwargs) -> Selection:
    return select(pool, levels, n, seed, reflection_keywords=KW, **kwargs)


def test_filters_run_in_factor_order_whatever_the_arm_order() -> None:
    levels = [("diversity", "stratified", {}), ("length", "short", {"max_tokens": 170}), ("source", "a", {})]
    first = run(make_pool(), arm(*levels))
    second = run(make_pool(), arm(*reversed(levels)))
    assert first.frame.equals(second.frame)
    assert [s["factor"] for s in first.report["filters"]] == ["source", "length", "diversity"]
    assert first.report["filters"] == second.report["filters"]
    counts = [(s["before"], s["after"]) for s in first.report["filters"]]
    assert counts[0] == (30, 20)
    assert counts[1][0] == 20 and counts[2][0] == counts[1][1]


def test_too_few_traces_names_the_step_and_counts() -> None:
    with pytest.raises(TooFewTraces, match=r"^after source=b: 10 traces left, need 12$") as info:
        run(make_pool(), arm(("source", "b", {}), ("correctness", "correct", {})), n=12)
    assert (info.value.step, info.value.level, info.value.have, info.value.need) == ("source", "b", 10, 12)
    with pytest.raises(TooFewTraces, match=r"^after correctness=incorrect: 6 traces left, need 7$"):
        run(make_pool(), arm(("correctness", "incorrect", {})), n=7)
    with pytest.raises(TooFewTraces, match=r"^after source=nope: 0 traces left, need 2 \(no trace has source 'nope'; "):
        run(make_pool(), arm(("source", "nope", {})), n=2)


def test_sampling_needs_distinct_problems() -> None:
    pool = make_pool(problems=5, traces_per_problem=3)
    with pytest.raises(TooFewTraces, match=r"^sampling: 5 distinct problems left \(15 traces\), need 6$"):
        run(pool, [], n=6)


def test_same_seed_same_sample_and_seeds_differ() -> None:
    pool = make_pool()
    a, b = run(pool, [], seed=3), run(pool, [], seed=3)
    assert a.frame.equals(b.frame)
    samples = {tuple(run(pool, [], seed=s).frame["trace_id"]) for s in range(5)}
    assert len(samples) == 5


def test_sample_ignores_pool_row_order() -> None:
    pool = make_pool(problems=10, traces_per_problem=3)
    shuffled = pool.sample(frac=1.0, random_state=7)
    shuffled.index = range(100, 130)
    assert run(shuffled, []).frame.equals(run(pool, []).frame)


def test_keep_and_delete_arms_are_paired() -> None:
    keep = run(make_pool(), arm(("source", "a", {}), ("keywords", "keep", {})), n=10)
    delete = run(make_pool(), arm(("source", "a", {}), ("keywords", "delete", {})), n=10)
    assert keep.frame["trace_id"].tolist() == delete.frame["trace_id"].tolist()
    changed = keep.frame["trace"] != delete.frame["trace"]
    assert changed.tolist() == (keep.frame["reflection_count"] > 0).tolist()
    assert changed.any()
    assert (delete.frame["reflection_count"] == 0).all()
    assert delete.report["transforms"][0]["report"]["traces_changed"] == int(changed.sum())


def test_arms_with_other_traces_of_the_same_problems_draw_the_same_problems() -> None:
    """The paper's source ablation: the same problems, traces by different authors. Every problem has one trace
    per source here; the two source arms must train on the same problems, and a narrower arm (correct traces
    only) on the problems of the broader one that it still holds."""
    rows = [
        {**r, "trace_id": f"{r['problem_id']}-{src}", "source": src, "trace": f"{src}: {r['trace']}"}
        for r in make_pool(40).to_dict("records")
        for src in ("human", "model")
    ]
    pool = pd.DataFrame(rows)
    for seed in range(5):
        human = run(pool, arm(("source", "human", {})), n=10, seed=seed).frame
        model = run(pool, arm(("source", "model", {})), n=10, seed=seed).frame
        assert list(human["problem_id"]) == list(model["problem_id"]), seed
        assert set(human["source"]) == {"human"} and set(model["source"]) == {"model"}
        correct = run(pool, arm(("source", "model", {}), ("correctness", "correct", {})), n=10, seed=seed).frame
        kept = [p for p in model["problem_id"] if p in set(pool.loc[pool["correct"], "problem_id"])]
        assert list(correct["problem_id"])[: len(kept)] == kept


def test_a_factor_drawing_numbers_does_not_shift_the_sample() -> None:
    drawn = run(make_pool(), arm(("diversity", "single_topic", {})), n=5)
    topic = drawn.report["filters"][0]["report"]["topic"]
    given = run(make_pool(), arm(("diversity", "single_topic", {"topic": topic})), n=5)
    assert drawn.frame.equals(given.frame)


def test_one_trace_per_problem_drawn_at_random() -> None:
    pool = make_pool(problems=12, traces_per_problem=3)
    picks = set()
    for seed in range(6):
        frame = run(pool, [], n=12, seed=seed).frame
        assert sorted(frame["problem_id"]) == [f"p{p:02d}" for p in range(12)]
        picks.add(tuple(sorted(frame["trace_id"])))
    assert len(picks) > 1  # not always the first trace of each problem


@pytest.mark.parametrize(("n", "sizes"), [(9, {3}), (10, {3, 4}), (12, {4})])
def test_stratified_spreads_evenly(n: int, sizes: set[int]) -> None:
    for seed in range(4):
        result = run(make_pool(), arm(("diversity", "stratified", {})), n=n, seed=seed)
        counts = result.frame["topic"].value_counts()
        assert set(counts) == sizes and len(counts) == 3
        assert result.report["sampling"]["strata"] == {str(k): int(v) for k, v in sorted(counts.items())}
        assert "_stratum" not in result.frame.columns


def test_stratified_fills_from_larger_strata_when_one_runs_out() -> None:
    pool = make_pool()
    pool.loc[pool["topic"] == "geometry", "topic"] = ["geometry"] * 2 + ["algebra"] * 7
    for seed in range(4):
        counts = run(pool, arm(("diversity", "stratified", {})), n=15, seed=seed).frame["topic"].value_counts()
        assert counts["geometry"] == 2
        assert sorted([counts["algebra"], counts["number_theory"]]) == [6, 7]


def test_token_budget_adds_or_drops_in_sampled_order() -> None:
    pool = make_pool()
    base = run(pool, [], n=8)
    total = int(base.frame["n_tokens"].sum())
    more = run(pool, [], n=8, token_budget=total + 300)
    assert more.frame["trace_id"].tolist()[:8] == base.frame["trace_id"].tolist()
    tokens = more.frame["n_tokens"].tolist()
    assert len(tokens) > 8 and sum(tokens) >= total + 300 > sum(tokens[:-1])
    fewer = run(pool, [], n=8, token_budget=total - 300)
    assert fewer.frame["trace_id"].tolist() == base.frame["trace_id"].tolist()[: len(fewer.frame)]
    next_tokens = base.frame["n_tokens"].iloc[len(fewer.frame)]
    assert sum(fewer.frame["n_tokens"]) <= total - 300 < sum(fewer.frame["n_tokens"]) + next_tokens
    assert fewer.report["token_budget"] == {
        "budget": total - 300,
        "total_tokens": int(fewer.frame["n_tokens"].sum()),
        "n": len(fewer.frame),
    }
    assert len(run(pool, [], n=8, token_budget=1).frame) == 1
    assert run(pool, [], n=8, token_budget=total).frame.equals(base.frame)
    # a budget the arm cannot reach with every problem it has: an error, not a silently smaller training set
    everything = int(pool.drop_duplicates("problem_id")["n_tokens"].sum()) * 10
    with pytest.raises(TooFewTraces, match=r"token budget: all \d+ problems left hold \d+ tokens, short of") as e:
        run(pool, [], n=8, token_budget=everything)
    assert e.value.step == "token_budget" and e.value.need == everything


def test_output_shape_and_transform_recount() -> None:
    result = run(make_pool(), arm(("keywords", "mask", {})), n=6, count_tokens=lambda ts: [len(t) for t in ts])
    frame = result.frame
    assert frame["example_index"].tolist() == list(range(6))
    assert frame.index.tolist() == list(range(6))
    assert set(make_pool().columns) <= set(frame.columns)
    reflective = frame["trace"].str.startswith("Step one. check")
    assert (frame.loc[reflective, "n_tokens"] == frame.loc[reflective, "trace"].str.len()).all()
    assert result.report["total_tokens"] == int(frame["n_tokens"].sum())


def test_params_are_validated() -> None:
    with pytest.raises(ValidationError):
        run(make_pool(), arm(("length", "short", {"max_tokens": 100, "bins": 2})))


def determinism_json() -> str:
    """What the cross-process test compares: a selection that exercises strata, duplicates and a transform."""
    pool = make_pool(problems=24, traces_per_problem=2)
    levels = arm(("keywords", "replace", {}), ("diversity", "stratified", {}), ("correctness", "any", {}))
    result = select(pool, levels, 9, 5, reflection_keywords=KW)
    return json.dumps({"frame": result.frame.to_json(), "report": result.report}, sort_keys=True)


def test_identical_across_processes_and_hash_seeds() -> None:
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_selection as t; "
    code += "sys.stdout.write(t.determinism_json())"
    outputs = []
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] == determinism_json()


def test_a_token_budget_matched_to_its_reference_keeps_transform_arms_paired() -> None:
    """short (matched to long's total tokens) x keywords keep/delete: the budget must not depend on the transform,
    or the two keyword arms would train on different problems."""
    from framework.data.stage import token_budget
    from framework.spec import spec_from_dict

    spec = spec_from_dict(
        {
            "name": "t",
            "model": {"name_or_path": "m/m"},
            "pool": [{"path": "p.jsonl"}],
            "n_examples": 6,
            "factors": {
                "length": {
                    "levels": {
                        "long": {"bins": 2, "bin": 1},
                        "short": {"bins": 2, "bin": 0, "match_total_tokens": True},
                    }
                },
                "keywords": {"levels": ["keep", "delete"]},
            },
        }
    )
    pool = make_pool(40)
    recount = lambda texts: [len(t) for t in texts]  # noqa: E731 -- a transform changes what a trace costs
    picked = {}
    for kw in ("keep", "delete"):
        config = [
            ["length", "length", "short", {"bins": 2, "bin": 0, "match_total_tokens": True}],
            ["keywords", "keywords", kw, {}],
        ]
        budget = token_budget(pool, config, spec, 0, reflection_keywords=KW, count_tokens=recount)
        levels = arm(("length", "short", {"bins": 2, "bin": 0}), ("keywords", kw, {}))
        picked[kw] = (
            budget,
            run(pool, levels, n=6, token_budget=budget, count_tokens=recount).frame["problem_id"].tolist(),
        )
    assert picked["keep"] == picked["delete"]
