"""`train.keep_checkpoint: false`: a trained checkpoint is deleted once every evaluation of it is done.

A 32B checkpoint is ~64 GB, so a sweep of dozens of cells cannot keep them all. The train result stays marked
done (its loss curve, token counts and timings are still read by the report); only its `model/` goes, and a
`PRUNED.json` says so. An evaluation added later (a new benchmark) finds the checkpoint gone: launchers then
schedule the training again before it (`needed_again`), and `execute` rebuilds a pruned training.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framework.store import Store
    from framework.sweep.plan import Job, Plan

PRUNED = "PRUNED.json"


def is_pruned(store: Store, key: str) -> bool:
    return (store.path("train", key) / PRUNED).is_file()


def inputs_not_ready(store: Store, job: Job) -> list[str]:
    """The inputs of `job` it cannot read yet: those not done, and for an evaluation a training whose checkpoint
    was pruned (its result stays marked done for the report, but the weights are gone until it is trained again;
    a bundle of evaluations that starts after such a rebuild failed must skip it, not evaluate a missing model)."""
    return [
        d
        for d in job.deps
        if not store.is_done(*d.split("/"))
        or (job.stage == "eval" and d.startswith("train/") and is_pruned(store, d.split("/")[1]))
    ]


def _consumers(plan: Plan, train_id: str) -> list[Job]:
    return [j for j in plan.jobs.values() if j.stage == "eval" and train_id in j.deps]


def prune_if_evaluated(plan: Plan, store: Store, eval_job: Job, *, keep: bool) -> list[str]:
    """After `eval_job` is done: delete each checkpoint it read whose every evaluation in the plan is done.
    Returns the train keys pruned. Held under the training's store lock, so a rebuild is never cut short."""
    if keep:
        return []
    pruned = []
    for dep in eval_job.deps:
        stage, key = dep.split("/")
        if stage != "train" or not store.is_done(stage, key) or is_pruned(store, key):
            continue
        readers = _consumers(plan, dep)
        if not all(store.is_done(j.stage, j.key) for j in readers):
            continue
        with store.locked(stage, key) as held:
            if not held or not store.is_done(stage, key) or is_pruned(store, key):
                continue  # a rebuild holds it, or another evaluation's process got here first
            model = store.path(stage, key) / "model"
            freed = sum(f.stat().st_size for f in model.rglob("*") if f.is_file()) if model.is_dir() else 0
            record: dict[str, Any] = {
                "pruned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "bytes_freed": freed,
                "after": sorted(j.id for j in readers),
            }
            # The note first: a crash mid-delete leaves a checkpoint known to be incomplete, never a silent one.
            (store.path(stage, key) / PRUNED).write_text(json.dumps(record, indent=1), encoding="utf-8")
            shutil.rmtree(model, ignore_errors=True)
            pruned.append(key)
    return pruned


def still_read(plan: Plan, store: Store, train_job: Job) -> bool:
    """Whether an evaluation of the checkpoint is still to run: a pruned training is rebuilt only then. (Two runs
    of one sweep both schedule a training; the one that gets it after the other has trained, evaluated and pruned
    it must not train it again for nothing.)"""
    return any(not store.is_done(j.stage, j.key) for j in _consumers(plan, train_job.id))


def needed_again(plan: Plan, store: Store, todo: list[Job]) -> list[Job]:
    """Pruned trainings that an evaluation still to run reads: they must be trained again first. (Other stages,
    the log, read only a training's metrics, which stay.)"""
    wanted = {
        d
        for j in todo
        if j.stage == "eval"
        for d in j.deps
        if d.startswith("train/") and is_pruned(store, d.split("/")[1])
    }
    return [plan.jobs[d] for d in sorted(wanted)]


def stale_evaluations(plan: Plan, store: Store) -> list[str]:
    """Evaluations made on an earlier build of their training (it was retrained after its checkpoint was deleted,
    or forced). GPU training is not bitwise reproducible, so they describe other weights than the training's
    metrics and the cell's newer evaluations: one line per training for the report's warnings."""
    readers: dict[str, list[Job]] = {}  # one pass over the plan, not one per training (10,000-cell sweeps)
    for job in plan.by_stage("eval"):
        for dep in job.deps:
            readers.setdefault(dep, []).append(job)
    out = []
    for train in plan.by_stage("train"):
        current = (store.manifest("train", train.key) or {}).get("finished")
        if current is None:
            continue
        stale = [
            j.key
            for j in readers.get(train.id, [])
            if (built := (store.manifest(j.stage, j.key) or {}).get("input_builds", {}).get(train.id))
            and built != current
        ]
        if stale:
            redo = (  # its checkpoint deleted again: they can only be redone after another training
                f"remove {', '.join(str(store.path('eval', k)) for k in stale)} and `ablate run` trains it again and "
                "re-evaluates them"
                if is_pruned(store, train.key)
                else f"`ablate exec eval {' '.join(stale)} --force` re-evaluates them"
            )
            out.append(
                f"{', '.join(train.cells)}: {len(stale)} evaluation(s) of {train.id} were made on an earlier build of "
                f"it (retrained since): they describe other weights; {redo}"
            )
    return out
