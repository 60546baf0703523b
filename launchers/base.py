"""The interface every launcher implements, and what they share.

A launcher only schedules stage jobs in dependency order; every job is the command
`ablate exec STAGE KEY... --spec SPEC`, so a laptop and a cluster run the same code path. The store, not the
launcher, is the truth about what is done: a job whose outputs are marked is never submitted again.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from framework.errors import RetryLater
from framework.spec.ablation import AblationSpec
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


def engine_family(plan: Plan, job: Job) -> str:
    """What evaluations of different checkpoints may share one process: the base model the checkpoint comes from
    (a training's or a tiny model job's `model`, else the evaluation's own hub or local model), the dtype and the
    GPUs, so a process never holds engines of two architectures, nor asks for another job's resources."""
    source = plan.jobs.get(next(iter(job.config.get("checkpoint") or []), ""))
    model = source.config.get("model") if source is not None else job.config.get("model")
    return json.dumps([model, job.config.get("dtype"), job.gpus], sort_keys=True, default=str)


def eval_bundles(plan: Plan, size: int) -> dict[str, int]:
    """Eval job id -> its bundle: the checkpoints' evaluation groups (eval_group) of one engine family, in plan
    order, cut into runs of `size`. Taken over the whole plan, done jobs included, so a re-run after part of the
    sweep finished bundles what is left as before (a queued bundle's job is reused) instead of shifting every
    bundle. A group that waits for other evaluations (a budget's second round) is bundled only with groups at the
    same depth of such waits: two bundles then never wait for each other."""
    depth: dict[str, int] = {}
    families: dict[tuple[str, int], dict[tuple[str, ...], list[str]]] = {}
    for job in plan.jobs.values():  # insertion order is topological: a dependency's depth is known first
        if job.stage != "eval":
            continue
        depth[job.id] = max((depth[d] + 1 for d in job.deps if d in depth), default=0)
        groups = families.setdefault((engine_family(plan, job), depth[job.id]), {})
        groups.setdefault(eval_group(job), []).append(job.id)
    out: dict[str, int] = {}
    first = 0  # the number of the family's first bundle
    for groups in families.values():
        for i, ids in enumerate(groups.values()):
            out.update(dict.fromkeys(ids, first + i // size))
        first += -(-len(groups) // size)
    return out


def pending_tasks(plan: Plan, store: Store, *, group_evals: bool = True, bundle: int = 1) -> list[Task]:
    """Tasks for the jobs not done yet, in a valid order. Evaluations of one checkpoint become one task, so the
    engine loads the model once for all benchmarks; with `bundle` > 1 (eval.bundle, on Slurm) those of up to
    `bundle` checkpoints of one base model (eval_bundles) become one task, which waits for all their trainings."""
    todo = [j for j in plan.jobs.values() if not store.is_done(j.stage, j.key)]
    todo = needed_again(plan, store, todo) + todo  # checkpoints deleted after evaluation that a new one reads
    bundles = eval_bundles(plan, bundle) if group_evals and bundle > 1 else {}
    tasks: list[Task] = []
    by_job: dict[str, Task] = {}
    eval_groups: dict[Any, Task] = {}
    for job in todo:
        if group_evals and job.stage == "eval":
            group = ("bundle", bundles[job.id]) if job.id in bundles else eval_group(job)
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
    # A bundle sits where its first checkpoint's evaluations were, before the trainings of the others.
    return topological(tasks) if bundles else tasks


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


FINAL = frozenset({"done", "failed", "deferred", "skipped", "cancelled"})  # a task in one of these has ended


@dataclass
class Launcher:
    """What every launcher is, as submitit's executors are: submit, poll, cancel, and the loop and state they share.

    A launcher implements submit() (start or queue the tasks), poll() (look at every task once: move on what can
    move, record each new state in `states` and why in `reasons`, say what changed) and cancel(); wait(), status()
    and start() are the same for all. The class methods after start() are what the CLI asks of each launcher kind
    about a whole sweep (`ablate status`, `ablate cancel`), whether or not this process started it."""

    spec: AblationSpec
    spec_path: str | Path
    store: Store
    results_dir: str | None = None
    echo: Callable[[str], Any] = print  # every line the launcher says (the live view takes its place in a terminal)
    command: Callable[[Task], list[str]] | None = None  # Task -> argv; default `ablate exec` (tests substitute one)
    states: dict[str, str] = field(default_factory=dict)  # task id -> pending | queued | running, or one of FINAL
    reasons: dict[str, str] = field(default_factory=dict)  # task id -> why it is not done (exit code and log, ...)

    name: ClassVar[str] = ""  # its `launcher.kind`
    poll_s: ClassVar[float] = 1.0  # how often wait() polls by default
    always_waits: ClassVar[bool] = False  # the tasks are this process's own: it follows them even without `wait`
    live_view: ClassVar[bool] = False  # in a terminal, `ablate run` draws the tasks' progress under the lines

    def submit(self, tasks: list[Task]) -> None:
        raise NotImplementedError

    def poll(self) -> None:
        raise NotImplementedError

    def cancel(self) -> Any:
        raise NotImplementedError

    def following(self) -> contextlib.AbstractContextManager[Any]:
        """What a launcher holds around its wait (signal handlers, guards) and does on the way out of it."""
        return contextlib.nullcontext()

    def status(self) -> dict[str, str]:
        return dict(self.states)

    def wait(self, poll_s: float | None = None) -> dict[str, str]:
        """Poll until every task has ended; returns the final state of every task."""
        interval = self.poll_s if poll_s is None else poll_s
        with self.following():
            while True:
                self.poll()
                if all(s in FINAL for s in self.states.values()):
                    return self.status()
                time.sleep(interval)

    @classmethod
    def options(cls, spec: AblationSpec) -> dict[str, Any]:
        """Constructor arguments that the spec's own section for this launcher sets."""
        return {}

    @classmethod
    def pending(cls, plan: Plan, store: Store) -> list[Task]:
        """For `ablate run`: the tasks this launcher would submit for the jobs not done yet."""
        return pending_tasks(plan, store)

    @classmethod
    def start(
        cls, spec: AblationSpec, spec_path: str | Path, store: Store, tasks: list[Task], results_dir: str | None = None,
        *, wait: bool = True, echo: Callable[[str], Any] = print, poll_s: float | None = None,
    ) -> Launcher:  # fmt: skip
        """For `ablate run`: submit the tasks and, with `wait` (or always, for a launcher whose tasks are this
        process's children), follow them to the end. The live view draws itself only in a terminal."""
        launcher = cls(spec, spec_path, store, results_dir, echo=echo, **cls.options(spec))
        launcher.submit(tasks)
        if wait or cls.always_waits:
            # lazy: the live view imports rich, which a stage job's process (`ablate exec`) never draws with
            from framework.sweep.view import live_run

            with live_run(launcher, tasks, store) if cls.live_view else contextlib.nullcontext():
                launcher.wait(poll_s)
        return launcher

    @classmethod
    def live_jobs(cls, plan: Plan, store: Store) -> dict[tuple[str, str], dict[str, Any]]:
        """For `ablate status`: (stage, key) -> what this launcher knows of the job building it beyond the store
        (`state`, `detail`, `job_id`), for jobs it queued that the store cannot see yet."""
        return {}

    @classmethod
    def plan_notes(cls, plan: Plan, store: Store) -> dict[str, list[str]]:
        """For `ablate plan` and `ablate run`: stage -> what this launcher will ask of its backend for the jobs not
        done yet that a researcher should see before submitting (a Slurm bundle's scaled time limit, say)."""
        return {}

    @classmethod
    def refusals(cls, plan: Plan, store: Store) -> list[str]:
        """For `ablate run`, before anything is submitted: why submitting the jobs not done yet would be wasted (a
        job its backend refuses or leaves pending for ever); `ablate run` then exits 2 with these."""
        return []

    @classmethod
    def running_detail(cls, store: Store, stage: str, key: str, detail: str) -> str:
        """For `ablate status`: the store's detail of a build in progress, with what this launcher adds to it."""
        return detail

    @classmethod
    def stop_sweep(cls, plan: Plan, store: Store) -> str:
        """For `ablate cancel`: stop everything of the sweep this launcher has queued or running; one line saying
        what it stopped, or "" when there was nothing."""
        return ""


def log_tail(path: Path, n: int) -> list[str]:
    """The last n lines of a stage's log, shown under a failure; none if it cannot be read."""
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


# The launchers by the name `launcher.kind` gives them: each a Launcher subclass, imported only when a command needs it.
LAUNCHERS = {"local": "launchers.local:LocalLauncher", "slurm": "launchers.slurm:SlurmLauncher"}


def launcher_class(kind: str) -> type[Launcher]:
    module, _, attr = LAUNCHERS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def launch(
    kind: str, spec: AblationSpec, spec_path: str | Path, store: Store, tasks: list[Task], results_dir: str | None,
    *, wait: bool = True,
) -> Launcher:  # fmt: skip
    """Start the tasks on the launcher named `kind` and, with wait, follow them to the end."""
    return launcher_class(kind).start(spec, spec_path, store, tasks, results_dir, wait=wait)


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
