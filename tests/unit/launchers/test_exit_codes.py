"""`ablate run`'s exit status from the launcher's task states: a failure wins (1), else anything not done is
deferred work (75), including tasks that only wait on a deferred one, else 0."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

from framework.cli import main
from framework.errors import RetryLater
from framework.spec.launch import LauncherSpec
from launchers.base import LAUNCHERS, Launcher, launcher_class, run_exit_code, summary, unfinished_on_their_own
from tests.unit.launchers.fakes import make

DEFER = [sys.executable, "-c", "import sys; sys.exit(75)"]
FAIL = [sys.executable, "-c", "import sys; sys.exit(3)"]


def test_a_deferred_training_defers_the_sweep_with_its_evaluations(minimal, tmp_path):
    """A training stopped at a checkpoint exits 75; its evaluations and log are skipped, not failed."""
    _, _, tasks, launcher, _ = make(minimal, tmp_path)
    inner = launcher.command
    launcher.command = lambda task: DEFER if task.stage == "train" else inner(task)
    states = launcher.wait(poll_s=0.01)
    assert "skipped" in states.values() and "failed" not in states.values()
    assert unfinished_on_their_own(tasks, states) == []
    assert run_exit_code(tasks, states) == RetryLater.exit_code


def test_a_failure_wins_over_a_deferral(minimal, tmp_path):
    _, _, tasks, launcher, _ = make(minimal, tmp_path)
    inner = launcher.command
    first_eval = next(t.id for t in tasks if t.stage == "eval")
    launcher.command = lambda task: DEFER if task.stage == "log" else FAIL if task.id == first_eval else inner(task)
    states = launcher.wait(poll_s=0.01)
    assert "deferred" in states.values() and states[first_eval] == "failed"
    assert unfinished_on_their_own(tasks, states) == [first_eval]
    assert run_exit_code(tasks, states) == 1


def test_all_done_is_0_and_a_task_cancelled_on_its_own_is_1(minimal, tmp_path):
    _, _, tasks, launcher, _ = make(minimal, tmp_path)
    states = launcher.wait(poll_s=0.01)
    assert run_exit_code(tasks, states) == 0
    # What the Slurm launcher reports for a job the user scancelled: not a dependency's fate, its own.
    last = tasks[-1]
    assert run_exit_code(tasks, {**states, last.id: "cancelled"}) == 1
    assert run_exit_code(tasks, {**states, last.id: "deferred"}) == RetryLater.exit_code


def test_run_help_and_readme_promise_75_for_deferred_work(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "75 deferred" in help_text and "1 a stage job failed" in help_text
    readme = " ".join((Path(__file__).resolve().parents[3] / "README.md").read_text().split())
    assert "`ablate run` exits 75 whenever any stage job was deferred" in readme


def test_the_closing_summary_is_one_for_every_launcher(minimal, tmp_path):
    """`ablate run` reads the same summary off any launcher: counts, each deferred and failed task with its
    reason, and the exit status of run_exit_code."""
    _, _, tasks, launcher, _ = make(minimal, tmp_path)
    inner = launcher.command
    launcher.command = lambda task: DEFER if task.stage == "log" else inner(task)
    launcher.wait(poll_s=0.01)
    code, lines = summary(tasks, launcher)
    n_log = sum(t.stage == "log" for t in tasks)
    assert code == RetryLater.exit_code
    assert lines[0] == f"finished: {len(tasks) - n_log} done, 0 not done, {n_log} deferred"
    assert all("retry later; log:" in line for line in lines[1:]) and len(lines) == 1 + n_log


def test_every_launcher_kind_resolves_to_a_launcher_that_implements_submit_poll_cancel():
    kinds = set(LauncherSpec.model_fields["kind"].annotation.__args__)
    assert set(LAUNCHERS) == kinds
    for kind in LAUNCHERS:
        cls = launcher_class(kind)
        assert issubclass(cls, Launcher) and cls.name == kind
        assert all(getattr(cls, m) is not getattr(Launcher, m) for m in ("submit", "poll", "cancel")), kind
        params = inspect.signature(cls.start).parameters
        assert list(params)[:5] == ["spec", "spec_path", "store", "tasks", "results_dir"] and "wait" in params
