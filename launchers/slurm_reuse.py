"""Which jobs of an earlier `ablate run` a new submission may reuse, and which it must cancel first.

A recorded job is reused only when reusing it is as good as submitting anew:

* it is ours: still queued or running under the name this sweep gives that task (a job id in a stale record may
  belong to another job by now, and must be neither reused nor cancelled);
* it covers every key of the task (evaluations are grouped by checkpoint, and a benchmark added since makes a
  larger group than the job was submitted for);
* each task it depends on is reused too, with the very job it waits for, or is done: a dependent left waiting on a
  job that failed, while its dependency is resubmitted, would be killed by Slurm (`--kill-on-invalid-dep`).

Every other job of ours recorded for a task's keys is superseded. One that has not started yet is cancelled before
the task is submitted again, so no job runs untracked beside its replacement. One that has started (an evaluation
hours into generation when a benchmark is added) is never cancelled: it stays recorded with the task's new job
(`superseded_running`), which starts after it ends (`afterany`) and skips the keys it finished; the jobs of keys no
longer planned that wait for it (a log of the old group) are cancelled, as Slurm would have. Kept apart from
launchers/slurm.py as logic over records and squeue's answer, so the rules can be read and tested without a queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.errors import UserError
from launchers.base import Task

# Slurm job states of a job that will still run (or runs): a COMPLETING job is ending, never reused or cancelled.
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}
ALIVE = (QUEUED | RUNNING) - {"COMPLETING"}
# A superseded job in one of these has not started (or restarts from its checkpoint): cancelling it loses nothing.
NOT_STARTED = QUEUED - {"SUSPENDED"}

Record = Mapping[str, Any]


def job_name(sweep: str, stage: str, first_key: str) -> str:
    """The Slurm job name of a task: what tells our job from another that was given a recorded job id since."""
    return f"ablate-{sweep}-{stage}-{first_key[:8]}"


def is_ours(sweep: str, record: Record, info: Mapping[str, str] | None) -> bool:
    """squeue's answer for a recorded job is that very job, not another one given the same id since."""
    keys = record.get("keys") or []
    return info is not None and bool(keys) and info.get("name") == job_name(sweep, str(record.get("stage")), keys[0])


def running_superseded(record: Record) -> dict[int, str]:
    """Job id -> job name of the superseded jobs that were running when the record's job was submitted after them."""
    out: dict[int, str] = {}
    for entry in record.get("superseded_running") or []:
        if isinstance(entry, dict) and isinstance(entry.get("job_id"), int) and isinstance(entry.get("name"), str):
            out[entry["job_id"]] = entry["name"]
    return out


@dataclass
class ReusePlan:
    reuse: dict[str, int] = field(default_factory=dict)  # task id -> the live job it keeps
    superseded: list[int] = field(default_factory=list)  # live jobs of ours not started yet: cancel before submitting
    # task id -> its superseded jobs that have started (job id -> name): left to end, its new job starts after them
    running: dict[str, dict[int, str]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # job id -> name, of every live job of ours


def plan_reuse(
    sweep: str,
    tasks: list[Task],
    records: Mapping[str, Record],
    infos: Mapping[int, Mapping[str, str]],
    done: Callable[[Task], bool],
) -> ReusePlan:
    """records: "stage/key" -> the record of the job last submitted for that key; infos: squeue of their jobs (and
    of the superseded ones they keep running); done: whether a task's outputs are complete now."""
    by_id = {t.id: t for t in tasks}
    live: dict[str, dict[int, Record]] = {}  # task id -> our live jobs recorded for any of its keys
    names: dict[int, str] = {}
    for task in tasks:
        jobs: dict[int, Record] = {}
        for key in task.keys:
            rec = records.get(f"{task.stage}/{key}")
            if not rec:
                continue
            info = infos.get(rec["job_id"])
            if info and info.get("state") in ALIVE and is_ours(sweep, rec, info):
                jobs[rec["job_id"]], names[rec["job_id"]] = rec, info.get("name", "")
            for jid, name in running_superseded(rec).items():  # never reused: no record of its own
                info = infos.get(jid)
                if info and info.get("state") in ALIVE and info.get("name") == name:
                    jobs.setdefault(jid, {})
                    names[jid] = name
        live[task.id] = jobs

    def started(jid: int) -> bool:
        return infos[jid].get("state") not in NOT_STARTED

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

    # A task that is submitted anew cancels every live job of its keys that has not started; a task reusing one of
    # those, or depending on a task that is submitted anew, must be submitted anew as well. Repeat until stable.
    while True:
        doomed = {jid for t in tasks if t.id not in reuse for jid in live[t.id] if not started(jid)}
        drop = [tid for tid, jid in reuse.items() if jid in doomed or not deps_ok(by_id[tid])]
        if not drop:
            break
        for tid in drop:
            del reuse[tid]
    anew = [t for t in tasks if t.id not in reuse]
    superseded = sorted({jid for t in anew for jid in live[t.id] if not started(jid)} - set(reuse.values()))
    running = {t.id: {j: names[j] for j in sorted(live[t.id]) if started(j)} for t in anew}
    return ReusePlan(reuse, superseded, {tid: jobs for tid, jobs in running.items() if jobs}, names)


def waiting_for(store_root: Path, job_ids: set[int], skip: set[str]) -> dict[int, Record]:
    """Job id -> record of the recorded jobs that wait (afterok) for one of `job_ids`, other than those of the
    "stage/key"s in `skip`."""
    out: dict[int, Record] = {}
    for path in store_root.glob("*/*.slurm.json"):
        if f"{path.parent.name}/{path.name.removesuffix('.slurm.json')}" in skip:
            continue
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            isinstance(rec, dict)
            and isinstance(rec.get("job_id"), int)
            and job_ids & set(rec.get("dependencies") or [])
        ):
            out[rec["job_id"]] = rec
    return out


def settle_earlier_jobs(
    sweep: str,
    tasks: list[Task],
    records: Mapping[str, Record],
    *,
    squeue: Callable[[Iterable[int]], dict[int, dict[str, str]]],
    scancel: Callable[[Iterable[int]], bool],
    done: Callable[[Task], bool],
    echo: Callable[[str], Any],
    store_root: Path | None = None,
) -> ReusePlan:
    """plan_reuse on what squeue says now; the superseded jobs not started yet are cancelled here, before anything is
    submitted, and so are the jobs of keys not submitted now (store_root's records) that wait for a superseded job
    left running: cancelling that job would have had Slurm cancel them (--kill-on-invalid-dep), and they belong to a
    plan that is gone. Raises UserError, with nothing submitted, when one of them could not be cancelled."""
    ids = {jid for rec in records.values() for jid in (rec["job_id"], *running_superseded(rec))}
    plan = plan_reuse(sweep, tasks, records, squeue(ids) if ids else {}, done)
    started = {j for jobs in plan.running.values() for j in jobs}
    if started and store_root is not None:
        strays = waiting_for(store_root, started, {f"{t.stage}/{k}" for t in tasks for k in t.keys})
        infos = squeue(strays) if strays else {}
        for jid, rec in strays.items():
            if (info := infos.get(jid)) and info.get("state") in NOT_STARTED and is_ours(sweep, rec, info):
                plan.superseded.append(jid)
                plan.names[jid] = info.get("name", "")
        plan.superseded = sorted(set(plan.superseded))
    if plan.superseded:
        echo(f"cancel  job(s) {', '.join(map(str, plan.superseded))} of an earlier run: superseded")
        if not scancel(plan.superseded):
            after = squeue(plan.superseded)
            left = [j for j in plan.superseded if (i := after.get(j)) and i["state"] in QUEUED]
            left = [j for j in left if after[j].get("name") == plan.names[j]]
            if left:
                raise UserError(
                    f"scancel did not cancel the superseded job(s) {', '.join(map(str, left))}; nothing was "
                    "submitted (cancel them, or let them end, and run again)"
                )
    if started:
        echo(
            f"keep    job(s) {', '.join(map(str, sorted(started)))} of an earlier run: superseded but running; "
            "their replacements start once they end"
        )
    return plan
