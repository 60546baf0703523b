"""Adaptive sample budgets: where a checkpoint's second round of samples goes, and why its score stays unbiased.

With `eval.samples: {budget: B, first_round: f, max: M}` every checkpoint (trained cell or baseline) first draws
f samples of every problem. A second evaluation job per checkpoint then draws B x problems samples in all, less
the first round, spread over the problems by a Neyman-like rule: extra samples in proportion to the problem's
per-sample standard deviation sqrt(p (1 - p)), water-filled between f and M. A problem every checkpoint solves
(or fails) every time has sd near 0 and keeps little more than its first round; a problem solved half the time
gets the most. That minimises sum_j p_j (1 - p_j) / n_j, the sampling variance of a checkpoint's mean pass rate,
and so of every difference of arms, for the total spent.

Unbiasedness. A checkpoint's pass@1 is the mean over problems of the mean of all its samples of that problem.
That per-problem mean is unbiased for the problem's pass rate p_cj only if the number of samples n_cj is
independent of those samples' outcomes. So the allocation of checkpoint c is computed only from OTHER
checkpoints' first rounds (cross-fitting): the other seeds of c's arm where there are any (their difficulty
profile is the closest to c's), else a fixed few others (framework.sweep.plan.allocation_references); never
from c's own samples.
Given the checkpoint, n_cj is then a constant with respect to c's sampling, and every sample of c is an unbiased
draw of p_cj, so E[c_cj / n_cj] = p_cj. (A rule that looked at c's own first round would bias the plain mean:
for a two-stage rule whose second stage depends on the first, the Rao-Blackwell unbiased estimator is the first
round's mean alone, so the second round would buy nothing.) The other checkpoints are trained and sampled
independently of c -- each draws its own random stream (framework.sweep.plan.seed_offset; with one stream for
all, similar models' outcomes are correlated and a reference partly is c's own first round: in simulation a full
copy biased pass@1 by -0.19 pp) -- so using their outcomes costs nothing in bias; it costs only in how well the
allocation matches c's own difficulty profile. Round-2 samples draw seeds past every round-1 seed, so no draw repeats.

`allocate` is pure: the stage (framework.eval.stage) reads the counts, calls it, and stores the allocation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054
PRIOR = 0.5  # Jeffreys: a problem never solved in t samples reads as 0.5 / (t + 1), not as a certain 0


@dataclass(frozen=True)
class Allocation:
    """Samples per problem of one checkpoint, both rounds together, and what the rule projected."""

    total: np.ndarray  # samples per problem, first round included
    first_round: int
    projected_variance: float  # the sampling variance of the checkpoint's mean pass rate, at the estimated rates
    stopped_at_target: bool  # the target half-width was reached before the budget ran out

    @property
    def extra(self) -> np.ndarray:
        """Round-2 samples per problem."""
        return self.total - self.first_round


def smoothed_rates(correct: np.ndarray, total: np.ndarray, prior: float = PRIOR) -> np.ndarray:
    """Per-problem pass rates from pooled counts, pulled off 0 and 1 so that a problem the others always solve
    or always fail still has a small spread (it keeps its first round and little more, never nothing)."""
    correct, total = np.asarray(correct, float), np.asarray(total, float)
    return (correct + prior) / (total + 2 * prior)


def sampling_variance(rates: np.ndarray, total: np.ndarray) -> float:
    """Variance of a checkpoint's mean pass rate over problems from sampling alone: sum p (1 - p) / n / N^2."""
    rates, total = np.asarray(rates, float), np.asarray(total, float)
    return float((rates * (1 - rates) / total).sum() / len(rates) ** 2)


def variance_target(half_width: float, seeds_per_arm: int) -> float:
    """The per-checkpoint sampling variance at which the sampling part of the 95% half-width of a difference of
    two arms (each the mean of `seeds_per_arm` checkpoints like this one) equals `half_width`:
    Z95 * sqrt(2 v / seeds) = half_width."""
    return seeds_per_arm * (half_width / Z95) ** 2 / 2


def _fill(sd: np.ndarray, lam: float, low: int, high: int) -> np.ndarray:
    return np.clip(lam * sd, low, high)


def _lambda_for_total(sd: np.ndarray, total: float, low: int, high: int) -> float:
    """The scale at which the water-filled allocation sums to `total` (bisection: the sum grows with it)."""
    lo, hi = 0.0, 1.0
    while _fill(sd, hi, low, high).sum() < total:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _fill(sd, mid, low, high).sum() < total else (lo, mid)
    return hi


def _round(real: np.ndarray, total: int, low: int, high: int) -> np.ndarray:
    """Integers between low and high summing to `total`, each the floor of its real share or one more (the
    largest remainders first; ties to the earlier problem, so the result is deterministic)."""
    base = np.clip(np.floor(real + 1e-9), low, high).astype(np.int64)
    left = total - int(base.sum())
    if left > 0:
        order = np.lexsort((np.arange(len(real)), -(real - base)))
        order = [i for i in order if base[i] < high][:left]
        base[order] += 1
    return base


def allocate(
    rates: np.ndarray,
    *,
    first_round: int,
    budget: int,
    max_samples: int,
    max_variance: float | None = None,
) -> Allocation:
    """Samples per problem (both rounds) for a checkpoint whose problems are estimated to pass at `rates` (from
    OTHER checkpoints only: see the module docstring): budget x problems in all, each between first_round and
    max_samples, in proportion to sqrt(p (1 - p)) in between; fewer in all when `max_variance` (the sampling
    variance of the checkpoint's mean, see `variance_target`) is reached first."""
    rates = np.asarray(rates, float)
    if not first_round <= budget <= max_samples:
        raise ValueError(f"need first_round <= budget <= max, got {first_round}, {budget}, {max_samples}")
    if rates.ndim != 1 or len(rates) == 0 or ((rates <= 0) | (rates >= 1)).any():
        raise ValueError("need one smoothed rate strictly between 0 and 1 per problem")
    n = len(rates)
    sd = np.sqrt(rates * (1 - rates))
    budget_total = budget * n
    lam = _lambda_for_total(sd, budget_total, first_round, max_samples)
    total, stopped = budget_total, False
    if max_variance is not None and sampling_variance(rates, _fill(sd, lam, first_round, max_samples)) < max_variance:
        if sampling_variance(rates, np.full(n, float(first_round))) <= max_variance:
            lam_t = 0.0  # the first round alone reaches the target
        else:
            lo, hi = 0.0, lam
            for _ in range(100):
                mid = (lo + hi) / 2
                var = sampling_variance(rates, _fill(sd, mid, first_round, max_samples))
                lo, hi = (lo, mid) if var <= max_variance else (mid, hi)
            lam_t = hi
        total = min(budget_total, int(np.ceil(_fill(sd, lam_t, first_round, max_samples).sum() - 1e-9)))
        lam, stopped = lam_t, True
    counts = _round(_fill(sd, lam, first_round, max_samples), total, first_round, max_samples)
    if stopped:  # rounding may leave it just short of the target: one more sample where it helps most, until not
        var = rates * (1 - rates)
        while sampling_variance(rates, counts) > max_variance and counts.sum() < budget_total:
            gain = np.where(counts < max_samples, var / (counts * (counts + 1.0)), -1.0)
            counts[int(np.argmax(gain))] += 1
    return Allocation(counts, first_round, sampling_variance(rates, counts), stopped)


def pooled_counts(
    counts: Mapping[str, tuple[Sequence[int], Sequence[int]]], keys: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Correct and total per problem summed over the checkpoints `keys` (counts aligned on one problem order)."""
    correct = np.sum([np.asarray(counts[k][0]) for k in keys], axis=0)
    total = np.sum([np.asarray(counts[k][1]) for k in keys], axis=0)
    return correct, total


def checkpoint_allocation(
    counts: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    reference: Sequence[str],
    budget: Any,
    n_problems: int,
    *,
    max_variance: float | None = None,
) -> Allocation:
    """A checkpoint's allocation from the first rounds of the checkpoints in `reference` alone (the plan picks
    them, never the checkpoint itself: framework.sweep.plan.allocation_references); `counts`: checkpoint ->
    (correct, total) per problem in one order; `budget`: a SampleBudget. No reference (a sweep of one checkpoint)
    reads every problem alike: a uniform allocation."""
    correct, total = pooled_counts(counts, reference) if reference else (np.zeros(n_problems), np.zeros(n_problems))
    if len(correct) != n_problems:
        raise ValueError(f"counts of {len(correct)} problems for a benchmark of {n_problems}")
    return allocate(
        smoothed_rates(correct, total),
        first_round=budget.first_round,
        budget=budget.budget,
        max_samples=budget.max,
        max_variance=max_variance,
    )


def round2_seeds(base_seed: int, n_problems: int, first_round: int, extra: Sequence[int]) -> list[int]:
    """The first sampling seed of each problem's round-2 request: past round 1's seeds (which run from base_seed to
    base_seed + problems x first_round, see framework.engines.sample_seed), each problem's run of `extra` seeds
    after the previous problem's, so that no two samples of a checkpoint share a seed."""
    start = base_seed + n_problems * first_round
    offsets = np.concatenate([[0], np.cumsum(np.asarray(extra, dtype=np.int64))[:-1]])
    return [int(start + o) for o in offsets]
