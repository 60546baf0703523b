"""Stage jobs of a local run never outlive it unseen: killed with the runner (SIGKILL to its process group, or the
OOM killer taking the runner alone), they are stopped by its reaper; a lock held by a job of an earlier run is
named by the next run; `ablate cancel` stops a local sweep and waits for it.

Real processes throughout: a stand-in `ablate run` (tests/unit/launchers/fakes.py) whose stage jobs
sleep, and a stand-in stage job that holds a build lock the way `ablate exec` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep.plan import build_plan
from launchers.base import pending_tasks
from launchers.local import cancel_local, live_holders, lock_holder, running_detail
from tests.unit.launchers.fakes import REPO, SLEEP, alive, kill_all, make, start_launcher, wait_for_stage

# Holds the build lock of (stage, key) in the store and sleeps: a stage job whose run is gone.
HOLDER = """
import sys, time
from framework.store import Store
with Store(sys.argv[1]).build(sys.argv[2], sys.argv[3]) as b:
    open(sys.argv[4], "w").close()
    time.sleep(120)
"""


def gone_within(pids_: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids_):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("whole_group", [True, False], ids=["kill-process-group", "kill-runner-only"])
def test_stage_jobs_die_with_a_runner_killed_outright(tmp_path, whole_group):
    proc = start_launcher(tmp_path, SLEEP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        children = wait_for_stage(tmp_path, proc)
        assert all(alive(p) for p in children)
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)  # kill -9 -- -PGID: the stage jobs, in their own sessions, survive it
        else:
            proc.kill()  # the OOM killer's choice
        proc.wait(timeout=10)
        assert gone_within(children, 10), "a stage job outlived its killed runner"
        logs = [p.read_text() for p in (tmp_path / "store").glob("*/*.log")]
        assert any(f"the launcher (pid {proc.pid}) is gone" in text for text in logs)
    finally:
        kill_all(tmp_path, proc)


def test_a_runner_ending_normally_leaves_no_reaper_behind(minimal, tmp_path):
    _, _, _, launcher, _ = make(minimal, tmp_path)
    reapers = []
    guard = launcher._guard

    def spy() -> None:
        guard()
        reapers.append(launcher._reaper)

    launcher._guard = spy
    assert set(launcher.wait(poll_s=0.01).values()) == {"done"}
    assert reapers and reapers[0].poll() == 0
    assert not list((launcher.store.root / ".runs").glob("*.json"))  # no longer listed as a live run


def hold_lock(store: Store, stage: str, key: str, tmp_path: Path, *, own_session: bool = True) -> subprocess.Popen:
    """A process holding (stage, key)'s build lock: in a session of its own as the local launcher starts stage
    jobs, or in ours as a command typed in a terminal would be."""
    ready = tmp_path / f"holding-{key}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", HOLDER, str(store.root), stage, key, str(ready)]
    holder = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=own_session)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline and holder.poll() is None, "the lock holder never took the lock"
        time.sleep(0.05)
    return holder


def test_a_run_says_which_earlier_job_it_waits_on(minimal, tmp_path):
    """Before: `start model/...`, then silence while the stage waited on the old job's lock."""
    _, store, tasks, launcher, _ = make(minimal, tmp_path)
    said: list[str] = []
    launcher.echo = said.append
    task = tasks[0]
    key = task.keys[0]
    holder = hold_lock(store, task.stage, key, tmp_path)
    try:
        h = lock_holder(store, task.stage, key)
        assert h is not None and h.pid == holder.pid and h.run is None
        started = json.loads(store.path(task.stage, key).with_name(f"{key}.lock").read_text())["started"]
        launcher.command = lambda task: [sys.executable, "-c", "import time; time.sleep(60)"]
        launcher._start(task, [])
        waiting = [line for line in said if line.startswith("waiting on")]
        assert waiting == [f"waiting on {task.stage}/{key} (pid {holder.pid}, started by an earlier run at {started})"]
    finally:
        launcher.cancel()
        holder.kill()
        holder.wait()


def test_cancel_stops_a_local_run_and_a_job_left_by_a_dead_one(minimal, tmp_path):
    minimal["model"] = {"tiny": {}}
    minimal["results_dir"] = str(tmp_path / "results")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(minimal))
    sweep = tmp_path / "results" / minimal["name"]  # the stand-in run keeps its store in <sweep>/store
    store = Store(sweep / "store")
    plan = build_plan(spec_from_dict(minimal))
    last = pending_tasks(plan, store)[-1]  # the run will not reach it: its lock is the dead run's job's
    holder = hold_lock(store, last.stage, last.keys[0], tmp_path)
    run = start_launcher(sweep, SLEEP, pids_arg=str(tmp_path / "pids"), stdout=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
    try:
        children = wait_for_stage(tmp_path, run)
        env = {k: v for k, v in os.environ.items() if k != "ABLATE_RESULTS_DIR"}
        status = subprocess.run(
            [sys.executable, "-m", "framework.cli", "status", str(spec_file), "--json"],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        rows = [r for r in json.loads(status.stdout)["stages"] if (r["stage"], r["key"]) == (last.stage, last.keys[0])]
        assert rows and {r["state"] for r in rows} == {"running"}
        assert rows[0]["detail"].startswith(f"pid {holder.pid}, started by an earlier run at ")
        assert rows[0]["detail"].endswith("its run is gone: `ablate cancel` stops it")
        out = subprocess.run(
            [sys.executable, "-m", "framework.cli", "cancel", str(spec_file)],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert f"stopping run pid {run.pid}" in out.stdout
        assert f"stopping {last.stage}/{last.keys[0]} (pid {holder.pid}, started by an earlier run" in out.stdout
        assert f"stopped 2 local process(es): {' '.join(map(str, sorted([run.pid, holder.pid])))}" in out.stdout
        # cancel waited: when it returns, all of them have stopped
        assert holder.poll() is not None and run.poll() is not None
        assert not [p for p in children if alive(p)]
        assert set(json.loads((sweep / "states.json").read_text()).values()) == {"cancelled"}
    finally:
        holder.kill()
        holder.wait()
        kill_all(tmp_path, run)


MUTEX_HOLDER = """
import sys, time
from framework.store import Store
with Store(sys.argv[1]).mutex("mlflow-parent-abc"):
    open(sys.argv[2], "w").close()
    time.sleep(120)
"""


def test_cancel_leaves_what_no_run_started_and_the_stores_own_locks(minimal, tmp_path):
    """A lock held from a terminal's session (`ablate plan` building the data, an `ablate exec` typed by hand) is
    the user's, not an orphan of a dead run; a log stage electing the sweep's MLflow run holds a store-wide lock
    under .locks/, which is no stage's. `ablate cancel` stops neither, and status does not offer to."""
    _, store, tasks, _, _ = make(minimal, tmp_path)
    key = tasks[0].keys[0]
    by_hand = hold_lock(store, tasks[0].stage, key, tmp_path, own_session=False)
    ready = tmp_path / "electing"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    electing = subprocess.Popen([sys.executable, "-c", MUTEX_HOLDER, str(store.root), str(ready)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and electing.poll() is None
            time.sleep(0.05)
        holders = live_holders(store)
        assert [(h.stage, h.pid, h.orphan) for h in holders] == [(tasks[0].stage, by_hand.pid, False)]
        detail = running_detail(store, tasks[0].stage, key, "")
        assert "a command outside any run" in detail and "ablate cancel" not in detail
        said: list[str] = []
        assert cancel_local(store, echo=said.append) == []
        assert any(line.startswith(f"not stopping {tasks[0].stage}/{key}") for line in said)
        time.sleep(0.5)
        assert by_hand.poll() is None and electing.poll() is None
    finally:
        for p in (by_hand, electing):
            p.kill()
            p.wait()
