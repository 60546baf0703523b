"""Intervals and tests for the arms of a sweep, from the variance components of its crossed design.

Every interval of the report -- an arm, a factor level, a level's effect, two arms, an arm against a baseline --
is a contrast of arms whose variance `framework.variance` estimates from the (seed x problem x sample) counts:
problems shared by every arm (comparisons are paired on them), seeds each arm's own, the seed-to-seed variance
pooled over the trained arms. The interval is estimate +- t(nu) x SE and the headline p-value is the same t test,
so the two never disagree, and both speak for other training runs of the arms and other problems like the
benchmark's (`over` names what a row speaks for when the design cannot carry that: one seed per arm, or a seed
variance on fewer than 4 degrees of freedom). Simulated coverage and size are in tests/unit/report/test_stats.py.

Beside it, `p_checkpoints` is a sign-flip permutation test over problems: do these trained checkpoints differ on
this population of problems? It conditions on the fine-tunes, so it is secondary: when seeds vary it rejects far
more often than its level for arms that differ only by chance of training.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from framework.report.significance import holm, sign_flip_pvalue
from framework.variance import (
    LEVELS,
    MIN_SEED_DF,
    SOURCES,
    ArmCounts,
    Contrast,
    CrossedDesign,
    align,
    crossed_design,
    problem_counts,
)

__all__ = [
    "Arm",
    "ArmCounts",
    "Comparison",
    "align",
    "compare_arms",
    "holm",
    "problem_counts",
    "sign_flip_pvalue",
]


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


# Every interval row ends with these: the interval, where its variance comes from, what would narrow it most
# and the populations it speaks for.
INTERVAL_COLUMNS = (
    "estimate", "ci_low", "ci_high", "df", "share_problems", "share_seeds", "share_samples", "narrows_most", "over"
)  # fmt: skip
ARM_COLUMNS = ("arm", "baseline", "n_seeds", "n_problems", *INTERVAL_COLUMNS)


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
    level: float = 0.95,
    n_perm: int = 10000,
    generalize: Sequence[str] = LEVELS,
    seed: int = 0,
    columns: Mapping[str, str] | None = None,
) -> Comparison:
    """Intervals for every arm, every factor level, every level's marginal effect against the factor's reference,
    and every pair of arms that differ in exactly one factor -- all from one estimate of the design's variance.

    The marginal effect of level L of factor F is the mean, over the combinations c of the other factors' levels
    for which both arms (F=L, c) and (F=reference, c) exist, of their difference. In a full factorial that is
    the usual main effect averaged over the other factors; in a one-at-a-time design it is the single contrast
    against the all-reference arm; cells dropped by `grid.exclude` drop only their own combinations.
    `columns` names each factor's column in the arms table (default: `factor_columns`).
    """
    columns = dict(columns) if columns is not None else factor_columns(factors)
    design = crossed_design([a.counts for a in arms], trained=[not a.baseline for a in arms], generalize=generalize)
    # the permutation tests draw from one stream in table order: it is part of the output
    ctx = _Contrasts(arms, design, level, n_perm, np.random.default_rng(seed))
    arm_rows, notes = _arm_rows(ctx, factors, columns)
    notes = _design_notes(arms, design) + notes
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


def _design_notes(arms: Sequence[Arm], design: CrossedDesign) -> list[str]:
    """What the intervals cannot speak for, and why: one training run per arm, or too few to pool."""
    trained = [a for a in arms if not a.baseline]
    if not trained:
        return []
    if design.too_few_seed_df:
        return [
            f"the seed-to-seed variance rests on {design.too_few_seed_df} degree(s) of freedom (fewer than "
            f"{MIN_SEED_DF}), too few for an interval over training runs: every interval and test is for these "
            "fine-tunes on other problems (`over`: problem). Add a seed to every arm, or arms; `ablate plan` shows "
            "what each design can detect"
        ]
    if "seed" in design.over and design.seed_effect <= 0:
        return [
            "the training seeds of each arm differ no more than their sampled responses' noise predicts (the seed "
            f"effect is estimated at or below 0 on {design.seed_df:.1f} degrees of freedom): what the seed shares hold "
            "is the seeds' scatter from problem to problem, not a shift of whole training runs; with few seeds that "
            "estimate is itself rough"
        ]
    if "seed" not in design.over and all(a.counts.n_seeds == 1 for a in trained):
        return [
            "one training run per arm: every interval and test is for these fine-tunes on other problems, not for "
            "other training runs of the arms (`over`: problem); a fine-tune on 20 examples varies from seed to "
            "seed, so add seeds before reading a difference as the data's effect"
        ]
    return []


@dataclass(frozen=True)
class _Contrasts:
    """What every table of one comparison reads: the arms, their design's variance, and the random stream the
    secondary permutation tests draw from."""

    arms: Sequence[Arm]
    design: CrossedDesign
    level: float
    n_perm: int
    rng: np.random.Generator

    def contrast(self, plus: Sequence[int], minus: Sequence[int] = ()) -> Contrast:
        """The mean of the `plus` arms minus the mean of the `minus` arms."""
        w = np.zeros(len(self.arms))
        w[list(plus)] += 1 / len(plus)
        if minus:
            w[list(minus)] -= 1 / len(minus)
        return self.design.contrast(w)

    def interval(self, plus: Sequence[int], minus: Sequence[int] = (), bounds: tuple[float, float] = (0, 1)) -> dict:
        """The interval columns of a contrast (clipped to `bounds`), and its headline p-value."""
        c = self.contrast(plus, minus)
        low, high = c.interval(self.level)
        members = [*plus, *minus]
        seeded = any(self.design.seeds_vary[j] for j in members)
        over = [x for x in self.design.over if x != "seed" or seeded]
        # a contrast of fine-tunes that cannot speak for other training runs has no headline test: "these
        # checkpoints differ" (p_checkpoints) is all the design can say, and it is not the data's effect
        conditional = "seed" not in over and any(not self.arms[j].baseline for j in members)
        return {
            "estimate": c.estimate,
            "ci_low": max(low, bounds[0]),
            "ci_high": min(high, bounds[1]),
            "df": c.df,
            **{f"share_{k}": c.share(k) for k in SOURCES},
            "narrows_most": c.narrows_most(),
            "over": "+".join(over) or "samples",
            "p_value": float("nan") if conditional else c.p_value(),
        }

    def difference(self, pairs: Sequence[tuple[int, int]]) -> dict:
        """Interval and tests of the mean difference over (treated, control) pairs of arms: the headline test
        (p_value) and the test that these checkpoints differ on this population of problems (p_checkpoints)."""
        treated, control = [a for a, _ in pairs], [b for _, b in pairs]
        arms = self.arms
        diffs = np.mean([arms[a].counts.problem_rates() - arms[b].counts.problem_rates() for a, b in pairs], 0)
        row = self.interval(treated, control, bounds=(-1.0, 1.0))
        return {**row, "p_checkpoints": sign_flip_pvalue(diffs, n_perm=self.n_perm, rng=self.rng)}


_INTERVAL = ("estimate", "ci_low", "ci_high")
_EMPTY = {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan}


def _arm_rows(
    ctx: _Contrasts, factors: Mapping[str, Sequence[str]], columns: Mapping[str, str]
) -> tuple[list[dict], list[str]]:
    """One row per arm (its levels and its own interval), and the notes on intervals a reader should doubt."""
    rows, notes = [], []
    for j, arm in enumerate(ctx.arms):
        iv = ctx.interval([j])
        iv.pop("p_value")  # "is this arm's accuracy 0" is no question
        rows.append(
            {
                "arm": arm.id,
                **{columns[f]: arm.levels.get(f) for f in factors},
                "baseline": arm.baseline,
                "n_seeds": arm.counts.n_seeds,
                "n_problems": arm.counts.n_problems,
                **iv,
            }
        )
        notes += _arm_notes(arm, iv, bool(ctx.design.borrowed[j]))
    return rows, notes


def _arm_notes(arm: Arm, iv: Mapping[str, object], borrowed: bool) -> list[str]:
    """Why one arm's interval may mislead: no width (every sample alike), a borrowed seed variance, or a
    variance resting mostly on a handful of seeds."""
    notes = []
    c = arm.counts
    if not c.correct.any() or (c.correct == c.total).all():
        notes.append(
            f"{arm.id}: every sample is {'right' if c.correct.any() else 'wrong'}: its own counts have no spread"
            f"{'' if arm.baseline else ' (any width of its interval is the seed variance pooled over the arms)'}; "
            f"over {c.n_problems} problems the rule of three bounds its pass rate within "
            f"{3 / c.n_problems:.1%} of {'100' if c.correct.any() else '0'}% (95%)"
        )
    if borrowed:
        notes.append(
            f"{arm.id}: one seed evaluated; its intervals take the seed-to-seed variance pooled over the arms "
            "with several seeds, assuming it varies as they do"
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
            values = {k: ctx.interval(members)[k] for k in _INTERVAL} if members else _EMPTY
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
            row |= {**_EMPTY, "p_value": np.nan, "p_checkpoints": np.nan}
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
    rest; the baseline is one fixed model, so only the arm's training runs (and both sides' problems and samples)
    vary."""
    arms = ctx.arms
    rows, notes = [], []
    plain = [j for j, a in enumerate(arms) if not a.baseline]
    for b in (j for j, a in enumerate(arms) if a.baseline):
        for a in plain:
            row = {"arm": arms[a].id, "vs_baseline": arms[b].id, **ctx.difference([(a, b)])}
            rows.append(row)
            notes += _disagreement(f"{arms[a].id} vs {arms[b].id}", row)
    return rows, notes


def _with_holm(rows: list[dict], columns: Sequence[str]) -> pd.DataFrame:
    """A table of tests with its Holm-adjusted p-values (over the table's rows) as its last column."""
    frame = pd.DataFrame(rows, columns=columns)
    frame["p_holm"] = holm(frame["p_value"].to_numpy())
    return frame


_LEVEL_COLUMNS = ["factor", "level", "reference", "n_arms", "estimate", "ci_low", "ci_high"]
_TESTS = [*INTERVAL_COLUMNS, "p_value", "p_checkpoints"]
_EFFECT_COLUMNS = ["factor", "level", "reference_level", "n_pairs", *_TESTS]
_PAIR_COLUMNS = ["arm", "vs_arm", "factor", "level", "vs_level", *_TESTS]
_BASELINE_COLUMNS = ["arm", "vs_baseline", *_TESTS]


def _disagreement(what: str, row: Mapping[str, float], alpha: float = 0.05) -> list[str]:
    """A note when these checkpoints differ on the problems but the headline test, which also carries
    seed-to-seed variation, does not call it: the difference may be one of training runs, not of the data."""
    p, low, high = row["p_value"], row["ci_low"], row["ci_high"]
    if np.isnan(p) or not (row["p_checkpoints"] < alpha and not p < alpha):
        return []  # no headline test (the design speaks for these fine-tunes only): the design note says why
    return [
        f"{what}: these checkpoints differ on the problems (p = {row['p_checkpoints']:.3g}), but the interval "
        f"[{low:+.1%}, {high:+.1%}], which also holds seed-to-seed variation, spans 0 (p = {p:.3g}): the "
        "difference may be one of training runs, not of the data"
    ]
