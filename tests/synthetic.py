"""A synthetic sweep: fake but self-consistent stage outputs (training sets, loss curves, graded samples and the
metrics the eval stage would compute from them) published into a store for a small spec's plan, in milliseconds.
The report, tracking and pruning tests read it as they would a real sweep's store."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from framework.grading.metrics import benchmark_metrics
from framework.spec import LoadedSpec, spec_from_dict
from framework.spec.yamlsrc import Source
from framework.store import Store, write_json_atomic
from framework.sweep.grid import Cell
from framework.sweep.plan import Job, Plan, build_plan

FAKE_SECRET = "hf_" + "Zq8" * 12  # shaped like a Hugging Face token; must never reach MLflow


def synthetic_spec(tmp: Path, *, uri: str | None = None, seeds: tuple[int, ...] = (0, 1), **extra: Any) -> dict:
    (tmp / "mlflow").mkdir(parents=True, exist_ok=True)  # a sqlite URI's directory must exist (no typo's new db)
    data: dict[str, Any] = {
        "name": "synth",
        "description": "Does the trace source matter, and does the word 'wait'?",
        "model": {"name_or_path": "Qwen/Qwen2.5-0.5B"},
        "pool": [{"preset": "nemotron-math-human-reasoning"}],
        "factors": {
            "source": {"levels": ["qwq_32b_preview", "human_stage4"]},
            "keywords": {"levels": {"keep": {}, "mask": {"mode": "delete"}}},
        },
        "n_examples": 4,
        "seeds": list(seeds),
        "baselines": ["base"],
        "train": {"learning_rate": 1.0e-5, "extra_args": {"hub_token": FAKE_SECRET}},
        "eval": {"benchmarks": ["aime24"], "samples": 4, "sampling": {"max_tokens": 512}},
        "tracking": {"uri": uri or f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}", "generation_sample": 5},
        "results_dir": str(tmp / "results"),
    }
    data.update(extra)
    return data


@dataclass
class Sweep:
    loaded: LoadedSpec
    plan: Plan
    store: Store
    accuracy: dict[str, float]  # true pass rate of each arm (before seed effects), by arm id


# arm effects on the logit scale: human traces hurt, masking keywords hurts a little
ARM_EFFECT = {"source=qwq_32b_preview": 0.8, "source=human_stage4": -0.4, "keywords=keep": 0.0, "keywords=mask": -0.3}


def arm_logit(cell: Cell) -> float:
    """A cell's logit of answering a problem of average difficulty, before its seed's effect."""
    if cell.baseline is not None:
        return -1.5
    return sum(ARM_EFFECT.get(f"{f}={lv}", 0.0) for f, lv in cell.level_map.items())


@dataclass(frozen=True)
class Outcomes:
    """How the sweep's checkpoints answer: right with probability expit(logit(cell) + seed_effect * (seed - 0.5) +
    the problem's difficulty), the difficulties and then every answer drawn from one generator seeded `rng_seed`."""

    logit: Callable[[Cell], float] = arm_logit
    seed_effect: float = 0.1
    rng_seed: int = 11
    spread: float = 1.2  # standard deviation of the problems' difficulties


# The files of one stage's jobs where a caller writes them instead (a search's studies): (job, its build directory).
StageWriter = Callable[[Job, Path], None]


def synthetic_sweep(
    tmp: Path,
    *,
    n_problems: int = 12,
    steps: int = 30,
    truncate_cell: str | None = None,
    outcomes: Outcomes = Outcomes(),
    writers: Mapping[str, StageWriter] | None = None,
    **spec_kw: Any,
) -> Sweep:
    """Plan a small spec and publish every job it needs but the log stage's into a fresh store: data, train and
    eval outputs as those stages write them, `writers` for the stages they name, a placeholder for the rest."""
    data = synthetic_spec(tmp, **spec_kw)
    spec = spec_from_dict(data)
    loaded = LoadedSpec(spec=spec, path=None, source=Source(data=data))
    plan = build_plan(spec)
    store = Store(Path(spec.results_dir) / spec.name / "store")
    rng = np.random.default_rng(outcomes.rng_seed)
    difficulty = rng.normal(0.0, outcomes.spread, n_problems)
    cells = {c.id: c for c in plan.cells}
    for job in plan.jobs.values():
        if job.stage == "log":
            continue
        cell = cells[job.cells[0]]  # a job shared by cells (the reference arm's under two recipes) is the same for each
        with store.build(job.stage, job.key, {"stage": job.stage, "cells": job.cells}) as b:
            if b is None:
                continue
            if writers and job.stage in writers:
                writers[job.stage](job, b.dir)
            elif job.stage == "data":
                _write_data(b.dir, spec.n_examples)
            elif job.stage == "train":
                _write_train(b.dir, spec.n_examples, steps)
            elif job.stage == "eval":
                seed_effect = 0.0 if cell.seed is None else outcomes.seed_effect * (cell.seed - 0.5)
                p = expit(outcomes.logit(cell) + seed_effect + difficulty)
                samples = _samples(rng, p, spec.eval.samples, truncated=cell.id == truncate_cell)
                _write_eval(b.dir, job, samples, n_problems, spec.eval.samples)
            else:
                (b.dir / "out.txt").write_text("synthetic")
    accuracy = {c.arm_id: float(expit(outcomes.logit(c) + difficulty).mean()) for c in plan.cells}
    return Sweep(loaded, plan, store, accuracy)


def _write_data(out: Path, n_examples: int) -> None:
    rows = [
        {"problem_id": f"t{i}", "problem": f"What is {i}+{i}?", "trace": f"Wait, {i}+{i} = {2 * i}."}
        for i in range(n_examples)
    ]
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json_atomic(out / "stats.json", {"examples": len(rows), "tokens": {"total": 100}})


def _write_train(out: Path, n_examples: int, steps: int) -> None:
    curve = [{"step": s, "loss": 2.0 * 0.97**s, "lr": 1e-5 * (1 - s / steps)} for s in range(1, steps + 1)]
    metrics = {"loss_curve": curve, "train_tokens": 4000, "examples": n_examples, "runtime_s": 12.5}
    write_json_atomic(out / "metrics.json", metrics)


def _write_eval(out: Path, job: Job, samples: pd.DataFrame, n_problems: int, n_samples: int) -> None:
    """The graded samples and the metrics.json the eval stage computes from them, warning of truncation."""
    samples.to_parquet(out / "samples.parquet", index=False)
    trunc = float((samples["finish_reason"] == "length").mean())
    warnings = [f"{trunc:.1%} of samples hit max_tokens=512"] if trunc > 0.05 else []
    result = {
        "benchmark": job.config["benchmark"]["name"],
        "n_problems": n_problems,
        "n_samples": n_samples,
        "metrics": benchmark_metrics(samples),
        "warnings": warnings,
    }
    write_json_atomic(out / "metrics.json", result)


def _samples(rng: np.random.Generator, p: np.ndarray, k: int, *, truncated: bool) -> pd.DataFrame:
    """k graded responses per problem, right with the problem's probability in `p`; a truncated cell's first
    response to each problem is cut at max_tokens, with no answer."""
    rows = []
    for i, pi in enumerate(p):
        for s in range(k):
            correct = bool(rng.random() < pi)
            cut = truncated and s == 0
            rows.append(
                {
                    "problem_id": f"p{i:02d}",
                    "sample_index": s,
                    "subset": "aime24" if i % 2 else "aime25",
                    "text": f"Let me think. Wait, the answer is {i if correct else -1}. token={FAKE_SECRET}",
                    "n_tokens": int(200 + 40 * s + 10 * i) if not cut else 512,
                    "finish_reason": "length" if cut else "stop",
                    "seed": s,
                    "answer": None if cut else str(i if correct else -1),
                    "correct": correct and not cut,
                    "reflection_count": 1,
                }
            )
    return pd.DataFrame(rows)


def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow database, made once per session: creating one costs seconds, copying it
    milliseconds. Test modules wrap it in their own `template_db` fixture."""
    from mlflow import MlflowClient

    path = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    if not path.exists():
        MlflowClient(f"sqlite:///{path}").search_experiments()
    return path
