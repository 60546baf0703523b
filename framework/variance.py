"""Variance components of a crossed evaluation design, and what they say about any contrast of arms: its standard
error, degrees of freedom, where its variance comes from, and how it would shrink with more seeds, samples or
problems. The report's intervals and headline tests read it; `plan`'s power estimate reads it too, which is why it
is a shared piece rather than part of the report.

The design. An arm's accuracy on a benchmark comes from S training seeds x P problems, and for every (seed,
problem) n sampled responses graded right or wrong. The rate of cell (s, p) of arm a is

    r[a,s,p] = mu[a] + problem[p] + (arm x problem)[a,p] + seed[a,s] + (seed x problem)[a,s,p] + sampling[a,s,p]

with problems shared by every arm (paired) and seeds each arm's own (independent training runs). A contrast
theta = sum_a w[a] * pass@1[a] (one arm, a difference, a factor's marginal effect) is estimated by
sum_a w[a] * mean_{s,p} r[a,s,p]. Generalizing over problems and training runs, its variance is

    Var = var_p(c[p]) / P  +  sum_a w[a]^2 * V[a] / S[a]

where c[p] = sum_a w[a] * (true per-problem rate of arm a) and V[a] = var(seed) + (var(seed x problem) +
sampling) / P is the variance of one seed's pass@1 about the arm's mean. Method-of-moments (ANOVA) estimates,
unbiased in every term:

* V: each arm's per-seed means vary by a seed main effect plus the residual's share over P. The main effect is
  pooled over the trained arms (the same model and recipe; the arms differ in their data) on the logit scale --
  a seed shifts an arm's logits, which moves pass@1 by its slope mean p(1-p) -- with effective degrees of freedom
  up to sum(S-1), and the pool is not truncated: a 1-degree-of-freedom seed variance per arm, often estimated
  near 0 and truncated, made 2-seed differences cover 75% whenever it was (no seed part, no widening). Only an
  arm's V as a whole is kept at or above 0.
* var_p(c): the sample variance of the per-problem contrast over problems, less the seed-level noise it holds
  (each arm's two-way ANOVA residual over its S), truncated at 0. It enters the degrees of freedom as a term of
  its own size on P-1. Counting instead the two mean squares it is the difference of made the degrees of freedom
  collapse whenever they nearly cancel -- a small arm x problem interaction, as between arms that do not differ --
  and with the truncation's upward bias that made the test conservative: with no seed variance and 60 problems
  it rejected 2.1-3.8% of true nulls, 3.6-4.6% now (2,000-4,000 simulated sweeps per design), and difference
  intervals no longer cover above 96%.

The interval is estimate +- t(nu) * SE, nu by Welch-Satterthwaite over the terms, and the headline test is the
same t: p < alpha exactly when the 1-alpha interval excludes 0, and it generalizes over problems and training runs
like the interval does. A baseline is one fixed model: only its problems and samples vary. With one seed per arm
there is no seed variance to estimate: a contrast is then conditional on those fine-tunes; an arm with one seed
among arms with several takes the pooled V. A design whose seeds give the pool fewer than MIN_SEED_DF degrees
of freedom (counted from the design, sum(S-1), never from the estimates) does not pool either (see there): the
intervals then speak for these fine-tunes, and say so. Simulated coverage and size are checked in
tests/unit/report/test_stats.py.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "ArmCounts",
    "Components",
    "Contrast",
    "CrossedDesign",
    "align",
    "crossed_design",
    "problem_counts",
]

LEVELS = ("seed", "problem")
# Fewest degrees of freedom of the pooled seed variance for an interval to speak for other training runs. When
# seeds dominate, the t's degrees of freedom move with the seed variance's own low draws: simulated 95% intervals
# covered 92-94% and the test rejected 6-8% of true nulls on 2 degrees of freedom (two arms of two seeds), and on
# 3 (three arms of two) the arm covered 92.9% and the test rejected up to 6.6% (benchmarks/statistics.py); on 4
# or more, 93.5-96.5% and at most 6%.
MIN_SEED_DF = 4
SOURCES = ("problems", "seeds", "samples")  # where an interval's variance comes from, in the report's order


# ------------------------------------------------------------------------------------------------ counts
@dataclass(frozen=True)
class ArmCounts:
    """Correct and total sample counts of one arm on one benchmark: rows are training seeds, columns problems
    (in an order shared by every arm of the comparison). Totals may differ from cell to cell."""

    correct: np.ndarray
    total: np.ndarray

    def __post_init__(self) -> None:
        c, n = np.asarray(self.correct), np.asarray(self.total)
        if c.ndim != 2 or c.shape != n.shape or c.size == 0:
            raise ValueError(f"need equal non-empty (seeds, problems) arrays, got {c.shape} and {n.shape}")
        if (n < 1).any() or (c < 0).any() or (c > n).any():
            raise ValueError("need total >= 1 and 0 <= correct <= total for every (seed, problem)")
        object.__setattr__(self, "correct", c.astype(np.int64))
        object.__setattr__(self, "total", n.astype(np.int64))

    @property
    def n_seeds(self) -> int:
        return self.correct.shape[0]

    @property
    def n_problems(self) -> int:
        return self.correct.shape[1]

    @property
    def rates(self) -> np.ndarray:
        return self.correct / self.total

    def estimate(self) -> float:
        """pass@1: per seed the mean over problems of the problem's pass rate (problems weigh equally, as the
        benchmarks are reported), then the mean over seeds."""
        return float(self.rates.mean())

    def problem_rates(self) -> np.ndarray:
        """Per-problem pass rate averaged over seeds: the unit of the paired comparisons."""
        return self.rates.mean(axis=0)

    def slope(self) -> float:
        """mean_p p(1-p) over the per-problem rates: how far a shift of the logits moves pass@1 (a seed's effect on
        the logit scale times this is its effect on pass@1)."""
        r = self.problem_rates()
        return float((r * (1 - r)).mean())

    def sampling_variance(self) -> float:
        """Mean over cells of the variance of a cell's rate from sampling alone: p(1-p)/n, estimated without bias
        by r(1-r)/(n-1). A cell of one sample has no spread of its own: it takes its problem's rates over the
        seeds (r(1-r) S/(S-1)), or with one seed the arm's pass@1 m(1-m) -- an upper bound, as problems differ."""
        return float((self._one_sample_variance() / self.total).mean())

    def bernoulli_variance(self) -> float:
        """Mean over cells of one sample's variance p(1-p), estimated as in `sampling_variance`."""
        return float(self._one_sample_variance().mean())

    def _one_sample_variance(self) -> np.ndarray:
        r, n, s = self.rates, self.total, self.n_seeds
        if s > 1:
            p = self.problem_rates()[None, :]
            fallback = np.broadcast_to(p * (1 - p) * s / (s - 1), r.shape)
        else:
            m = self.estimate()
            fallback = np.full(r.shape, m * (1 - m))
        return np.where(n > 1, r * (1 - r) * n / np.maximum(n - 1, 1), fallback)

    def residual(self) -> tuple[float, int]:
        """The seed x problem two-way ANOVA residual mean square and its degrees of freedom (0 with one seed or
        one problem): the part of a cell's rate that is neither its seed's nor its problem's main effect."""
        s, p = self.n_seeds, self.n_problems
        if s < 2 or p < 2:
            return float("nan"), 0
        r = self.rates
        resid = r - r.mean(axis=1, keepdims=True) - r.mean(axis=0, keepdims=True) + r.mean()
        df = (s - 1) * (p - 1)
        return float((resid**2).sum()) / df, df


def problem_counts(samples: pd.DataFrame, subset_col: str = "subset") -> pd.DataFrame:
    """Correct and total counts per problem from a samples table (one row per graded response).

    Problems are keyed by (subset, problem_id) as in `framework.grading.metrics`, so ids that repeat across subsets stay
    apart. Returns columns key, correct, total, indexed by nothing in particular.
    """
    df = samples[[c for c in (subset_col, "problem_id", "correct") if c in samples.columns]].copy()
    df["correct"] = df["correct"].astype("boolean").fillna(False).astype(int)
    sub = df[subset_col].astype(object).where(df[subset_col].notna(), "") if subset_col in df else ""
    df["key"] = sub.astype(str) + "\x1f" + df["problem_id"].astype(str) if subset_col in df else df["problem_id"]
    return df.groupby("key", sort=True)["correct"].agg(correct="sum", total="count").reset_index()


def align(tables: Mapping[Hashable, pd.DataFrame]) -> tuple[list[str], dict[Hashable, tuple[np.ndarray, np.ndarray]]]:
    """Restrict per-problem count tables (from `problem_counts`) to the problems every one of them has.

    Returns the shared problem keys and, per input, its (correct, total) vectors in that order.
    """
    shared: set[str] | None = None
    for t in tables.values():
        keys = set(t["key"])
        shared = keys if shared is None else shared & keys
    order = sorted(shared or ())
    out = {}
    for name, t in tables.items():
        t = t.set_index("key").loc[order]
        out[name] = (t["correct"].to_numpy(), t["total"].to_numpy())
    return order, out


# ------------------------------------------------------------------------------------------------ contrasts
@dataclass(frozen=True)
class Contrast:
    """A contrast's estimate, standard error and degrees of freedom, with its variance split by source."""

    estimate: float
    variance: float
    df: float  # Welch-Satterthwaite degrees of freedom of `variance` (inf when it rests on no estimated spread)
    parts: Mapping[str, float]  # variance from problems, seeds and samples (SOURCES); they sum to `variance`
    doubled: Mapping[str, float]  # the variance with twice the seeds, samples or problems (same estimates)

    @property
    def se(self) -> float:
        return float(np.sqrt(max(self.variance, 0.0)))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        half = self.quantile(level) * self.se
        return self.estimate - half, self.estimate + half

    def quantile(self, level: float = 0.95) -> float:
        q = (1 + level) / 2
        return float(stats.t.ppf(q, self.df)) if np.isfinite(self.df) else float(stats.norm.ppf(q))

    def p_value(self) -> float:
        """Two-sided t test of theta = 0: the test the interval inverts (NaN when nothing varies and the estimate
        is not 0 -- no spread to test against)."""
        if self.variance <= 0:
            return 1.0 if abs(self.estimate) < 1e-12 else float("nan")
        t = abs(self.estimate) / self.se
        return float(2 * (stats.t.sf(t, self.df) if np.isfinite(self.df) else stats.norm.sf(t)))

    def share(self, source: str) -> float:
        return self.parts[source] / self.variance if self.variance > 0 else 0.0

    def narrows_most(self) -> str:
        """Which of more seeds, samples or problems (each doubled) would narrow the interval most; '' when none
        would (nothing varies, or the contrast rests on fixed models only)."""
        best = min(self.doubled, key=lambda k: self.doubled[k], default="")
        return best if best and self.doubled[best] < self.variance * (1 - 1e-9) else ""


@dataclass(frozen=True)
class CrossedDesign:
    """What the variance of any contrast over these arms needs, estimated once per comparison."""

    rates: np.ndarray  # (arms, problems): each arm's per-problem rate, averaged over its seeds
    estimates: np.ndarray  # (arms,): pass@1
    n_seeds: np.ndarray  # (arms,)
    seeds_vary: np.ndarray  # (arms,) bool: the arm's seed-to-seed variance enters its contrasts
    borrowed: np.ndarray  # (arms,) bool: an arm with one seed that takes the pooled seed variance
    seed_var: np.ndarray  # (arms,) V: variance of one seed's pass@1 about its arm's mean (0 where seeds are fixed)
    seed_df: float  # the pooled seed variance's (effective) degrees of freedom
    residual: np.ndarray  # (arms,): each arm's seed x problem residual mean square (its own, else the pool's)
    sampling: np.ndarray  # (arms,): mean sampling variance of one cell's rate
    n_problems: int
    problems_vary: bool
    seed_effect: float  # the pooled seed main effect's variance on the logit scale (may be estimated below 0)
    over: tuple[str, ...]  # the populations the intervals speak for: ("seed", "problem"), ("problem",), ...
    too_few_seed_df: int  # the pooled seed variance's degrees of freedom when above 0 but below MIN_SEED_DF

    def contrast(self, weights: Sequence[float] | np.ndarray) -> Contrast:
        """The estimate of sum_a weights[a] * pass@1[a], its variance (see the module docstring) and its split."""
        w = np.asarray(weights, dtype=float)
        estimate = float(self.estimates @ w)
        p, s = self.n_problems, self.n_seeds.astype(float)
        seeded = self.seeds_vary & (w != 0)
        seed_part = float(((w**2) * self.seed_var / s)[seeded].sum())
        terms: list[tuple[float, float]] = [(seed_part, self.seed_df)] if seed_part > 0 else []
        sampling = (w**2) * self.sampling / (s * p)  # per arm: the samples' share of every level it enters
        if self.problems_vary:
            spread = float((self.rates.T @ w).var(ddof=1)) / p
            held = ((w**2) * self.residual / (s * p))[seeded]  # seed-level noise the per-problem spread also holds
            problem_part = max(spread - float(held.sum()), 0.0)
            terms.append((problem_part, p - 1))  # its own size on P-1 degrees of freedom (see the module docstring)
            fixed_noise = 0.0  # the problem level carries the sampling noise of the fixed models
        else:
            problem_part = 0.0
            fixed_noise = float(sampling[~seeded].sum())  # fixed models on fixed problems: sampling alone
        variance = problem_part + seed_part + fixed_noise
        denom = sum(v**2 / d for v, d in terms if d > 0)
        df = variance**2 / denom if denom > 0 and variance > 0 else float("inf")
        # the samples' part sits inside the level that carries it: the seed level of the arms whose seeds vary,
        # the problem level (or, on fixed problems, the sampling term) of the fixed models
        in_seeds = min(float(sampling[seeded].sum()), seed_part)
        in_problems = min(float(sampling[~seeded].sum()), problem_part + fixed_noise)
        parts = {
            "problems": problem_part + fixed_noise - in_problems,
            "seeds": seed_part - in_seeds,
            "samples": in_seeds + in_problems,
        }
        # more problems shrink the problem level and the part of a seed's variance that is averaged over problems
        per_problem = min(float(((w**2) * self.residual / (s * p))[seeded].sum()), seed_part)
        doubled = {  # in order of cost, which breaks ties: samples, then problems, then training runs
            "samples": variance - parts["samples"] / 2,
            "problems": variance - (problem_part + fixed_noise + per_problem) / 2,
            "seeds": variance - seed_part / 2,
        }
        if not seeded.any():
            doubled.pop("seeds")
        return Contrast(estimate, variance, df, parts, doubled)


def crossed_design(
    arms: Sequence[ArmCounts],
    *,
    trained: Sequence[bool] | None = None,
    generalize: Iterable[str] = LEVELS,
) -> CrossedDesign:
    """Estimate the variance components of these arms (counted on the same problems, in the same order).

    `trained` marks the arms whose seeds are training runs (default: all); a baseline is one fixed model.
    `generalize` names the populations the intervals speak for: "seed" (other fine-tunes of the same arm) and
    "problem" (other problems like the benchmark's).
    """
    generalize = set(generalize)
    unknown = generalize - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown level(s) {sorted(unknown)} to generalize over; valid: {list(LEVELS)}")
    if not arms:
        raise ValueError("no arms")
    n_problems = arms[0].n_problems
    if any(a.n_problems != n_problems for a in arms):
        raise ValueError("every arm must be counted on the same problems (in the same order)")
    trained_mask = np.array(list(trained) if trained is not None else [True] * len(arms), dtype=bool)
    if trained_mask.size != len(arms):
        raise ValueError("one `trained` flag per arm")
    n_seeds = np.array([a.n_seeds for a in arms])
    several = trained_mask & (n_seeds > 1)
    residuals = [a.residual() for a in arms]
    pool_df = sum(d for (_, d), m in zip(residuals, several) if m)
    pool_res = sum(v * d for (v, d), m in zip(residuals, several) if m) / pool_df if pool_df else 0.0
    residual = np.array([v if d else pool_res for v, d in residuals])
    slopes = np.array([a.slope() for a in arms])
    scale, seed_df = _logit_seed_variance(arms, several, slopes, residual, n_problems)
    # the design decides whether the seeds are pooled (not the estimates: a refusal that moved with the data would
    # bias what is printed); the t then takes the pool's effective degrees of freedom
    nominal = int((n_seeds[several] - 1).sum()) if "seed" in generalize else 0
    too_few = nominal if 0 < nominal < MIN_SEED_DF else 0
    if too_few or not nominal:  # too uncertain to carry an interval over training runs: these fine-tunes only
        seed_df, generalize = 0.0, generalize - {"seed"}
    elif seed_df == 0:  # every arm at 0% or 100%: no seed shows a spread, on the design's degrees of freedom
        seed_df = float(nominal)
    seeds_vary = trained_mask & (seed_df > 0)
    seed_vars = np.where(seeds_vary, np.maximum(slopes**2 * scale + residual / n_problems, 0.0), 0.0)
    return CrossedDesign(
        rates=np.stack([a.problem_rates() for a in arms]),
        estimates=np.array([a.estimate() for a in arms]),
        n_seeds=n_seeds,
        seeds_vary=seeds_vary,
        borrowed=seeds_vary & (n_seeds == 1),
        seed_var=seed_vars,
        seed_df=seed_df,
        residual=residual,
        sampling=np.array([a.sampling_variance() for a in arms]),
        n_problems=n_problems,
        problems_vary="problem" in generalize and n_problems > 1,
        seed_effect=scale,
        over=tuple(
            x for x in LEVELS if x in generalize and (x != "seed" or seed_df) and (x != "problem" or n_problems > 1)
        ),
        too_few_seed_df=too_few,
    )


# ------------------------------------------------------------------------------------------------ power
@dataclass(frozen=True)
class Components:
    """Variance components of pass@1 on one benchmark per unit (one problem, one sample, one training run), free
    of any design: what `plan` projects onto P problems x K samples x S seeds to say what a design can detect."""

    interaction: float  # variance over problems of two arms' true per-problem difference
    seed: float  # variance of one training run's pass@1 about its arm's mean (the seed main effect)
    seed_x_problem: float  # variance of a cell's true rate beyond its seed's and its problem's effects
    bernoulli: float  # one sample's variance p(1-p), averaged over cells
    source: str  # where the numbers come from, for the reader

    def pair(self, problems: int, samples: float, seeds: int, arms: int = 2) -> Contrast:
        """The difference of two arms of `seeds` seeds each on `problems` problems x `samples` samples, the seed
        variance pooled over `arms` arms as the report pools it, with what doubling each would leave."""
        variance, df, parts = self._pair(problems, samples, seeds, arms)
        doubled = {  # in order of cost, which breaks ties
            "samples": self._pair(problems, 2 * samples, seeds, arms)[0],
            "problems": self._pair(2 * problems, samples, seeds, arms)[0],
            "seeds": self._pair(problems, samples, 2 * seeds, arms)[0],
        }
        return Contrast(0.0, variance, df, parts, doubled)

    def _pair(self, problems: int, samples: float, seeds: int, arms: int) -> tuple[float, float, dict[str, float]]:
        """Variance, degrees of freedom and split of the report's interval over training runs and problems (its
        degrees of freedom 0 when one seed per arm leaves no seed variance to estimate)."""
        p, k, s = max(problems, 2), max(samples, 1.0), max(seeds, 1)
        cell = self.seed_x_problem + self.bernoulli / k
        seed_df = arms * (s - 1)
        seed_part = 2 * (self.seed + cell / p) / s
        problem_part = self.interaction / p
        variance = problem_part + seed_part
        if seed_df < MIN_SEED_DF:  # the report will not test over training runs: no detectable difference
            df = 0.0
        else:
            denom = sum(v**2 / d for v, d in ((problem_part, p - 1), (seed_part, seed_df)) if v > 0)
            df = variance**2 / denom if denom > 0 else float("inf")
        sampling = 2 * self.bernoulli / (k * s * p)
        parts = {"problems": problem_part, "seeds": seed_part - sampling, "samples": sampling}
        return variance, df, parts

    def detectable(self, contrast: Contrast, power: float = 0.8) -> float | None:
        """The smallest true difference the report's two-sided 5% test finds with `power`, for a contrast of
        this variance; None when the report will not test it (a seed variance on fewer than MIN_SEED_DF
        degrees of freedom)."""
        if contrast.df < MIN_SEED_DF:
            return None
        q = (lambda x: stats.t.ppf(x, contrast.df)) if np.isfinite(contrast.df) else stats.norm.ppf
        return float((q(0.975) + q(power)) * contrast.se)


# Competition-math-like components for a plan with nothing measured yet: problems with Beta(0.3, 0.3) pass rates
# (most problems nearly always or nearly never solved: p(1-p) averages 0.094), training runs whose pass@1
# scatters by ~2.8 pp (a seed effect of 0.3 on the logit scale, as in the report's simulated designs), and two
# arms whose per-problem differences scatter by ~10 pp.
ASSUMED = Components(
    interaction=0.01,
    seed=0.0008,
    seed_x_problem=0.001,
    bernoulli=0.094,
    source="assumed (competition-math-like defaults; replaced by this store's once an evaluation has run)",
)


def measured_components(arms: Sequence[ArmCounts], trained: Sequence[bool], source: str) -> Components | None:
    """The components estimated from evaluated arms (None without a trained arm); those the arms cannot show
    (a seed variance from one seed each, an interaction from one arm) keep the assumed value."""
    cells = [a for a, t in zip(arms, trained, strict=True) if t]
    if not cells:
        return None
    n_problems = cells[0].n_problems
    residuals = [a.residual() for a in cells]
    resid = [v for v, d in residuals if d]
    sampling = float(np.mean([a.sampling_variance() for a in cells]))
    several = np.array([a.n_seeds > 1 for a in cells])
    seed = ASSUMED.seed
    if several.any():  # pooled on the logit scale as the report pools it, then at the arms' mean squared slope
        slopes = np.array([a.slope() for a in cells])
        res = np.array([v if d else (float(np.mean(resid)) if resid else 0.0) for v, d in residuals])
        scale, _ = _logit_seed_variance(cells, several, slopes, res, n_problems)
        seed = max(scale, 0.0) * float((slopes**2).mean())
    gaps = []
    for i, a in enumerate(cells):
        for b in cells[i + 1 :]:
            if n_problems > 1:
                spread = float((a.problem_rates() - b.problem_rates()).var(ddof=1))
                # each side's seed-level noise; a one-seed arm takes the pooled residual (seed x problem and
                # sampling), else its sampling alone
                pooled = float(np.mean(resid)) if resid else sampling
                held = sum((x.residual()[0] if x.residual()[1] else pooled) / x.n_seeds for x in (a, b))
                gaps.append(max(spread - held, 0.0))
    return Components(
        interaction=float(np.mean(gaps)) if gaps else ASSUMED.interaction,
        seed=seed,
        seed_x_problem=max(float(np.mean(resid)) - sampling, 0.0) if resid else ASSUMED.seed_x_problem,
        bernoulli=float(np.mean([a.bernoulli_variance() for a in cells])),
        source=source,
    )


def _logit_seed_variance(
    arms: Sequence[ArmCounts], several: np.ndarray, slopes: np.ndarray, residual: np.ndarray, n_problems: int
) -> tuple[float, float]:
    """The seed main effect's variance on the logit scale, pooled over the trained arms with several seeds.

    A training run shifts an arm's logits; on pass@1 that moves the arm by about mean_p p(1-p) (its slope) times
    the shift, so an arm that nearly always fails (or succeeds) scatters little from seed to seed. Pooling the
    variance of the pass@1 itself would let such arms shrink every other arm's seed variance (a test of two
    mid-range arms beside two near 0% rejected 11% of true nulls). Each arm's seed main effect (its per-seed
    means' variance less the residual's share, untruncated) is set against its squared slope, pooled as a ratio
    of sums weighted by S-1 so that near-0% arms weigh nothing rather than divide by ~0. Returns it with its
    effective degrees of freedom.
    """
    num = den = den2 = 0.0
    for a, m, g, res in zip(arms, several, slopes, residual, strict=True):
        if not m:
            continue
        main = float(a.rates.mean(axis=1).var(ddof=1)) - (res / n_problems if n_problems > 1 else 0.0)
        num += (a.n_seeds - 1) * main
        den += (a.n_seeds - 1) * g**2
        den2 += (a.n_seeds - 1) * g**4
    # its degrees of freedom: sum(S-1) when the arms are alike, fewer when some (near 0% or 100%) tell nothing
    return (num / den, den**2 / den2) if den > 0 else (0.0, 0.0)
