"""The `generate` stage: sample a teacher on problems and keep what it wrote as traces for the pool.

One job is one generated pool source (teacher x prompt x sampling x problems). Every request is journaled the
moment it finishes, in a journal shared by every job of that teacher and sampling (framework.generate.journal),
so a kill loses only the requests in flight, a rerun asks only for the rest, and a job with more problems or
samples asks only for the new ones. Output: `traces.parquet` (one row per finished request: the problem's fields,
the trace, the teacher, sample index, finish reason and token counts), `usage.json` (requests, tokens, cost,
time), `failed.jsonl` (requests that failed for good, with their reasons). The pool stage grades and annotates
the traces like any other source's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from framework import model_source as models
from framework.annotations import normalize_problem
from framework.artifacts import GENERATED_FILE
from framework.benchmarks.loading import load_benchmark
from framework.errors import DataError, UserError
from framework.generate import client, offline
from framework.generate.journal import JournalWriter, read_journal
from framework.generate.requests import Request, build_requests, sampling_identity
from framework.hashing import content_key
from framework.locations import resolve_path
from framework.sources import conform, problem_id_for, read_generated, read_source, trace_id
from framework.spec.models import ModelSpec
from framework.spec.pool import GenerateSpec
from framework.store import write_json_atomic

if TYPE_CHECKING:
    from framework.spec.pool import PoolSourceSpec
    from framework.sweep.execute import StageContext


class GenerateError(UserError):
    """A generation that could not finish: too many failed requests, a refused key, test problems as input."""


# ---------------------------------------------------------------------------------------------- problems
def read_problems(src: PoolSourceSpec, where: str, resolve: Any) -> pd.DataFrame:
    """The distinct problems of the source, with an id (given, or from the text) and every other column."""
    frame, _label, _columns = read_source(src, 0, resolve)
    if "problem" not in frame.columns:
        raise DataError(f"{where}.problems: no problem column (map it with columns: {{problem: <column>}})")
    empty = frame["problem"].isna() | (frame["problem"].astype(str).str.strip() == "")
    if empty.any():
        rows = ", ".join(frame.loc[empty, "_where"].head(5))
        raise DataError(f"{where}.problems: {int(empty.sum())} row(s) have no problem text ({rows})")
    frame = frame.copy()
    frame["problem"] = frame["problem"].astype(str)
    given = frame["problem_id"] if "problem_id" in frame.columns else pd.Series([None] * len(frame))
    frame["problem_id"] = [
        problem_id_for(p) if i is None or (isinstance(i, float) and pd.isna(i)) else str(i)
        for i, p in zip(given, frame["problem"])
    ]
    frame = frame.drop(columns=[c for c in ("trace", "source") if c in frame.columns])
    return frame.drop_duplicates("problem_id", keep="first").reset_index(drop=True)


def read_refined(spec: Any, index: int, resolve: Any, generated: dict[int, Path], where: str) -> pd.DataFrame:
    """The traces a refinement rewrites: those labelled `refine` by the sources before it, each once, with the
    pool's id of the trace (`parent_trace_id`) and its label (`parent_source`)."""
    label = spec.pool[index].generate.refine
    frames, labels = [], set()
    for j, src in enumerate(spec.pool[:index]):
        raw, default, columns = (
            read_generated(src, generated[j], j) if src.generate is not None else read_source(src, j, resolve)
        )
        frame, _ = conform(raw, default, src, columns)
        labels |= set(frame["source"])
        frames.append(frame[frame["source"] == label])
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        known = ", ".join(sorted(labels)) or "none"
        raise GenerateError(f"{where}.refine: no trace before pool[{index}] is labelled {label!r}; labels: {known}")
    rows = rows.drop(columns=["parent_source", "parent_trace_id"], errors="ignore")  # a refinement's own parent
    rows["parent_trace_id"] = [trace_id(s, p, t) for s, p, t in zip(rows["source"], rows["problem_id"], rows["trace"])]
    rows = rows.rename(columns={"source": "parent_source"}).drop_duplicates("parent_trace_id")
    return rows.reset_index(drop=True)


def refuse_test_problems(problems: pd.DataFrame, spec: Any, resolve: Any, where: str) -> None:
    """Training traces written for problems the sweep tests on would leak the test: refused by normalized text."""
    texts = problems["problem"].map(normalize_problem)
    hits = []
    for bench in spec.eval.benchmarks:
        tested = {normalize_problem(str(t)) for t in load_benchmark(bench, resolve)["problem"]}
        found = problems.loc[texts.isin(tested), "problem_id"].tolist()
        if found:
            hits.append(f"{len(found)} of them are problems of benchmark {bench.name} (e.g. {', '.join(found[:3])})")
    if hits:
        raise GenerateError(
            f"{where}.problems: {'; '.join(hits)}; remove them, or set generate.allow_test_problems: true"
        )


# ---------------------------------------------------------------------------------------------- teacher
def journal_dir(store_root: Path, teacher: dict[str, Any], gen: GenerateSpec) -> Path:
    """The request journal shared by every job of this teacher and sampling."""
    return store_root / ".requests" / content_key({"teacher": teacher, **sampling_identity(gen)})


def api_key(gen: GenerateSpec) -> str | None:
    ep = gen.teacher.endpoint
    if ep is None or ep.api_key_env is None:
        return None
    key = os.environ.get(ep.api_key_env)
    if not key:
        raise GenerateError(f"teacher.endpoint.api_key_env names {ep.api_key_env!r}, which is not set or empty")
    return key


def ask_teacher(ctx: StageContext, gen: GenerateSpec, todo: list[Request], record: Any) -> None:
    """Send the requests to the endpoint or the offline engine; `record(outcome)` journals each one."""
    ep = gen.teacher.endpoint
    if ep is not None:
        endpoint = client.Endpoint(
            ep.base_url, ep.model, api_key(gen), gen.chat, ep.concurrency, ep.timeout_s, ep.max_retries,
            ep.backoff_s, gen.sampling.model_dump(),
        )  # fmt: skip
        calls = [client.Call(r.request_id, r.prompt, r.seed) for r in todo]
        try:
            client.generate(endpoint, calls, record, seed=gen.sampling.seed)
        except client.EndpointRefused as e:
            raise GenerateError(str(e)) from None
        return
    spec_dir = ctx.loaded.path.resolve().parent if ctx.loaded.path else None
    teacher = ModelSpec(
        name_or_path=gen.teacher.model, revision=gen.teacher.revision, dtype=gen.teacher.dtype,
        chat_template=gen.teacher.chat_template,
    )  # fmt: skip
    source = models.fetch(models.resolve(teacher, spec_dir=spec_dir))
    context = models.max_positions(models.load_config(source))
    offline.generate(Path(source.location), models.load_tokenizer(source), todo, gen, record, context)


# ---------------------------------------------------------------------------------------------- output
def traces_frame(
    items: pd.DataFrame, requests: list[Request], done: dict[str, dict], gen: GenerateSpec, teacher: dict, where: str
) -> pd.DataFrame:
    """One row per finished request with text: the item's fields (a refinement's without the trace it rewrote,
    which `parent_trace_id` names), the trace and how it was made. An empty answer is no trace."""
    key = "parent_trace_id" if gen.refine is not None else "problem_id"
    by_id = {str(row[key]): row for row in items.to_dict("records")}
    rows = []
    for r in requests:
        rec = done.get(r.request_id)
        if rec is None or not (rec.get("text") or "").strip():
            continue
        item = by_id[r.item]
        rows.append(
            {
                **{k: v for k, v in item.items() if k not in ("_where", "trace")},
                "trace": rec["text"],
                "teacher": gen.teacher.name,
                "teacher_revision": gen.teacher.revision,
                "sample": r.sample,
                "finish_reason": rec.get("finish_reason"),
                "prompt_tokens": rec.get("prompt_tokens"),
                "completion_tokens": rec.get("completion_tokens"),
                "request_id": r.request_id,
                "generation": json.dumps({"teacher": teacher, "prompt": gen.prompt, **sampling_identity(gen)}),
                "_where": f"{where} {'trace ' + r.item if gen.refine else 'problem ' + r.problem_id} sample {r.sample}",
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("sample", "prompt_tokens", "completion_tokens"):  # counts stay integers beside other sources
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    return frame


def usage(requests: list[Request], done: dict, failed: dict, asked: int, seconds: float, gen: GenerateSpec) -> dict:
    mine = [done[r.request_id] for r in requests if r.request_id in done]
    p_tok = sum(rec.get("prompt_tokens") or 0 for rec in mine)
    c_tok = sum(rec.get("completion_tokens") or 0 for rec in mine)
    ep = gen.teacher.endpoint
    cost = None
    if ep is not None and ep.price_input_per_mtok is not None and ep.price_output_per_mtok is not None:
        cost = (p_tok * ep.price_input_per_mtok + c_tok * ep.price_output_per_mtok) / 1e6
    capped = [rec["max_tokens"] for rec in mine if rec.get("max_tokens") is not None]
    warning = (
        f"{len(capped)} answers were allowed fewer than max_tokens {gen.sampling.max_tokens} tokens (down to "
        f"{min(capped)}): their prompt and max_tokens do not fit the teacher's context"
        if capped
        else None
    )
    return {
        "warning": warning,
        "requests": len(requests),
        "finished": len(mine),
        "empty": sum(not (rec.get("text") or "").strip() for rec in mine),
        "failed": sum(r.request_id in failed and r.request_id not in done for r in requests),
        "asked_now": asked,
        "reused": len(requests) - asked,
        "truncated": sum(rec.get("finish_reason") == "length" for rec in mine),
        "capped": sum(rec.get("max_tokens") is not None for rec in mine),
        "prompt_tokens": p_tok,
        "completion_tokens": c_tok,
        "cost": cost,
        "seconds": round(seconds, 3),
        "requests_per_s": round(asked / seconds, 3) if seconds > 0 and asked else None,
    }


# ---------------------------------------------------------------------------------------------- stage
def run(ctx: StageContext) -> None:
    spec = ctx.spec
    index = next(i for i, job_id in ctx.plan.generated.items() if job_id == ctx.job.id)
    where = f"pool[{index}].generate"
    gen = spec.pool[index].generate
    spec_dir = ctx.loaded.path.resolve().parent if ctx.loaded.path else None

    def resolve(p: str) -> Path | None:
        return resolve_path(p, spec_dir)

    if gen.problems is not None:
        items, item = read_problems(gen.problems, where, resolve), "problem_id"
    else:
        generated = {j: ctx.input_dir(job_id) for j, job_id in ctx.plan.generated.items() if j < index}
        items, item = read_refined(spec, index, resolve, generated, where), "parent_trace_id"
    if not gen.allow_test_problems:
        refuse_test_problems(items, spec, resolve, where)
    teacher = ctx.job.config["teacher"]
    requests = build_requests(items, gen, teacher, item)
    journal = journal_dir(ctx.store.root, teacher, gen)
    done, failed = read_journal(journal)  # kept up to date below: the journal is read once
    todo = list({r.request_id: r for r in requests if r.request_id not in done}.values())  # one call per id
    t0 = time.monotonic()
    with JournalWriter(journal) as writer:
        by_id = {r.request_id: r for r in todo}

        def record(outcome: client.Outcome) -> None:
            r = by_id[outcome.request_id]
            rec = {
                "request_id": r.request_id, "status": "ok" if outcome.ok else "failed",
                "problem_id": r.problem_id, "sample": r.sample, "text": outcome.text,
                "finish_reason": outcome.finish_reason, "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens, "attempts": outcome.attempts,
                "error": outcome.error, "max_tokens": outcome.max_tokens, "at": time.time(),
            }  # fmt: skip
            writer.write(rec)
            if outcome.ok:  # as read_journal would read it back: a success wins over a failure
                done[r.request_id] = rec
                failed.pop(r.request_id, None)
            elif r.request_id not in done:
                failed[r.request_id] = rec

        if todo:
            ask_teacher(ctx, gen, todo, record)
    seconds = time.monotonic() - t0
    lost = [r for r in requests if r.request_id not in done]
    report = usage(requests, done, failed, len(todo), seconds, gen)
    frame = traces_frame(items, requests, done, gen, teacher, where)
    frame.to_parquet(ctx.out / GENERATED_FILE, index=False)
    write_json_atomic(ctx.out / "usage.json", report)
    with (ctx.out / "failed.jsonl").open("w", encoding="utf-8") as f:
        for r in lost:
            rec = failed.get(r.request_id, {})
            f.write(json.dumps({"request_id": r.request_id, "problem_id": r.problem_id, "sample": r.sample,
                                "error": rec.get("error", "not answered")}) + "\n")  # fmt: skip
    ctx.build.manifest["generate"] = report
    if len(lost) > gen.max_failed_fraction * len(requests):
        reasons = sorted({failed.get(r.request_id, {}).get("error") or "not answered" for r in lost})
        raise GenerateError(
            f"{where}: {len(lost)} of {len(requests)} requests failed (max_failed_fraction "
            f"{gen.max_failed_fraction:g}); reasons: {'; '.join(reasons[:5])}. The {report['finished']} finished are kept: "
            "a rerun asks only for the failed ones"
        )
