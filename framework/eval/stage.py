"""The `eval` stage: generate with vLLM (or transformers), grade every sample, compute the field's metrics.

One job is one checkpoint x one benchmark, so adding a benchmark never re-runs the others and a killed sweep
resumes at the next unfinished benchmark. A launcher hands all benchmarks of a checkpoint to one process
(`ablate exec eval K1 K2 ...`) and the engine is loaded once for them (cached below).

Prompts are token ids from `framework.formatting.render_prompt`, the same function training used, so the model
sees exactly the tokens it was trained on. Output: `samples.parquet` (every sample with its text, token count,
finish reason, seed, extracted answer and verdict), `problems.parquet`, `metrics.json` (with warnings).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from framework import model_source as models
from framework.annotations import count_keywords, normalize_problem
from framework.artifacts import TRAIN_FILE, read_training_set
from framework.benchmarks.loading import load_benchmark
from framework.engines import cached_tokenizer, generate_hf, generation_stop_ids, has_cuda, vllm_generate
from framework.eval.parallel import generate_data_parallel
from framework.formatting import prompt_ids
from framework.grading import grade_many
from framework.grading.extraction import extract_answer, extract_choice
from framework.grading.metrics import benchmark_metrics, problem_table
from framework.locations import resolve_path
from framework.registry import BENCHMARKS
from framework.store import write_json_atomic

if TYPE_CHECKING:
    from framework.spec.models import EvalSpec
    from framework.sweep.execute import StageContext


def model_source_for(ctx: StageContext) -> Any:
    """The checkpoint this job evaluates: a trained cell's, a tiny base, the toy base, or a hub/local model."""

    train = ctx.inputs("train")
    if train:
        path = train[0] / "model"
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"{path}: checkpoint missing (deleted after its evaluations, keep_checkpoint: false?); "
                f"`ablate run` trains it again first, as does `ablate exec train {train[0].name}`"
            )
        return models.ModelSource("local", str(path))  # its tokenizer carries the template it was trained with
    cell = next(c for c in ctx.plan.cells if c.id in ctx.job.cells)
    spec_model = next((b.model for b in ctx.spec.baselines if b.name == cell.baseline and b.model), None)
    spec_dir = ctx.loaded.path.resolve().parent if ctx.loaded.path else None
    model_dir = (ctx.inputs("model") or [None])[0]
    return models.fetch(models.resolve(spec_model or ctx.spec.model, model_dir=model_dir, spec_dir=spec_dir))


def _dtype(spec_dtype: str) -> str:
    return ("bfloat16" if has_cuda() else "float32") if spec_dtype == "auto" else spec_dtype


def generate_vllm(
    model_dir: Path,
    prompts: list[list[int]],
    ev: EvalSpec,
    dtype: str,
    max_len: int,
    stop_ids: list[int],
) -> list[list[dict]]:
    """Samples per prompt with vLLM: this process's engine, or `eval.data_parallel_size` engines side by side."""
    if ev.data_parallel_size > 1 and len(prompts) > 1:
        return generate_data_parallel(model_dir, prompts, ev, dtype, max_len, stop_ids)
    return vllm_generate(model_dir, prompts, ev, dtype, max_len, stop_ids)


def training_problems(ctx: StageContext) -> list[str]:
    """The problem texts the evaluated checkpoint was fine-tuned on (none for a baseline)."""

    texts: list[str] = []
    for train_job in (d for d in ctx.job.deps if d.startswith("train/")):
        for data_job in (d for d in ctx.plan.jobs[train_job].deps if d.startswith("data/")):
            if (ctx.input_dir(data_job) / TRAIN_FILE).is_file():  # a store pruned of its data keeps its scores
                texts += [row["problem"] for row in read_training_set(ctx.input_dir(data_job))]
    return texts


def overlap(trained: list[str], problems: pd.DataFrame) -> list[str]:
    """Ids of the benchmark problems whose text (case and whitespace aside) the model was trained on."""

    seen = {normalize_problem(t) for t in trained}
    return [str(i) for i, t in zip(problems["problem_id"], problems["problem"]) if normalize_problem(str(t)) in seen]


def grader_for(spec_grader: str | None, benchmark_grader: str | None) -> str:
    """The spec's grader if it names one, else the benchmark's own, else math."""
    return spec_grader or benchmark_grader or "math"


def final_answers(
    texts: list[str], finish_reasons: list[str], *, grader: str, fallbacks: bool, score_truncated: bool
) -> list[tuple[str | None, str]]:
    """(answer, how it was found) per response. A response cut off by max_tokens has no final answer unless
    `score_truncated`: whatever it boxed last, it was still working."""

    out = []
    for text, finish in zip(texts, finish_reasons, strict=True):
        if finish == "length" and not score_truncated:
            out.append((None, "truncated"))
        elif grader == "multiple_choice":
            out.append(extract_choice(text, fallbacks=fallbacks))
        else:
            out.append(extract_answer(text, fallbacks=fallbacks))
    return out


def graded_samples(
    problems: pd.DataFrame, generations: list[list[dict]], ev: EvalSpec, bench: str, keywords: list[str]
) -> tuple[pd.DataFrame, float]:
    """One row per sample with its final answer, how it was found, its verdict and its reflection-keyword count;
    and the seconds grading took."""
    rows = []
    for (_, prob), outs in zip(problems.iterrows(), generations):
        for k, o in enumerate(outs):
            rows.append(
                {
                    "problem_id": prob["problem_id"],
                    "sample_index": k,
                    "subset": prob["subset"],
                    "expected_answer": prob["expected_answer"],
                    **o,
                }
            )
    samples = pd.DataFrame(rows)
    grader = grader_for(ev.grading.grader, getattr(BENCHMARKS.resolve(bench), "grader", None))
    extracted = final_answers(
        samples["text"].tolist(),
        samples["finish_reason"].tolist(),
        grader=grader,
        fallbacks=ev.grading.fallbacks,
        score_truncated=ev.grading.score_truncated,
    )
    samples["answer"] = [a for a, _ in extracted]
    samples["method"] = [m for _, m in extracted]
    t1 = time.perf_counter()
    verdicts = grade_many(
        [(a, str(e)) for (a, _), e in zip(extracted, samples["expected_answer"])],  # lists: pandas 3 makes None NaN
        grader=grader,
        timeout_s=ev.grading.timeout_s,
        workers=ev.grading.workers,
    )
    grade_s = time.perf_counter() - t1
    samples["correct"] = [v.correct for v in verdicts]
    samples["error"] = [v.error for v in verdicts]
    samples["reflection_count"] = [count_keywords(t, keywords) for t in samples["text"]]
    return samples, grade_s


def sample_warnings(samples: pd.DataFrame, ev: EvalSpec, leaked: list[str], n_problems: int) -> list[str]:
    """What a reader of the score must know: truncated chains, grading timeouts, benchmark problems the checkpoint
    was trained on."""
    warnings = []
    trunc = float((samples["finish_reason"] == "length").mean())
    if trunc > ev.truncation_warning:
        warnings.append(
            f"{trunc:.1%} of samples hit max_tokens={ev.sampling.max_tokens} (threshold "
            f"{ev.truncation_warning:.0%}): truncated chains are "
            + ("graded as they stand" if ev.grading.score_truncated else "scored as wrong")
        )
    timeouts = int((samples["error"] == "timeout").sum())
    if timeouts:
        warnings.append(f"{timeouts} answers timed out in grading and were scored as wrong")
    if leaked:
        warnings.append(
            f"{len(leaked)} of the {n_problems} problems were in this checkpoint's training set (same text), so "
            f"they are not held out: {', '.join(leaked[:10])}{' ...' if len(leaked) > 10 else ''}"
        )
    return warnings


def fit_context(ev: EvalSpec, limit: int | None, longest: int, describe: str, where: str) -> tuple[EvalSpec, str]:
    """The settings to generate with, checked against the model's context of `limit` tokens (None: unknown)
    before an engine is loaded: a budget that does not fit is a ModelError naming both numbers, or, with
    clip_to_context, max_tokens lowered to what fits beside the longest prompt, returned with the warning that
    says so (else "")."""
    context = ev.max_model_len or limit
    if context is None:
        return ev, ""
    too_long = limit is not None and ev.max_model_len is not None and ev.max_model_len > limit
    if longest >= context and not too_long:
        raise models.ModelError(
            f"{where}: the longest prompt ({longest} tokens) leaves no room to generate in the {context}-token "
            f"context of {describe}; shorten the prompt or give the model a longer context"
        )
    max_tokens = ev.sampling.max_tokens
    if ev.clip_to_context and not too_long and longest + max_tokens > context:
        sampling = ev.sampling.model_copy(update={"max_tokens": context - longest})
        return ev.model_copy(update={"sampling": sampling}), (
            f"max_tokens clipped from {max_tokens} to {context - longest} to fit the {context}-token context of "
            f"{describe} beside the longest prompt ({longest} tokens), as {where}.clip_to_context asks"
        )
    if limit is not None:
        problem = models.budget_problem(
            describe, limit, max_tokens, prompt=longest, max_model_len=ev.max_model_len, where=where
        )
        if problem:
            raise models.ModelError(problem)
    return ev, ""


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    cell = next(c for c in ctx.plan.cells if c.id in ctx.job.cells)
    prompt_spec, ev = spec.evaluation_for(cell.baseline)  # a baseline may have its own (its key records them)
    bench = next(b for b in ev.benchmarks if b.name == ctx.job.config["benchmark"]["name"])
    spec_dir = ctx.loaded.path.resolve().parent if ctx.loaded.path else None
    problems = load_benchmark(bench, lambda p: resolve_path(p, spec_dir))
    source = model_source_for(ctx)
    model_dir = Path(source.location)
    tokenizer = cached_tokenizer(source)
    prompts = [prompt_ids(tokenizer, p, prompt_spec) for p in problems["problem"]]
    where = f"baselines.{cell.baseline}" if cell.baseline else "eval"
    limit = models.known_context_length(source)
    ev, clipped = fit_context(ev, limit, max(map(len, prompts)), source.describe(), where)
    n = bench.samples or ev.samples
    ev_n = ev.model_copy(update={"samples": n})
    max_len = ev.max_model_len or (max(map(len, prompts)) + ev.sampling.max_tokens)
    dtype = _dtype(ctx.job.config["dtype"])  # what the key records: a baseline may name its own
    t0 = time.perf_counter()
    stop_ids = generation_stop_ids(model_dir, tokenizer)
    if ev.backend == "vllm":
        generations = generate_vllm(model_dir, prompts, ev_n, dtype, max_len, stop_ids)
    else:
        generations = generate_hf(model_dir, tokenizer, prompts, ev_n, dtype, stop_ids)
    gen_s = time.perf_counter() - t0

    samples, grade_s = graded_samples(problems, generations, ev, bench.name, spec.annotate.reflection_keywords)
    metrics = benchmark_metrics(samples, ks=tuple(k for k in ev.pass_k if k <= n), subset_col="subset")
    leaked = overlap(training_problems(ctx), problems)
    warnings = [clipped] * bool(clipped) + sample_warnings(samples, ev, leaked, len(problems))
    samples.to_parquet(ctx.out / "samples.parquet", index=False)
    problem_table(samples).to_parquet(ctx.out / "problems.parquet", index=False)
    result = {
        "benchmark": bench.name,
        "model_dir": str(model_dir),
        "n_problems": len(problems),
        "n_samples": n,
        "max_tokens": ev.sampling.max_tokens,  # what the model could generate (clip_to_context may lower it)
        "metrics": metrics,
        "warnings": warnings,
        "trained_on": leaked,  # benchmark problem ids the model was fine-tuned on
        "hub_data": problems.attrs.get("hub"),  # the hub dataset and commit read (None for local/toy data)
        "timings": {"generate_s": gen_s, "grade_s": grade_s},
    }
    write_json_atomic(ctx.out / "metrics.json", result)
    ctx.build.manifest.update(
        {"metrics": metrics, "warnings": warnings, "timings": result["timings"], "hub_data": result["hub_data"]}
    )
    for w in warnings:
        print(f"warning: {bench.name}: {w}")
