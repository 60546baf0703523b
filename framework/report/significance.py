"""Significance tests for paired arms: a sign-flip permutation test over problems, a permutation test over
training seeds, and Holm's adjustment. What each conditions on is explained in `framework.report.stats`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import special

# Draws are made in chunks of at most this many cells (replicates x seeds x problems), bounding memory.
CHUNK_CELLS = 1 << 22


def sign_flip_pvalue(
    diffs: np.ndarray, *, n_perm: int = 10000, rng: np.random.Generator | int | None = 0, exact_max: int = 16
) -> float:
    """Two-sided paired permutation test of mean(diffs) = 0 by flipping the sign of each problem's difference.

    Valid whenever, under the null, each difference is as likely to be +d as -d (the arms are exchangeable on
    every problem); no normality needed, which matters for 30 problems of 0/1-heavy pass rates. Exact over all
    2^P sign patterns for P <= exact_max; otherwise Monte Carlo with the (1 + hits) / (1 + n_perm) estimate,
    which keeps the test valid (never below its level) at any n_perm.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if observed <= tol:
        return 1.0
    if d.size <= exact_max:
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        means = np.abs(signs @ d) / d.size
        return float(np.mean(means >= observed - tol))
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    hits = 0
    chunk = max(1, CHUNK_CELLS // d.size)
    for start in range(0, n_perm, chunk):
        m = min(chunk, n_perm - start)
        signs = rng.integers(0, 2, size=(m, d.size), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) / d.size >= observed - tol))
    return (1 + hits) / (1 + n_perm)


def seed_permutation_pvalue(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    n_perm: int = 10000,
    rng: np.random.Generator | int | None = 0,
    exact_max: int = 20000,
) -> float:
    """Two-sided permutation test that training runs of the treated arms score like those of their controls.

    Each pair is (the treated arm's per-seed scores, the control arm's); the statistic is the mean over pairs of
    the difference of the two arms' mean scores. Under "no difference between the arms' training runs" the seed
    labels are exchangeable within each pair, so the p-value is the share of relabelings at least as extreme:
    exact when the relabelings number at most exact_max, else Monte Carlo ((1 + hits) / (1 + n_perm)). Unlike the
    sign-flip test over problems it generalizes over training runs, and it is as weak as their number: with 3
    seeds per arm the smallest possible p is 2/20 = 0.1. NaN when an arm has fewer than 2 seeds.
    """
    groups = [(np.asarray(a, float), np.asarray(b, float)) for a, b in pairs]
    if not groups or any(min(a.size, b.size) < 2 for a, b in groups):
        return float("nan")

    def splits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Every relabeling's difference of means (treated minus control), the observed one first."""
        pooled, k = np.concatenate([a, b]), a.size
        picks = np.array(list(itertools.combinations(range(pooled.size), k)))
        treated = pooled[picks].sum(1)
        return treated / k - (pooled.sum() - treated) / b.size

    observed = abs(np.mean([a.mean() - b.mean() for a, b in groups]))
    tol = 1e-12 * max(1.0, max(float(np.abs(np.concatenate([a, b])).max()) for a, b in groups))
    sizes = [special.comb(a.size + b.size, a.size, exact=True) for a, b in groups]
    if np.prod([float(x) for x in sizes]) <= exact_max:
        total = np.zeros(1)
        for a, b in groups:  # every combination of the pairs' relabelings
            total = (total[:, None] + splits(a, b)[None, :]).ravel()
        return float(np.mean(np.abs(total / len(groups)) >= observed - tol))
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    total = np.zeros(n_perm)
    for a, b in groups:
        pooled = np.concatenate([a, b])
        perm = rng.permuted(np.broadcast_to(pooled, (n_perm, pooled.size)), axis=1)
        total += perm[:, : a.size].mean(1) - perm[:, a.size :].mean(1)
    hits = int(np.count_nonzero(np.abs(total / len(groups)) >= observed - tol))
    return (1 + hits) / (1 + n_perm)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: controls the family-wise error over the comparisons of one table."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    q = p[ok]
    order = np.argsort(q)
    m = q.size
    adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out
