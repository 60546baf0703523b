"""The report's secondary test -- a sign-flip permutation test over problems, for "these checkpoints differ" -- and
Holm's adjustment. What the sign-flip test conditions on is explained in `framework.report.stats`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
