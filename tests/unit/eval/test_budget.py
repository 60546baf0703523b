"""The adaptive sample budget: totals, caps, determinism, the Neyman shape, the target, and cross-fitting (a
checkpoint's own first round never moves its allocation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework.eval.budget import (
    Z95,
    allocate,
    checkpoint_allocation,
    round2_seeds,
    sampling_variance,
    smoothed_rates,
    variance_target,
)
from framework.spec.models import SampleBudget


@given(
    rates=st.lists(st.floats(0.001, 0.999), min_size=1, max_size=60),
    first=st.integers(1, 6),
    more=st.integers(0, 20),
    cap=st.integers(0, 40),
)
def test_totals_and_caps(rates, first, more, cap):
    budget, top = first + more, first + more + cap
    alloc = allocate(np.array(rates), first_round=first, budget=budget, max_samples=top)
    assert alloc.total.sum() == budget * len(rates)  # the whole budget, exactly
    assert alloc.total.min() >= first and alloc.total.max() <= top
    assert (alloc.extra >= 0).all()


def test_neyman_shape_and_determinism():
    rates = smoothed_rates(np.array([0, 20, 10, 5, 10]), np.array([20, 20, 20, 20, 20]))
    a = allocate(rates, first_round=4, budget=16, max_samples=64)
    b = allocate(rates.copy(), first_round=4, budget=16, max_samples=64)
    assert (a.total == b.total).all()
    # always failed / always solved by the others: the first round and little more; a coin flip: the most
    assert a.total[0] == a.total[1] and a.total[0] < 8
    assert a.total[2] == a.total[4] == a.total.max()
    assert a.total[3] < a.total[2]
    # it beats spending the same total uniformly, at the rates it was given
    assert a.projected_variance < sampling_variance(rates, np.full(5, 16))


def test_max_caps_and_the_rest_flows_elsewhere():
    rates = np.array([0.5, 0.5, 0.02, 0.02])
    a = allocate(rates, first_round=2, budget=10, max_samples=12)
    assert a.total.tolist()[:2] == [12, 12] and a.total.sum() == 40


def test_target_half_width_stops_early_but_the_budget_caps():
    rates = np.full(100, 0.3)
    loose = allocate(rates, first_round=2, budget=32, max_samples=64, max_variance=variance_target(0.05, 3))
    assert loose.stopped_at_target and loose.total.sum() < 32 * 100
    # the projected half-width of an arm difference (3 seeds per arm) has reached the target
    assert Z95 * np.sqrt(2 * loose.projected_variance / 3) <= 0.05 + 1e-9
    tight = allocate(rates, first_round=2, budget=32, max_samples=64, max_variance=variance_target(1e-4, 3))
    assert not tight.stopped_at_target and tight.total.sum() == 32 * 100


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="first_round <= budget <= max"):
        allocate(np.array([0.5]), first_round=8, budget=4, max_samples=64)
    with pytest.raises(ValueError, match="strictly between"):
        allocate(np.array([0.0, 0.5]), first_round=1, budget=2, max_samples=4)


def test_cross_fitting_own_outcomes_never_move_own_allocation():
    rng = np.random.default_rng(0)
    budget = SampleBudget(budget=12, first_round=4, max=40)
    p = rng.beta(0.3, 0.3, size=50)
    counts = {k: (rng.binomial(4, p), np.full(50, 4)) for k in ("own", "a", "b")}
    before = checkpoint_allocation(counts, ["a", "b"], budget, 50).total
    counts["own"] = (4 - counts["own"][0], counts["own"][1])  # every own verdict flipped
    assert (checkpoint_allocation(counts, ["a", "b"], budget, 50).total == before).all()
    counts["a"] = (4 - counts["a"][0], counts["a"][1])  # a reference's outcomes do move it
    assert not (checkpoint_allocation(counts, ["a", "b"], budget, 50).total == before).all()


def test_no_reference_means_uniform():
    alloc = checkpoint_allocation({}, [], SampleBudget(budget=8, first_round=2, max=16), 10)
    assert alloc.total.tolist() == [8] * 10


def test_round2_seeds_follow_round1_and_never_overlap():
    extra = [3, 0, 5, 1]
    starts = round2_seeds(100, 4, 2, extra)
    drawn = [s + k for s, n in zip(starts, extra, strict=True) for k in range(n)]
    round1 = {100 + i * 2 + k for i in range(4) for k in range(2)}  # framework.engines.sample_seed
    assert len(set(drawn)) == len(drawn) == sum(extra)
    assert not round1 & set(drawn)


def test_allocation_is_unbiased_given_other_checkpoints():
    """Simulation: the per-problem mean of both rounds, with allocations from another checkpoint's first round,
    averages to the true pass rate; letting the checkpoint's own first round decide is biased."""
    rng = np.random.default_rng(1)
    p = rng.beta(0.5, 2.0, size=40)  # mostly hard: a self-allocation bias would not cancel between p and 1 - p
    budget = SampleBudget(budget=8, first_round=2, max=32)
    cross, own = [], []
    for _ in range(1500):
        first = rng.binomial(2, p)
        other = rng.binomial(2, p)
        for ref, out in ((other, cross), (first, own)):
            extra = checkpoint_allocation({"r": (ref, np.full(40, 2))}, ["r"], budget, 40).extra
            out.append(((first + rng.binomial(extra, p)) / (2 + extra)).mean())
    se = np.std(cross) / np.sqrt(len(cross))
    assert abs(np.mean(cross) - p.mean()) < 4 * se
    assert abs(np.mean(own) - p.mean()) > 4 * se  # the check can fail: a self-allocated mean is biased


def test_a_second_round_refuses_a_first_round_of_other_weights_or_other_problems(tmp_path):
    """A training rebuilt since the first round (its checkpoint pruned, then a new budget re-keyed round 2), or a
    hub dataset that moved between the rounds: both rounds would be two evaluations mixed into one."""
    import json
    from types import SimpleNamespace

    from framework.eval.stage import StaleFirstRound, _check_first_round
    from framework.store import MARKER, Store

    store = Store(tmp_path / "store")

    def done(stage: str, key: str, manifest: dict, metrics: dict | None = None) -> None:
        out = store.path(stage, key)
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text(json.dumps(manifest))
        (out / MARKER).write_text("{}")
        if metrics is not None:
            (out / "metrics.json").write_text(json.dumps(metrics))

    done("train", "t1", {"finished": "2026-01-01T00:00:00"})
    done("eval", "e1", {"input_builds": {"train/t1": "2026-01-01T00:00:00"}}, {"hub_data": {"commit": "a" * 40}})
    ctx = SimpleNamespace(store=store, input_dir=lambda job: store.path(*job.split("/")))
    _check_first_round(ctx, "e1", {"dataset": "d", "commit": "a" * 40})  # same weights, same problems
    _check_first_round(ctx, "e1", None)  # a local benchmark
    with pytest.raises(StaleFirstRound, match="pin the benchmark's `revision:`"):
        _check_first_round(ctx, "e1", {"dataset": "d", "commit": "b" * 40})
    done("train", "t1", {"finished": "2026-02-01T00:00:00"})  # retrained
    with pytest.raises(StaleFirstRound, match="earlier build of train/t1"):
        _check_first_round(ctx, "e1", None)


def test_counts_come_from_both_rounds_and_response_statistics_from_the_first():
    import pandas as pd

    from framework.eval.stage import _first_round_statistics
    from framework.grading.metrics import benchmark_metrics

    rows = []
    for pid, (first, second) in enumerate([(2, 6), (2, 0), (2, 2)]):  # problems drawn 8, 2 and 4 times
        for i in range(first + second):
            rows.append(
                {"problem_id": str(pid), "sample_index": i, "subset": "s", "correct": i % 2 == 0, "answer": "1",
                 "finish_reason": "length" if i >= first else "stop", "n_tokens": 10 + i, "round": 1 if i < first else 2}
            )  # fmt: skip
    samples = pd.DataFrame(rows)
    both = _first_round_statistics(samples, benchmark_metrics(samples, subset_col="subset"))
    assert both["n_samples"] == 14 and both["n_problems"] == 3 and both["s/n_samples"] == 14
    assert both["truncation_rate"] == 0.0  # the second round's truncated responses do not skew it
    assert "maj@2" in both and "maj@n" not in both
