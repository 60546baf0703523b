"""length: keep traces in a band of token length (quantile bins or explicit token ranges)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from framework.data.factors.base import Factor, FactorContext
from framework.spec.base import SpecModel


class Params(SpecModel):
    bins: int | None = Field(None, ge=2, description="Split the eligible traces into this many quantile bins ...")
    bin: int | None = Field(None, ge=0, description="... and keep this one (0 = shortest).")
    min_tokens: int | None = Field(None, ge=0, description="Keep traces with at least this many tokens.")
    max_tokens: int | None = Field(None, ge=1, description="Keep traces with at most this many tokens.")
    match_total_tokens: bool = Field(
        False,
        description="Add or drop examples so this arm's total training tokens match the reference level's "
        "(separates 'longer traces' from 'more tokens').",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> Params:
        if (self.bins is None) != (self.bin is None):
            raise ValueError("give 'bins' and 'bin' together")
        if self.bins is not None and self.bin is not None and self.bin >= self.bins:
            raise ValueError(f"bin {self.bin} out of range for {self.bins} bins")
        if self.bins is not None and (self.min_tokens is not None or self.max_tokens is not None):
            raise ValueError("use 'bins'/'bin' or 'min_tokens'/'max_tokens', not both")
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens {self.min_tokens} > max_tokens {self.max_tokens}: the range is empty (swap them)"
            )
        return self


def rank_bins(values: pd.Series, tie_break: pd.Series, bins: int) -> pd.Series:
    """Quantile bin (0 = lowest) of each non-missing value; missing values get -1.

    Rows are ranked by (value, tie_break) and rank r of m goes to bin floor(r * bins / m), so bins differ in size by
    at most one row even when many values tie (value quantiles would put a whole tie group in one bin), and the
    split is reproducible because tie_break (the trace id) is unique.
    """
    present = values.notna()
    ranked = pd.DataFrame({"v": values[present], "t": tie_break[present]}).sort_values(["v", "t"], kind="mergesort")
    out = pd.Series(-1, index=values.index, dtype="int64")
    out[ranked.index] = np.arange(len(ranked), dtype="int64") * bins // max(len(ranked), 1)
    return out


def band_report(values: pd.Series, kept: pd.Series) -> dict[str, Any]:
    """Range of the kept values and how many rows had none, for plan statistics."""
    inside = values[kept]
    return {
        "missing": int(values.isna().sum()),
        "range": [float(inside.min()), float(inside.max())] if len(inside) else None,
    }


def apply(frame: pd.DataFrame, level: str, params: Params, ctx: FactorContext) -> pd.DataFrame:
    """`match_total_tokens` is not applied here: it needs the reference arm's total, which selection gets from the
    caller as a token budget."""
    tokens = pd.to_numeric(frame["n_tokens"], errors="coerce").astype("float64")
    if params.bins is not None and params.bin is not None:
        keep = rank_bins(tokens, frame["trace_id"], params.bins) == params.bin
    elif params.min_tokens is not None or params.max_tokens is not None:
        lo = -np.inf if params.min_tokens is None else params.min_tokens
        hi = np.inf if params.max_tokens is None else params.max_tokens
        keep = tokens.between(lo, hi, inclusive="both")
    else:
        keep = pd.Series(True, index=frame.index)
    ctx.report.update(band_report(tokens, keep))
    return frame[keep]


FACTOR = Factor("length", Params, apply, phase="filter", order=40, description=__doc__ or "")
