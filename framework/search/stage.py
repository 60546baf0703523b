"""The `search` stage: a study of the training recipe of one arm on a validation benchmark (Optuna).

A study has worker jobs and one select job (framework.sweep.plan.study_jobs):
  - a worker opens the study (Optuna's storage, shared by every worker of it), checks that the validation
    problems are none of the sweep's test problems, then pulls trials until the study has its number: each trial
    is a train job with the trial's parameters and the validation eval job(s) of its checkpoint, run here as
    ordinary store jobs (framework.search.trials); its output, `trials.json`, lists the trials it ran;
  - the select job reads the finished study and writes what the final cells are trained with: `best.json` (the
    chosen parameters, the objective, counts, importances), `trials.csv`, `history.png`, `importance.png`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
from matplotlib.figure import Figure

from framework.benchmarks import BenchmarkError
from framework.benchmarks.loading import load_benchmark, problem_overlap
from framework.engines import release_engines
from framework.locations import resolve_path
from framework.search.study import (
    SearchError,
    best_record,
    open_storage,
    open_study,
    run_worker,
    shown_storage,
    storage_url,
    study_name,
    trial_rows,
)
from framework.search.trials import TrialJobs, combine, prune_trial_checkpoint, register, rungs
from framework.spec.models import BenchmarkSpec
from framework.spec.search import SearchSpec
from framework.store import write_json_atomic
from framework.sweep.execute import execute, results_base
from framework.sweep.plan import Job

if TYPE_CHECKING:
    from framework.sweep.execute import StageContext


def run(ctx: StageContext) -> None:
    role = ctx.job.config["role"]
    if role not in ("worker", "select"):
        raise ValueError(f"search job {ctx.job.key}: unknown role {role!r}")
    with time_limit_warning() as warned:  # from the start: Slurm may warn a job at any moment of its run
        if role == "worker":
            worker(ctx, warned)
        else:
            select(ctx)  # seconds: it finishes well before the limit it was warned of


def _search(ctx: StageContext) -> SearchSpec:
    if ctx.spec.search is None:
        raise SearchError(f"search/{ctx.job.key}: the spec has no `search:` block")
    return ctx.spec.search


def _storage(ctx: StageContext, name: str) -> tuple[str, optuna.storages.RDBStorage]:
    """The storage, and how it may be shown (never a password, nor a ${VAR}'s value)."""
    search = _search(ctx)
    url = storage_url(search.storage, results_base(ctx.store) / ctx.spec.name)
    # one lock per storage, not per study: workers of every study create a new database's tables in one place
    lock = "search-storage-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    return shown_storage(url, search.storage), open_storage(url, search, lambda: ctx.store.mutex(lock), search.storage)


def _mutex(ctx: StageContext, name: str) -> Any:
    return lambda: ctx.store.mutex("search-" + name)


# ------------------------------------------------------------------------------------------------ worker
def worker(ctx: StageContext, warned: threading.Event) -> None:
    search = _search(ctx)
    config = ctx.job.config
    name = study_name(config["study"], ctx.job.deps)
    _, storage = _storage(ctx, name)
    study = open_study(storage, name, search, _mutex(ctx, name), worker=int(config["worker"]))
    problem_ids = validation_problems(ctx)
    parts = rungs(problem_ids, search.pruner.rungs) if search.pruner.kind != "none" else None
    deps = [d for d in ctx.job.deps if not d.startswith("search/")]
    jobs = TrialJobs(config["study"], deps, list(ctx.job.cells), parts)
    t0 = time.monotonic()
    ran = run_worker(
        study,
        search,
        lambda trial, params: objective(ctx, jobs, trial, params),
        _mutex(ctx, name),
        poll_s=min(5.0, search.heartbeat_s),
        stopping=warned.is_set,
    )
    write_json_atomic(ctx.out / "trials.json", {"study": name, "worker": config["worker"], "trials": ran})
    states = [t["state"] for t in ran]
    ctx.build.manifest["search"] = {
        "study": name,
        "trials": len(ran),
        **{s.lower(): states.count(s) for s in sorted(set(states))},
        "duration_s": round(time.monotonic() - t0, 3),
    }


@contextlib.contextmanager
def time_limit_warning() -> Iterator[threading.Event]:
    """While a search job runs, USR1 (Slurm's warning that the job's time limit is near) is noted instead of
    killing it: a worker stops before its next trial and exits 75 to be requeued. During a trial's training the
    train stage takes the signal itself (a checkpoint, then a stop that fails the trial and queues it again to
    resume); during a trial's evaluation it is noted, and the trial ends first (its results kept if the limit
    cuts it short: the retry reuses them)."""
    warned = threading.Event()
    try:
        previous = signal.signal(signal.SIGUSR1, lambda signum, frame: warned.set())
    except ValueError:  # not the main thread: leave signals alone
        yield warned
        return
    try:
        yield warned
    finally:
        signal.signal(signal.SIGUSR1, previous)


def validation_problems(ctx: StageContext) -> list[str]:
    """The validation benchmark's problem ids, after checking that none of them is a problem of a test benchmark
    of the sweep, by text (the plan could check only benchmarks that load offline)."""
    search = _search(ctx)
    spec_dir = ctx.loaded.path.resolve().parent if ctx.loaded.path else None

    def load(bench: BenchmarkSpec) -> pd.DataFrame:
        try:
            return load_benchmark(bench, lambda p: resolve_path(p, spec_dir))
        except BenchmarkError as e:
            raise SearchError(f"search.objective.benchmark: {e}") from None

    held_out = load(search.objective.benchmark)
    problems = []
    for i, bench in enumerate(ctx.spec.eval.benchmarks):
        shared = problem_overlap(held_out, load(bench))
        if shared:
            problems.append(
                f"search.objective.benchmark: {len(shared)} validation problem(s) are also in eval.benchmarks[{i}] "
                f"({bench.name}): {', '.join(shared[:5])}; validate on problems the sweep never scores"
            )
    if problems:
        raise SearchError(problems)
    return [str(i) for i in held_out["problem_id"]]


def objective(ctx: StageContext, jobs: TrialJobs, trial: optuna.Trial, params: dict[str, Any]) -> float:
    """Train with the trial's parameters, evaluate the checkpoint rung by rung (reporting the running objective
    to the pruner), and return the objective over every validation problem. The trial checkpoint goes once its
    evaluations are done, unless train.keep_checkpoint."""
    search = _search(ctx)
    train = jobs.train(params)
    evals = jobs.evals(train)
    register(ctx.plan, [train, *evals])
    trial.set_user_attr("train_key", train.key)
    trial.set_user_attr("eval_keys", [e.key for e in evals])
    keep = ctx.spec.train.keep_checkpoint
    done: list[Job] = []
    metrics: list[dict[str, float]] = []
    try:
        for rung, job in enumerate(evals):
            if not ctx.store.is_done("eval", job.key):  # a repeated suggestion's evaluations are done already
                execute(ctx.loaded, ctx.plan, ctx.store, "train", train.key)
                execute(ctx.loaded, ctx.plan, ctx.store, "eval", job.key)
            done.append(job)
            metrics.append(_metrics(ctx, job))
            value = combine(metrics, search.objective.metric)
            if len(evals) > 1 and rung < len(evals) - 1:
                trial.report(value, step=rung)
                if trial.should_prune():
                    prune_trial_checkpoint(ctx.plan, ctx.store, train, done, keep=keep)
                    raise optuna.TrialPruned(f"pruned after rung {rung}: {search.objective.metric} {value:.4g}")
        if len(evals) > 1:
            trial.report(value, step=len(evals) - 1)
        return value
    finally:
        release_engines()  # the next trial evaluates another checkpoint: never two engines on one GPU


def _metrics(ctx: StageContext, job: Job) -> dict[str, float]:
    return json.loads((ctx.store.path("eval", job.key) / "metrics.json").read_text(encoding="utf-8"))["metrics"]


# ------------------------------------------------------------------------------------------------ select
def select(ctx: StageContext) -> None:
    """best.json, trials.csv and the two plots of the finished study; refused when nothing completed."""
    search = _search(ctx)
    name = study_name(ctx.job.config["study"], ctx.job.deps)
    shown, storage = _storage(ctx, name)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SearchError(
            f"search/{ctx.job.key}: {shown} holds no study {name}: its worker jobs have not run there (was "
            "search.storage changed after they ran? run them again with `ablate exec search KEY --force`)"
        ) from None
    best = {
        **best_record(study, search),
        "storage": shown,
        "arm": ctx.job.config["study"]["arm"],
    }
    rows = trial_rows(study, search)
    write_json_atomic(ctx.out / "best.json", best)
    pd.DataFrame(rows).to_csv(ctx.out / "trials.csv", index=False)
    history_plot(rows, search, ctx.out / "history.png")
    importance_plot(best["importances"], ctx.out / "importance.png")
    ctx.build.manifest["search"] = {k: best[k] for k in ("study", "params", "trial", "value", "metric", "counts")}


def history_plot(rows: list[dict[str, Any]], search: SearchSpec, path: Path) -> None:
    """The objective of each completed trial by trial number, with the best so far."""
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    done = [(r["number"], r["value"]) for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    if done:
        x, y = zip(*done)
        pick = max if search.objective.direction == "maximize" else min
        running = [pick(y[: i + 1]) for i in range(len(y))]
        ax.scatter(x, y, s=18, color="#4c72b0", label="trial")
        ax.step(x, running, where="post", color="#dd8452", label="best so far")
        ax.legend(fontsize=8)
    pruned = [r["number"] for r in rows if r["state"] == "PRUNED"]
    if pruned:
        ax.scatter(pruned, [ax.get_ylim()[0]] * len(pruned), marker="x", s=14, color="0.5", label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel(search.objective.metric)
    ax.set_title(f"validation {search.objective.metric} per trial ({search.objective.direction})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def importance_plot(importances: dict[str, float], path: Path) -> None:
    """Each parameter's share of the objective's variance (or why there is none)."""
    fig = Figure(figsize=(5.0, 0.6 + 0.4 * max(1, len(importances))))
    ax = fig.subplots()
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="#4c72b0")
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (share of variance)")
    else:
        ax.text(0.5, 0.5, "fewer than 2 completed trials, or nothing varied", ha="center", va="center", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
