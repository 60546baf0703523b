"""Which jobs of an earlier `ablate run` a new submission may reuse, and which it must cancel first.

A recorded job is reused only when reusing it is as good as submitting anew:

* it is ours: still queued or running under the name this sweep gives that task (a job id in a stale record may
  belong to another job by now, and must be neither reused nor cancelled);
* it covers every key of the task (evaluations are grouped by checkpoint, and a benchmark added since makes a
  larger group than the job was submitted for);
* each task it depends on is reused too, with the very job it waits for, or is done: a dependent left waiting on a
  job that failed, while its dependency is resubmitted, would be killed by Slurm (`--kill-on-invalid-dep`).

Every other job of ours recorded for a task's keys is superseded: cancelled before the task is submitted again, so
no job runs untracked beside its replacement. Kept apart from launchers/slurm.py as pure logic over records and
squeue's answer, so the rules can be read and tested without a queue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from launchers.base import Task

# Slurm job states of a job that will still run (or runs): a COMPLETING job is ending, never reused or cancelled.
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}
ALIVE = (QUEUED | RUNNING) - {"COMPLETING"}

Record = Mapping[str, Any]


def job_name(sweep: str, stage: str, first_key: str) -> str:
    """The Slurm job name of a task: what tells our job from another that was given a recorded job id since."""
    return f"ablate-{sweep}-{stage}-{first_key[:8]}"


def is_ours(sweep: str, record: Record, info: Mapping[str, str] | None) -> bool:
    """squeue's answer for a recorded job is that very job, not another one given the same id since."""
    keys = record.get("keys") or []
    return info is not None and bool(keys) and info.get("name") == job_name(sweep, str(record.get("stage")), keys[0])


@dataclass
class ReusePlan:
    reuse: dict[str, int] = field(default_factory=dict)  # task id -> the live job it keeps
    superseded: list[int] = field(default_factory=list)  # live jobs of ours to cancel before submitting


def plan_reuse(
    sweep: str,
    tasks: list[Task],
    records: Mapping[str, Record],
    infos: Mapping[int, Mapping[str, str]],
    done: Callable[[Task], bool],
) -> ReusePlan:
    """records: "stage/key" -> the record of the job last submitted for that key; infos: squeue of their jobs;
    done: whether a task's outputs are complete now."""
    by_id = {t.id: t for t in tasks}
    live: dict[str, dict[int, Record]] = {}  # task id -> our live jobs recorded for any of its keys
    for task in tasks:
        jobs: dict[int, Record] = {}
        for key in task.keys:
            rec = records.get(f"{task.stage}/{key}")
            info = infos.get(rec["job_id"]) if rec else None
            if rec and info and info.get("state") in ALIVE and is_ours(sweep, rec, info):
                jobs.setdefault(rec["job_id"], rec)
        live[task.id] = jobs

    reuse: dict[str, int] = {}
    for task in tasks:
        for jid, rec in live[task.id].items():
            stuck = infos[jid].get("reason") == "DependencyNeverSatisfied"  # left by a run without kill-on-invalid
            if not stuck and set(task.keys) <= set(rec.get("keys", [])):
                reuse[task.id] = jid
                break

    def deps_ok(task: Task) -> bool:
        waits_for = set(live[task.id][reuse[task.id]].get("dependencies") or [])
        for dep in task.deps:
            if dep not in by_id:  # not submitted now: done, or outside this submission
                continue
            if dep in reuse:
                if reuse[dep] not in waits_for:
                    return False
            elif not done(by_id[dep]):
                return False
        return True

    # A task that is submitted anew cancels every live job of its keys; a task reusing one of those, or depending
    # on a task that is submitted anew, must be submitted anew as well. Repeat until nothing changes.
    while True:
        doomed = {jid for t in tasks if t.id not in reuse for jid in live[t.id]}
        drop = [tid for tid, jid in reuse.items() if jid in doomed or not deps_ok(by_id[tid])]
        if not drop:
            break
        for tid in drop:
            del reuse[tid]
    kept = set(reuse.values())
    superseded = sorted({jid for t in tasks if t.id not in reuse for jid in live[t.id]} - kept)
    return ReusePlan(reuse, superseded)


def topological(tasks: list[Task]) -> list[Task]:
    """The tasks with each one after the tasks it depends on (stable: an order that is valid already is kept), so
    that every dependency has its job id when a dependent is submitted."""
    by_id = {t.id: t for t in tasks}
    out: list[Task] = []
    seen: set[str] = set()

    def visit(task: Task, path: tuple[str, ...]) -> None:
        if task.id in seen:
            return
        if task.id in path:
            raise ValueError(f"dependency cycle through {task.id}")
        for dep in task.deps:
            if dep in by_id:
                visit(by_id[dep], (*path, task.id))
        seen.add(task.id)
        out.append(task)

    for task in tasks:
        visit(task, ())
    return out
