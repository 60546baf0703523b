"""From an arm's factor levels and a seed to a cell's training set: filter, sample, fit a token budget, transform.

Sampling is keyed by the seed alone (never the levels): two arms whose filters leave the same traces train on
the same examples (arms that differ only in a transform form a paired design), and arms whose filters leave
different traces of the same problems train on the same problems.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from framework.data.factors.base import Factor, FactorContext
from framework.data.factors.diversity import STRATUM

Arm = list[tuple[str, str, Factor, dict[str, Any]]]  # (factor name, level name, factor, level params)
TokenCounter = Callable[[list[str]], list[int]]


class TooFewTraces(ValueError):
    """A filter or the sampler left fewer traces than the cell needs; the message says where and how many."""

    def __init__(self, message: str, *, step: str = "", level: str | None = None, have: int = 0, need: int = 0):
        super().__init__(message)
        self.step, self.level, self.have, self.need = step, level, have, need


@dataclass
class Selection:
    """The cell's training rows, and a JSON-ready account of how each step narrowed or changed them."""

    frame: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def _rng(seed: int, stream: int) -> np.random.Generator:
    """The factors' generator (stream 1): a factor drawing numbers never shifts the sample, which is keyed below."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream,))))


def _uniform(seed: int, ids: Any, salt: str) -> np.ndarray:
    """A number in [0, 1) per id, from a hash of (seed, salt, id): the same id draws the same number in every
    arm, whatever else the arm's filters left."""
    out = np.empty(len(ids), dtype="float64")
    for i, x in enumerate(ids):
        digest = hashlib.blake2b(f"{seed}\0{salt}\0{x}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def _order(frame: pd.DataFrame, seed: int) -> pd.Index:
    """Every eligible problem once, in sampled order, each with one of its traces drawn uniformly.

    Problems are ordered by a hash of (seed, problem id) and each takes its trace of smallest hash of (seed,
    trace id), so the order depends on neither the pool's row order nor what else an arm's filters left: two
    arms draw the same problems wherever both can (the paper's source ablation: the same problems, traces
    from different authors), and the same trace wherever both hold it. Their difference is then the factor's,
    not a different draw of problems. With a stratum column, strata are put in a hashed order and interleaved
    round-robin, so any prefix spreads evenly over strata.
    """
    keys = pd.DataFrame(
        {"problem": frame["problem_id"].astype(str).to_numpy(), "key": _uniform(seed, frame["trace_id"], "trace")},
        index=frame.index,
    )
    one = keys.sort_values(["problem", "key"], kind="mergesort").drop_duplicates("problem")
    order = one.index[np.argsort(_uniform(seed, one["problem"].tolist(), "problem"), kind="stable")]
    if STRATUM not in frame.columns:
        return order
    strata = frame.loc[order, STRATUM].astype(str).to_numpy()
    names = sorted(pd.unique(strata))
    position = {names[j]: i for i, j in enumerate(np.argsort(_uniform(seed, names, "stratum"), kind="stable"))}
    slot = np.array([position[s] for s in strata], dtype="int64")
    rank = pd.Series(slot).groupby(slot).cumcount().to_numpy()
    return order[np.lexsort((slot, rank))]


def _fit_budget(tokens: np.ndarray, n: int, budget: int) -> int:
    """How many of the ordered candidates to take: add while under the budget, or drop from the end while over."""
    count, total = n, int(tokens[:n].sum())
    if total < budget:
        while total < budget and count < len(tokens):
            total += int(tokens[count])
            count += 1
    else:
        while total > budget and count > 1:
            count -= 1
            total -= int(tokens[count])
    return count


def _context(seed: int, n: int, keywords: list[str], count_tokens: TokenCounter | None) -> FactorContext:
    return FactorContext(rng=_rng(seed, 1), n_examples=n, reflection_keywords=list(keywords), count_tokens=count_tokens)


def select(
    pool: pd.DataFrame,
    arm: Arm,
    n_examples: int,
    seed: int,
    *,
    reflection_keywords: list[str],
    count_tokens: TokenCounter | None = None,
    token_budget: int | None = None,
) -> Selection:
    """The cell's training set: filters by (order, name), then n_examples problems sampled once each, then (when
    `token_budget` is given, for length.match_total_tokens) more or fewer of them to meet the budget, then
    transforms by order. Rows come out in sampled order with `example_index`; same inputs, same bytes."""
    if n_examples < 1:
        raise ValueError(f"n_examples must be >= 1, got {n_examples}")
    steps = [(name, level, f, f.params.model_validate(params or {})) for name, level, f, params in arm]
    filters = sorted((s for s in steps if s[2].phase == "filter"), key=lambda s: (s[2].order, s[0]))
    transforms = sorted((s for s in steps if s[2].phase == "transform"), key=lambda s: (s[2].order, s[0]))
    frame = pool.reset_index(drop=True)
    report: dict[str, Any] = {"pool": len(frame), "filters": [], "transforms": []}

    for name, level, factor, params in filters:
        ctx = _context(seed, n_examples, reflection_keywords, count_tokens)
        before = len(frame)
        frame = factor.apply(frame, level, params, ctx)
        report["filters"].append(
            {"factor": name, "level": level, "before": before, "after": len(frame), "report": ctx.report}
        )
        if len(frame) < n_examples:
            hint = f" ({ctx.report['hint']})" if ctx.report.get("hint") else ""
            raise TooFewTraces(
                f"after {name}={level}: {len(frame)} traces left, need {n_examples}{hint}",
                step=name,
                level=level,
                have=len(frame),
                need=n_examples,
            )

    order = _order(frame, seed)
    if len(order) < n_examples:
        raise TooFewTraces(
            f"sampling: {len(order)} distinct problems left ({len(frame)} traces), need {n_examples}",
            step="sampling",
            have=len(order),
            need=n_examples,
        )
    tokens = frame.loc[order, "n_tokens"].to_numpy(dtype="int64")
    count = n_examples if token_budget is None else _fit_budget(tokens, n_examples, token_budget)
    if token_budget is not None and count == len(tokens) and int(tokens.sum()) < token_budget:
        raise TooFewTraces(
            f"token budget: all {len(order)} problems left hold {int(tokens.sum())} tokens, short of the "
            f"{token_budget} the reference arm trains on",
            step="token_budget",
            have=int(tokens.sum()),
            need=int(token_budget),
        )
    sample = frame.loc[order[:count]].drop(columns=[STRATUM], errors="ignore").reset_index(drop=True)
    sample["example_index"] = np.arange(count, dtype="int64")
    report["sampling"] = {
        "seed": seed,
        "traces": len(frame),
        "problems": len(order),
        "n_examples": count,
        "total_tokens": int(tokens[:count].sum()),
    }
    if STRATUM in frame.columns:
        strata = frame.loc[order[:count], STRATUM].astype(str).value_counts().sort_index()
        report["sampling"]["strata"] = {str(k): int(v) for k, v in strata.items()}
    if token_budget is not None:
        report["token_budget"] = {"budget": int(token_budget), "total_tokens": int(tokens[:count].sum()), "n": count}

    for name, level, factor, params in transforms:
        ctx = _context(seed, count, reflection_keywords, count_tokens)
        sample = factor.apply(sample, level, params, ctx)
        report["transforms"].append({"factor": name, "level": level, "report": ctx.report})
    if sample["example_index"].tolist() != list(range(count)):
        raise RuntimeError("a transform added, dropped or reordered examples")
    report["total_tokens"] = int(sample["n_tokens"].sum())
    return Selection(sample.reset_index(drop=True), report)
