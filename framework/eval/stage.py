"""The `eval` stage: generate with vLLM (or transformers), grade every sample, compute the field's metrics.

One job is one checkpoint x one benchmark, so adding a benchmark never re-runs the others and a killed sweep
resumes at the next unfinished benchmark. A launcher hands all benchmarks of a checkpoint to one process
(`ablate exec eval K1 K2 ...`) and the engine is loaded once for them (cached below).

Prompts are token ids from `framework.formatting.render_prompt`, the same function training used, so the model
sees exactly the tokens it was trained on. Output: `samples.parquet` (every sample with its text, token count,
finish reason, seed, extracted answer and verdict), `problems.parquet`, `metrics.json` (with warnings).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from framework.store import write_json_atomic

if TYPE_CHECKING:
    from framework.spec.models import EvalSpec
    from framework.sweep.execute import StageContext

_ENGINES: dict[tuple[str, str], Any] = {}  # (backend, model dir) -> loaded engine, reused across jobs


def model_source_for(ctx: StageContext) -> Any:
    """The checkpoint this job evaluates: a trained cell's, a tiny base, the toy base, or a hub/local model."""
    from framework import model_source as models

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


def _drop_engine(key: tuple[str, ...]) -> None:
    """Free an engine before loading its replacement: two copies of a 32B model do not fit one GPU."""
    import gc

    del _ENGINES[key]
    gc.collect()
    if _has_cuda():
        import torch

        torch.cuda.empty_cache()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _dtype(spec_dtype: str) -> str:
    return ("bfloat16" if _has_cuda() else "float32") if spec_dtype == "auto" else spec_dtype


def generate_vllm(
    model_dir: Path,
    prompts: list[list[int]],
    ev: EvalSpec,
    dtype: str,
    max_len: int,
    stop_ids: list[int],
    indices: list[int] | None = None,
) -> list[list[dict]]:
    """Samples per prompt, each ending at the first of `stop_ids`. `indices`: the prompts' places in the whole
    benchmark (they seed the requests), when this process generates one data-parallel shard of it."""
    if ev.data_parallel_size > 1 and len(prompts) > 1:
        from framework.eval.parallel import generate_data_parallel

        return generate_data_parallel(model_dir, prompts, ev, dtype, max_len, stop_ids)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    key = ("vllm", str(model_dir), dtype)
    if key in _ENGINES and _ENGINES[key].llm_engine.model_config.max_model_len < max_len:
        _drop_engine(key)  # loaded for a benchmark with shorter prompts or answers: too short for this one
    if key not in _ENGINES:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        extra: dict[str, Any] = {}
        if not _has_cuda() and ev.tensor_parallel_size == 1:
            # On CPU the engine core and its worker each start in a process of their own, re-importing torch and
            # vLLM: about 30 of the 50 seconds an evaluation of a tiny model takes. In this process they cost none.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            extra["distributed_executor_backend"] = "uni"
        _ENGINES[key] = LLM(
            model=str(model_dir),
            dtype=dtype,
            max_model_len=max_len,
            seed=ev.sampling.seed,
            tensor_parallel_size=ev.tensor_parallel_size,
            enforce_eager=not _has_cuda(),
            **extra,
        )
    llm = _ENGINES[key]
    s = ev.sampling
    # Per-request seeds make each problem's samples independent of batching, but vLLM's CPU build cannot
    # rewind a CPU generator after a chunked prefill ("CPU Generator does not use offset"): on CPU the engine
    # seed fixed at load makes the run reproducible instead.
    per_request = _has_cuda()
    where = indices if indices is not None else list(range(len(prompts)))
    params = [
        SamplingParams(
            n=ev.samples,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_tokens=s.max_tokens,
            seed=sample_seed(s.seed, i, 0, ev.samples) if per_request else None,
            stop_token_ids=stop_ids,
        )
        for i in where
    ]
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [
        [
            {
                "text": o.text,
                "n_tokens": len(o.token_ids),
                "finish_reason": finish_reason(o.finish_reason),
                "seed": sample_seed(s.seed, i, o.index, ev.samples) if per_request else s.seed,
            }
            for o in out.outputs
        ]
        for i, out in zip(where, outputs, strict=True)
    ]


def sample_seed(seed: int, problem: int, sample: int, n: int) -> int:
    """The seed of one sample. vLLM seeds the k-th of a request's n samples with the request's seed + k, so
    requests are n seeds apart: with seed + problem, sample k + 1 of one problem and sample k of the next drew the
    same random numbers at every step, and samples of neighbouring problems were not independent."""
    return seed + problem * n + sample


def finish_reason(reason: str | None) -> str:
    """stop or length; a request the engine aborted or failed has no answer to grade, so the stage fails (and is
    retried) rather than scoring it as a model that stopped."""
    if reason in ("stop", "length"):
        return reason
    raise RuntimeError(f"vLLM ended a request with finish_reason={reason!r}: the evaluation is incomplete")


def generation_stop_ids(model_dir: Path, tokenizer: Any) -> list[int]:
    """Every id that ends a sample: the chat turn end and EOS the prompts were built with, and the model's own
    EOS ids. A base model's generation config often names only its pretraining EOS, so without the turn end it
    writes past its answer into turns of its own (whose last box is then graded)."""
    from transformers import GenerationConfig

    from framework.formatting import stop_token_ids

    try:
        eos = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    own = eos if isinstance(eos, list) else [eos]
    return stop_token_ids(tokenizer, [i for i in own if i is not None])


def generate_hf(
    model_dir: Path, tokenizer: Any, prompts: list[list[int]], ev: EvalSpec, dtype: str, stop_ids: list[int]
) -> list[list[dict]]:
    """transformers `generate`, for where vLLM cannot run; one prompt at a time (no padding effects)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    key = ("hf", str(model_dir), dtype)
    if key not in _ENGINES:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        _ENGINES[key] = model.to("cuda" if _has_cuda() else "cpu").eval()
    model = _ENGINES[key]
    gen = GenerationConfig.from_pretrained(str(model_dir))
    eos = stop_ids
    s = ev.sampling
    results = []
    for i, ids in enumerate(prompts):
        torch.manual_seed(s.seed + i)
        inp = torch.tensor([ids], device=model.device)
        sample = s.temperature > 0
        with torch.no_grad():
            out = model.generate(
                inp,
                attention_mask=torch.ones_like(inp),
                max_new_tokens=s.max_tokens,
                do_sample=sample,
                temperature=s.temperature if sample else None,
                top_p=s.top_p if sample else None,
                top_k=s.top_k if sample and s.top_k > 0 else None,
                num_return_sequences=ev.samples,
                eos_token_id=eos,
                pad_token_id=gen.pad_token_id if gen.pad_token_id is not None else eos[0],
            )
        rows = []
        for seq in out[:, len(ids) :].tolist():
            stop = next((k for k, t in enumerate(seq) if t in eos), None)
            tokens = seq[: stop + 1] if stop is not None else seq
            text_ids = tokens[:-1] if stop is not None else tokens
            rows.append(
                {
                    "text": tokenizer.decode(text_ids, skip_special_tokens=True),
                    "n_tokens": len(tokens),
                    "finish_reason": "stop" if stop is not None else "length",
                    "seed": s.seed + i,
                }
            )
        results.append(rows)
    return results


def training_problems(ctx: StageContext) -> list[str]:
    """The problem texts the evaluated checkpoint was fine-tuned on (none for a baseline)."""
    from framework.data.stage import TRAIN_FILE, read_training_set

    texts: list[str] = []
    for train_job in (d for d in ctx.job.deps if d.startswith("train/")):
        for data_job in (d for d in ctx.plan.jobs[train_job].deps if d.startswith("data/")):
            if (ctx.input_dir(data_job) / TRAIN_FILE).is_file():  # a store pruned of its data keeps its scores
                texts += [row["problem"] for row in read_training_set(ctx.input_dir(data_job))]
    return texts


def overlap(trained: list[str], problems: pd.DataFrame) -> list[str]:
    """Ids of the benchmark problems whose text (case and whitespace aside) the model was trained on."""
    from framework.pool.sources import normalize_problem

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
    from framework.grading.extraction import extract_answer, extract_choice

    out = []
    for text, finish in zip(texts, finish_reasons, strict=True):
        if finish == "length" and not score_truncated:
            out.append((None, "truncated"))
        elif grader == "multiple_choice":
            out.append(extract_choice(text, fallbacks=fallbacks))
        else:
            out.append(extract_answer(text, fallbacks=fallbacks))
    return out


def run(ctx: StageContext) -> None:
    from framework.benchmarks.loading import load_benchmark
    from framework.data.factors.keywords import count_keywords
    from framework.formatting import prompt_ids
    from framework.grading import grade_many
    from framework.grading.metrics import benchmark_metrics, problem_table
    from framework.model_source import load_tokenizer
    from framework.registry import BENCHMARKS
    from framework.sweep.plan import resolve_path

    spec, ev = ctx.spec, ctx.spec.eval
    bench = next(b for b in ev.benchmarks if b.name == ctx.job.config["benchmark"]["name"])
    spec_dir = ctx.loaded.path.resolve().parent if ctx.loaded.path else None
    problems = load_benchmark(bench, lambda p: resolve_path(p, spec_dir))
    source = model_source_for(ctx)
    model_dir = Path(source.location)
    key = ("tok", str(model_dir), source.chat_template)
    tokenizer = _ENGINES[key] = _ENGINES.get(key) or load_tokenizer(source)
    prompts = [prompt_ids(tokenizer, p, spec.prompt) for p in problems["problem"]]
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
    grader = grader_for(ev.grading.grader, getattr(BENCHMARKS.resolve(bench.name), "grader", None))
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
    samples["reflection_count"] = [count_keywords(t, spec.annotate.reflection_keywords) for t in samples["text"]]

    metrics = benchmark_metrics(samples, ks=tuple(k for k in ev.pass_k if k <= n), subset_col="subset")
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
    leaked = overlap(training_problems(ctx), problems)
    if leaked:
        warnings.append(
            f"{len(leaked)} of the {len(problems)} problems were in this checkpoint's training set (same text), so "
            f"they are not held out: {', '.join(leaked[:10])}{' ...' if len(leaked) > 10 else ''}"
        )
    samples.to_parquet(ctx.out / "samples.parquet", index=False)
    problem_table(samples).to_parquet(ctx.out / "problems.parquet", index=False)
    result = {
        "benchmark": bench.name,
        "model_dir": str(model_dir),
        "n_problems": len(problems),
        "n_samples": n,
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
