"""What one stage's Slurm job asks for, and the `#SBATCH` lines that say it.

Kept apart from the launcher so the resource rules (launcher defaults, per-stage overrides, train nodes following
`train.nodes`) can be read, and golden-tested, on their own.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from framework.errors import RetryLater
from framework.spec.ablation import AblationSpec
from framework.sweep.cost import slurm_hours
from framework.sweep.resources import StageResources, stage_resources
from framework.sweep.stages import job_device
from launchers.base import Task, eval_group

# Stages that stop at a checkpoint on USR1/TERM and exit 75 (train.TrainingStopped) to be resumed. Only their jobs
# get the time-limit warning and are requeued after it: any other stage would just die of the signal and restart
# from zero, again and again, each time it outruns its limit. (Preemption, a TERM, requeues any stage.) A search
# worker stops between trials on USR1 (a trial's training at a checkpoint) and its study resumes.
CHECKPOINTING_STAGES = frozenset({"train", "search"})
CHECKPOINTED_EXIT = RetryLater.exit_code  # TrainingStopped is a RetryLater


def sbatch_directives(
    res: StageResources,
    *,
    job_name: str,
    log: Path,
    workdir: Path,
    requeue: bool,
    signal_s: int | None,
) -> list[str]:
    """The `#SBATCH` lines of one job. Dependencies are not among them: they go on the command line, so a kept
    script can be resubmitted by hand after the jobs it once waited for are gone. signal_s None: no time-limit
    warning (a stage that cannot checkpoint)."""
    q = shlex.quote
    opts = [f"--job-name={job_name}", f"--output={q(str(log))}", "--open-mode=append", f"--chdir={q(str(workdir))}"]
    for flag, value in (("partition", res.partition), ("account", res.account), ("qos", res.qos)):
        if value:
            opts.append(f"--{flag}={value}")
    opts += [f"--nodes={res.nodes}", "--ntasks-per-node=1"]
    if res.gpus_per_node:
        opts.append(f"--gpus-per-node={res.gpus_per_node}")
    for flag, value in (
        ("cpus-per-task", res.cpus_per_task),
        ("mem", res.mem),
        ("time", res.time),
        ("constraint", res.constraint),
    ):
        if value:
            opts.append(f"--{flag}={value}")
    opts.append("--requeue" if requeue else "--no-requeue")
    if signal_s is not None:
        opts.append(f"--signal=B:USR1@{signal_s}")
    lines = [f"#SBATCH {o}" for o in opts]
    lines += [x if x.lstrip().startswith("#SBATCH") else f"#SBATCH {x.strip()}" for x in res.extra_sbatch]
    return lines


def scaled_time(limit: str | None, factor: int) -> str | None:
    """A Slurm time limit `factor` times as long, as D-HH:MM:SS (none and UNLIMITED stay as they are): a bundle of
    evaluations gets each checkpoint's limit, since an evaluation cannot checkpoint and one cut at the limit starts
    over."""
    hours = slurm_hours(limit)
    if factor == 1 or hours is None:
        return limit
    total = round(hours * 3600) * factor
    days, rest = divmod(total, 86400)
    return f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def checkpoints_of(task: Task) -> int:
    """How many checkpoints a task evaluates: more than one in a bundle (eval.bundle), one for any other task."""
    return len({eval_group(j) for j in task.jobs}) if task.stage == "eval" else 1


def task_resources(spec: AblationSpec, task: Task) -> StageResources:
    """The stage's resources; a bundle of evaluations (eval.bundle) gets the time limit of each checkpoint."""
    res = stage_resources(spec, task.stage, job_device(task.stage, task.jobs[0].config))
    return replace(res, time=scaled_time(res.time, checkpoints_of(task)))


def clock(hours: float) -> str:
    """Hours as Slurm prints a time limit: H:MM:SS, or D-HH:MM:SS from a day on."""
    days, rest = divmod(round(hours * 3600), 86400)
    hms = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{hms}" if days else hms


def largest_bundle(tasks: Iterable[Task]) -> tuple[int, Task | None]:
    """The evaluation task of the most checkpoints, and how many: its job asks for the longest time limit."""
    return max(((checkpoints_of(t), t) for t in tasks if t.stage == "eval"), key=lambda b: b[0], default=(0, None))


def bundle_time(
    spec: AblationSpec, tasks: Iterable[Task], max_time: tuple[str, str] | None = None
) -> tuple[list[str], bool]:
    """What `ablate plan` says of the time limit a bundle of evaluations asks for: each checkpoint's limit times the
    largest bundle's checkpoints, against `max_time`, the (partition, MaxTime) its jobs go to when Slurm could say;
    and whether it is over that MaxTime. Such a job is refused by sbatch or pends for ever (PartitionTimeLimit),
    depending on the site's EnforcePartLimits, so `ablate run` refuses it before anything is submitted."""
    n, task = largest_bundle(tasks)
    if spec.eval.bundle <= 1 or task is None or n <= 1:
        return [], False
    override = spec.launcher.slurm.stages.get("eval")
    own = override is not None and "time" in override.model_fields_set
    where = f"launcher.slurm.{'stages.eval.' if own else ''}time"
    limit = stage_resources(spec, "eval", job_device("eval", task.jobs[0].config)).time
    head = f"eval.bundle {spec.eval.bundle}"
    if limit is None:
        return [
            f"{head}: no evaluation time limit is set ({where}), so a job of {n} checkpoints gets the partition's "
            f"default limit, not {n} times one checkpoint's"
        ], False
    hours = slurm_hours(limit)
    if hours is None:  # unlimited
        return [], False
    said = f"{head}: an evaluation job of {n} checkpoints asks for {n} x {limit} = {clock(n * hours)} ({where})"
    if max_time is None:
        return [f"{said}; the partition's MaxTime is unknown here (`sinfo -o '%P %l'` on the cluster says it)"], False
    partition, max_text = max_time
    most = slurm_hours(max_text.upper())
    if most is None:
        return [f"{said}; partition {partition} has no MaxTime"], False
    if n * hours <= most:
        return [f"{said}, within partition {partition}'s MaxTime {max_text}"], False
    fits = math.floor(most / hours + 1e-9)
    advice = f"set eval.bundle to at most {fits} or lower {where}" if fits else f"lower {where}"
    return [
        f"{said}, over partition {partition}'s MaxTime {max_text}: Slurm refuses such a job or leaves it pending "
        f"for ever (PartitionTimeLimit); {advice}"
    ], True


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill `{{name}}` placeholders; bash's own `${...}` are left alone, and a missing value is an error."""

    def sub(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", sub, template)


def write_private(path: Path, text: str) -> None:
    """Write a job script readable by its owner only (0700), from its first byte: it holds launcher.slurm.setup,
    which may export a secret the job needs, and scripts are kept on a shared filesystem."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o700)  # O_CREAT's mode does not apply to a file left by a crash
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def redact_log_command(python: str, log: Path, container: str | None) -> str:
    """The shell command with which a job redacts its own log as it ends (framework.redaction, in the
    environment the stage runs in)."""
    command = " ".join(shlex.quote(c) for c in (python, "-m", "framework.redaction", str(log)))
    return f"{container} {command}" if container else command
