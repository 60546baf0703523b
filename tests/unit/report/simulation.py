"""Simulated sweeps with known truths, to check the report's intervals and headline test (framework.variance).

Problems have pass rates drawn from a Beta distribution (Beta(0.3, 0.3): competition math, most problems nearly
always or nearly never solved); a training run shifts every problem's logit by its own seed effect; an arm's level
shifts it by `delta`; each (seed, problem) draws `samples` graded responses. The truth an interval speaks for is the
arm's expected pass@1 over the problem and seed populations. benchmarks/statistics.py runs every design at full size.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from framework.variance import ArmCounts, crossed_design


@dataclass(frozen=True)
class Design:
    problems: int
    seeds: int
    seed_sd: float  # seed effect on the logit scale
    samples: int
    beta: tuple[float, float] = (0.3, 0.3)
    arms: int = 3  # the reference, a treated arm (delta), then twins of the reference (the third is the null)
    delta: float = 0.4
    others: tuple[float, ...] = ()  # further arms, at these logit shifts (arms far from the rest in accuracy)

    def __str__(self) -> str:
        return (
            f"P={self.problems:<4d} S={self.seeds} seed_sd={self.seed_sd:<4} k={self.samples:<3d} "
            f"Beta{self.beta} arms={self.arms}" + (f" others={self.others}" if self.others else "")
        )


# The designs of the report's own checks: competition-sized benchmarks, 2-5 seeds, no to strong seed effects,
# few and several samples.
# Two seeds take a fourth arm (a twin of the reference): the seed variance then pools 4 degrees of freedom, the
# fewest the report uses (MIN_SEED_DF).
DESIGNS = [
    Design(p, s, sd, k, arms=4 if s == 2 else 3)
    for p, s, sd, k in itertools.product((60, 256), (2, 3, 5), (0.0, 0.3, 0.8), (4, 16))
]


@dataclass(frozen=True)
class Result:
    arm_cover: float  # the treated arm's interval holds its truth
    diff_cover: float  # treated minus reference holds the true difference
    null_reject: float  # the twin against the reference (equal arms, only seeds and samples differ): p < 0.05
    generalized: float  # share of replicates whose intervals speak for other training runs
    reps: int


def _logits(rng: np.random.Generator, beta: tuple[float, float], size) -> np.ndarray:
    return logit(np.clip(rng.beta(*beta, size), 1e-9, 1 - 1e-9))


def truths(design: Design, rng: np.random.Generator, n: int = 1_000_000) -> tuple[float, float]:
    """The reference arm's and the treated arm's expected pass@1 over problems and training runs."""
    q, u = _logits(rng, design.beta, n), design.seed_sd * rng.standard_normal(n)
    return float(expit(q + u).mean()), float(expit(q + u + design.delta).mean())


def simulate(design: Design, reps: int, seed: int = 0) -> Result:
    rng = np.random.default_rng([seed, design.problems, design.seeds, int(design.seed_sd * 10), design.samples])
    ref_truth, treated_truth = truths(design, rng)
    shifts = np.zeros(design.arms + len(design.others))
    shifts[1] = design.delta
    shifts[design.arms :] = design.others
    hits = np.zeros(4)
    for _ in range(reps):
        q = _logits(rng, design.beta, design.problems)
        u = design.seed_sd * rng.standard_normal((shifts.size, design.seeds))
        p = expit(q[None, None, :] + u[:, :, None] + shifts[:, None, None])
        n = np.full(p.shape, design.samples)
        c = rng.binomial(n, p)
        d = crossed_design([ArmCounts(c[a], n[a]) for a in range(shifts.size)])
        w = np.zeros(shifts.size)
        w[1] = 1.0
        low, high = d.contrast(w).interval()
        hits[0] += low <= treated_truth <= high
        w[0] = -1.0
        low, high = d.contrast(w).interval()
        hits[1] += low <= treated_truth - ref_truth <= high
        if design.arms > 2:
            w[:] = 0.0
            w[0], w[2] = -1.0, 1.0
            hits[2] += d.contrast(w).p_value() < 0.05
        hits[3] += "seed" in d.over
    arm, diff, null, gen = hits / reps
    return Result(arm, diff, null if design.arms > 2 else float("nan"), gen, reps)
