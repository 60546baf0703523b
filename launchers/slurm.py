"""Run a sweep's stage jobs on Slurm: one sbatch job per task, wired with `afterok` dependencies.

Every job runs the same `ablate exec STAGE KEY...` a laptop runs, on the shared filesystem, from a generated script
kept beside its log in the store (`<store>/<stage>/<key>.sbatch`), so a researcher can read it and resubmit it by
hand. Slurm does the scheduling; this module only writes scripts, submits them in dependency order, records what it
submitted, and reads the queue back.

Choices, and why:

* Plain sbatch, not submitit: the jobs are already shell commands, and a readable script a person can resubmit is
  worth more than pickled callables tied to the submitting interpreter.
* One job per task, no job arrays: `ablate plan` builds the cheap data variants before a run, so the tasks that
  share deps and resources (data, log) are few by then; per-task jobs give per-task logs, scripts, dependencies
  (`train_i afterok data_i`) and requeues without an index-to-task table. A sweep is tens to hundreds of jobs, far
  below the submission limits of the clusters this targets.
* The store decides success: a job script exits 0 iff its stage's SUCCESS markers exist (an abort at exit after
  publishing is done; an exit 0 without outputs is not), so `afterok` follows the truth, and dependents of a failed
  task are cancelled by Slurm itself (`--kill-on-invalid-dep=yes`) instead of pending for ever. A bundle of
  evaluations (eval.bundle) waits with `afterany` instead: a failed training does not cancel the evaluations of the
  others, and `ablate exec` skips the checkpoints whose training is not done (the job then exits non-zero).
* A job is never submitted twice: `<store>/<stage>/<key>.slurm.json` records the job of every submitted key; a later
  `ablate run` reuses a recorded job that is still queued or running, under its name, for all the task's keys,
  after the same jobs as now; otherwise it cancels that job before submitting anew, or, if it has started, lets it
  end and submits the new job after it (`afterany`; launchers/slurm_reuse.py).
* Time limit: train jobs get `--signal=B:USR1@N`; a trap forwards it to the stage, waits for it to checkpoint and
  exit 75, and only then requeues the job. Other stages cannot checkpoint: no warning, USR1 ignored. Preemption (TERM
  while the job is still RUNNING) requeues any stage: each one resumes or starts over. A cancelled job is never
  requeued. See templates/job.sbatch.
* A pruned training (`train.keep_checkpoint: false`) submitted again for a new evaluation is not done until rebuilt
  (launchers/slurm_done.py), in its job script as here.

Only squeue, scontrol and scancel are read (sacct when accounting is available; sinfo, for a partition's MaxTime,
by `ablate plan` with a short timeout): nothing here needs slurmdbd.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from framework.errors import RetryLater, UserError
from framework.redaction import redact_log
from framework.spec.ablation import AblationSpec
from framework.store import MARKER, Store, write_json_atomic
from framework.sweep.cost import slurm_hours
from framework.sweep.execute import results_base
from framework.sweep.plan import Plan
from framework.sweep.pruning import PRUNED, inputs_not_ready
from framework.sweep.resources import StageResources
from launchers.base import (
    FINAL,
    Launcher,
    Task,
    exec_command,
    log_tail,
    pending_tasks,
    shell_join,
    topological,
)
from launchers.slurm_done import outputs_done, task_done
from launchers.slurm_reuse import (
    ALIVE,
    QUEUED,
    RUNNING,
    ReusePlan,
    is_ours,
    job_name,
    running_superseded,
    settle_earlier_jobs,
)
from launchers.slurm_script import (
    CHECKPOINTED_EXIT,
    CHECKPOINTING_STAGES,
    bundle_time,
    checkpoints_of,
    largest_bundle,
    redact_log_command,
    render,
    sbatch_directives,
    task_resources,
    write_private,
)

TEMPLATE = Path(__file__).parent / "templates" / "job.sbatch"
# Exported into every job script as they were at submission: the tracking URI and results root are part of the
# plan's keys (a job must rebuild the same plan), the hub settings keep a cluster job offline like its submitter.
# Secrets (HF_TOKEN, ...) are deliberately absent: scripts are kept on a shared filesystem.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "ABLATE_RESULTS_DIR",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)
SIGNAL_SECONDS = 300  # USR1 this long before the time limit: enough to write a ZeRO checkpoint of a 32B model
MAX_REQUEUES = 20  # a job that is signalled every time it runs must not requeue for ever
MAX_FAILED_POLLS = 10  # consecutive failed squeue/scontrol calls before `wait` gives up following the jobs
# Slurm job states, by what they mean for a task whose outputs are not (yet) complete.
_QUEUED, _RUNNING, _ALIVE = QUEUED, RUNNING, ALIVE
_SQUEUE_FORMAT = "%i|%T|%r|%N|%j"
SINFO_TIMEOUT_S = 5.0  # `ablate plan` asks sinfo for a partition's MaxTime; no answer by then: unknown


# ----------------------------------------------------------------------------------------- slurm calls
def require(*binaries: str) -> None:
    """The Slurm client commands must be on PATH (a login node of the cluster)."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        raise UserError(
            f"the slurm launcher needs the Slurm client commands on PATH; not found: {', '.join(missing)} "
            "(run from a login node of the cluster, or use --launcher local)"
        )


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)


def parse_job_id(out: str) -> int:
    """`sbatch --parsable` prints `ID` or `ID;CLUSTER`."""
    head = out.strip().splitlines()[-1].split(";")[0] if out.strip() else ""
    if not head.isdigit():
        raise UserError(f"sbatch printed no job id: {out!r}")
    return int(head)


def squeue(job_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """State, reason and nodes of jobs the controller still holds (finished ones for MinJobAge, 5 min by default)."""
    ids = sorted(set(job_ids))
    found: dict[int, dict[str, str]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        out = _run(["squeue", "-h", "-t", "all", "-j", ",".join(map(str, chunk)), "-o", _SQUEUE_FORMAT])
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:  # a lone unknown id is an error; unknown ids among others are not
                continue
            raise UserError(f"squeue failed: {out.stderr.strip()}")
        for line in out.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 5 and parts[0].isdigit():
                found[int(parts[0])] = {"state": parts[1], "reason": parts[2], "node": parts[3], "name": parts[4]}
    return found


def partition_max_time(partition: str | None) -> tuple[str, str] | None:
    """(partition, MaxTime as sinfo prints it, `infinite` for none) of the partition a job goes to: the default
    one when none is named, the most generous of a list. None when Slurm cannot say within SINFO_TIMEOUT_S: no
    client commands (a laptop), no controller, no such partition. It never raises: `ablate plan` runs anywhere."""
    if shutil.which("sinfo") is None:
        return None
    cmd = ["sinfo", "-h", "-o", "%P|%l", *(["-p", partition] if partition else [])]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=SINFO_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found: list[tuple[float, str, str]] = []
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        name, _, limit = line.strip().partition("|")
        if partition is None and not name.endswith("*"):  # sinfo marks the default partition with a star
            continue
        try:
            hours = slurm_hours(limit.upper())
        except ValueError:  # n/a, or a form this does not read: unknown, as if sinfo had not answered
            return None
        found.append((math.inf if hours is None else hours, name.rstrip("*"), limit))
    if not found:
        return None
    _, name, limit = max(found)
    return name, limit


def scontrol_job(job_id: int) -> dict[str, str] | None:
    """`scontrol show job -o` as a dict (for ExitCode, which squeue cannot print); None once the job is gone."""
    out = _run(["scontrol", "show", "job", "-o", str(job_id)])
    if out.returncode != 0 or not out.stdout.strip():
        return None
    # Values may hold spaces (Command=..., Comment=...): split only before the next `Key=`.
    tokens = re.split(r"\s+(?=[A-Za-z][A-Za-z0-9_:/]*=)", out.stdout.strip())
    return dict(t.split("=", 1) for t in tokens if "=" in t)


def sacct_job(job_id: int) -> dict[str, str] | None:
    """The accounting record of a job the controller has forgotten; None without accounting (slurmdbd)."""
    if shutil.which("sacct") is None:
        return None
    out = _run(["sacct", "-n", "-P", "-X", "-j", str(job_id), "-o", "State,ExitCode,NodeList,Reason"])
    line = out.stdout.strip().splitlines()[:1] if out.returncode == 0 else []
    if not line:
        return None
    state, exit_code, node, reason = ([*line[0].split("|"), "", "", "", ""])[:4]
    return {"state": state.split()[0] if state else "", "exit_code": exit_code, "node": node, "reason": reason}


def describe_exit(code: str) -> str:
    """Slurm's `ExitCode=3:0` (status:signal) in words."""
    status, _, sig = code.partition(":")
    if sig and sig != "0":
        return f"killed by signal {sig}"
    return f"exit {status}" if status else "exit ?"


def scancel(job_ids: Iterable[int]) -> bool:
    """True when scancel accepted every id (it refuses a job that has just ended, too)."""
    ids = sorted(set(job_ids))
    return not ids or _run(["scancel", *map(str, ids)]).returncode == 0


# --------------------------------------------------------------------------------------------- records
def record_path(store: Store, stage: str, key: str) -> Path:
    return store.log_path(stage, key).with_suffix(".slurm.json")


def script_path(store: Store, stage: str, key: str) -> Path:
    return store.log_path(stage, key).with_suffix(".sbatch")


def read_record(store: Store, stage: str, key: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(record_path(store, stage, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("job_id"), int) else None


def task_state(info: Mapping[str, str] | None, done: bool, *, requeue: bool = True) -> tuple[str, str]:
    """(done | queued | running | failed | cancelled | deferred, detail) from the markers and what Slurm says of the
    job. deferred: the stage exited 75 (RetryLater, e.g. the tracking server was down); a later run retries it."""
    if done:
        return "done", ""
    if info is None:
        return "failed", "the job left the queue without completing the stage's outputs"
    state, reason = info.get("state", ""), info.get("reason", "")
    if state == "PENDING" and reason == "DependencyNeverSatisfied":  # only without --kill-on-invalid-dep
        return "cancelled", "a dependency failed"
    if state in _QUEUED or (state == "PREEMPTED" and requeue and info.get("source") != "sacct"):
        return "queued", reason if reason and reason != "None" else state.lower()
    if state in _RUNNING:
        return "running", info.get("node", "")
    if state == "CANCELLED":
        return "cancelled", "a dependency failed" if "Dependency" in reason else "cancelled"
    if state == "COMPLETED":
        return "failed", "exit 0 but the stage's outputs are not marked done"
    if exit_code := info.get("exit_code"):
        if exit_code.partition(":")[0] == str(RetryLater.exit_code):
            return "deferred", f"retry later (exit {RetryLater.exit_code}): the next `ablate run` resubmits it"
        return "failed", f"{state}, {describe_exit(exit_code)}"
    return "failed", state or "unknown state"


def _lookup(job_ids: Iterable[int], need_exit: Callable[[dict[str, str]], bool]) -> dict[int, dict[str, str]]:
    """squeue for all jobs at once; scontrol (then sacct) for the few that ended or have left squeue."""
    ids = set(job_ids)
    infos = squeue(ids) if ids else {}
    for jid in ids:
        info = infos.get(jid)
        if info is not None and not need_exit(info):
            continue
        full = scontrol_job(jid)
        if full is not None:
            infos[jid] = {
                "state": full.get("JobState", ""),
                "reason": full.get("Reason", ""),
                "node": full.get("NodeList", "") if full.get("NodeList") != "(null)" else "",
                "exit_code": full.get("ExitCode", ""),
                "restarts": full.get("Restarts", "0"),
            }
        elif (acct := sacct_job(jid)) is not None:
            infos[jid] = {**acct, "source": "sacct"}  # the job has left the controller: its state is final
    return infos


def _ended_badly(info: Mapping[str, str]) -> bool:
    return info.get("state") not in _QUEUED | _RUNNING | {"CANCELLED"}


# ---------------------------------------------------------------------------------------------- launcher
@dataclass
class SlurmLauncher(Launcher):
    """submit() writes, records and submits one job per task; poll() reads the queue back, so that wait() follows
    them until every one has ended.

    `command` (Task -> argv) replaces `ablate exec` (tests); `python`, `workdir` and `env` are what the scripts
    use, by default this interpreter, the current directory and FORWARDED_ENV as set now.
    """

    name: ClassVar[str] = "slurm"
    poll_s: ClassVar[float] = 30.0
    python: str | None = None
    workdir: str | Path | None = None
    env: Mapping[str, str] | None = None
    signal_s: int = SIGNAL_SECONDS
    max_requeues: int = MAX_REQUEUES
    jobs: dict[str, int] = field(default_factory=dict)  # task id -> Slurm job id
    reused: set[str] = field(default_factory=set)  # tasks whose job came from an earlier run
    _tasks: dict[str, Task] = field(default_factory=dict)
    _failed_polls: int = 0  # consecutive polls that could not read the queue

    # ---- scripts
    def resources(self, task: Task) -> StageResources:
        return task_resources(self.spec, task)

    def job_name(self, task: Task) -> str:
        return job_name(self.spec.name, task.stage, task.keys[0])

    def task_command(self, task: Task) -> list[str]:
        if self.command is not None:
            return self.command(task)
        results = self.results_dir
        if results is None and self.store.root.name == "store" and self.store.root.parent.name == self.spec.name:
            results = str(results_base(self.store).absolute())  # explicit: the script must not depend on cwd
        elif results is not None:
            results = str(Path(results).absolute())
        return exec_command(task, Path(self.spec_path).absolute(), results, self.python)

    def script(self, task: Task) -> str:
        """The complete, self-contained job script of a task."""
        slurm = self.spec.launcher.slurm
        key = task.keys[0]
        env = self.env if self.env is not None else _captured_env()
        command = shell_join(self.task_command(task))
        if slurm.container:
            command = f"{slurm.container} {command}"
        cells = list(dict.fromkeys(c for j in task.jobs for c in j.cells))
        checkpoints = task.stage in CHECKPOINTING_STAGES
        directives = sbatch_directives(
            self.resources(task),
            job_name=self.job_name(task),
            log=self._abs(self.store.log_path(task.stage, key)),
            workdir=Path(self.workdir or Path.cwd()).absolute(),
            requeue=slurm.requeue,
            signal_s=self.signal_s if checkpoints else None,
        )
        markers = [self._abs(self.store.path(task.stage, k) / MARKER) for k in task.keys]
        pruned = [self._abs(self.store.path(task.stage, k) / PRUNED) for k in task.keys if task.stage == "train"]
        return render(
            TEMPLATE.read_text(encoding="utf-8"),
            {
                "task": task.id,
                "sweep": self.spec.name,
                "cells": " | ".join(cells[:4]) + (f" and {len(cells) - 4} more" if len(cells) > 4 else ""),
                "script": str(self._abs(script_path(self.store, task.stage, key))),
                "record": str(self._abs(record_path(self.store, task.stage, key))),
                "signal_note": (
                    f"Slurm sends USR1 to this shell {self.signal_s} s before the time limit (--signal),\n"
                    "# forwarded to the stage, which stops at a checkpoint."
                    if checkpoints
                    else "this stage cannot checkpoint: it gets no time-limit warning, and USR1 is ignored."
                ),
                "checkpoints": "yes" if checkpoints else "no",
                "checkpointed_exit": str(CHECKPOINTED_EXIT),
                "max_requeues": str(self.max_requeues),
                "sbatch": "\n".join(directives),
                "setup": "\n".join(slurm.setup) or "# (none: launcher.slurm.setup is empty)",
                "env": "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())) or "# (none)",
                "requeue": "yes" if slurm.requeue else "no",
                "markers": "\n".join(f"  {shlex.quote(str(m))}" for m in markers),
                "pruned": "\n".join(f"  {shlex.quote(str(m))}" for m in pruned) or "  # (none: not a training)",
                "command_echo": shlex.quote(f"$ {command}"),
                "command": command,
                "redact_log": redact_log_command(
                    self.python or sys.executable, self._abs(self.store.log_path(task.stage, key)), slurm.container
                ),
            },
        )

    def _abs(self, path: Path) -> Path:
        return path if path.is_absolute() else path.absolute()

    # ---- submit
    def submit(self, tasks: list[Task]) -> None:
        """Submit every task, dependencies first; a task whose job from an earlier run is still alive reuses that
        job when it may (launchers/slurm_reuse.py); the others are cancelled first, or, started, waited for."""
        require("sbatch", "squeue", "scontrol", "scancel")
        for t in tasks:
            self.resources(t)  # resource errors before anything is submitted
        tasks = topological(tasks)
        earlier = self._reusable_jobs(tasks)
        for task in tasks:
            self._tasks[task.id] = task
            if task.id in earlier.reuse:
                self.jobs[task.id] = earlier.reuse[task.id]
                self.reused.add(task.id)
                self.echo(f"queued  {task.id}  job {earlier.reuse[task.id]} (already submitted by an earlier run)")
            else:
                deps = [self.jobs[d] for d in task.deps if d in self.jobs]
                self.jobs[task.id] = self._sbatch(task, deps, earlier.running.get(task.id, {}))
            self.states[task.id] = "queued"

    def _sbatch(self, task: Task, deps: list[int], after: Mapping[int, str]) -> int:
        """Submit a task after `deps` succeed (a bundle of evaluations: end, whatever way) and the superseded jobs
        `after` (id -> name) end, whatever way."""
        key = task.keys[0]
        path = self._abs(script_path(self.store, task.stage, key))
        path.parent.mkdir(parents=True, exist_ok=True)  # Slurm does not create the log's directory
        write_private(path, self.script(task))
        cmd = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
        # A bundle of evaluations starts once its trainings have ended, however: it evaluates the checkpoints that
        # are done, and `ablate exec` skips the others, their inputs missing (cancelling it would waste them all).
        bundle = checkpoints_of(task) > 1
        ok, anyhow = ([], [*deps, *sorted(after)]) if bundle else (deps, sorted(after))
        dependency = [f"afterok:{':'.join(map(str, ok))}"] if ok else []
        dependency += [f"afterany:{':'.join(map(str, anyhow))}"] if anyhow else []
        if dependency:
            cmd.append("--dependency=" + ",".join(dependency))
        cmd.append(str(path))
        out = _run(cmd)
        if out.returncode != 0:
            earlier = len(self.jobs) - len(self.reused)
            raise UserError(
                f"sbatch rejected {task.id}: {out.stderr.strip() or out.stdout.strip()} (script: {path})"
                + (
                    f"; the {earlier} job(s) submitted before it stay queued and a re-run reuses them"
                    if earlier
                    else ""
                )
            )
        job_id = parse_job_id(out.stdout)
        previous: list[int] = []  # every job recorded for these keys before, so none is lost track of
        for k in task.keys:
            if (rec := read_record(self.store, task.stage, k)) is not None:
                previous += [rec["job_id"], *rec.get("previous_jobs", [])]
        record = {
            "job_id": job_id,
            "task": task.id,
            "stage": task.stage,
            "keys": task.keys,
            "dependencies": deps,
            "script": str(path),
            "log": str(self._abs(self.store.log_path(task.stage, key))),
            "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": shell_join(cmd),
            "previous_jobs": list(dict.fromkeys(previous))[:20],
            # started before this job and left to end (never cancelled mid-work): tracked here until they do
            "superseded_running": [{"job_id": j, "name": n} for j, n in sorted(after.items())],
        }
        for k in task.keys:
            write_json_atomic(record_path(self.store, task.stage, k), record)
        self._link_logs(task, job_id)
        waits = [f"{len(deps)} job(s)"] if deps else []
        waits += [f"the end of job(s) {', '.join(map(str, sorted(after)))}"] if after else []
        self.echo(f"submit  {task.id}  job {job_id}" + (f" after {' and '.join(waits)}" if waits else ""))
        return job_id

    def _link_logs(self, task: Task, job_id: int) -> None:
        """Every key's log leads to the job's, which is the first key's (Slurm writes one): the others become links
        to it, so that `ablate status` shows each evaluation of a bundle a log with its output; one that holds an
        earlier job's output is kept, and told where this job writes."""
        log = self._abs(self.store.log_path(task.stage, task.keys[0]))
        if log.is_symlink():  # it led to another job's log: this job writes its own
            log.unlink()
        for key in task.keys[1:]:
            path = self._abs(self.store.log_path(task.stage, key))
            if path.is_symlink() or not path.exists():
                path.unlink(missing_ok=True)
                path.symlink_to(log.name)
            else:
                stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
                with path.open("a", encoding="utf-8") as f:
                    f.write(f"=== {stamp} job {job_id} [{task.id}] runs this {task.stage} job; its output: {log}\n")

    def _reusable_jobs(self, tasks: list[Task]) -> ReusePlan:
        """Which jobs of an earlier run the tasks keep; the superseded ones not started yet are cancelled here, before
        anything is submitted, so that none runs untracked beside its replacement."""
        records = {f"{t.stage}/{k}": rec for t in tasks for k in t.keys if (rec := read_record(self.store, t.stage, k))}
        return settle_earlier_jobs(
            self.spec.name,
            tasks,
            records,
            squeue=squeue,
            scancel=scancel,
            done=lambda t: task_done(self.store, t, tasks),
            echo=self.echo,
            store_root=self.store.root,
        )

    # ---- follow
    def refresh(self) -> list[tuple[str, str, str]]:
        """Poll Slurm once; return the (task id, new state, detail) of every task whose state changed."""
        open_tasks = [t for tid, t in self._tasks.items() if self.states.get(tid) not in FINAL]
        done = {t.id: task_done(self.store, t, self._tasks.values()) for t in open_tasks}
        infos = _lookup((self.jobs[t.id] for t in open_tasks if not done[t.id]), _ended_badly)
        # A job may publish and leave the queue between the marker check and the lookup: look again, or a
        # finished stage would be recorded as failed for good.
        done = {tid: d or task_done(self.store, self._tasks[tid], self._tasks.values()) for tid, d in done.items()}
        never = [
            jid for jid, i in infos.items() if i["state"] == "PENDING" and i["reason"] == "DependencyNeverSatisfied"
        ]
        scancel(never)  # left by a site that drops --kill-on-invalid-dep: do what it would have done
        changes = []
        for task in open_tasks:
            state, detail = task_state(
                infos.get(self.jobs[task.id]), done[task.id], requeue=self.spec.launcher.slurm.requeue
            )
            bad = [d for d in task.deps if self.states.get(d) in ("failed", "cancelled", "deferred")]
            if state == "cancelled" and detail == "a dependency failed":
                detail = f"dependency {bad[0]} did not finish" if bad else detail
            if state in ("failed", "deferred"):
                detail += _unfinished_keys(self.store, task)
                if bad:  # a bundle ran without the checkpoints whose training did not finish
                    detail += (
                        f"; dependency {bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''} did not finish"
                    )
                detail += f"; log: {self.store.log_path(task.stage, task.keys[0])}"
            if (state, detail) != (self.states.get(task.id), self.reasons.get(task.id)):
                if state != self.states.get(task.id):
                    changes.append((task.id, state, detail))
                self.states[task.id], self.reasons[task.id] = state, detail
        return changes

    def poll(self) -> None:
        """refresh() and say what changed. A failed look at the queue (a controller restarting or busy) is only
        warned about, since the jobs go on, until MAX_FAILED_POLLS in a row."""
        try:
            changes = self.refresh()
        except UserError as e:
            self._failed_polls += 1
            if self._failed_polls >= MAX_FAILED_POLLS:
                raise
            self.echo(f"warning: {e}; polling again ({self._failed_polls}/{MAX_FAILED_POLLS})")
            return
        self._failed_polls = 0
        for tid, state, detail in changes:
            self._report(tid, state, detail)

    @contextlib.contextmanager
    def following(self) -> Iterator[None]:
        """Ctrl-C stops watching only: the jobs stay queued (`ablate status` follows them, `ablate cancel` stops
        them)."""
        self._failed_polls = 0
        try:
            yield
        except KeyboardInterrupt:
            self.echo(
                "interrupted: the jobs stay on the cluster; `ablate status` follows them, `ablate cancel` stops them"
            )
            raise

    def _report(self, tid: str, state: str, detail: str) -> None:
        job = self.jobs[tid]
        if state == "failed":
            self.echo(f"FAILED  {tid}  job {job}: {detail}")
            task = self._tasks[tid]
            log = self.store.log_path(task.stage, task.keys[0])
            redact_log(log)  # a job killed outright never ran its own redaction
            for line in log_tail(log, 5):
                self.echo(f"        | {line}")
            return
        suffix = {"queued": f" ({detail})", "running": f" on {detail}"}.get(state, f": {detail}")
        self.echo(f"{state:7s} {tid}  job {job}{suffix if detail else ''}")

    def cancel(self) -> list[int]:
        """scancel every job of this launcher that has not ended."""
        ids = [self.jobs[t] for t, s in self.states.items() if s not in FINAL and t in self.jobs]
        scancel(ids)
        for tid in list(self.states):
            if self.states[tid] not in FINAL:
                self.states[tid], self.reasons[tid] = "cancelled", "cancelled by the user"
        return sorted(set(ids))

    @classmethod
    def options(cls, spec: AblationSpec) -> dict[str, Any]:
        return {"signal_s": spec.launcher.slurm.signal_seconds, "max_requeues": spec.launcher.slurm.max_requeues}

    @classmethod
    def pending(cls, plan: Plan, store: Store) -> list[Task]:
        """Evaluations of up to `eval.bundle` checkpoints per job: each job pays the imports and the engine start
        once (a local run keeps warm evaluation workers instead)."""
        return pending_tasks(plan, store, bundle=plan.spec.eval.bundle)

    @classmethod
    def live_jobs(cls, plan: Plan, store: Store) -> dict[tuple[str, str], dict[str, Any]]:
        """The recorded jobs' states (slurm_states), by each of their keys; none where Slurm's commands are not
        on PATH (a laptop reading a store)."""
        if not shutil.which("squeue"):
            return {}
        return {
            (info["stage"], key): key_state(store, info, key, _inputs_not_done(plan, store, info, key))
            for info in slurm_states(plan, store).values()
            for key in info["keys"]
        }

    @classmethod
    def plan_notes(cls, plan: Plan, store: Store) -> dict[str, list[str]]:
        """The time limit a bundle of evaluations asks for, against its partition's MaxTime when sinfo says it."""
        notes, _ = cls._bundle_time(plan, store)
        return {"eval": notes} if notes else {}

    @classmethod
    def refusals(cls, plan: Plan, store: Store) -> list[str]:
        notes, over = cls._bundle_time(plan, store)
        return notes if over else []

    @classmethod
    def _bundle_time(cls, plan: Plan, store: Store) -> tuple[list[str], bool]:
        if plan.spec.eval.bundle <= 1:
            return [], False
        tasks = cls.pending(plan, store)
        n, task = largest_bundle(tasks)
        if task is None or n <= 1:  # nothing bundled is left to run: no need to ask Slurm
            return [], False
        res = task_resources(plan.spec, task)
        notes, over = bundle_time(plan.spec, tasks, partition_max_time(res.partition))
        overridden = [a for a in res.extra_sbatch if a.split("=")[0] in ("--partition", "-p", "--time", "-t")]
        if over and (res.qos or overridden):  # a QOS may lift the partition's limit (flag PartitionTimeLimit)
            why = f"qos {res.qos}" if res.qos else " ".join(overridden)
            return [f"{n} (not refused: {why} may change the limit that applies)" for n in notes], False
        return notes, over

    @classmethod
    def stop_sweep(cls, plan: Plan, store: Store) -> str:
        ids = cancel_sweep(plan, store)
        return f"cancelled {len(ids)} Slurm job(s): {' '.join(map(str, ids))}" if ids else ""


def _unfinished_keys(store: Store, task: Task) -> str:
    """Which jobs of a task of several ended without their outputs: the others are done, whatever the job's end."""
    if len(task.keys) == 1:
        return ""
    left = [k for k in task.keys if not store.is_done(task.stage, k)]
    done = len(task.keys) - len(left)
    return f" ({done} of {len(task.keys)} done; not done: {', '.join(f'{task.stage}/{k}' for k in left)})"


def _captured_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


# --------------------------------------------------------------------------------- sweep-level entry points
def _recorded(plan: Plan, store: Store) -> dict[int, dict[str, Any]]:
    """job id -> its record, for every plan job that has one."""
    out: dict[int, dict[str, Any]] = {}
    for job in plan.jobs.values():
        rec = read_record(store, job.stage, job.key)
        if rec is not None:
            out.setdefault(rec["job_id"], rec)
    return out


def slurm_states(plan: Plan, store: Store) -> dict[int, dict[str, Any]]:
    """For `ablate status`: every recorded job of the sweep with its task, keys, state and detail.

    state is done | queued | running | failed | cancelled | deferred as for the launcher; slurm_state, reason, node,
    exit_code are Slurm's own words (empty once the controller has forgotten the job and there is no accounting).
    """
    records = _recorded(plan, store)
    if not records:
        return {}
    pending = {jid for jid, r in records.items() if not outputs_done(store, r["stage"], r["keys"])}
    require("squeue", "scontrol")
    infos = _lookup(pending, _ended_badly)
    out: dict[int, dict[str, Any]] = {}
    for jid, rec in records.items():
        info = infos.get(jid)
        state, detail = task_state(info, jid not in pending, requeue=plan.spec.launcher.slurm.requeue)
        out[jid] = {
            "job_id": jid,
            "task": rec.get("task"),
            "stage": rec["stage"],
            "keys": rec["keys"],
            "state": state,
            "detail": detail,
            "slurm_state": (info or {}).get("state", ""),
            "reason": (info or {}).get("reason", ""),
            "node": (info or {}).get("node", ""),
            "exit_code": (info or {}).get("exit_code", ""),
            "log": rec.get("log"),
            "script": rec.get("script"),
            "submitted": rec.get("submitted"),
        }
    return out


def _inputs_not_done(plan: Plan, store: Store, info: Mapping[str, Any], key: str) -> list[str]:
    """The inputs of one job of a job that runs several that are not done, once that job has started (so they have
    ended): a bundle of evaluations skips a checkpoint whose training failed."""
    job = plan.jobs.get(f"{info['stage']}/{key}")
    if len(info["keys"]) == 1 or job is None or info["state"] not in ("running", "failed", "deferred"):
        return []
    return inputs_not_ready(store, job)


def key_state(store: Store, info: dict[str, Any], key: str, inputs_not_done: Iterable[str] = ()) -> dict[str, Any]:
    """One job's share of a job that runs several (a bundle of evaluations). One whose input did not finish (its
    training failed) is skipped by the job: cancelled, as it would be on its own. One that failed in this job says
    so in its own words (the store's record) at once, even while the job goes on with the others; while the job
    runs, one not begun in it waits its turn (a failure record left by an earlier job is no news)."""
    if len(info["keys"]) == 1 or store.is_done(info["stage"], key):
        return info
    if missing := list(inputs_not_done):
        return {**info, "state": "cancelled", "detail": f"its input {missing[0]} did not finish: skipped by this job"}
    own = store.status(info["stage"], key)
    if info["state"] == "running":
        if own.state in ("failed", "deferred") and _recorded_in_job(info, own.path, record_only=True):
            detail = f"{own.detail} (its job goes on with the others on {info['detail'] or 'its node'})"
            return {**info, "state": own.state, "detail": detail}
        if own.state != "running":
            return {**info, "state": "queued", "detail": "runs after the others before it in this job"}
    ended_badly = info["state"] in ("failed", "deferred") and own.state in ("failed", "deferred")
    if ended_badly and _recorded_in_job(info, own.path):
        return {**info, "state": own.state, "detail": f"{info['detail']}; this one: {own.detail}"}
    return info


def _recorded_in_job(info: Mapping[str, Any], path: Path | None, *, record_only: bool = False) -> bool:
    """Whether the store wrote `path` (a failure record, or the log of a build killed without one) during this job,
    not before it was submitted. record_only: a failure record only; a killed build's log is the job's own log
    (every key's log of a bundle leads to it), written to while the job runs, so it says nothing then."""
    if path is None or (record_only and not path.name.endswith(".failed.json")):
        return False
    try:
        recorded = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return False
    return not info.get("submitted") or recorded >= datetime.fromisoformat(info["submitted"])


def cancel_sweep(plan: Plan, store: Store) -> list[int]:
    """For `ablate cancel`: scancel every recorded job of the sweep that is still queued or running, superseded ones
    left running included."""
    records = _recorded(plan, store)
    if not records:
        return []
    require("squeue", "scancel")
    running = {j: name for r in records.values() for j, name in running_superseded(r).items() if j not in records}
    infos = squeue({*records, *running})
    ids = sorted(  # only our jobs: a stale record's id may belong to another job by now
        jid
        for jid, info in infos.items()
        if info["state"] in _QUEUED | _RUNNING
        and (is_ours(plan.spec.name, records[jid], info) if jid in records else info["name"] == running[jid])
    )
    scancel(ids)
    return ids
