"""A sweep's finished evaluations of one benchmark, as per-problem counts: what the report compares and what `plan`
measures its power from. One reader for both, so the two never disagree on which evaluations count or how a
samples table is read (a table without a `subset` column once made the power estimate skip the cell silently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from framework.errors import UserError
from framework.variance import problem_counts

if TYPE_CHECKING:
    from framework.store import Store
    from framework.sweep.grid import Cell
    from framework.sweep.plan import Plan

__all__ = ["FinishedEval", "finished_evaluations"]


@dataclass(frozen=True)
class FinishedEval:
    """One cell's finished evaluation of the benchmark: its per-problem counts and its metrics.json."""

    cell: Cell
    counts: pd.DataFrame  # framework.variance.problem_counts: key, correct, total
    result: dict[str, Any]


def finished_evaluations(
    plan: Plan, store: Store, benchmark: str, *, unreadable: list[str] | None = None
) -> list[FinishedEval]:
    """Each cell's done evaluation of `benchmark`, in plan order: one per cell.

    Under a sample budget a cell's evaluation is its second-round job (`cell_jobs[cell]["eval"]`), whose
    samples.parquet holds both rounds; a first round alone is not an evaluation. Only the verdict columns are read,
    never the generated text (GBs on a real benchmark). A done evaluation whose files cannot be read is an error
    naming them, or, given `unreadable`, left out and its directory appended there."""
    out = []
    for cell in plan.cells:
        done = [
            job.split("/")
            for job in plan.cell_jobs[cell.id]["eval"]
            if plan.jobs[job].config["benchmark"]["name"] == benchmark and store.is_done(*job.split("/"))
        ]
        if done:
            directory = store.path(*done[-1])
            try:
                out.append(FinishedEval(cell, *_read(directory)))
            except (OSError, ValueError, KeyError, pa.ArrowException) as e:  # a corrupt, cut or foreign file
                if unreadable is None:
                    raise UserError(
                        f"{directory}: a finished evaluation whose files cannot be read ({e}); delete that directory "
                        "and `ablate run` evaluates it again"
                    ) from None
                unreadable.append(str(directory))
    return out


def _read(directory: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    path = directory / "samples.parquet"
    names = pq.read_schema(path).names
    samples = pd.read_parquet(path, columns=[c for c in ("problem_id", "subset", "correct") if c in names])
    try:
        result = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        result = {}
    return problem_counts(samples), result
