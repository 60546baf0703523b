"""Benchmark metrics from per-sample grading results (numpy/pandas only).

Input is one row per sampled response: problem_id, sample_index, correct, answer, finish_reason ("stop" |
"length"), n_tokens, and optionally subset and reflection_count. Accuracy metrics (pass@k, maj@n) weigh problems
equally, as the benchmarks are reported; response diagnostics (no-answer and truncation rates, token counts,
reflections) weigh responses equally, since they describe the generations rather than the problems. Rows are sorted
by (subset, problem_id, sample_index) first, so every result is independent of row order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from framework.grading import normalize_answer

__all__ = ["benchmark_metrics", "majority_vote", "pass_at_k", "problem_table"]

REQUIRED_COLUMNS = ("problem_id", "sample_index", "correct", "answer", "finish_reason", "n_tokens")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k), the chance that k of the n samples drawn
    without replacement include a correct one.

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which avoids the huge binomials of n=64+ samples.
    """
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """maj@n: is the most frequent answer (after `normalize_answer`) a correct one?

    Votes are counted on normalized strings, so "1,000" and "1000" are one answer but "1/2" and "0.5" are two;
    merging equivalent forms would need a sympy comparison of every pair of answers. Missing answers never vote;
    all missing -> False.

    Ties go to the tied answer that occurs first in the given order (problem_table passes samples by
    sample_index). A fixed rule keeps maj@n reproducible, and because samples are i.i.d. every ordering of them is
    equally likely, so "first occurrence" picks each tied answer with equal probability: its expectation equals
    crediting a tie with the share of correct answers among those tied, while maj@n stays a yes/no per problem.

    The winning answer counts as correct if any of its samples was graded correct: samples with one normalized
    answer share one verdict unless grading failed (e.g. timed out) for some of them, and a failure is no evidence
    of a wrong answer.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    votes: dict[str, list[int]] = {}  # key -> [count, first index, any correct]
    for i, (answer, ok) in enumerate(zip(answers, correct)):
        if _missing(answer):
            continue
        key = normalize_answer(str(answer))
        if not key:
            continue
        entry = votes.setdefault(key, [0, i, 0])
        entry[0] += 1
        entry[2] |= not _missing(ok) and bool(ok)
    if not votes:
        return False
    _, _, ok = max(votes.values(), key=lambda v: (v[0], -v[1]))
    return bool(ok)


def _prepare(samples: pd.DataFrame, subset_col: str) -> pd.DataFrame:
    """Validated copy with clean dtypes, sorted so that results do not depend on row order."""
    missing = [c for c in REQUIRED_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"samples lack columns {missing}")
    if samples.empty:
        raise ValueError("no samples")
    df = samples.copy()
    df["correct"] = df["correct"].astype("boolean").fillna(False).astype(bool)
    df["_no_answer"] = df["answer"].isna()
    df["_truncated"] = df["finish_reason"].eq("length")
    keys = [subset_col, "problem_id"] if subset_col in df.columns else ["problem_id"]
    if df.duplicated([*keys, "sample_index"]).any():
        raise ValueError("duplicate (problem_id, sample_index) rows")
    return df.sort_values([*keys, "sample_index"], kind="mergesort").reset_index(drop=True)


def _problem_rows(df: pd.DataFrame, subset_col: str) -> pd.DataFrame:
    keys = [subset_col, "problem_id"] if subset_col in df.columns else ["problem_id"]
    rows = []
    for key, group in df.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        n = len(group)
        c = int(group["correct"].sum())
        row: dict[str, Any] = dict(zip(keys, key))
        row.update(
            {
                "n": n,
                "c": c,
                "pass@1": c / n,
                "maj@n": majority_vote(group["answer"].tolist(), group["correct"].tolist()),
                "no_answer_rate": float(group["_no_answer"].mean()),
                "truncation_rate": float(group["_truncated"].mean()),
                "mean_tokens": float(group["n_tokens"].mean()),
            }
        )
        if "reflection_count" in group.columns:
            row["mean_reflections"] = float(group["reflection_count"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def problem_table(samples: pd.DataFrame, *, subset_col: str = "subset") -> pd.DataFrame:
    """One row per problem: n, c, pass@1 (= c/n), maj@n (bool), no_answer_rate, truncation_rate, mean_tokens
    (and mean_reflections when samples carry reflection_count). Problems are keyed by (subset, problem_id) when the
    subset column exists, so ids that repeat across subsets (AIME 2024 #1, AIME 2025 #1) stay apart."""
    return _problem_rows(_prepare(samples, subset_col), subset_col)


def _pass_at_ks(table: pd.DataFrame, ks: Iterable[int], prefix: str = "") -> dict[str, float]:
    """pass@k (k > 1) averaged over the problems of a table with per-problem n and c, for each k that every
    problem has enough samples for."""
    ns = table["n"].to_numpy()
    return {
        f"{prefix}pass@{k}": float(np.mean([pass_at_k(int(n), int(c), k) for n, c in zip(ns, table["c"])]))
        for k in sorted(set(ks))
        if k != 1 and k <= ns.min()
    }


def _summary(table: pd.DataFrame, df: pd.DataFrame, ks: Iterable[int]) -> dict[str, float]:
    ns = table["n"].to_numpy()
    out: dict[str, float] = {"pass@1": float(table["pass@1"].mean())}
    out |= _pass_at_ks(table, ks)
    maj_name = f"maj@{ns[0]}" if (ns == ns[0]).all() else "maj@n"
    out[maj_name] = float(table["maj@n"].mean())
    out["no_answer_rate"] = float(df["_no_answer"].mean())
    out["truncation_rate"] = float(df["_truncated"].mean())
    out["mean_response_tokens"] = float(df["n_tokens"].mean())
    out["median_response_tokens"] = float(df["n_tokens"].median())
    if "reflection_count" in df.columns:
        out["reflection_per_response"] = float(df["reflection_count"].mean())
    out["n_problems"] = float(len(table))
    out["n_samples"] = float(len(df))
    return out


def benchmark_metrics(
    samples: pd.DataFrame, *, ks: Iterable[int] = (1,), subset_col: str = "subset"
) -> dict[str, float]:
    """Headline metrics for one benchmark, overall and per subset ("<subset>/<metric>").

    pass@1 is avg@n (mean over problems of c/n); pass@k is the unbiased estimator, reported for each requested k
    that every problem has enough samples for (k <= its n) and left out otherwise. maj@<n> is named with the
    sample count, or "maj@n" when problems have different counts.
    """
    ks = tuple(ks)
    df = _prepare(samples, subset_col)
    table = _problem_rows(df, subset_col)
    out = _summary(table, df, ks)
    if subset_col in df.columns:
        for subset in sorted(df[subset_col].dropna().unique(), key=str):
            sub = _summary(table[table[subset_col] == subset], df[df[subset_col] == subset], ks)
            out.update({f"{subset}/{name}": value for name, value in sub.items()})
    return out


def pass_at_k_from_samples(path: Path, ks: Iterable[int], have: Iterable[str] = ()) -> dict[str, float]:
    """pass@k for each k in `ks` (k > 1) that `have` lacks, from an eval's stored samples.parquet, overall and per
    subset: pass_k is a report setting, so adding a k to a finished sweep must not need its generations again."""
    have = set(have)
    wanted = sorted({k for k in ks if k > 1 and f"pass@{k}" not in have})
    if not wanted or not path.is_file():
        return {}
    import pyarrow.parquet as pq

    columns = [c for c in ("problem_id", "subset", "correct") if c in pq.read_schema(path).names]
    df = pd.read_parquet(path, columns=columns)
    df["correct"] = df["correct"].astype("boolean").fillna(False).astype(bool)
    keys = [c for c in ("subset", "problem_id") if c in df.columns]
    table = df.groupby(keys, dropna=False)["correct"].agg(n="size", c="sum").reset_index()
    out = _pass_at_ks(table, wanted)
    for subset in sorted(table["subset"].dropna().unique(), key=str) if "subset" in table.columns else []:
        out |= _pass_at_ks(table[table["subset"] == subset], wanted, prefix=f"{subset}/")
    return out
