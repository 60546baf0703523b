"""Loading a benchmark's problems: from the toy world, a local JSONL/Parquet (NeMo-Skills layout) or the hub.

Output columns: problem_id, problem, expected_answer, subset (None when the benchmark has no subsets). Multiple
choice (GPQA-Diamond) renders the options into the problem with an order shuffled by a fixed per-question seed,
so every model sees the same order and the answer letter is not always the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from framework import hub_data
from framework.annotations import normalize_problem
from framework.benchmarks import BenchmarkError
from framework.benchmarks.choices import multiple_choice
from framework.fetch import fetch_hint
from framework.grading import answer_text
from framework.registry import BENCHMARKS
from framework.spec.models import BenchmarkSpec
from framework.toy import benchmark_rows, make_world


def _read_local(path: Path) -> pd.DataFrame:
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    try:
        return pd.read_json(path, lines=path.suffix == ".jsonl", dtype=False)
    except ValueError as e:
        raise BenchmarkError(f"{path}: cannot read ({e})") from None


def _read_hub(info: Any, revision: str | None) -> pd.DataFrame:
    try:
        return hub_data.read_hub_split(info.hub, info.split, config=info.config, revision=revision)
    except Exception as e:  # the hub client raises many types; the message is what matters
        at = f" at revision {revision!r}" if revision else ""
        raise BenchmarkError(
            f"benchmark {info.name}: hub dataset {info.hub!r}{at} cannot be loaded ({e}); give a local copy with "
            "`path:`"
        ) from None


def load_benchmark(bench: BenchmarkSpec, resolve: Any) -> pd.DataFrame:
    """Problems of one benchmark, filtered by problem_ids and limited, in a stable order; from the hub, its
    `attrs["hub"]` names the dataset and the commit read."""
    info = BENCHMARKS.resolve(bench.name)
    if bench.path is not None:
        path = resolve(bench.path)
        if path is None:
            raise BenchmarkError(f"benchmark {bench.name}: file {bench.path!r} does not exist{fetch_hint(bench.path)}")
        frame = _read_local(path)
    elif getattr(info, "name", bench.name) in ("toy", "toy-dev"):
        frame = pd.DataFrame(benchmark_rows(make_world(0), split=info.split))
    elif getattr(info, "hub", None):
        frame = _read_hub(info, bench.revision)
    else:
        fetched = f"data/benchmarks/{bench.name}/test.jsonl"
        how = f"`ablate fetch {bench.name}` writes it to {fetched}" if fetch_hint(fetched) else "prepare it"
        raise BenchmarkError(f"benchmark {bench.name} has no hub copy: {how} (NeMo-Skills layout); give `path:`")
    origin = frame.attrs.get("hub")
    columns = dict(getattr(info, "columns", {}) or {})
    frame = frame.rename(columns={v: k for k, v in columns.items() if v in frame.columns})
    if getattr(info, "grader", "math") == "multiple_choice":
        frame = multiple_choice(frame, bench.name)
    for alias in ("id", "unique_id", "problem_idx"):
        if "problem_id" not in frame.columns and alias in frame.columns:
            frame = frame.rename(columns={alias: "problem_id"})
    if "problem_id" not in frame.columns:
        frame["problem_id"] = [f"{bench.name}-{i}" for i in range(len(frame))]
    subset_field = getattr(info, "subset_field", None) or "subset_for_metrics"
    frame["subset"] = frame[subset_field] if subset_field in frame.columns else None
    missing = [c for c in ("problem", "expected_answer") if c not in frame.columns]
    if missing:
        raise BenchmarkError(f"benchmark {bench.name}: field(s) {missing} missing; columns: {sorted(frame.columns)}")
    frame["problem_id"] = frame["problem_id"].astype(str)
    if bench.problem_ids is not None:
        frame = frame[frame["problem_id"].isin(bench.problem_ids)]
    if bench.limit is not None:
        frame = frame.head(bench.limit)
    answers = [answer_text(v) for v in frame["expected_answer"]]
    if unknown := [i for i, a in zip(frame["problem_id"], answers) if a is None]:  # graded against "nan": all wrong
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise BenchmarkError(f"benchmark {bench.name}: {len(unknown)} problem(s) have no expected_answer ({shown})")
    frame["expected_answer"] = pd.Series(answers, index=frame.index, dtype=object)
    if frame["problem_id"].duplicated().any():
        raise BenchmarkError(f"benchmark {bench.name}: duplicate problem ids")
    out = frame[["problem_id", "problem", "expected_answer", "subset"]].reset_index(drop=True)
    if origin is not None:  # the dataset and commit read, for the eval stage to record
        out.attrs["hub"] = origin
    return out


def problem_overlap(problems: pd.DataFrame, other: pd.DataFrame) -> list[str]:
    """Ids of `problems` whose text (case and whitespace aside) is also a problem of `other`."""
    seen = {normalize_problem(str(t)) for t in other["problem"]}
    return [str(i) for i, t in zip(problems["problem_id"], problems["problem"]) if normalize_problem(str(t)) in seen]
