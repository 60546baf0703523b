"""The `data` stage: turn a cell's factor levels into its training set, reproducibly.

Order (documented in framework.data.factors): filters by factor order, sampling of n_examples with the selection seed
(one trace per problem; stratified when a factor asks), optional token-budget matching, then transforms. The
selection depends on the seed and the filters' result only, so arms that differ in a transform (keywords) train
on the same problems. Output: `train.jsonl` (training order) and `stats.json` (what `ablate plan` shows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from framework.artifacts import TRAIN_FILE, load_pool_tokenizer, read_pool
from framework.artifacts import count_tokens as count_pool_tokens
from framework.data.selection import TooFewTraces, select
from framework.errors import DataError, PoolValueError
from framework.registry import FACTORS
from framework.store import write_json_atomic

if TYPE_CHECKING:
    from framework.spec.ablation import AblationSpec
    from framework.sweep.execute import StageContext

TRAIN_COLUMNS = (
    "example_index",
    "trace_id",
    "problem_id",
    "problem",
    "trace",
    "source",
    "expected_answer",
    "topic",
    "difficulty",
    "n_tokens",
    "correct",
    "reflection_count",
)


def _arm(arm_config: list[list[Any]]) -> list[tuple[str, str, Any, dict]]:
    return [(fname, level, FACTORS.resolve(kind), params) for fname, kind, level, params in arm_config]


def token_budget(
    pool: pd.DataFrame, arm_config: list[list[Any]], spec: AblationSpec, seed: int, **kw: Any
) -> int | None:
    """For a length level with match_total_tokens: the total tokens its reference level's selection has, before
    any transform (the budget is spent on untransformed traces, and arms that differ only in a transform must get
    the same budget so that they stay paired on the same problems)."""

    for i, (fname, kind, level, params) in enumerate(arm_config):
        if kind != "length" or not params.get("match_total_tokens"):
            continue
        factor = spec.factors[fname]
        ref = factor.reference_level
        if ref == level:
            return None
        ref_params = next(lv.params for lv in factor.levels if lv.name == ref)
        ref_arm = [*arm_config[:i], [fname, kind, ref, ref_params], *arm_config[i + 1 :]]
        filters = [entry for entry in _arm(ref_arm) if entry[2].phase == "filter"]
        return int(select(pool, filters, spec.n_examples, seed, **kw).frame["n_tokens"].sum())
    return None


def build_training_set(
    pool: pd.DataFrame,
    config: dict[str, Any],
    spec: AblationSpec,
    count_tokens: Any = None,
    cells: list[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    kw = {"reflection_keywords": spec.annotate.reflection_keywords, "count_tokens": count_tokens}
    try:
        budget = token_budget(pool, config["arm"], spec, config["seed"], **kw)
        sel = select(pool, _arm(config["arm"]), config["n_examples"], config["seed"], token_budget=budget, **kw)
    except (TooFewTraces, PoolValueError) as e:  # the pool cannot serve the cell; any other error is a bug
        who = ", ".join(cells or []) or "cell"
        raise DataError(f"{who}: {e}") from None
    frame = sel.frame.sort_values("example_index").reset_index(drop=True)
    return frame[[c for c in TRAIN_COLUMNS if c in frame.columns]], sel.report


def _jsonable(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def write_training_set(frame: pd.DataFrame, path: Path) -> None:
    """JSON lines in a fixed column order: the same selection gives the same bytes."""
    with path.open("w", encoding="utf-8") as f:
        for row in frame.itertuples(index=False):
            record = {c: _jsonable(getattr(row, c)) for c in frame.columns}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def training_stats(frame: pd.DataFrame, report: dict[str, Any]) -> dict[str, Any]:
    graded = frame["correct"].dropna() if "correct" in frame else pd.Series(dtype=bool)
    tokens = frame["n_tokens"]
    mix = lambda col: {str(k): int(v) for k, v in frame[col].value_counts(dropna=False).sort_index().items()}  # noqa: E731
    return {
        "examples": len(frame),
        "problems": int(frame["problem_id"].nunique()),
        "tokens": {
            "total": int(tokens.sum()),
            "mean": float(tokens.mean()),
            "median": float(tokens.median()),
            "min": int(tokens.min()),
            "max": int(tokens.max()),
        },
        "keyword_rate": float((frame["reflection_count"] > 0).mean()),
        "keywords_per_trace": float(frame["reflection_count"].mean()),
        "correct_rate": float(graded.astype(bool).mean()) if len(graded) else None,
        "source_mix": mix("source"),
        "topic_mix": mix("topic"),
        "selection": report,
    }


def run(ctx: StageContext) -> None:
    pool_dir = ctx.inputs("pool")[0]
    pool = read_pool(pool_dir)
    tokenizer = load_pool_tokenizer(pool_dir)

    def count_tokens(texts: list[str]) -> list[int]:
        return count_pool_tokens(tokenizer, texts)

    frame, report = build_training_set(pool, ctx.job.config, ctx.spec, count_tokens, ctx.job.cells)
    write_training_set(frame, ctx.out / TRAIN_FILE)
    stats = training_stats(frame, report)
    write_json_atomic(ctx.out / "stats.json", stats)
    ctx.build.manifest["data"] = {k: stats[k] for k in ("examples", "problems", "tokens", "source_mix")}
