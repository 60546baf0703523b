"""The launcher base: the wait loop every launcher shares, start() as `ablate run` calls it, and the CLI reaching
each launcher kind's sweep-level operations (`ablate status`, `ablate cancel`) through the interface alone."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import yaml

from framework.cli import main
from framework.spec import load_spec, spec_from_dict
from framework.store import Store
from framework.sweep.execute import open_store
from framework.sweep.plan import build_plan
from launchers.base import FINAL, Launcher, Task, pending_tasks
from launchers.slurm import SlurmLauncher
from tests.unit.launchers.fakes import task


@dataclass
class Scripted(Launcher):
    """A launcher whose every task goes through the states a test scripts, one per poll."""

    name: ClassVar[str] = "scripted"
    script: list[str] = field(default_factory=lambda: ["queued", "running", "done"])
    polls: int = 0
    log: list[str] = field(default_factory=list)

    def submit(self, tasks: list[Task]) -> None:
        self.states = {t.id: "pending" for t in tasks}

    def poll(self) -> None:
        self.log.append(f"poll {self.polls}")
        state = self.script[min(self.polls, len(self.script) - 1)]
        self.states = dict.fromkeys(self.states, state)
        self.polls += 1

    def cancel(self) -> None:
        self.states = dict.fromkeys(self.states, "cancelled")

    @contextlib.contextmanager
    def following(self):
        self.log.append("enter")
        try:
            yield
        except BaseException as e:
            self.log.append(f"stopped by {type(e).__name__}")
            self.cancel()
            raise
        finally:
            self.log.append("exit")


TASKS = [task("train", "00aa11bb22cc33dd"), task("eval", "11bb22cc33dd44ee")]


def scripted(minimal, tmp_path, **kw) -> Scripted:
    return Scripted(spec_from_dict(minimal), "spec.yaml", Store(tmp_path / "store"), **kw)


def test_wait_polls_until_every_task_has_ended_inside_the_launchers_own_context(minimal, tmp_path):
    launcher = scripted(minimal, tmp_path)
    launcher.submit(TASKS)
    states = launcher.wait(poll_s=0)
    assert states == {t.id: "done" for t in TASKS} and "done" in FINAL
    assert launcher.log == ["enter", "poll 0", "poll 1", "poll 2", "exit"]  # no poll after the last task ended


def test_every_final_state_ends_the_wait_and_no_other_does(minimal, tmp_path):
    for end in sorted(FINAL):
        launcher = scripted(minimal, tmp_path, script=["pending", "queued", "running", end])
        launcher.submit(TASKS)
        assert set(launcher.wait(poll_s=0).values()) == {end} and launcher.polls == 4


def test_an_error_in_a_poll_goes_through_the_launchers_context(minimal, tmp_path):
    launcher = scripted(minimal, tmp_path)

    def broken() -> None:
        raise KeyboardInterrupt

    launcher.submit(TASKS)
    launcher.poll = broken
    with pytest.raises(KeyboardInterrupt):
        launcher.wait(poll_s=0)
    assert launcher.log == ["enter", "stopped by KeyboardInterrupt", "exit"]
    assert set(launcher.states.values()) == {"cancelled"}


def test_start_follows_the_tasks_only_when_asked_unless_they_are_its_own_children(minimal, tmp_path):
    spec, store = spec_from_dict(minimal), Store(tmp_path / "store")
    queued = Scripted.start(spec, "spec.yaml", store, TASKS, wait=False, echo=lambda line: None)
    assert queued.polls == 0 and set(queued.states.values()) == {"pending"}
    followed = Scripted.start(spec, "spec.yaml", store, TASKS, echo=lambda line: None)
    assert set(followed.states.values()) == {"done"}

    class Children(Scripted):
        always_waits = True

    own = Children.start(spec, "spec.yaml", store, TASKS, wait=False, echo=lambda line: None)
    assert set(own.states.values()) == {"done"}


def test_status_and_cancel_reach_slurm_jobs_through_the_interface(minimal, tmp_path, monkeypatch, fake_slurm, capsys):
    """`ablate status` shows the queued Slurm jobs of the sweep and `ablate cancel` cancels them, although the CLI
    imports no launcher module: it asks each kind through the interface of launchers.base."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATE_RESULTS_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bin_dir = tmp_path / "bin"  # Slurm's commands on PATH (the fake stands in for their calls)
    bin_dir.mkdir()
    for name in ("squeue", "scontrol", "scancel"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    minimal["seeds"], minimal["launcher"] = [0], {"kind": "slurm"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(minimal))
    loaded = load_spec(path)  # the plan and store as the CLI opens them
    plan, store = build_plan(loaded.spec, loaded.path), open_store(loaded, None)
    tasks = pending_tasks(plan, store)
    launcher = SlurmLauncher(loaded.spec, path, store, echo=lambda line: None)
    launcher.submit(tasks)
    capsys.readouterr()

    assert main(["status", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["stages"]
    by_job = {(r["stage"], r["key"]): r for r in rows}
    for t in tasks:
        for k in t.keys:
            row = by_job[(t.stage, k)]
            assert row["slurm_job"] == launcher.jobs[t.id] and row["state"] == "queued", row

    assert main(["cancel", str(path)]) == 0
    ids = sorted(launcher.jobs.values())
    assert capsys.readouterr().out.splitlines() == [f"cancelled {len(ids)} Slurm job(s): {' '.join(map(str, ids))}"]
    assert sorted(fake_slurm.cancelled) == ids
