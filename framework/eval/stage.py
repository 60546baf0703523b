"""The `eval` stage: generate with vLLM (or transformers), grade every sample, compute the field's metrics.

One job is one checkpoint x one benchmark, so adding a benchmark never re-runs the others and a killed sweep
resumes at the next unfinished benchmark. A launcher hands all benchmarks of a checkpoint to one process
(`ablate exec eval K1 K2 ...`) and the engine is loaded once for them (cached below).

Prompts are token ids from `framework.formatting.render_prompt`, the same function training used, so the model
sees exactly the tokens it was trained on. Output: `samples.parquet` (every sample with its text, token count,
finish reason, seed, extracted answer and verdict), `problems.parquet`, `metrics.json` (with warnings).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from framework import model_source as models
from framework.annotations import count_keywords, normalize_problem
from framework.artifacts import TRAIN_FILE, read_training_set
from framework.benchmarks.loading import load_benchmark
from framework.engines import (
    cached_tokenizer,
    generate_hf,
    generation_stop_ids,
    has_cuda,
    release_engines,
    start_job,
    vllm_generate,
)
from framework.eval.budget import Z95, checkpoint_allocation, round2_seeds, variance_target
from framework.eval.layout import resolve_layout
from framework.eval.parallel import generate_data_parallel
from framework.formatting import prompt_ids
from framework.grading import grade_many
from framework.grading.extraction import extract_answer, extract_choice
from framework.grading.metrics import benchmark_metrics, problem_table
from framework.locations import resolve_path
from framework.registry import BENCHMARKS
from framework.spec.ablation import AblationSpec
from framework.spec.models import BenchmarkSpec, EvalSpec, SampleBudget, first_round
from framework.store import write_json_atomic
from framework.sweep.plan import SEED_SLOT
from framework.variance import problem_counts

if TYPE_CHECKING:
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
    """Samples per prompt with vLLM: this process's engine, or data-parallel engines side by side, as the layout
    on the GPUs visible here says (framework.eval.layout)."""
    ev, chosen = resolve_layout(ev, model_dir, dtype)
    print(f"eval: {chosen.tp} x {chosen.dp} (tensor x data parallel): {chosen.why}", flush=True)
    if chosen.dp > 1 and len(prompts) > 1:
        release_engines()  # the ranks take the devices: an engine this process kept from an earlier job holds them
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


@dataclass
class _Setup:
    """What both rounds of an evaluation prepare alike: the benchmark, its prompts, the model and the settings."""

    bench: BenchmarkSpec
    ev: EvalSpec
    problems: pd.DataFrame
    prompts: list[list[int]]
    model_dir: Path
    tokenizer: Any
    dtype: str
    max_len: int
    stop_ids: list[int]
    clipped: str  # the clip_to_context warning, or ""
    keywords: list[str]


def _setup(ctx: StageContext) -> _Setup:
    spec = ctx.spec
    cell = next(c for c in ctx.plan.cells if c.id in ctx.job.cells)
    prompt_spec, ev = spec.evaluation_for(cell.baseline)  # a baseline may have its own (its key records them)
    if ctx.job.config.get("validation"):  # a search trial's: the objective's benchmark, not a test benchmark
        bench, ev = validation_benchmark(ctx.spec, ctx.job.config, ev)
    else:
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
    max_len = ev.max_model_len or (max(map(len, prompts)) + ev.sampling.max_tokens)
    dtype = _dtype(ctx.job.config["dtype"])  # what the key records: a baseline may name its own
    stop_ids = generation_stop_ids(model_dir, tokenizer)
    keywords = spec.annotate.reflection_keywords
    return _Setup(bench, ev, problems, prompts, model_dir, tokenizer, dtype, max_len, stop_ids, clipped, keywords)


def validation_benchmark(spec: AblationSpec, config: dict[str, Any], ev: EvalSpec) -> tuple[BenchmarkSpec, EvalSpec]:
    """A search's validation benchmark (restricted to one rung's problems when the job names them) and the
    evaluation settings with its own sample count."""
    assert spec.search is not None
    bench = spec.search.objective.benchmark
    ids = config["benchmark"].get("problem_ids")
    if ids is not None:
        bench = bench.model_copy(update={"problem_ids": list(ids)})
    return bench, ev.model_copy(update={"samples": config["eval"]["samples"]})


def _generate(s: _Setup, prompts: list[list[int]], ev: EvalSpec) -> list[list[dict]]:
    if ev.backend == "vllm":
        return generate_vllm(s.model_dir, prompts, ev, s.dtype, s.max_len, s.stop_ids)
    return generate_hf(s.model_dir, s.tokenizer, prompts, ev, s.dtype, s.stop_ids)


def run(ctx: StageContext) -> None:
    start_job()  # samples as in a process of its own, whatever this process evaluated before
    if ctx.job.config.get("round") == 2:
        return run_second_round(ctx)
    s = _setup(ctx)
    n = first_round(s.ev.samples_for(s.bench))  # a budget's first round, or the fixed count
    t0 = time.perf_counter()
    generations = _generate(s, s.prompts, _offset(s.ev, ctx.job.config).model_copy(update={"samples": n}))
    gen_s = time.perf_counter() - t0
    samples, grade_s = graded_samples(s.problems, generations, s.ev, s.bench.name, s.keywords)
    _write(ctx, s, samples, n, {"generate_s": gen_s, "grade_s": grade_s})


def _offset(ev: EvalSpec, config: dict[str, Any]) -> EvalSpec:
    """The settings with this checkpoint's seeds (under a budget each checkpoint draws its own random stream:
    framework.sweep.plan.seed_offset says why)."""
    offset = int(config.get("seed_offset", 0))
    return ev.model_copy(update={"sampling": ev.sampling.model_copy(update={"seed": ev.sampling.seed + offset})})


def _first_round_statistics(samples: pd.DataFrame, metrics: dict[str, float]) -> dict[str, float]:
    """Under a budget, pass@k and the counts from both rounds (pass@k is unbiased per problem whatever its count),
    everything else -- maj,
    answer and truncation rates, lengths, reflections -- from the first round alone: those weigh responses, and the
    second round gives some problems many more of them, differently for every checkpoint."""
    first = benchmark_metrics(samples[samples["round"] == 1], ks=(1,), subset_col="subset")

    def both(key: str) -> bool:  # pass@k, and the counts of what was drawn
        name = key.rsplit("/", 1)[-1]
        return name.startswith("pass@") or name in ("n_problems", "n_samples")

    return {k: v for k, v in metrics.items() if both(k)} | {k: v for k, v in first.items() if not both(k)}


def _write(
    ctx: StageContext, s: _Setup, samples: pd.DataFrame, n: float, timings: dict, extra: dict | None = None
) -> None:
    """samples.parquet, problems.parquet and metrics.json (`n`: samples per problem, a mean under a budget)."""
    ks = tuple(k for k in s.ev.pass_k if k <= samples.groupby(["subset", "problem_id"], dropna=False).size().min())
    metrics = benchmark_metrics(samples, ks=ks, subset_col="subset")
    if "round" in samples.columns:
        metrics = _first_round_statistics(samples, metrics)
    leaked = overlap(training_problems(ctx), s.problems)
    warnings = [s.clipped] * bool(s.clipped) + sample_warnings(samples, s.ev, leaked, len(s.problems))
    samples.to_parquet(ctx.out / "samples.parquet", index=False)
    problem_table(samples).to_parquet(ctx.out / "problems.parquet", index=False)
    result = {
        "benchmark": s.bench.name,
        "model_dir": str(s.model_dir),
        "n_problems": len(s.problems),
        "n_samples": n,
        "max_tokens": s.ev.sampling.max_tokens,  # what the model could generate (clip_to_context may lower it)
        "metrics": metrics,
        "warnings": warnings,
        "trained_on": leaked,  # benchmark problem ids the model was fine-tuned on
        "hub_data": s.problems.attrs.get("hub"),  # the hub dataset and commit read (None for local/toy data)
        "timings": timings,
        **(extra or {}),
    }
    write_json_atomic(ctx.out / "metrics.json", result)
    ctx.build.manifest.update(
        {"metrics": metrics, "warnings": warnings, "timings": timings, "hub_data": result["hub_data"]}
    )
    for w in warnings:
        print(f"warning: {s.bench.name}: {w}")


# ------------------------------------------------------------------------------------------ second round
def _problem_keys(frame: pd.DataFrame) -> pd.Series:
    sub = frame["subset"].astype(object).where(frame["subset"].notna(), "") if "subset" in frame else ""
    return sub.astype(str) + "\x1f" + frame["problem_id"].astype(str)


def first_round_counts(path: Path, keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Correct and total samples per problem of a stored evaluation, in the order of `keys` (0 where absent)."""
    df = pd.read_parquet(path / "samples.parquet", columns=["subset", "problem_id", "correct"])
    table = problem_counts(df).set_index("key").reindex(keys, fill_value=0)
    return table["correct"].to_numpy(), table["total"].to_numpy()


def _generate_counts(s: _Setup, ev: EvalSpec, counts: np.ndarray, seeds: list[int]) -> list[list[dict]]:
    """`counts[i]` samples of problem i (none where 0), request i seeded from `seeds[i]` on. Problems with the same
    count go to the engine together."""
    out: list[list[dict]] = [[] for _ in counts]
    if ev.backend != "vllm":  # one prompt at a time anyway: each its own count and seed
        for i in np.flatnonzero(counts):
            sampling = ev.sampling.model_copy(update={"seed": seeds[i]})
            one = ev.model_copy(update={"samples": int(counts[i]), "sampling": sampling})
            out[i] = generate_hf(s.model_dir, s.tokenizer, [s.prompts[i]], one, s.dtype, s.stop_ids)[0]
        return out
    ev = resolve_layout(ev, s.model_dir, s.dtype)[0]  # one engine of the layout's tensor-parallel size
    for n in sorted(set(counts[counts > 0].tolist())):
        idx = [int(i) for i in np.flatnonzero(counts == n)]
        part = ev.model_copy(update={"samples": int(n)})
        gens = vllm_generate(
            s.model_dir, [s.prompts[i] for i in idx], part, s.dtype, s.max_len, s.stop_ids,
            seeds=[seeds[i] for i in idx],
        )  # fmt: skip
        for i, g in zip(idx, gens, strict=True):
            out[i] = g
    return out


class StaleFirstRound(RuntimeError):
    """The first round was drawn from other weights or other problems than the second would be."""


def _check_first_round(ctx: StageContext, first_key: str, hub: dict | None) -> None:
    """Both rounds must sample one model on one problem set: a training rebuilt since the first round (its
    checkpoint pruned, then a new budget re-keyed this round) is other weights, and a hub dataset read at its latest
    revision may have changed between the rounds. Either would mix two evaluations into one."""
    first = ctx.store.manifest("eval", first_key) or {}
    for dep, built in (first.get("input_builds") or {}).items():
        now = (ctx.store.manifest(*dep.split("/")) or {}).get("finished")
        if built and now and built != now:
            raise StaleFirstRound(
                f"the first round eval/{first_key} sampled an earlier build of {dep} (rebuilt since): re-run it with "
                f"`ablate exec eval {first_key} --force`, then this round"
            )
    read = json.loads((ctx.input_dir(f"eval/{first_key}") / "metrics.json").read_text()).get("hub_data") or {}
    if hub and read.get("commit") and hub.get("commit") != read["commit"]:
        raise StaleFirstRound(
            f"the first round eval/{first_key} read {hub.get('dataset', 'the hub dataset')} at commit "
            f"{read['commit'][:12]}, this round would read {str(hub.get('commit'))[:12]}: pin the benchmark's "
            "`revision:` to the first round's commit"
        )


def run_second_round(ctx: StageContext) -> None:
    """Spend the rest of the budget where the other checkpoints' first rounds vary most (framework.eval.budget),
    and store both rounds' samples together: this job is the checkpoint's evaluation of the benchmark."""
    s = _setup(ctx)
    cfg = ctx.job.config
    _check_first_round(ctx, cfg["first_round"], s.problems.attrs.get("hub"))
    budget = SampleBudget(**cfg["samples"])
    f = budget.first_round
    keys = _problem_keys(s.problems)
    if budget.budget * len(keys) > SEED_SLOT:  # else its seeds would run into the next checkpoint's
        raise ValueError(
            f"a budget of {budget.budget} on {len(keys)} problems draws {budget.budget * len(keys):,} samples, more "
            f"than the {SEED_SLOT:,} seeds a checkpoint has under a budget: lower eval.samples.budget or the "
            "benchmark's limit"
        )
    counts = {k: first_round_counts(ctx.input_dir(f"eval/{k}"), keys) for k in cfg["reference"]}
    target = cfg.get("seeds_per_arm") and variance_target(budget.target_half_width, cfg["seeds_per_arm"])
    alloc = checkpoint_allocation(counts, cfg["reference"], budget, len(keys), max_variance=target or None)
    seeds = round2_seeds(_offset(s.ev, cfg).sampling.seed, len(keys), f, alloc.extra)
    # On CPU vLLM seeds the engine, not the request: a fresh one must not replay round 1's draws either.
    ev = s.ev.model_copy(update={"sampling": s.ev.sampling.model_copy(update={"seed": seeds[0]})})
    t0 = time.perf_counter()
    generations = _generate_counts(s, ev, alloc.extra, seeds)
    gen_s = time.perf_counter() - t0
    drawn = [i for i in range(len(keys)) if generations[i]]
    second, grade_s = graded_samples(
        s.problems.iloc[drawn].reset_index(drop=True), [generations[i] for i in drawn], s.ev, s.bench.name,
        s.keywords,
    )  # fmt: skip
    first = pd.read_parquet(ctx.input_dir(f"eval/{cfg['first_round']}") / "samples.parquet")
    if len(second):
        second["sample_index"] += f
    samples = pd.concat([first.assign(round=1), second.assign(round=2)], ignore_index=True)
    samples = samples.astype({"round": "int64"})
    design = {
        **budget.model_dump(mode="json"),
        "mean_samples": float(alloc.total.mean()),
        "max_drawn": int(alloc.total.max()),
        "min_drawn": int(alloc.total.min()),
        "reference_checkpoints": len(cfg["reference"]),
        "stopped_at_target": alloc.stopped_at_target,
        "sampling_half_width": float(Z95 * np.sqrt(alloc.projected_variance)),
    }
    extra = {"design": design, "allocation": dict(zip(keys.tolist(), alloc.total.tolist(), strict=True))}
    _write(ctx, s, samples, float(alloc.total.mean()), {"generate_s": gen_s, "grade_s": grade_s}, extra)
