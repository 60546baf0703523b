"""The interface every launcher implements, and what they share.

A launcher only schedules stage jobs in dependency order; every job is the command
`ablate exec STAGE KEY... --spec SPEC`, so a laptop and a cluster run the same code path. The store, not the
launcher, is the truth about what is done: a job whose outputs are marked is never submitted again.
"""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from framework.errors import RetryLater
from framework.spec.models import AblationSpec
from framework.store import Store
from framework.sweep.plan import Job, Plan
from framework.sweep.pruning import needed_again


@dataclass
class Task:
    """What a launcher submits: one command that builds one or more stage jobs of the same stage."""

    stage: str
    jobs: list[Job]
    deps: list[str] = field(default_factory=list)  # task ids this task waits for

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.jobs[0].key}" + (f"+{len(self.jobs) - 1}" if len(self.jobs) > 1 else "")

    @property
    def keys(self) -> list[str]:
        return [j.key for j in self.jobs]


def exec_command(
    task: Task, spec_path: str | Path, results_dir: str | None = None, python: str | None = None
) -> list[str]:
    cmd = [python or sys.executable, "-m", "framework.cli", "exec", task.stage, *task.keys, "--spec", str(spec_path)]
    if results_dir:
        cmd += ["--results-dir", str(results_dir)]
    return cmd


def shell_join(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def eval_group(job: Job) -> tuple[str, ...]:
    """What evaluations may share one task: the same dependencies and the same model, with the same dtype. A hub or
    local baseline has no dependency, so its deps alone would bundle every baseline model into one process (whose
    engine cache would then hold several models on one GPU)."""
    model = job.config.get("checkpoint") or job.config.get("model")
    return (*job.deps, json.dumps([model, job.config.get("dtype")], sort_keys=True, default=str))


def pending_tasks(plan: Plan, store: Store, *, group_evals: bool = True) -> list[Task]:
    """Tasks for the jobs not done yet, in a valid order. Evaluations of one checkpoint become one task, so the
    engine loads the model once for all benchmarks."""
    todo = [j for j in plan.jobs.values() if not store.is_done(j.stage, j.key)]
    todo = needed_again(plan, store, todo) + todo  # checkpoints deleted after evaluation that a new one reads
    tasks: list[Task] = []
    by_job: dict[str, Task] = {}
    eval_groups: dict[tuple[str, ...], Task] = {}
    for job in todo:
        if group_evals and job.stage == "eval":
            group = eval_group(job)
            if group in eval_groups:
                eval_groups[group].jobs.append(job)
                by_job[job.id] = eval_groups[group]
                continue
            task = eval_groups[group] = Task("eval", [job])
        else:
            task = Task(job.stage, [job])
        tasks.append(task)
        by_job[job.id] = task
    for task in tasks:
        deps = {by_job[d].id for j in task.jobs for d in j.deps if d in by_job}
        task.deps = sorted(deps)
    return tasks


def unfinished_on_their_own(tasks: list[Task], states: dict[str, str]) -> list[str]:
    """The tasks that ended without their outputs for a reason of their own: failed, or cancelled or skipped while
    every task they wait for was done (a user's scancel, say). A task skipped or cancelled because a dependency did
    not finish is not one: it shares that dependency's fate, so a deferred training's evaluations are deferred too."""
    finished = ("done", "deferred")
    return [
        t.id
        for t in tasks
        if states.get(t.id, "pending") not in finished and all(states.get(d) == "done" for d in t.deps)
    ]


def run_exit_code(tasks: list[Task], states: dict[str, str]) -> int:
    """`ablate run`'s exit status: 1 if a task did not finish on its own account, else 75 (EX_TEMPFAIL) if any
    task is not done (deferred, or waiting on a deferred one: the next run finishes it), else 0. A script or a
    Slurm wrapper must never take a sweep with cells still missing for a complete one."""
    if unfinished_on_their_own(tasks, states):
        return 1
    return RetryLater.exit_code if any(states.get(t.id) != "done" for t in tasks) else 0


class Launcher(Protocol):
    """submit / wait / status / cancel, as in submitit's executors: everything `ablate run` and `ablate cancel`
    ask of a launcher. `states` and `reasons` are what `status()` answers and why, per task id."""

    name: str
    states: dict[str, str]  # task id -> pending | running | done | failed | deferred | skipped | cancelled
    reasons: dict[str, str]  # task id -> why it is not done (exit code and log, a dependency, ...)

    def submit(self, tasks: list[Task]) -> None: ...

    def wait(self, poll_s: float) -> dict[str, str]: ...

    def status(self) -> dict[str, str]: ...

    def cancel(self) -> Any: ...


# The launchers by the name `launcher.kind` gives them: "module:function(spec, spec_path, store, tasks,
# results_dir, wait) -> Launcher", imported when used (a laptop never imports the Slurm code's dependencies).
LAUNCHERS = {"local": "launchers.local:run_local", "slurm": "launchers.slurm:run_slurm"}


def launch(
    kind: str, spec: AblationSpec, spec_path: str | Path, store: Store, tasks: list[Task], results_dir: str | None,
    *, wait: bool = True,
) -> Launcher:  # fmt: skip
    """Start the tasks on the launcher named `kind` and, with wait, follow them to the end."""
    module, _, attr = LAUNCHERS[kind].partition(":")
    start = getattr(importlib.import_module(module), attr)
    return start(spec, spec_path, store, tasks, results_dir, wait=wait)


def summary(tasks: list[Task], launcher: Launcher) -> tuple[int, list[str]]:
    """`ablate run`'s closing lines and exit status (run_exit_code) from the launcher's final states, the same
    for every launcher."""
    states = launcher.status()
    bad = {t: s for t, s in states.items() if s not in ("done", "deferred")}
    deferred = [t for t, s in states.items() if s == "deferred"]
    lines = [
        f"finished: {sum(s == 'done' for s in states.values())} done, {len(bad)} not done, {len(deferred)} deferred"
    ]
    lines += [
        f"  deferred  {tid}: {launcher.reasons.get(tid, '')} (re-run `ablate run` later to finish it)"
        for tid in deferred
    ]
    lines += [f"  {state:9s} {tid}: {launcher.reasons.get(tid, '')}" for tid, state in bad.items()]
    return run_exit_code(tasks, states), lines
