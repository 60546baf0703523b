"""Statistics by simulation: intervals must cover known truths at their nominal rate and the headline test must
reject equal arms at its level -- in the designs a study of 20-example fine-tunes meets -- plus hand-checked cases of
the variance components and of the effect and comparison tables.

Tolerances. A coverage estimated from R independent repetitions has binomial standard error
sqrt(0.95 * 0.05 / R): 0.0040 over the 36 designs x 300 repetitions pooled, so [0.94, 0.96] is +-2.5 standard
errors; per design (R = 300, 0.0126) the floor 0.895 is 2.9 below the 93.5% of the hardest design (2 seeds, strong seed effects: 92.9-95% at 2,000 repetitions), while a method that ignores a level or
counts one twice (the failures that matter: 75-92% or 98-99.9%) lands outside. The headline test's size has the
same standard errors; [0.04, 0.06] pooled and 0.095 per design. The random streams are seeded, so the tests are
also deterministic. benchmarks/statistics.py runs the same designs at 3,000 repetitions each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from framework.report.stats import (
    Arm,
    ArmCounts,
    align,
    compare_arms,
    holm,
    problem_counts,
    sign_flip_pvalue,
)
from framework.variance import MIN_SEED_DF, crossed_design
from tests.unit.report.simulation import DESIGNS, Design, simulate


def simulate_arm(
    rng: np.random.Generator, problem_logits: np.ndarray, shift: float, seeds: int, seed_sd: float, k: int
):
    """Pass rates logistic in (arm shift + seed effect + problem difficulty); K binomial samples per cell."""
    seed_effects = rng.normal(0.0, seed_sd, seeds)
    p = expit(shift + seed_effects[:, None] + problem_logits[None, :])
    total = np.full(p.shape, k)
    return ArmCounts(rng.binomial(total, p), total)


def test_intervals_cover_and_the_headline_test_holds_its_size_in_every_design():
    """Competition-math problems (Beta(0.3, 0.3) pass rates), 60 and 256 problems, 2/3/5 seeds, seed effects of
    0, 0.3 and 0.8 on the logit scale, 4 and 16 samples: the treated arm's interval and the difference's cover
    their truths, and equal arms whose seeds differ are called different at the test's level. The 2-seed designs
    here pool the seed variance over four arms (4 degrees of freedom); with fewer see the test after next."""
    results = {d: simulate(d, 300) for d in DESIGNS}
    for d, r in results.items():
        assert r.generalized == 1.0, d
        assert r.arm_cover >= 0.895 and r.diff_cover >= 0.895 and r.null_reject <= 0.095, (str(d), r)
    pooled = {k: np.mean([getattr(r, k) for r in results.values()]) for k in ("arm_cover", "diff_cover", "null_reject")}
    assert 0.94 <= pooled["arm_cover"] <= 0.96 and 0.94 <= pooled["diff_cover"] <= 0.96, pooled
    assert 0.04 <= pooled["null_reject"] <= 0.06, pooled
    # with no seed variance the truncated arm x problem term once made the test conservative: its two mean squares'
    # noise collapsed the degrees of freedom (3.25% pooled over these same sweeps; 3.86% counting the term itself)
    no_seed = [r.null_reject for d, r in results.items() if d.seed_sd == 0.0]
    assert np.mean(no_seed) >= 0.035, no_seed


def test_skewed_difficulty_arms_far_apart_and_two_arms_of_three_seeds():
    """Harder benchmarks (Beta(0.2, 0.6): most problems rarely solved); arms far apart in accuracy (two near 0%,
    one near 100%) pooled with the tested ones -- pooling the seed variance of pass@1 itself let them shrink the
    others' and the test rejected 8-11% of true nulls; and the smallest design that pools enough seed variance
    with two arms (3 seeds each: 4 degrees of freedom)."""
    designs = [Design(256, 3, sd, 16, beta=(0.2, 0.6)) for sd in (0.3, 0.8)]
    designs += [Design(256, s, 0.8, 16, others=(-5.0, -5.0, 3.0)) for s in (2, 3)]
    designs += [Design(p, 3, sd, 4, arms=2) for p in (60, 256) for sd in (0.3, 0.8)]
    for d in designs:
        r = simulate(d, 400)
        assert r.arm_cover >= 0.91 and r.diff_cover >= 0.91, (str(d), r)
        if d.arms > 2:
            assert r.null_reject <= 0.085, (str(d), r)


def test_two_arms_of_two_seeds_speak_for_these_fine_tunes_only_and_say_why():
    """Two or three arms of two seeds: the pooled seed variance rests on 2 or 3 degrees of freedom, and intervals
    over training runs covered 92-94% (tests rejected 6-8%) when seeds dominate. The report does not print
    those: its intervals are over problems for these fine-tunes, labelled so, with a note that says what to add."""
    rng = np.random.default_rng(1)
    q = rng.normal(0, 1.5, 60)
    arms = [
        Arm("a", {"f": "a"}, simulate_arm(rng, q, 0.0, 2, 0.8, 4)),
        Arm("b", {"f": "b"}, simulate_arm(rng, q, 0.0, 2, 0.8, 4)),
    ]
    assert MIN_SEED_DF == 4
    cmp = compare_arms(arms, {"f": ["a", "b"]}, {"f": "a"}, n_perm=200)
    assert set(cmp.arms["over"]) == {"problem"} and set(cmp.effects["over"]) == {"problem"}
    assert any("rests on 2 degree(s) of freedom" in n and "Add a seed" in n for n in cmp.notes)
    assert cmp.effects.iloc[0]["share_seeds"] == 0.0 and cmp.effects["p_value"].isna().all()
    assert cmp.effects["p_checkpoints"].notna().all()  # what the design can say: these checkpoints differ or not
    arms.append(Arm("c", {"f": "c"}, simulate_arm(rng, q, 0.0, 2, 0.8, 4)))
    cmp = compare_arms(arms, {"f": ["a", "b", "c"]}, {"f": "a"}, n_perm=200)
    assert any("rests on 3 degree(s) of freedom" in n for n in cmp.notes)
    # a fourth arm brings the pool to 4 degrees of freedom: the intervals speak for training runs again
    arms.append(Arm("d", {"f": "d"}, simulate_arm(rng, q, 0.0, 2, 0.8, 4)))
    cmp = compare_arms(arms, {"f": ["a", "b", "c", "d"]}, {"f": "a"}, n_perm=200)
    assert set(cmp.arms["over"]) == {"seed+problem"} and not any("degree(s) of freedom" in n for n in cmp.notes)


def test_holm_keeps_the_family_wise_error_over_three_null_effects():
    """Four arms, no true effect, seed effects of 0.3: the old first p column (sign-flip over problems,
    conditional on the checkpoints) made at least one Holm-adjusted false call in 30% of sweeps; the headline
    test's must stay at most 5% (+2.4 standard errors of 300 sweeps)."""
    rng = np.random.default_rng(3)
    factors, refs = {"f": ["r", "x", "y", "z"]}, {"f": "r"}
    false_calls = checkpoint_calls = 0
    for _ in range(300):
        q = rng.normal(0, 2.0, 60)
        arms = [Arm(n, {"f": n}, simulate_arm(rng, q, 0.0, 3, 0.3, 16)) for n in factors["f"]]
        eff = compare_arms(arms, factors, refs, n_perm=200).effects
        false_calls += (eff["p_holm"] < 0.05).any()
        checkpoint_calls += (holm(eff["p_checkpoints"].to_numpy()) < 0.05).any()
    assert false_calls / 300 <= 0.05 + 0.03, false_calls
    assert checkpoint_calls / 300 > 0.15, checkpoint_calls  # the conditional test would have, as reported


def test_an_arm_left_with_one_seed_borrows_the_pooled_seed_variance():
    """A trained arm whose other seeds failed has no spread of its own: it takes the seed variance pooled over
    the arms with several (a difference against a 3-seed arm covered 83% without it)."""
    rng = np.random.default_rng(7)
    mu, problem_sd, delta, seed_sd, problems, samples = 0.3, 1.5, 0.6, 0.3, 30, 8
    v = problem_sd * rng.standard_normal(2_000_000)
    u1, u2 = seed_sd * rng.standard_normal((2, v.size))
    truth_diff = float((expit(mu + delta + u1 + v) - expit(mu + u2 + v)).mean())
    reps, hits = 1000, 0
    for _ in range(reps):
        difficulty = rng.normal(0.0, problem_sd, problems)
        treated = simulate_arm(rng, difficulty, mu + delta, 1, seed_sd, samples)
        others = [simulate_arm(rng, difficulty, mu, 3, seed_sd, samples) for _ in range(2)]
        d = crossed_design([treated, *others])
        assert d.borrowed.tolist() == [True, False, False]
        low, high = d.contrast([1.0, -1.0, 0.0]).interval()
        hits += low <= truth_diff <= high
    assert 0.93 <= hits / reps <= 0.97, hits / reps
    # a baseline (not trained) and a sweep of one seed per arm (nothing to pool) stay conditional on the run
    lone = crossed_design([treated, treated])
    assert not lone.borrowed.any() and lone.over == ("problem",)
    base = crossed_design([treated, *others], trained=[False, True, True])
    assert not base.borrowed.any() and base.contrast([1.0, 0.0, 0.0]).parts["seeds"] == 0.0


def test_each_level_carries_its_own_variance_once():
    rng = np.random.default_rng(3)
    total = np.full((1, 50), 10)
    one_run = ArmCounts(rng.binomial(total, 0.4), total)
    p = one_run.rates[0]
    # one run on fixed problems: only the binomial noise of a mean of 50 Binomial(10, p_j)/10 is left
    fixed = crossed_design([one_run], generalize=()).contrast([1.0])
    assert fixed.variance == pytest.approx((p * (1 - p) / 9).sum() / 50**2)
    assert fixed.share("samples") == pytest.approx(1.0) and fixed.df == np.inf
    # problems: the unbiased variance of a mean of 50 problem rates (which already hold their sampling noise)
    assert crossed_design([one_run]).contrast([1.0]).variance == pytest.approx(p.var(ddof=1) / 50)

    # seeds x problems with additive effects and no interaction: each level gets exactly its main effect
    seed_eff, problem_eff = np.array([0.0, 0.2, 0.1, 0.3]), np.linspace(0.0, 0.5, 11)
    additive = ArmCounts(np.round((seed_eff[:, None] + problem_eff[None, :]) * 20), np.full((4, 11), 20))
    c = crossed_design([additive, additive]).contrast([1.0, 0.0])  # two arms: 6 degrees of freedom to pool
    assert c.variance == pytest.approx(seed_eff.var(ddof=1) / 4 + problem_eff.var(ddof=1) / 11)
    assert c.parts["seeds"] + c.parts["samples"] == pytest.approx(seed_eff.var(ddof=1) / 4)
    # Satterthwaite: a seed part on 6 degrees of freedom and a problem part on 10
    vs, vp = seed_eff.var(ddof=1) / 4, problem_eff.var(ddof=1) / 11
    assert c.df == pytest.approx((vs + vp) ** 2 / (vs**2 / 6 + vp**2 / 10))
    # one arm of 4 seeds: 3 degrees of freedom are too few, and the interval is for these fine-tunes
    assert crossed_design([additive]).over == ("problem",)
    # a difference of two arms with the same problem effects: the problems cancel, the seeds stay
    twin = ArmCounts(additive.correct[::-1], additive.total)
    diff = crossed_design([additive, twin]).contrast([1.0, -1.0])
    assert diff.parts["problems"] == pytest.approx(0.0) and diff.variance == pytest.approx(2 * vs)
    # pure interaction: the seed means are equal, so the seed level carries nothing
    crossed = ArmCounts(np.array([[10, 0, 10, 0], [0, 10, 0, 10]]), np.full((2, 4), 10))
    design = crossed_design([crossed] * 4)  # 4 degrees of freedom: the seeds are pooled
    assert "seed" in design.over and np.allclose(design.seed_var, 0.0)
    # seeds only, problems fixed: the variance of a mean of S seed means, on t(S-1) -- pooled over two arms
    seeds_only = crossed_design([additive, additive], generalize=("seed",)).contrast([1.0, 0.0])
    assert seeds_only.variance == pytest.approx(seed_eff.var(ddof=1) / 4) and seeds_only.df == pytest.approx(6)
    assert seeds_only.quantile() == pytest.approx(2.447, abs=1e-3)  # t(6)
    with pytest.raises(ValueError, match="unknown level"):
        crossed_design([one_run], generalize=("problems",))


def test_doubling_seeds_samples_or_problems_narrows_what_it_should():
    rng = np.random.default_rng(4)
    q = rng.normal(0, 1.5, 200)
    noisy_seeds = crossed_design([simulate_arm(rng, q, 0.0, 3, 1.0, 64) for _ in range(3)])
    assert noisy_seeds.contrast([1.0, -1.0, 0.0]).narrows_most() == "seeds"
    few_samples = crossed_design([simulate_arm(rng, q, 0.0, 5, 0.0, 1) for _ in range(3)])
    c = few_samples.contrast([1.0, -1.0, 0.0])
    # pure sampling noise: twice the samples, problems or seeds each halve it; samples cost least
    assert c.share("samples") == pytest.approx(1.0) and c.narrows_most() == "samples"
    assert c.doubled["samples"] < c.variance and c.doubled["problems"] <= c.variance


def test_sign_flip_test_rejects_identical_arms_at_its_level_and_detects_a_real_difference():
    rng = np.random.default_rng(7)
    n_tests, problems, k = 2000, 40, 8
    null_p, alt_p = [], []
    for _ in range(n_tests):
        logits = rng.normal(0.0, 1.5, problems)
        a = rng.binomial(k, expit(logits)) / k
        b = rng.binomial(k, expit(logits)) / k
        null_p.append(sign_flip_pvalue(a - b, n_perm=1000, rng=rng))
    for _ in range(200):
        logits = rng.normal(0.0, 1.5, problems)
        a = rng.binomial(k, expit(logits + 0.8)) / k
        b = rng.binomial(k, expit(logits)) / k
        alt_p.append(sign_flip_pvalue(a - b, n_perm=1000, rng=rng))
    fpr = float(np.mean(np.array(null_p) <= 0.05))
    assert 0.035 <= fpr <= 0.065, fpr
    assert np.mean(np.array(alt_p) <= 0.05) > 0.8  # the test is not trivially conservative


def test_sign_flip_exact_enumeration_matches_hand_counts():
    # all four differences positive: only the all-plus and all-minus patterns reach |mean| = 1 -> 2/16
    assert sign_flip_pvalue(np.ones(4)) == pytest.approx(2 / 16)
    # (1, 1, 1, -1): |mean| >= 0.5 for the patterns with 3 or 4 equal signs after flipping: 2 + 8 = 10 of 16
    assert sign_flip_pvalue(np.array([1.0, 1.0, 1.0, -1.0])) == pytest.approx(10 / 16)
    assert sign_flip_pvalue(np.zeros(50)) == 1.0
    # Monte Carlo branch agrees with the exact one on a case both can do
    d = np.random.default_rng(1).normal(0.3, 1.0, 16)
    exact = sign_flip_pvalue(d)
    mc = sign_flip_pvalue(d, n_perm=200_000, exact_max=0, rng=2)
    assert mc == pytest.approx(exact, abs=0.005)


def test_holm_adjustment():
    adjusted = holm([0.01, 0.04, 0.03, float("nan")])
    assert np.allclose(adjusted[:3], [0.03, 0.06, 0.06]) and np.isnan(adjusted[3])


def _arm(arm_id: str, levels: dict[str, str], rates: list[float], k: int = 10, seeds: int = 1) -> Arm:
    correct = np.tile(np.round(np.array(rates) * k).astype(int), (seeds, 1))
    return Arm(arm_id, levels, ArmCounts(correct, np.full(correct.shape, k)))


def test_factorial_effects_average_over_the_other_factor_and_pairs_point_away_from_the_reference():
    factors = {"source": ["qwq", "human"], "keywords": ["keep", "mask"]}
    refs = {"source": "qwq", "keywords": "keep"}
    arms = [
        _arm("qwq,keep", {"source": "qwq", "keywords": "keep"}, [0.8, 0.6, 0.4, 0.2]),
        _arm("qwq,mask", {"source": "qwq", "keywords": "mask"}, [0.7, 0.5, 0.3, 0.1]),
        _arm("human,keep", {"source": "human", "keywords": "keep"}, [0.4, 0.3, 0.2, 0.1]),
        _arm("human,mask", {"source": "human", "keywords": "mask"}, [0.4, 0.2, 0.2, 0.0]),
        Arm("baseline=base", {}, ArmCounts(np.full((1, 4), 1), np.full((1, 4), 10)), baseline=True),
    ]
    cmp = compare_arms(arms, factors, refs, n_perm=500)
    eff = cmp.effects.set_index(["factor", "level"])
    # source: ((0.25 - 0.5) + (0.2 - 0.4)) / 2 = -0.225; keywords: ((0.4 - 0.5) + (0.2 - 0.25)) / 2 = -0.075
    assert eff.loc[("source", "human"), "estimate"] == pytest.approx(-0.225)
    assert eff.loc[("keywords", "mask"), "estimate"] == pytest.approx(-0.075)
    assert (eff["n_pairs"] == 2).all()
    assert (eff["ci_low"] <= eff["estimate"]).all() and (eff["estimate"] <= eff["ci_high"]).all()
    assert len(cmp.pairs) == 4  # the baseline and the two diagonal pairs are not one-factor comparisons
    assert set(cmp.pairs["vs_level"]) == {"qwq", "keep"}
    row = cmp.pairs.set_index(["arm", "vs_arm"]).loc[("human,keep", "qwq,keep")]
    assert row["estimate"] == pytest.approx(-0.25)
    # one seed per arm: no headline test (it would be one of these checkpoints), the checkpoint test only
    assert cmp.pairs["p_value"].isna().all() and cmp.pairs["p_holm"].isna().all()
    assert cmp.pairs["p_checkpoints"].notna().all()
    levels = cmp.levels.set_index(["factor", "level"])
    assert levels.loc[("source", "qwq"), "estimate"] == pytest.approx(0.45)
    assert cmp.arms.set_index("arm").loc["baseline=base", "estimate"] == pytest.approx(0.1)
    # every trained arm against the base model, paired on problems: arm mean - 0.1
    vs_base = cmp.baselines.set_index("arm")
    assert list(vs_base["vs_baseline"].unique()) == ["baseline=base"] and len(vs_base) == 4
    assert vs_base.loc["qwq,keep", "estimate"] == pytest.approx(0.4)
    assert vs_base.loc["human,mask", "estimate"] == pytest.approx(0.1)
    assert vs_base.loc["qwq,keep", "p_checkpoints"] == pytest.approx(2 / 16)  # 4 problems higher: exact sign flip
    assert (vs_base["over"] == "problem").all()  # one seed per arm here: for these fine-tunes
    assert any(n.startswith("one training run per arm") for n in cmp.notes)


def test_an_arm_against_a_baseline_is_tested_over_problems_and_its_training_seeds():
    rng = np.random.default_rng(5)
    total = np.full((3, 40), 8)
    trained = [Arm(n, {"a": n}, ArmCounts(rng.binomial(total, 0.6), total)) for n in ("x", "y")]
    base = Arm("baseline=base", {}, ArmCounts(rng.binomial(total[:1], 0.3), total[:1]), baseline=True)
    cmp = compare_arms([*trained, base], {"a": ["x", "y"]}, {"a": "x"}, n_perm=2000)
    row = cmp.baselines.set_index("arm").loc["x"]
    assert row["estimate"] == pytest.approx(trained[0].counts.estimate() - base.counts.estimate())
    assert row["ci_low"] > 0 and row["p_value"] < 0.001 and row["over"] == "seed+problem"
    # Holm over the table's two rows: the smaller p doubled, the larger kept at least as large
    ps = cmp.baselines["p_value"].to_numpy()
    assert cmp.baselines["p_holm"].to_numpy() == pytest.approx([min(1, max(2 * ps.min(), p)) for p in ps])
    # the baseline is one fixed model: its own interval holds problems and samples only
    assert cmp.arms.set_index("arm").loc["baseline=base", "over"] == "problem"


def test_one_at_a_time_design_and_an_excluded_combination():
    factors = {"a": ["x", "y", "z"], "b": ["p", "q"]}
    refs = {"a": "x", "b": "p"}
    arms = [
        _arm("x,p", {"a": "x", "b": "p"}, [0.5, 0.5]),
        _arm("y,p", {"a": "y", "b": "p"}, [0.7, 0.5]),
        _arm("x,q", {"a": "x", "b": "q"}, [0.3, 0.5]),
    ]
    cmp = compare_arms(arms, factors, refs, n_perm=100)
    eff = cmp.effects.set_index(["factor", "level"])
    assert eff.loc[("a", "y"), "estimate"] == pytest.approx(0.1)
    assert eff.loc[("b", "q"), "estimate"] == pytest.approx(-0.1)
    assert np.isnan(eff.loc[("a", "z"), "estimate"]) and eff.loc[("a", "z"), "n_pairs"] == 0
    assert any("a=z" in n for n in cmp.notes)
    # A level's mean uses only the arms whose other levels occur at every level: b=p is the x,p arm alone (y,p
    # has no b=q partner), not the mean of x,p and y,p, which would fold a's effect into b's levels.
    levels = cmp.levels.set_index(["factor", "level"])
    assert levels.loc[("b", "p"), "estimate"] == pytest.approx(0.5) and levels.loc[("b", "p"), "n_arms"] == 1
    assert levels.loc[("b", "q"), "estimate"] == pytest.approx(0.4)
    assert levels.loc[("a", "y"), "estimate"] == pytest.approx(0.6) and levels.loc[("a", "x"), "n_arms"] == 1


def test_levels_never_evaluated_at_a_shared_combination_are_left_empty_not_confounded(tmp_path):
    """A 2x2 whose diagonal cells failed: a=x only at b=p, a=y only at b=q. Their means would be b's effect shown
    as a's (+0.3 here, where a has none); the table leaves them empty and says why."""
    from framework.report.plots import accuracy_by_level

    factors, refs = {"a": ["x", "y"], "b": ["p", "q"]}, {"a": "x", "b": "p"}
    arms = [_arm("x,p", {"a": "x", "b": "p"}, [0.4, 0.4]), _arm("y,q", {"a": "y", "b": "q"}, [0.7, 0.7])]
    cmp = compare_arms(arms, factors, refs, n_perm=50)
    levels = cmp.levels.set_index(["factor", "level"])
    assert levels["estimate"].isna().all() and (levels["n_arms"] == 0).all() and len(levels) == 4
    assert any(n.startswith("a: no combination") for n in cmp.notes)
    assert any(n.startswith("b: no combination") for n in cmp.notes)
    assert cmp.effects["n_pairs"].eq(0).all()
    assert accuracy_by_level(cmp.levels, cmp.arms, "toy", tmp_path / "levels.png") is not None


def test_an_excluded_cell_of_one_level_leaves_the_other_levels_effects_whole():
    """Excluding (z, q) unbalances factor a, but y still has both its twins: its effect averages over p and q."""
    factors = {"a": ["x", "y", "z"], "b": ["p", "q"]}
    refs = {"a": "x", "b": "p"}
    arms = [
        _arm("x,p", {"a": "x", "b": "p"}, [0.5, 0.5]),
        _arm("y,p", {"a": "y", "b": "p"}, [0.6, 0.6]),  # y - x at p: +0.1
        _arm("z,p", {"a": "z", "b": "p"}, [0.5, 0.5]),
        _arm("x,q", {"a": "x", "b": "q"}, [0.2, 0.2]),
        _arm("y,q", {"a": "y", "b": "q"}, [0.9, 0.9]),  # y - x at q: +0.7
    ]
    cmp = compare_arms(arms, factors, refs, n_perm=100)
    eff = cmp.effects.set_index(["factor", "level"])
    assert eff.loc[("a", "y"), "n_pairs"] == 2 and eff.loc[("a", "y"), "estimate"] == pytest.approx(0.4)
    assert eff.loc[("a", "z"), "n_pairs"] == 1 and eff.loc[("a", "z"), "estimate"] == pytest.approx(0.0)
    # the level means still use only the combinations every level of a has: b = p
    levels = cmp.levels.set_index(["factor", "level"])
    assert levels.loc[("a", "y"), "n_arms"] == 1 and levels.loc[("a", "y"), "estimate"] == pytest.approx(0.6)


def test_problem_counts_keep_repeated_ids_of_different_subsets_apart_and_align_intersects():
    samples = pd.DataFrame(
        {
            "problem_id": ["1", "1", "1", "1", "2"],
            "subset": ["aime24", "aime24", "aime25", "aime25", "aime25"],
            "correct": [True, False, True, True, None],
        }
    )
    counts = problem_counts(samples).set_index("key")
    assert counts.loc["aime24\x1f1"].tolist() == [1, 2]
    assert counts.loc["aime25\x1f1"].tolist() == [2, 2]
    assert counts.loc["aime25\x1f2"].tolist() == [0, 1]  # an ungraded sample counts as wrong, as in metrics
    keys, aligned = align({"a": counts.reset_index(), "b": counts.reset_index().iloc[:2]})
    assert len(keys) == 2 and aligned["a"][1].tolist() == aligned["b"][1].tolist()


def test_counts_validation():
    with pytest.raises(ValueError):
        ArmCounts(np.array([[3]]), np.array([[2]]))
    with pytest.raises(ValueError):
        ArmCounts(np.array([1, 2]), np.array([2, 2]))


def test_a_difference_the_problems_call_but_the_seeds_do_not_is_flagged() -> None:
    """Every problem a little better in the treated arm, seeds that scatter widely: the sign-flip p over problems
    is tiny, the interval (which carries the seed variation) spans 0, and the report must not let p stand alone."""
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.7, 40)
    offsets = np.array([-0.25, 0.0, 0.25])

    def arm(arm_id: str, level: str, shift: float, order: list[int]) -> Arm:
        rates = np.clip(base[None, :] + shift + offsets[order][:, None], 0, 1)
        correct = np.round(rates * 20).astype(int)
        return Arm(arm_id, {"keywords": level}, ArmCounts(correct, np.full(correct.shape, 20)))

    arms = [arm("keep", "keep", 0.0, [0, 1, 2]), arm("mask", "mask", 0.04, [2, 0, 1])]
    arms.append(arm("inject", "inject", 0.0, [1, 2, 0]))  # a third arm: 6 degrees of freedom of seed variance
    factors = {"keywords": ["keep", "mask", "inject"]}
    cmp = compare_arms(arms, factors, {"keywords": "keep"}, n_perm=2000)
    effect = cmp.effects.iloc[0]
    assert effect["p_checkpoints"] < 0.01 and effect["ci_low"] < 0 < effect["ci_high"]
    assert effect["p_value"] >= 0.05  # the headline test agrees with its interval
    flagged = [n for n in cmp.notes if "may be one of training runs" in n]
    assert len(flagged) >= 2 and flagged[0].startswith("keywords=mask vs keep: these checkpoints differ")


def test_an_arm_that_never_succeeds_gets_a_rule_of_three_note() -> None:
    arms = [_arm("keep", {"keywords": "keep"}, [0.5] * 30), _arm("mask", {"keywords": "mask"}, [0.0] * 30)]
    cmp = compare_arms(arms, {"keywords": ["keep", "mask"]}, {"keywords": "keep"}, n_perm=100)
    row = cmp.arms.set_index("arm").loc["mask"]
    assert row["ci_low"] == row["ci_high"] == 0.0
    assert any(n.startswith("mask: every sample is wrong") and "within 10.0% of 0%" in n for n in cmp.notes)
    assert not any(n.startswith("keep:") and "rule of three" in n for n in cmp.notes)


def test_seeds_that_vary_no_more_than_their_noise_are_said_to():
    """Seed means equal while cells scatter: the pooled seed effect is estimated below 0 and the report says so,
    rather than leaving a reader to wonder at a seed share of 0% from two seeds."""
    crossed = ArmCounts(np.array([[10, 0, 10, 0, 5, 5], [0, 10, 0, 10, 5, 5]]), np.full((2, 6), 10))
    arms = [Arm(n, {"f": n}, crossed) for n in ("a", "b", "c", "d")]
    cmp = compare_arms(arms, {"f": ["a", "b", "c", "d"]}, {"f": "a"}, n_perm=50)
    assert (cmp.arms["share_seeds"] == 0).all() and set(cmp.arms["over"]) == {"seed+problem"}
    assert any(n.startswith("the training seeds of each arm differ no more than") for n in cmp.notes)


def test_arms_that_never_vary_keep_the_design_s_seed_level():
    """Every arm at 0%: no seed shows a spread, but the design pools 4 degrees of freedom, so the rows still speak
    for training runs (with no seed variance) rather than silently turning into "these fine-tunes"."""
    zero = ArmCounts(np.zeros((2, 5), dtype=int), np.full((2, 5), 4))
    design = crossed_design([zero] * 4)
    assert design.over == ("seed", "problem") and design.seed_df == 4
