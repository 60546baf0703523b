"""The variance components `plan` projects onto a design: recovered from data of known components, and the power
they promise is the power the report's own test has."""

from __future__ import annotations

import numpy as np
import pytest

from framework.variance import ASSUMED, ArmCounts, Components, crossed_design, measured_components

SEED_SD, INTERACTION_SD = 0.03, 0.08


def additive_world(rng: np.random.Generator, problems: int, seeds: int, arms: int, k: int, delta: float = 0.0):
    """Rates additive in problem, arm x problem, seed and seed x problem parts (kept inside (0, 1)), k samples each;
    the second arm is shifted by `delta`. Returns ArmCounts per arm."""
    base = rng.uniform(0.3, 0.7, problems)
    out = []
    for a in range(arms):
        per_problem = base + rng.normal(0, INTERACTION_SD / np.sqrt(2), problems) + (delta if a == 1 else 0.0)
        rates = per_problem[None, :] + rng.normal(0, SEED_SD, (seeds, 1)) + rng.normal(0, 0.02, (seeds, problems))
        n = np.full(rates.shape, k)
        out.append(ArmCounts(rng.binomial(n, np.clip(rates, 0.0, 1.0)), n))
    return out


def test_components_are_recovered_from_data_of_known_components():
    rng = np.random.default_rng(0)
    arms = additive_world(rng, 3000, 8, 4, 16)
    c = measured_components(arms, [True] * 4, "test")
    assert c.seed == pytest.approx(SEED_SD**2, rel=0.5)  # 28 degrees of freedom: a loose check
    assert c.interaction == pytest.approx(INTERACTION_SD**2, rel=0.15)
    assert c.seed_x_problem == pytest.approx(0.02**2, rel=0.3)
    assert c.bernoulli == pytest.approx(float(np.mean([a.rates * (1 - a.rates) for a in arms])), rel=0.1)
    assert measured_components(arms, [False] * 4, "test") is None  # baselines only: nothing trained


def test_the_promised_power_is_the_power_of_the_reports_test():
    """Plan's detectable difference for a design, simulated: the report's t test finds a true difference of that
    size ~80% of the time (400 sweeps: +-2 standard errors is +-4 pp)."""
    truth = Components(INTERACTION_SD**2, SEED_SD**2, 0.02**2, 0.22, "truth")
    problems, samples, seeds, arms = 100, 8, 3, 3
    mde = truth.detectable(truth.pair(problems, samples, seeds, arms))
    assert 0.02 < mde < 0.2
    rng = np.random.default_rng(1)
    hits = sum(
        crossed_design(additive_world(rng, problems, seeds, arms, samples, delta=mde)).contrast([-1, 1, 0]).p_value()
        < 0.05
        for _ in range(400)
    )
    assert 0.72 <= hits / 400 <= 0.88, hits / 400


def test_projection_follows_the_design():
    more_seeds = ASSUMED.pair(256, 16, 6, 4)
    three = ASSUMED.pair(256, 16, 3, 4)
    assert more_seeds.variance < three.variance and three.doubled["seeds"] == pytest.approx(more_seeds.variance)
    # one seed per arm: no seed variance to estimate, so the report will not test; the projection still counts
    # the seed part, so that more seeds is what it names
    one = ASSUMED.pair(256, 16, 1, 4)
    assert one.variance > three.variance and ASSUMED.detectable(one) is None and one.narrows_most() == "seeds"
    # competition-sized benchmark, many samples: the seeds dominate and more seeds narrow most
    assert ASSUMED.pair(256, 64, 3, 6).narrows_most() == "seeds"
    # an AIME-sized benchmark with many seeds: the problems do
    assert ASSUMED.pair(30, 64, 10, 2).narrows_most() == "problems"


def test_no_detectable_difference_where_the_report_will_not_test():
    """Two arms of two seeds pool 2 degrees of freedom: the report will not test over training runs, so plan must
    not promise a difference -- even when the seed variance is 0 and the combined degrees of freedom would pass."""
    flat = Components(interaction=0.02, seed=0.0, seed_x_problem=0.0, bernoulli=0.15, source="test")
    assert flat.detectable(flat.pair(100, 4, 2, 2)) is None and flat.detectable(flat.pair(100, 4, 2, 3)) is None
    assert flat.detectable(flat.pair(100, 4, 2, 4)) is not None  # 4 degrees of freedom
