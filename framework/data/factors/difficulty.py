"""difficulty: keep problems in a band of a given label (level, rating) or of an estimated pass rate."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from framework.annotations import label_key
from framework.data.factors.base import Factor, FactorContext
from framework.data.factors.length import band_report, rank_bins
from framework.errors import PoolValueError
from framework.spec.base import SpecModel


class Params(SpecModel):
    by: Literal["label", "pass_rate"] = Field(
        "label",
        description="label: the pool's `difficulty` column; pass_rate: 1 - a reference model's pass rate.",
    )
    values: list[Any] | None = Field(None, description="Keep these label values (categorical labels).")
    min: float | None = Field(None, description="Keep difficulty >= min.")
    max: float | None = Field(None, description="Keep difficulty <= max.")
    bins: int | None = Field(
        None, ge=2, description="Split the problems (by their mean over their traces) into this many quantile bins ..."
    )
    bin: int | None = Field(None, ge=0, description="... and keep this one (0 = easiest).")

    @model_validator(mode="after")
    def _one_rule(self) -> Params:
        if (self.bins is None) != (self.bin is None):
            raise ValueError("give 'bins' and 'bin' together")
        if self.bins is not None and self.bin is not None and self.bin >= self.bins:
            raise ValueError(f"bin {self.bin} out of range for {self.bins} bins")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} > max {self.max:g}: the band is empty (swap them)")
        rules = [self.values is not None, self.min is not None or self.max is not None, self.bins is not None]
        if sum(rules) > 1:
            raise ValueError("use one of 'values', 'min'/'max' or 'bins'/'bin'")
        return self


def _raw(frame: pd.DataFrame, by: str) -> pd.Series:
    if by == "label":
        return frame["difficulty"]
    # Rounded so that e.g. 1 - 0.7 compares equal to a bound of 0.3.
    return (1.0 - pd.to_numeric(frame["pass_rate"], errors="coerce").astype("float64")).round(12)


def _numeric(raw: pd.Series, by: str, origin: pd.Series | None = None) -> pd.Series:
    """Numeric difficulty for ranges and bins; text labels cannot be ordered, so they are an error, not NaN."""
    keys = raw.map(label_key)
    numeric = pd.Series([k if isinstance(k, float) else np.nan for k in keys], index=raw.index, dtype="float64")
    bad = keys.notna() & numeric.isna()
    if bad.any():
        example = raw[bad].iloc[0]
        where = f"{origin[bad].iloc[0]}: " if origin is not None else ""
        more = f" (and {int(bad.sum()) - 1} more rows)" if bad.sum() > 1 else ""
        raise PoolValueError(
            f"{where}difficulty by={by}: label {example!r}{more} is not a number, so min/max and bins cannot order "
            "it; select categorical labels with 'values', or give every row a number (\"Level 3\" reads as 3; "
            'map words like easy/medium/hard to 1/2/3 in the file; "n/a", "?" and "Level ?" are missing)'
        )
    return numeric


def problem_bins(values: pd.Series, problem_ids: pd.Series, bins: int) -> pd.DataFrame:
    """Per problem: its difficulty `v` (the mean over its traces) and quantile bin `b` (0 = easiest; -1 without a
    value).

    Difficulty belongs to a problem, so problems are ranked (ties by id), not traces: every trace of a problem
    lands in one bin, and a problem with many traces counts once, so a boundary never splits a problem between
    two arms and bins hold near-equal numbers of problems.
    """
    per_problem = values.groupby(problem_ids.to_numpy()).mean()
    ranked = rank_bins(per_problem, pd.Series(per_problem.index, index=per_problem.index), bins)
    return pd.DataFrame({"v": per_problem, "b": ranked})


def apply(frame: pd.DataFrame, level: str, params: Params, ctx: FactorContext) -> pd.DataFrame:
    """Rows without a difficulty are dropped whenever a rule applies; with no rule every row is kept."""
    raw = _raw(frame, params.by)
    has_rule = params.values is not None or params.min is not None or params.max is not None or params.bins is not None
    if not has_rule:
        ctx.report.update({"by": params.by, "rule": None})
        return frame
    keys = raw.map(label_key)
    if len(frame) and keys.isna().all():
        column = "difficulty" if params.by == "label" else "pass_rate (a pool column, or annotate.pass_rates)"
        raise PoolValueError(f"difficulty level {level!r}: no trace has a {column} value")
    if params.values is not None:
        wanted = [label_key(v) for v in params.values]
        keep = keys.map(lambda k: k is not None and k in wanted).astype(bool)
        ctx.report.update({"by": params.by, "rule": "values", "missing": int(keys.isna().sum())})
        return frame[keep]
    values = _numeric(raw, params.by, frame["origin"] if "origin" in frame.columns else None)
    extra: dict[str, int] = {}
    if params.bins is not None:
        problems = frame["problem_id"].astype(str)
        table = problem_bins(values, problems, params.bins)
        keep = pd.Series(table["b"].reindex(problems.to_numpy()).to_numpy() == params.bin, index=frame.index)
        extra["tied_with_other_bins"] = tied_across_bins(table, params.bin)
        rule = "bins"
    else:
        lo = -np.inf if params.min is None else params.min
        hi = np.inf if params.max is None else params.max
        keep = values.between(lo, hi, inclusive="both")
        rule = "range"
    ctx.report.update({"by": params.by, "rule": rule, **band_report(values, keep), **extra})
    return frame[keep]


def tied_across_bins(table: pd.DataFrame, bin_: int) -> int:
    """Problems of bin `bin_` (in `problem_bins`' table) whose difficulty equals that of a problem in another
    bin. Equal-count bins split a tie group (many problems at pass rate 0) at the rank boundary, so part of
    "medium" can be as hard as "hard"; the count says how much of the arm that is."""
    per_problem = table[table["b"] >= 0]
    inside = per_problem[per_problem["b"] == bin_]
    elsewhere = set(per_problem.loc[per_problem["b"] != bin_, "v"])
    return int(inside["v"].isin(elsewhere).sum())


FACTOR = Factor(
    "difficulty",
    Params,
    apply,
    phase="filter",
    order=30,
    description=__doc__ or "",
    version=lambda params: "2" if params.bins is not None else "1",  # 2: bins rank problems, not traces
)
