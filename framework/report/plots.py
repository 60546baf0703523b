"""The report's figures. Figures are built without pyplot (no global state, no display: the Agg canvas renders
PNGs on a cluster node or in CI, and the caller's matplotlib backend is left alone)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

_BASELINE_STYLE = {"color": "0.4", "linestyle": "--", "linewidth": 1}


def accuracy_by_level(levels: pd.DataFrame, arms: pd.DataFrame, benchmark: str, path: Path) -> Path | None:
    """One panel per factor: pass@1 of each level (averaged over the other factors) with its 95% interval, the
    levels in the spec's order with the reference hatched, baselines as dashed lines -- the picture of "which level
    helps". A level with no estimate (never evaluated beside the others' levels) has no bar."""
    if levels.empty:
        return None
    factors = list(dict.fromkeys(levels["factor"]))
    fig = Figure(figsize=(3.2 * len(factors) + 1, 3.4))
    axes = fig.subplots(1, len(factors), squeeze=False, sharey=True)
    baselines = arms[arms["baseline"]] if "baseline" in arms else arms.iloc[:0]
    for ax, factor in zip(axes[0], factors):
        rows = levels[levels["factor"] == factor].reset_index(drop=True)
        x = range(len(rows))
        err = [rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]]
        bars = ax.bar(x, rows["estimate"], yerr=err, capsize=4, color="#4c72b0", alpha=0.85)
        for bar, is_ref in zip(bars, rows["reference"]):
            if is_ref:
                bar.set_hatch("//")
                bar.set_facecolor("#a1b9d8")
        for _, b in baselines.iterrows():
            ax.axhline(b["estimate"], **_BASELINE_STYLE)
            ax.text(
                0.99, b["estimate"], b["arm"], transform=ax.get_yaxis_transform(), fontsize=7, ha="right", va="bottom"
            )
        ax.set_xticks(list(x), rows["level"], rotation=20, ha="right", fontsize=8)
        ax.set_title(factor, fontsize=10)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(f"{benchmark} pass@1 (95% CI)")
    fig.suptitle(f"{benchmark}: accuracy by factor level (hatched: reference)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def length_vs_accuracy(cells: pd.DataFrame, benchmark: str, path: Path) -> Path | None:
    """Mean response length against pass@1, one point per evaluated cell: do the better arms simply think longer
    (or get cut off at max_tokens)? Points of one arm share a colour; baselines are grey squares."""
    done = cells[cells["evaluated"]]
    if done.empty:
        return None
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    arms = list(dict.fromkeys(done.loc[done["baseline"].isna(), "arm"]))
    cmap = matplotlib.colormaps["tab10" if len(arms) <= 10 else "tab20"]
    for i, arm in enumerate(arms):
        d = done[done["arm"] == arm]
        ax.scatter(d["mean_response_tokens"], d["pass@1"], color=cmap(i % cmap.N), label=arm, s=30)
    base = done[done["baseline"].notna()]
    if not base.empty:
        ax.scatter(base["mean_response_tokens"], base["pass@1"], marker="s", color="0.5", label="baseline", s=30)
    ax.set_xlabel("mean response tokens")
    ax.set_ylabel(f"{benchmark} pass@1")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{benchmark}: response length vs accuracy (one point per cell)", fontsize=10)
    ax.legend(fontsize=7, loc="best", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
