"""The local launcher's CPU allotment: each slot its own cores, each job pinned to its slots' cores with as many
threads, and the warm evaluation process's request protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.errors import UserError
from framework.sweep.plan import Job
from launchers.base import Task
from launchers.local import THREAD_VARS, local_cores, pinned, slot_cores, thread_env


def test_slots_get_disjoint_contiguous_cores_and_share_only_when_asked_for_more_than_there_are():
    assert slot_cores([0, 1, 2, 3, 4, 5, 6, 7], 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert slot_cores([0, 1], 2) == [[0], [1]]
    assert slot_cores([4, 5, 6, 7], 1) == [[4, 5, 6, 7]]
    assert slot_cores([0, 1], 3) == [[0], [1], [0]]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_the_cores_are_this_process_s_unless_listed_and_a_listed_core_it_may_not_use_is_a_user_error():
    allowed = sorted(os.sched_getaffinity(0))
    assert local_cores("auto") == allowed
    assert local_cores([allowed[0], allowed[0]]) == [allowed[0]]
    with pytest.raises(UserError, match=r"launcher.local.cores \[4096\] are not among"):
        local_cores([allowed[0], 4096])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_pinned_command_and_the_processes_it_starts_run_on_its_cores_alone():
    core = sorted(os.sched_getaffinity(0))[-1]
    probe = "import os, subprocess, sys; print(sorted(os.sched_getaffinity(0))); sys.stdout.flush(); " + (
        "subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'])"
    )
    out = subprocess.run(pinned([sys.executable, "-c", probe], [core]), capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [f"[{core}]", f"[{core}]"]
    assert pinned(["x"], []) == ["x"]


def _task(stage: str, config: dict | None = None) -> Task:
    return Task(stage, [Job(stage=stage, key="k", config=config or {}, deps=[], cells=["c"])])


def test_threads_follow_the_cores_except_for_a_training_which_splits_them_between_its_processes():
    env = thread_env({"OMP_NUM_THREADS": "64", "PATH": "/bin"}, _task("eval"), [2, 3])
    assert {k: env[k] for k in THREAD_VARS} == dict.fromkeys(THREAD_VARS, "2") and env["PATH"] == "/bin"
    train = thread_env({"OMP_NUM_THREADS": "64"}, _task("train"), [0, 1, 2, 3])
    assert not any(k in train for k in THREAD_VARS)


def test_an_evaluation_process_runs_each_request_into_its_own_log_and_replies_with_its_exit_status(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nmodel: {name_or_path: toy:base}\npool: [{preset: toy}]\nn_examples: 4\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodell: 1\n")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "framework.exec_worker", str(write)], stdin=subprocess.PIPE, pass_fds=(write,),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    assert proc.stdin is not None
    for argv, log in zip([["validate", str(spec)], ["validate", str(bad)]], logs, strict=True):
        proc.stdin.write((json.dumps({"argv": argv, "log": str(log)}) + "\n").encode())
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    replies = [json.loads(line) for line in os.fdopen(read).read().splitlines()]
    assert replies == [{"rc": 0}, {"rc": 2}]
    assert "bad.yaml" not in logs[0].read_text() and "ok" in logs[0].read_text().lower()
    assert "modell" in logs[1].read_text()  # the second request's error is in its own log
