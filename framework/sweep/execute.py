"""Running one stage job idempotently: the body of `ablate exec STAGE KEY`."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.errors import DataError, UserError
from framework.spec import LoadedSpec
from framework.store import Build, Store
from framework.sweep.plan import Job, Plan
from framework.sweep.pruning import PRUNED, inputs_not_ready, prune_if_evaluated, still_read
from framework.sweep.stages import STAGES


class ExecError(UserError):
    """A user-facing problem with an exec request (unknown key, dependency not built)."""


def results_root(loaded: LoadedSpec, override: str | None = None) -> Path:
    """<results_dir>/<name>: the command line, then $ABLATE_RESULTS_DIR, then the spec."""
    base = override or os.environ.get("ABLATE_RESULTS_DIR") or loaded.spec.results_dir
    return Path(base) / loaded.spec.name


def open_store(loaded: LoadedSpec, override: str | None = None) -> Store:
    return Store(results_root(loaded, override) / "store")


def results_base(store: Store) -> Path:
    """The results base a store belongs to (it lives at <base>/<name>/store): where the default MLflow database
    is, for a stage or the report that has only the store."""
    return store.root.parent.parent


@dataclass(frozen=True)
class Sweep:
    """One sweep, located once: its spec and plan, its results directory (<base>/<name>, where the report goes),
    and its store."""

    loaded: LoadedSpec
    plan: Plan
    root: Path
    store: Store


@dataclass
class StageContext:
    """Everything a stage implementation gets."""

    loaded: LoadedSpec
    plan: Plan
    job: Job
    store: Store
    build: Build

    @property
    def spec(self):
        return self.loaded.spec

    @property
    def out(self) -> Path:
        """The directory the stage writes its outputs into (renamed into place on success)."""
        return self.build.dir

    def input_dir(self, job_id: str) -> Path:
        stage, key = job_id.split("/")
        return self.store.path(stage, key)

    def inputs(self, stage: str) -> list[Path]:
        return [self.input_dir(d) for d in self.job.deps if d.startswith(stage + "/")]


def stage_function(stage: str) -> Callable[[StageContext], Any]:
    target = STAGES[stage].target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def execute(loaded: LoadedSpec, plan: Plan, store: Store, stage: str, key: str, *, force: bool = False) -> bool:
    """Build one stage job unless it is done. Returns True when it ran, False when it was already done."""
    job = plan.find(stage, key)
    if job is None:
        known = ", ".join(j.key for j in plan.by_stage(stage)) or "none"
        raise ExecError(
            f"no {stage} job with key {key!r} in this spec's plan (its {stage} keys: {known}); if the key came "
            "from a launcher, the spec, a file it names or ablate itself changed after the sweep was submitted: "
            "run `ablate run` again to submit the jobs of the current plan"
        )
    # A done job is done even when its input has changed since: an evaluation of a checkpoint pruned after all its
    # evaluations (a requeued bundle reruns its done keys; a second run reaches it late) is not waiting for it.
    done = not force and store.is_done(stage, key)
    missing = [d for d in job.deps if not store.is_done(*d.split("/"))] if done else inputs_not_ready(store, job)
    if missing:
        gone = [d for d in missing if store.is_done(*d.split("/"))]  # done, but its checkpoint was pruned
        redo = (
            f"remove {store.path(stage, key)} and `ablate run` trains it again, then evaluates"
            if force
            else "`ablate run` trains it again"
        )
        why = f" ({', '.join(gone)}: checkpoint deleted after its evaluations; {redo})" if gone else ""
        raise ExecError(f"{job.id} needs {', '.join(missing)} to be done first{why}")
    fn = stage_function(stage)
    manifest = {
        "stage": stage,
        "key": key,
        "code_version": STAGES[stage].version,
        "inputs": job.deps,
        # Which build of each input: a training rebuilt later (pruned, or forced) is other weights.
        "input_builds": {d: (store.manifest(*d.split("/")) or {}).get("finished") for d in job.deps},
        "config": job.config,
        "cells": job.cells,
        "spec": loaded.spec.name,
    }
    # A training whose checkpoint was deleted after its evaluations is built again (a new one needs it); judged
    # under the store lock, so two launchers never both retrain it, and resumed like any training.
    redo = (lambda final: (final / PRUNED).is_file() and still_read(plan, store, job)) if stage == "train" else None
    with store.build(stage, key, manifest, resume=stage == "train", replace=force, wait=not force, redo=redo) as build:
        if build is not None:
            fn(StageContext(loaded, plan, job, store, build))
    if stage == "eval":
        prune_if_evaluated(plan, store, job, keep=loaded.spec.train.keep_checkpoint)
    return build is not None


CHEAP_STAGES = ("model", "pool", "data")


def prepare(loaded: LoadedSpec, plan: Plan, store: Store, *, on_job: Callable[[Job], None] | None = None) -> int:
    """Build the cheap CPU stages (tiny model, pool, data variants) in-process, as `ablate plan` does, so a
    cell with too few traces is found before any GPU time is spent. Returns how many jobs ran."""
    ran, problems = 0, []
    for job in plan.jobs.values():
        if job.stage in CHEAP_STAGES and not store.is_done(job.stage, job.key):
            if not all(store.is_done(*d.split("/")) for d in job.deps):
                continue  # waits for a generation (built by `ablate run`), or for a cheap job that failed above
            if on_job:
                on_job(job)
            try:
                ran += execute(loaded, plan, store, job.stage, job.key)
            except DataError as e:  # every cell that cannot be built, not only the first
                problems += e.problems
    if problems:
        raise DataError(problems)
    return ran
