"""Confidence intervals and tests for the arms of a sweep, accounting for every source of variation that a claim
about an arm has to survive.

An arm's accuracy on one benchmark comes from a crossed design: S training seeds x P problems, and for every
(seed, problem) K sampled responses graded right or wrong. Three sources of variation, and how each enters:

* seeds -- one fine-tune is one draw from the distribution of runs (which traces were sampled, data order,
  optimizer noise). "Arm A teaches better than arm B" is a claim about those distributions, not about two
  checkpoints, so each arm's seeds are resampled with replacement.
* problems -- a benchmark is a small sample from a population of problems (30 AIME problems a year); this is
  usually the largest component and the one an interval over the fixed problems would hide. Problems are
  resampled once per replicate and shared by every seed and arm: the design is crossed, so comparisons between
  arms are paired on problems, which removes the (large) between-problem variance from every difference.
* samples -- each per-problem pass rate is estimated from K responses, with binomial noise p(1-p)/K. Resampling
  a problem re-draws it together with its samples, so this noise is already in the problem level (and, for
  S > 1, in the seed level); drawing samples again would count it twice (Davison & Hinkley 1997, sec. 3.8).
  The samples are resampled explicitly (a binomial draw of each correct count) only when neither problems nor
  seeds are, i.e. for a single run judged on these fixed problems.

Resampling both crossed levels naively counts the seed x problem interaction and the sampling noise more than
once: simulated paired differences then covered 98-99.9% instead of 95%. So each level carries only its own
variance: the seed part of a replicate is scaled so its variance is the method-of-moments estimate of the seed
main effect (per-seed means' variance minus the two-way ANOVA residual over P), unbiased over S rather than the
bootstrap's (S-1)/S, and the problem part is rescaled by sqrt(P/(P-1)) likewise. With S = 2-5 seeds the seed
variance rests on S-1 degrees of freedom, so the percentile interval is widened by t(nu)/z, nu being the
Welch-Satterthwaite degrees of freedom of the variance components. Simulated coverage of nominal 95% intervals
(tests/unit/report/test_stats.py): 93-97% for arms and paired differences with 1-5 seeds, 30-500 problems and 4-64
samples -- except single arms whose variance is mostly seed-to-seed with 2-3 seeds, which cover 87-93% (2 seeds
of 500 problems: 86.6%): S-1 degrees of freedom cannot pin a variance down. `seed_share` (the part of an
interval's variance that comes from seeds) flags those intervals. With one seed per arm there is nothing to
resample: the interval is conditional on that single fine-tune. A trained arm left with one seed among arms
with several takes their pooled seed variance instead (a difference against a 3-seed arm then covers ~89%
rather than 83%).

p-values come from a sign-flip permutation test over problems (exact for few problems): under "no difference"
each per-problem difference is as likely positive as negative. It conditions on the trained checkpoints -- it
asks whether these runs differ on this population of problems -- so seed-to-seed variation enters the intervals,
not these p-values; with several seeds per arm, read the interval first. Beside it, `p_seeds` is a permutation
test over training seeds (seed_permutation_pvalue), which does generalize over training runs and is as weak as
their number; when the problem-level p is below 0.05 but the interval spans 0, a note says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats

from framework.report.significance import CHUNK_CELLS, holm, seed_permutation_pvalue, sign_flip_pvalue

__all__ = [
    "Arm",
    "ArmCounts",
    "Bootstrap",
    "Comparison",
    "Interval",
    "align",
    "compare_arms",
    "hierarchical_bootstrap",
    "holm",
    "percentile_interval",
    "problem_counts",
    "seed_permutation_pvalue",
    "sign_flip_pvalue",
]


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class ArmCounts:
    """Correct and total sample counts of one arm on one benchmark: rows are training seeds, columns problems
    (in an order shared by every arm of the comparison)."""

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
        """Per-problem pass rate averaged over seeds: the unit of the paired tests."""
        return self.rates.mean(axis=0)


def problem_counts(samples: pd.DataFrame, subset_col: str = "subset") -> pd.DataFrame:
    """Correct and total counts per problem from a samples table (one row per graded response).

    Problems are keyed by (subset, problem_id) as in `framework.grading.metrics`, so ids that repeat across subsets stay
    apart. Returns columns key, correct, total, indexed by nothing in particular.
    """
    df = samples[[c for c in (subset_col, "problem_id", "correct") if c in samples.columns]].copy()
    df["correct"] = df["correct"].astype("boolean").fillna(False).astype(int)
    sub = df[subset_col].astype(object).where(df[subset_col].notna(), "") if subset_col in df else ""
    df["key"] = sub.astype(str) + "\x1f" + df["problem_id"].astype(str) if subset_col in df else df["problem_id"]
    out = df.groupby("key", sort=True)["correct"].agg(correct="sum", total="count").reset_index()
    return out


# ------------------------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    estimate: float
    low: float
    high: float
    seed_share: float  # fraction of the interval's bootstrap variance that comes from resampling seeds

    def clip(self, low: float, high: float) -> Interval:
        return Interval(self.estimate, max(self.low, low), min(self.high, high), self.seed_share)


@dataclass(frozen=True)
class Bootstrap:
    """Replicates of every arm's pass@1, drawn jointly (shared problems), shape (n_boot, n_arms).

    seed_part is the component of each replicate that comes from resampling that arm's seeds; its variance over
    the replicates' variance is the share of an interval that rests on the seeds.
    """

    replicates: np.ndarray
    seed_part: np.ndarray
    estimates: np.ndarray
    n_seeds: np.ndarray
    n_problems: int
    problems_resampled: bool
    borrowed: np.ndarray  # arms whose seed variance is the pool's (one seed of a trained arm)

    def interval(self, weights: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
        """Interval for the contrast sum_a weights[a] * pass@1[a]: the percentile interval, widened by
        t(nu)/z where nu is the Welch-Satterthwaite degrees of freedom of its variance components (each arm's
        seed part on S-1 degrees of freedom, the problem part on P-1)."""
        w = np.asarray(weights, dtype=float)
        reps = self.replicates @ w
        estimate = float(self.estimates @ w)
        lo, hi = percentile_interval(reps, level)
        total = float(reps.var())
        seed_vars = (w**2) * self.seed_part.var(axis=0)
        seed_var = float(seed_vars.sum())
        if total <= 0:
            return Interval(estimate, estimate, estimate, 0.0)
        rest = max(total - seed_var, 0.0)
        # a borrowed variance is the pool's estimate, a sum of the lending arms' own: it goes back to them, so
        # the degrees of freedom are not counted twice
        df = np.where(self.n_seeds > 1, self.n_seeds - 1, 0).astype(float)
        lent = float(seed_vars[self.borrowed].sum())
        own = np.where(self.borrowed, 0.0, seed_vars) + (lent * df / df.sum() if lent > 0 else 0.0)
        terms = [v**2 / d for v, d in zip(own, df) if d > 0 and v > 0]
        if self.problems_resampled and self.n_problems > 1:
            terms.append(rest**2 / (self.n_problems - 1))
        nu = (seed_var + rest) ** 2 / sum(terms) if terms and sum(terms) > 0 else np.inf
        z = float(special.ndtri((1 + level) / 2))
        widen = float(stats.t.ppf((1 + level) / 2, nu)) / z if np.isfinite(nu) else 1.0
        return Interval(
            estimate, estimate - (estimate - lo) * widen, estimate + (hi - estimate) * widen, seed_var / total
        )


def hierarchical_bootstrap(
    arms: Sequence[ArmCounts],
    *,
    n_boot: int = 2000,
    generalize: Sequence[str] = ("seed", "problem"),
    rng: np.random.Generator | int | None = 0,
    borrow: Sequence[bool] | None = None,
) -> Bootstrap:
    """Joint bootstrap replicates of the arms' pass@1: problems shared by all arms, seeds per arm.

    `generalize` names the populations an interval speaks for: "seed" (other fine-tunes of the same arm) and
    "problem" (other problems like the benchmark's). Sampling noise is always included (see the module
    docstring for how each level is scaled so that nothing is counted twice). An arm marked in `borrow` that has
    one seed (a trained arm whose other seeds failed) has no spread of its own to resample: it takes the seed
    variance pooled over the arms with several seeds, as a normal deviate on the pool's degrees of freedom.
    Without it, its comparisons would treat its one run as the arm's truth.
    """
    unknown = set(generalize) - {"seed", "problem"}
    if unknown:
        raise ValueError(f"unknown level(s) {sorted(unknown)} to generalize over; valid: ['seed', 'problem']")
    if not arms:
        raise ValueError("no arms")
    n_problems = arms[0].n_problems
    if any(a.n_problems != n_problems for a in arms):
        raise ValueError("every arm must be counted on the same problems (in the same order)")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    by_problem = "problem" in generalize and n_problems > 1
    max_seeds = max(a.n_seeds for a in arms)
    chunk = max(1, CHUNK_CELLS // (max_seeds * n_problems))
    reps = np.empty((n_boot, len(arms)))
    seed_part = np.zeros((n_boot, len(arms)))
    by_seed = "seed" in generalize
    variances = [seed_variance(a, by_problem) if by_seed else float("nan") for a in arms]
    scales = [_seed_scale(a, v) if by_seed else 0.0 for a, v in zip(arms, variances)]
    pooled_var, pooled_df = pooled_seed_variance(arms, variances) if by_seed else (0.0, 0)
    borrowed = [
        bool(b) and a.n_seeds == 1 and pooled_df > 0 and pooled_var > 0
        for a, b in zip(arms, borrow or [False] * len(arms), strict=True)
    ]
    problem_scale = np.sqrt(n_problems / (n_problems - 1)) if by_problem else 1.0
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        if by_problem:
            pick = rng.integers(0, n_problems, size=(b, n_problems))
        else:
            pick = np.broadcast_to(np.arange(n_problems), (b, n_problems))
        for j, arm in enumerate(arms):
            rate = arm.rates[:, pick].transpose(1, 0, 2)  # (b, S, P)
            if not by_problem and not scales[j] and not borrowed[j]:  # nothing above the samples carries their noise
                n = arm.total[:, pick].transpose(1, 0, 2)
                rate = rng.binomial(n, rate) / n
            per_seed = rate.mean(axis=2)  # (b, S)
            mean = per_seed.mean(axis=1)
            out = arm.estimate() + problem_scale * (mean - arm.estimate()) if by_problem else mean
            if scales[j]:
                s = arm.n_seeds
                chosen = np.take_along_axis(per_seed, rng.integers(0, s, size=(b, s)), axis=1).mean(axis=1)
                seed_part[start : start + b, j] = scales[j] * (chosen - mean)
            elif borrowed[j]:
                seed_part[start : start + b, j] = rng.normal(0.0, np.sqrt(pooled_var), size=b)
            reps[start : start + b, j] = out + seed_part[start : start + b, j]
    return Bootstrap(
        replicates=reps,
        seed_part=seed_part,
        estimates=np.array([a.estimate() for a in arms]),
        n_seeds=np.array([a.n_seeds for a in arms]),
        n_problems=n_problems,
        problems_resampled=by_problem,
        borrowed=np.array(borrowed, dtype=bool),
    )


def seed_variance(arm: ArmCounts, problems_resampled: bool) -> float:
    """Unbiased variance of one seed's pass@1 about the arm's mean (NaN with one seed).

    The seed means' spread s^2 also holds the seed x problem interaction and sampling noise (their ANOVA residual
    over P); when problems are resampled the problem level already carries those, and only the remainder, the
    seed main effect, belongs to seeds.
    """
    s, p = arm.n_seeds, arm.n_problems
    if s < 2:
        return float("nan")
    rates = arm.rates
    s2 = float(rates.mean(axis=1).var(ddof=1))
    if s2 <= 0 or not (problems_resampled and p > 1):
        return max(s2, 0.0)
    resid = rates - rates.mean(axis=1, keepdims=True) - rates.mean(axis=0, keepdims=True) + rates.mean()
    return max(0.0, s2 - float((resid**2).sum()) / ((s - 1) * (p - 1)) / p)


def pooled_seed_variance(arms: Sequence[ArmCounts], variances: Sequence[float]) -> tuple[float, int]:
    """The seed variance (each arm's `seed_variance`) pooled over the arms with several seeds, weighted by S-1,
    and its degrees of freedom."""
    pairs = [(v, a.n_seeds - 1) for a, v in zip(arms, variances, strict=True) if a.n_seeds > 1]
    df = sum(d for _, d in pairs)
    return (sum(v * d for v, d in pairs) / df, df) if df else (0.0, 0)


def _seed_scale(arm: ArmCounts, variance: float) -> float:
    """Factor on the bootstrap's seed deviation that makes its variance `variance` (the arm's `seed_variance`):
    the plain bootstrap of S seed means has variance (S-1)/S * s^2/S."""
    s = arm.n_seeds
    if s < 2:
        return 0.0
    s2 = float(arm.rates.mean(axis=1).var(ddof=1))
    if s2 <= 0:
        return 0.0
    return float(np.sqrt(s / (s - 1) * variance / s2))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1-level)/2 and (1+level)/2 quantiles of the bootstrap replicates."""
    lo, hi = np.quantile(np.asarray(replicates), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------- comparisons
@dataclass(frozen=True)
class Arm:
    """An arm of the sweep on one benchmark: its id, its factor levels (empty for a baseline) and its counts."""

    id: str
    levels: Mapping[str, str]
    counts: ArmCounts
    baseline: bool = False


@dataclass
class Comparison:
    """The tables of one benchmark's comparison; each a DataFrame with the columns of docs/results-schema.md."""

    arms: pd.DataFrame
    levels: pd.DataFrame
    effects: pd.DataFrame
    pairs: pd.DataFrame
    baselines: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _others(arm: Arm, factor: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in arm.levels.items() if k != factor))


def _balanced_combinations(arms: Sequence[Arm], factor: str, names: Sequence[str]) -> set:
    """Combinations of the other factors' levels that appear at every (evaluated) level of `factor`."""
    present = [{_others(a, factor) for a in arms if not a.baseline and a.levels.get(factor) == n} for n in names]
    present = [p for p in present if p]
    return set.intersection(*present) if present else set()


ARM_COLUMNS = ("arm", "baseline", "n_seeds", "n_problems", "estimate", "ci_low", "ci_high", "seed_share")


def factor_columns(factors: Iterable[str], taken: Iterable[str] = ARM_COLUMNS) -> dict[str, str]:
    """Each factor's column in a table: its own name, or `factor.<name>` where a fixed column has that name (a
    factor called `arm` must not overwrite the arm's id)."""
    taken = set(taken)
    return {f: f"factor.{f}" if f in taken else f for f in factors}


def compare_arms(
    arms: Sequence[Arm],
    factors: Mapping[str, Sequence[str]],
    references: Mapping[str, str],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    n_perm: int = 10000,
    generalize: Sequence[str] = ("seed", "problem"),
    seed: int = 0,
    columns: Mapping[str, str] | None = None,
) -> Comparison:
    """Intervals for every arm, every factor level, every level's marginal effect against the factor's reference,
    and every pair of arms that differ in exactly one factor -- all from one joint bootstrap.

    The marginal effect of level L of factor F is the mean, over the combinations c of the other factors' levels
    for which both arms (F=L, c) and (F=reference, c) exist, of their difference. In a full factorial that is
    the usual main effect averaged over the other factors; in a one-at-a-time design it is the single contrast
    against the all-reference arm; cells dropped by `grid.exclude` drop only their own combinations.
    `columns` names each factor's column in the arms table (default: `factor_columns`).
    """
    columns = dict(columns) if columns is not None else factor_columns(factors)
    rng = np.random.default_rng(seed)
    # a trained arm left with one seed borrows the others' seed variance; a baseline has no training to vary
    borrow = [not a.baseline for a in arms]
    boot = hierarchical_bootstrap(
        [a.counts for a in arms], n_boot=n_boot, generalize=generalize, rng=rng, borrow=borrow
    )
    # the tables draw their tests from `rng` one after another, in this order: it is part of the output
    ctx = _Contrasts(arms, boot, level, n_perm, rng)
    arm_rows, notes = _arm_rows(ctx, factors, columns)
    level_rows, effect_rows = [], []
    for f, names in factors.items():
        levels, effects, factor_notes = _factor_rows(ctx, f, names, references[f])
        level_rows += levels
        effect_rows += effects
        notes += factor_notes
    pair_rows, pair_notes = _pair_rows(ctx, factors, references)
    baseline_rows, baseline_notes = _baseline_rows(ctx)
    return Comparison(
        arms=pd.DataFrame(arm_rows),
        levels=pd.DataFrame(level_rows, columns=_LEVEL_COLUMNS),
        effects=_with_holm(effect_rows, _EFFECT_COLUMNS),
        pairs=_with_holm(pair_rows, _PAIR_COLUMNS),
        baselines=_with_holm(baseline_rows, _BASELINE_COLUMNS),
        notes=notes + pair_notes + baseline_notes,
    )


@dataclass(frozen=True)
class _Contrasts:
    """What every table of one comparison reads: the arms, their joint bootstrap, and the random stream its tests
    draw from."""

    arms: Sequence[Arm]
    boot: Bootstrap
    level: float
    n_perm: int
    rng: np.random.Generator

    def interval(self, plus: Sequence[int], minus: Sequence[int] = ()) -> Interval:
        """The interval of the mean of the `plus` arms minus the mean of the `minus` arms."""
        w = np.zeros(len(self.arms))
        w[list(plus)] += 1 / len(plus)
        if minus:
            w[list(minus)] -= 1 / len(minus)
        return self.boot.interval(w, self.level)

    def difference(self, pairs: Sequence[tuple[int, int]]) -> dict[str, float]:
        """Interval and tests of the mean difference over (treated, control) pairs of arms: paired on problems
        (p_value) and on training seeds (p_seeds)."""
        treated, control = [a for a, _ in pairs], [b for _, b in pairs]
        arms = self.arms
        diffs = np.mean([arms[a].counts.problem_rates() - arms[b].counts.problem_rates() for a, b in pairs], 0)
        return {
            **_cols(self.interval(treated, control).clip(-1.0, 1.0)),
            "p_value": sign_flip_pvalue(diffs, n_perm=self.n_perm, rng=self.rng),
            "p_seeds": seed_permutation_pvalue(
                [(seed_scores(arms[a]), seed_scores(arms[b])) for a, b in pairs], n_perm=self.n_perm, rng=self.rng
            ),
        }


def _cols(iv: Interval) -> dict[str, float]:
    return {"estimate": iv.estimate, "ci_low": iv.low, "ci_high": iv.high}


_EMPTY = {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan}


def _arm_rows(
    ctx: _Contrasts, factors: Mapping[str, Sequence[str]], columns: Mapping[str, str]
) -> tuple[list[dict], list[str]]:
    """One row per arm (its levels and its own interval), and the notes on intervals a reader should doubt."""
    rows, notes = [], []
    for j, arm in enumerate(ctx.arms):
        iv = ctx.interval([j]).clip(0.0, 1.0)
        rows.append(
            {
                "arm": arm.id,
                **{columns[f]: arm.levels.get(f) for f in factors},
                "baseline": arm.baseline,
                "n_seeds": arm.counts.n_seeds,
                "n_problems": arm.counts.n_problems,
                **_cols(iv),
                "seed_share": iv.seed_share,
            }
        )
        notes += _arm_notes(arm, iv, bool(ctx.boot.borrowed[j]))
    return rows, notes


def _arm_notes(arm: Arm, iv: Interval, borrowed: bool) -> list[str]:
    """Why one arm's interval may mislead: no width (every sample alike), a borrowed seed variance, or a
    variance resting mostly on a handful of seeds."""
    notes = []
    c = arm.counts
    if not c.correct.any() or (c.correct == c.total).all():
        notes.append(
            f"{arm.id}: every sample is {'right' if c.correct.any() else 'wrong'}, so its bootstrap interval has "
            f"no width; over {c.n_problems} problems the rule of three bounds its pass rate within "
            f"{3 / c.n_problems:.1%} of {'100' if c.correct.any() else '0'}% (95%)"
        )
    if borrowed:
        notes.append(
            f"{arm.id}: one seed evaluated; its intervals take the seed-to-seed variance pooled over the arms "
            "with several seeds, assuming it varies as they do"
        )
    if 1 < c.n_seeds <= 5 and iv.seed_share > 0.5:
        notes.append(
            f"{arm.id}: {iv.seed_share:.0%} of its interval's variance comes from {c.n_seeds} seeds; "
            "seed-to-seed variation dominates, and more seeds would narrow the interval most"
        )
    return notes


def _factor_rows(ctx: _Contrasts, f: str, names: Sequence[str], ref: str) -> tuple[list[dict], list[dict], list[str]]:
    """Factor f's level means (levels table) and each level's marginal effect against `ref` (effects table)."""
    arms = ctx.arms
    shared = _balanced_combinations(arms, f, names)
    notes = []
    if not shared and any(not a.baseline for a in arms):
        notes.append(
            f"{f}: no combination of the other factors' levels was evaluated at every level of {f}, so its "
            "level means would carry the other factors' effects; they are left empty"
        )
    index = {tuple(sorted(a.levels.items())): j for j, a in enumerate(arms) if not a.baseline}
    level_rows, effect_rows = [], []
    for name in names:
        at_level = [j for j, a in enumerate(arms) if not a.baseline and a.levels.get(f) == name]
        # A level's mean takes only the arms whose other levels exist at every level of f, so that it is not
        # another factor's effect: all arms in a full factorial, the reference arms in a one-at-a-time design.
        # The effect below pairs arms instead, so it takes every arm with a reference twin.
        members = [j for j in at_level if _others(arms[j], f) in shared]
        if at_level:
            values = _cols(ctx.interval(members).clip(0.0, 1.0)) if members else _EMPTY
            level_rows.append({"factor": f, "level": name, "reference": name == ref, "n_arms": len(members), **values})
        if name == ref:
            continue
        twins = (index.get(tuple(sorted(dict(arms[j].levels, **{f: ref}).items()))) for j in at_level)
        pairs = [(j, k) for j, k in zip(at_level, twins) if k is not None]
        row: dict = {"factor": f, "level": name, "reference_level": ref, "n_pairs": len(pairs)}
        if pairs:
            row |= ctx.difference(pairs)
            notes += _disagreement(f"{f}={name} vs {ref}", row)
        else:
            row |= {**_EMPTY, "p_value": np.nan, "p_seeds": np.nan}
            notes.append(f"{f}={name}: no pair of arms with {f}={ref} and the other factors equal; no effect")
        effect_rows.append(row)
    return level_rows, effect_rows, notes


def _pair_rows(
    ctx: _Contrasts, factors: Mapping[str, Sequence[str]], references: Mapping[str, str]
) -> tuple[list[dict], list[str]]:
    """Every two trained arms that differ in exactly one factor, the reference (else the earlier) level second:
    a positive difference means "this level is better"."""
    arms = ctx.arms
    rows, notes = [], []
    plain = [j for j, a in enumerate(arms) if not a.baseline]
    for a, b in itertools.combinations(plain, 2):
        differ = [f for f in factors if arms[a].levels.get(f) != arms[b].levels.get(f)]
        if len(differ) != 1:
            continue
        f = differ[0]
        la, lb = arms[a].levels[f], arms[b].levels[f]
        if lb != references[f] and (la == references[f] or factors[f].index(la) < factors[f].index(lb)):
            a, b = b, a
        pair = {
            "arm": arms[a].id,
            "vs_arm": arms[b].id,
            "factor": f,
            "level": arms[a].levels[f],
            "vs_level": arms[b].levels[f],
            **ctx.difference([(a, b)]),
        }
        rows.append(pair)
        notes += _disagreement(f"{arms[a].id} vs {arms[b].id}", pair)
    return rows, notes


def _baseline_rows(ctx: _Contrasts) -> tuple[list[dict], list[str]]:
    """Every trained arm against every baseline ("does it beat the base model?"), paired on problems like the
    rest; over seeds, the baseline is one fixed model: do the arm's training runs sit above it more than chance
    allows?"""
    arms = ctx.arms
    rows, notes = [], []
    plain = [j for j, a in enumerate(arms) if not a.baseline]
    for b in (j for j, a in enumerate(arms) if a.baseline):
        base = float(seed_scores(arms[b]).mean())
        for a in plain:
            scores = seed_scores(arms[a])
            row = {
                "arm": arms[a].id,
                "vs_baseline": arms[b].id,
                **_cols(ctx.interval([a], [b]).clip(-1.0, 1.0)),
                "p_value": sign_flip_pvalue(
                    arms[a].counts.problem_rates() - arms[b].counts.problem_rates(), n_perm=ctx.n_perm, rng=ctx.rng
                ),
                "p_seeds": sign_flip_pvalue(scores - base, n_perm=ctx.n_perm, rng=ctx.rng)
                if scores.size > 1
                else np.nan,
            }
            rows.append(row)
            notes += _disagreement(f"{arms[a].id} vs {arms[b].id}", row)
    return rows, notes


def _with_holm(rows: list[dict], columns: Sequence[str]) -> pd.DataFrame:
    """A table of tests with its Holm-adjusted p-values (over the table's rows) as its last column."""
    frame = pd.DataFrame(rows, columns=columns)
    frame["p_holm"] = holm(frame["p_value"].to_numpy())
    return frame


_LEVEL_COLUMNS = ["factor", "level", "reference", "n_arms", "estimate", "ci_low", "ci_high"]
_EFFECT_COLUMNS = [
    "factor", "level", "reference_level", "n_pairs", "estimate", "ci_low", "ci_high", "p_value", "p_seeds"
]  # fmt: skip
_PAIR_COLUMNS = [
    "arm", "vs_arm", "factor", "level", "vs_level", "estimate", "ci_low", "ci_high", "p_value", "p_seeds"
]  # fmt: skip
_BASELINE_COLUMNS = ["arm", "vs_baseline", "estimate", "ci_low", "ci_high", "p_value", "p_seeds"]


def seed_scores(arm: Arm) -> np.ndarray:
    """Each training seed's pass@1 over the shared problems: the unit of the seed-level test."""
    return arm.counts.rates.mean(axis=1)


def _disagreement(what: str, row: Mapping[str, float], alpha: float = 0.05) -> list[str]:
    """A note when the test over problems calls a difference that the interval (which also carries seed-to-seed
    variation) does not exclude: the difference holds for these trained runs, not yet across training runs."""
    p, low, high = row["p_value"], row["ci_low"], row["ci_high"]
    if not (p < alpha and low <= 0.0 <= high):
        return []
    seeds = "" if np.isnan(row["p_seeds"]) else f"; over training seeds p = {row['p_seeds']:.3g}"
    return [
        f"{what}: p = {p:.3g} over problems, but the {high - low:.1%}-wide interval [{low:+.1%}, {high:+.1%}] "
        f"spans 0{seeds}. The difference holds for these trained checkpoints, not yet across training runs"
    ]


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
