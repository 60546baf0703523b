"""The `pool` stage: load every source, check it, and annotate each trace with what the factors need.

Runs once per sweep (its key covers the sources' content, the tokenizer and the annotation settings), so a
100k-trace pool is tokenized and graded once and reused by every cell. Output: `pool.parquet` + `stats.json`.

Annotations: `n_tokens` (base model tokenizer), `answer` / `correct` (final answer graded against
expected_answer; None when either is missing), `reflection_count` (reflection phrases), `pass_rate` (a reference
model's pass rate: the pool's own column, or the spec's sampled results), `trace_id` (stable hash of source, problem, trace).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from framework import model_source as models
from framework.annotations import count_keywords, normalize_problem
from framework.artifacts import POOL_FILE, count_tokens
from framework.benchmarks.loading import load_benchmark
from framework.grading import answer_text, grade_many
from framework.grading.extraction import extract_answer
from framework.locations import resolve_path
from framework.model_source import load_tokenizer
from framework.pool.topics import cluster_topics, model_embeddings, tfidf
from framework.sources import (
    PoolError,
    conform,
    difficulty_labels,
    read_generated,
    read_source,
    storable,
    trace_id,
)
from framework.store import write_json_atomic

if TYPE_CHECKING:
    from framework.spec.ablation import AblationSpec
    from framework.sweep.execute import StageContext


def load_pool(
    spec: AblationSpec, resolve: Any, generated: dict[int, Path] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """All sources in the pool schema, concatenated and checked; the report says what was dropped. `generated`:
    the output directory of each generated source's job, by its place in the pool."""
    frames, hub_data, missing = [], [], {}
    for i, src in enumerate(spec.pool):
        if src.generate is not None:
            raw, label, columns = read_generated(src, (generated or {})[i], i)
        else:
            raw, label, columns = read_source(src, i, resolve)
        if "hub" in raw.attrs:  # which commit of a hub dataset this source read
            hub_data.append({"source": f"pool[{i}]", **raw.attrs["hub"]})
        frame, gaps = conform(raw, label, src, columns)
        frames.append(frame)
        if gaps:  # what on_missing dropped or kept
            missing[f"pool[{i}]"] = gaps
    pool = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    pool = storable(difficulty_labels(pool))
    pool = check_answers_agree(pool, spec.eval.grading.grader or "math")
    pool.insert(
        0, "trace_id", [trace_id(s, p, t) for s, p, t in zip(pool["source"], pool["problem_id"], pool["trace"])]
    )
    before = len(pool)
    pool = pool.drop_duplicates("trace_id", keep="first").reset_index(drop=True)
    pool = pool.rename(columns={"_where": "origin"})
    dropped = sum(g["rows"] for g in missing.values() if g["on_missing"] == "drop")
    report = {"rows_read": before, "duplicate_traces_dropped": before - len(pool), "hub_data": hub_data}
    return pool, {**report, "missing_dropped": dropped, "missing_values": missing}


def check_answers_agree(pool: pd.DataFrame, grader: str = "math") -> pd.DataFrame:
    """One problem id with two different expected answers is a broken pool: grading would be arbitrary. Two
    sources may write one answer differently (1/2 and \\frac{1}{2}): those the grader finds equal agree, and
    the problem keeps its first spelling so every trace of it is graded alike."""

    known = pool[pool["expected_answer"].notna()]
    groups = known.groupby("problem_id", sort=False)["expected_answer"].unique()  # one pass; first spelling first
    spelled = {pid: list(answers) for pid, answers in groups.items() if len(answers) > 1}
    pairs = [(other, answers[0]) for answers in spelled.values() for other in answers[1:]]
    verdicts = iter(grade_many(pairs, grader=grader) if pairs else [])
    problems, first = [], {}
    for pid, answers in spelled.items():
        if all(v.correct and not v.error for v in [next(verdicts) for _ in answers[1:]]):
            first[pid] = answers[0]
        elif len(problems) < 20:
            rows = known[known["problem_id"] == pid].drop_duplicates("expected_answer")
            pairs_text = ", ".join(f"{w}: {a!r}" for w, a in zip(rows["_where"], rows["expected_answer"]))
            problems.append(f"problem_id {pid!r} has different expected answers ({pairs_text})")
    if problems:
        raise PoolError(problems)
    if first:
        pool = pool.copy()
        same = pool["problem_id"].map(first)
        pool["expected_answer"] = pool["expected_answer"].where(same.isna() | pool["expected_answer"].isna(), same)
    return pool


# ------------------------------------------------------------------------------------------ annotation
def grade_traces(pool: pd.DataFrame, spec: AblationSpec) -> tuple[list[str | None], list[str], list[bool | None]]:
    """(answer, how it was found, verdict) per trace; the method tells a stated answer (boxed, "the answer is")
    from a number read off the end of a trace that may simply have stopped mid-thought."""

    fallbacks = spec.eval.grading.fallbacks
    found = [extract_answer(t, fallbacks=fallbacks) for t in pool["trace"]]
    answers, methods = [a for a, _ in found], [m for _, m in found]
    expected = pool["expected_answer"]
    todo = [i for i, (a, e) in enumerate(zip(answers, expected)) if a is not None and answer_text(e) is not None]
    verdicts = grade_many(
        [(answers[i], pool["expected_answer"].iloc[i]) for i in todo],
        grader=spec.eval.grading.grader or "math",
        timeout_s=spec.annotate.grading_timeout_s,
        workers=spec.eval.grading.workers,
    )
    correct: list[bool | None] = [None] * len(pool)
    for i, v in zip(todo, verdicts):
        correct[i] = None if v.error else v.correct  # a timeout or a crashed grader: ungraded, not wrong
    return answers, methods, correct


def pass_rates(path: Path) -> dict[str, float]:
    """Mean correctness per problem from a reference model's sampled results (problem_id, correct)."""
    frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_json(path, lines=True)
    missing = {"problem_id", "correct"} - set(frame.columns)
    if missing:
        raise PoolError(f"{path}: pass-rate file lacks column(s) {sorted(missing)}")
    return frame.groupby(frame["problem_id"].astype(str))["correct"].mean().astype(float).to_dict()


def annotate(
    pool: pd.DataFrame, spec: AblationSpec, tokenizer: Any, resolve: Any, base_model: str | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """Add the annotation columns in place; returns seconds spent per annotation, and reports for the stats."""

    timings = {}
    t = time.perf_counter()
    pool["n_tokens"] = count_tokens(tokenizer, pool["trace"].tolist())
    timings["tokenize_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pool["answer"], pool["answer_method"], pool["correct"] = grade_traces(pool, spec)
    timings["grade_s"] = time.perf_counter() - t
    t = time.perf_counter()
    words = spec.annotate.reflection_keywords
    pool["reflection_count"] = [count_keywords(text, words) for text in pool["trace"]]
    timings["keywords_s"] = time.perf_counter() - t
    if "pass_rate" not in pool.columns:
        pool["pass_rate"] = None
    if spec.annotate.pass_rates:  # the spec's sampled results win over a pool's own column
        path = resolve(spec.annotate.pass_rates)
        if path is None:
            raise PoolError(f"annotate.pass_rates: file {spec.annotate.pass_rates!r} does not exist")
        rates = pass_rates(path)
        pool["pass_rate"] = [rates.get(p, old) for p, old in zip(pool["problem_id"], pool["pass_rate"])]
    if spec.annotate.topics == "none":
        pool["topic"] = None
    elif spec.annotate.topics == "cluster":
        t = time.perf_counter()
        cluster_report = annotate_topics(pool, spec, resolve, base_model)
        timings["topics_s"] = time.perf_counter() - t
        return timings, {"topic_clusters": cluster_report}
    return timings, {}


def annotate_topics(pool: pd.DataFrame, spec: AblationSpec, resolve: Any, base_model: str | None) -> dict[str, Any]:
    """Replace `topic` by clusters of problem embeddings (a given topic is kept as `topic_given`)."""

    settings = spec.annotate.topic_clusters
    if settings.embedder == "tfidf":

        def embed(texts: list[str]) -> Any:
            return tfidf(texts)[0]

    else:
        model = settings.embedder
        if model == "base":
            if base_model is None:
                raise PoolError("annotate.topic_clusters.embedder 'base' needs the base model, which is not known here")
            model = base_model
        elif (local := resolve(model)) is not None:
            model = str(local)

        def embed(texts: list[str]) -> Any:
            return model_embeddings(texts, model, batch_size=settings.batch_size, max_length=settings.max_length)

    if pool["topic"].notna().any():
        pool["topic_given"] = pool["topic"]
    try:
        pool["topic"], report = cluster_topics(pool, settings, embed)
    except ValueError as e:
        raise PoolError(str(e)) from e
    return report


def pool_stats(pool: pd.DataFrame) -> dict[str, Any]:
    graded = pool["correct"].dropna()
    return {
        "traces": len(pool),
        "problems": int(pool["problem_id"].nunique()),
        "by_source": {str(k): int(v) for k, v in pool["source"].value_counts().sort_index().items()},
        "tokens": {
            "mean": float(pool["n_tokens"].mean()),
            "median": float(pool["n_tokens"].median()),
            "max": int(pool["n_tokens"].max()),
        },
        "graded": len(graded),
        "correct_rate": float(graded.astype(bool).mean()) if len(graded) else None,
        "with_reflection": float((pool["reflection_count"] > 0).mean()),
        "topics": int(pool["topic"].nunique()),
    }


# ----------------------------------------------------------------------------------------------- stage
def base_model(spec: AblationSpec, model_dir: Path | None, spec_dir: Path | None) -> Any:
    """The base model's files: the tiny model stage's output, the shipped toy base, a local dir or a hub id."""

    return models.fetch(models.resolve(spec.model, model_dir=model_dir, spec_dir=spec_dir))


def drop_eval_problems(pool: pd.DataFrame, benchmarks: dict[str, list[str]]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The pool without the traces of problems the benchmarks test (text, case and whitespace aside); and what
    was dropped, per benchmark."""

    keys = pool["problem"].map(normalize_problem)
    by_bench = {name: keys.isin({normalize_problem(t) for t in texts}) for name, texts in benchmarks.items()}
    drop = pd.Series(False, index=pool.index)
    for hit in by_bench.values():
        drop |= hit
    report = {
        "traces": int(drop.sum()),
        "problems": int(pool.loc[drop, "problem_id"].nunique()),
        "by_benchmark": {name: int(pool.loc[hit, "problem_id"].nunique()) for name, hit in by_bench.items()},
    }
    return pool[~drop].reset_index(drop=True), report


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    spec_dir = ctx.loaded.path.resolve().parent if ctx.loaded.path else None

    def resolve(p: str) -> Path | None:
        return resolve_path(p, spec_dir)

    generated = {i: ctx.input_dir(job_id) for i, job_id in ctx.plan.generated.items()}
    pool, report = load_pool(spec, resolve, generated)
    if spec.annotate.exclude_eval_problems:
        texts = {b.name: load_benchmark(b, resolve)["problem"].astype(str).tolist() for b in spec.eval.benchmarks}
        pool, report["excluded_eval_problems"] = drop_eval_problems(pool, texts)
    source = base_model(spec, (ctx.inputs("model") or [None])[0], spec_dir)
    tokenizer = load_tokenizer(source)
    report["timings"], extra = annotate(pool, spec, tokenizer, resolve, base_model=source.location)
    report.update(extra)
    pool.to_parquet(ctx.out / POOL_FILE, index=False)
    tokenizer.save_pretrained(str(ctx.out / "tokenizer"))  # data cells re-count tokens after rewriting traces
    stats = {**pool_stats(pool), **report}
    write_json_atomic(ctx.out / "stats.json", stats)
    keys = ("traces", "problems", "by_source", "graded", "hub_data", "missing_dropped")
    ctx.build.manifest["pool"] = {k: stats[k] for k in keys}


def read_stats(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / "stats.json").read_text())
