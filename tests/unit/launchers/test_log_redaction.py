"""A stage's log is redacted as its process ends (local launcher: when the task finishes or is cancelled; Slurm:
by the job script as it exits, and by the launcher when it sees a job fail), and a Slurm job script, which must
keep the setup lines it runs, is readable by its owner only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep.plan import build_plan
from launchers.base import pending_tasks
from launchers.slurm import SlurmLauncher, script_path
from tests.unit.launchers.fakes import make, task
from tests.unit.launchers.test_slurm import sweep

URL = "https://alice:pw-in-log-1@hub.example.com/org/model"
HF = "hf_" + "Lg7" * 10
# What a stage that fails on an upload prints: a credential in its own output and in its error.
FAILING_STAGE = f"print('login with {HF}', flush=True); raise SystemExit('push to {URL} failed: 401')"


def test_a_failed_local_stages_log_and_the_tail_shown_are_redacted(minimal, tmp_path):
    _, store, tasks, launcher, _ = make(minimal, tmp_path)
    said: list[str] = []
    launcher.echo = said.append
    inner = launcher.command
    launcher.command = lambda t: [sys.executable, "-c", FAILING_STAGE] if t.stage == "train" else inner(t)
    states = launcher.wait(poll_s=0.01)
    train = next(t for t in tasks if t.stage == "train")
    assert states[train.id] == "failed"
    log = store.log_path("train", train.keys[0]).read_text()
    assert "push to https://alice:[REDACTED]@hub.example.com/org/model failed: 401" in log
    assert "pw-in-log-1" not in log and HF not in log
    shown = "\n".join(said)
    assert "[REDACTED]" in shown and "pw-in-log-1" not in shown and HF not in shown


def test_a_cancelled_local_stages_log_is_redacted(minimal, tmp_path):
    _, store, tasks, launcher, _ = make(minimal, tmp_path)
    launcher.command = lambda t: [sys.executable, "-c", f"print('{URL}', flush=True); import time; time.sleep(60)"]
    launcher._start(tasks[0], [])
    log = store.log_path(tasks[0].stage, tasks[0].keys[0])
    deadline = time.monotonic() + 20
    while "pw-in-log-1" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "pw-in-log-1" in log.read_text()  # the stage did print it
    launcher.cancel()
    assert launcher.states[tasks[0].id] == "cancelled"
    assert "pw-in-log-1" not in log.read_text() and "alice:[REDACTED]@hub.example.com" in log.read_text()


def _job_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo node1\n')
    (bin_dir / "scontrol").chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "node1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }


def test_a_slurm_job_redacts_its_own_log_as_it_ends_and_keeps_its_exit_status(minimal, tmp_path):
    minimal["launcher"] = {"kind": "slurm"}
    store = Store(tmp_path / "store")
    launcher = SlurmLauncher(
        spec_from_dict(minimal), "spec.yaml", store, env={}, command=lambda t: [sys.executable, "-c", FAILING_STAGE]
    )
    t = task("train", "00aa11bb22cc33dd")
    script = tmp_path / "job.sbatch"
    script.write_text(launcher.script(t))
    log = store.log_path("train", "00aa11bb22cc33dd")
    log.parent.mkdir(parents=True)
    log.write_text(f"=== an earlier attempt of this job printed {URL}\n")
    with log.open("a") as out:  # as Slurm's --output with --open-mode=append
        rc = subprocess.run(
            ["bash", str(script)], env=_job_env(tmp_path), stdout=out, stderr=subprocess.STDOUT
        ).returncode
    text = log.read_text()
    assert rc == 1  # the stage's exit 1 (SystemExit with a message), not the trap's
    assert "pw-in-log-1" not in text and HF not in text
    assert text.count("alice:[REDACTED]@hub.example.com") == 3 and "outputs not complete (exit 1)" in text


def test_the_launcher_redacts_the_log_of_a_job_that_failed_without_its_own_redaction(minimal, tmp_path, fake_slurm):
    plan, store, launcher = sweep(minimal, tmp_path)
    said: list[str] = []
    launcher.echo = said.append
    tasks = pending_tasks(plan, store)
    launcher.submit(tasks)
    log = store.log_path(tasks[0].stage, tasks[0].keys[0])
    log.write_text(f"Traceback: push to {URL} failed\nslurmstepd: error: *** JOB CANCELLED DUE TO TIME LIMIT ***\n")
    fake_slurm.set(launcher.jobs[tasks[0].id], "FAILED")
    for tid, state, detail in launcher.refresh():
        launcher._report(tid, state, detail)
    assert "pw-in-log-1" not in log.read_text() and "alice:[REDACTED]@" in log.read_text()
    assert any("alice:[REDACTED]@" in line for line in said) and not any("pw-in-log-1" in line for line in said)


def test_a_job_script_is_readable_by_its_owner_only(minimal, tmp_path, fake_slurm):
    minimal["launcher"] = {"kind": "slurm", "slurm": {"setup": ["export WANDB_API_KEY=" + "9f86d0" * 6]}}
    minimal["seeds"] = [0]
    spec = spec_from_dict(minimal)
    plan = build_plan(spec)
    store = Store(tmp_path / "store")
    tasks = pending_tasks(plan, store)
    first = script_path(store, tasks[0].stage, tasks[0].keys[0])
    first.parent.mkdir(parents=True)
    first.write_text("# left by an earlier version, world-readable\n")
    first.chmod(0o755)
    SlurmLauncher(spec, tmp_path / "spec.yaml", store, echo=lambda *a: None).submit(tasks)
    for t in tasks:
        path = script_path(store, t.stage, t.keys[0])
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        assert "export WANDB_API_KEY=" + "9f86d0" * 6 in path.read_text()  # the job needs it to run
