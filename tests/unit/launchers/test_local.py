"""Local launcher scheduling: dependency order, failure isolation, marker-based success, cancel.

The stage bodies are replaced by tiny shell commands that publish (or do not publish) the job's marker: what is
under test is the scheduling, which is pure logic over the plan and the store.
"""

from __future__ import annotations

import json
import sys
import time

from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep.plan import build_plan
from launchers import local
from launchers.base import pending_tasks
from launchers.local import cpu_slots_needed
from tests.unit.launchers.fakes import make


def test_runs_everything_in_dependency_order(minimal, tmp_path):
    plan, store, tasks, launcher, log = make(minimal, tmp_path)
    states = launcher.wait(poll_s=0.01)
    assert set(states.values()) == {"done"}
    assert all(store.is_done(j.stage, j.key) for j in plan.jobs.values())
    ran = log.read_text().split()
    pos = {t: i for i, t in enumerate(ran)}
    for task in tasks:
        for dep in task.deps:
            assert pos[dep.split("+")[0]] < pos[task.id.split("+")[0]]
    assert pending_tasks(plan, store) == []  # a second run has nothing to do


def test_evals_of_one_checkpoint_are_one_task(minimal, tmp_path):
    minimal["eval"]["benchmarks"] = ["aime24", "aime25", "math-500"]
    _, _, tasks, _, _ = make(minimal, tmp_path)
    evals = [t for t in tasks if t.stage == "eval"]
    assert evals and all(len(t.jobs) == 3 for t in evals)


def test_a_failure_skips_only_its_dependents(minimal, tmp_path):
    _, _, tasks, _, _ = make(minimal, tmp_path / "probe")
    target = next(t for t in tasks if t.stage == "train")
    _, _, tasks, launcher, _ = make(minimal, tmp_path / "run", fail={target.id})
    states = launcher.wait(poll_s=0.01)
    assert states[target.id] == "failed" and "log:" in launcher.reasons[target.id]
    dependents = {t.id for t in tasks if target.id in t.deps}
    assert dependents and all(states[d] == "skipped" for d in dependents)
    others = [t for t in tasks if t.id != target.id and t.id not in dependents and t.stage == "train"]
    assert others and all(states[t.id] == "done" for t in others)


def test_marker_decides_success_not_exit_code(minimal, tmp_path):
    _, _, _, launcher, _ = make(minimal, tmp_path, exit_code=134)  # outputs complete, then an abort at exit
    assert set(launcher.wait(poll_s=0.01).values()) == {"done"}


def test_cancel_stops_running_tasks(minimal, tmp_path):
    _, _, tasks, launcher, _ = make(minimal, tmp_path)
    launcher.command = lambda task: [sys.executable, "-c", "import time; time.sleep(60)"]
    launcher._start(tasks[0], [])
    time.sleep(0.2)
    t0 = time.monotonic()
    launcher.cancel()
    assert time.monotonic() - t0 < 10
    assert launcher.states[tasks[0].id] == "cancelled"
    assert all(s == "cancelled" for s in launcher.states.values())


def test_exit_75_defers_instead_of_failing(minimal, tmp_path):
    _, _, _, launcher, _ = make(minimal, tmp_path)
    inner = launcher.command
    launcher.command = lambda task: (
        [sys.executable, "-c", "import sys; sys.exit(75)"] if task.stage == "log" else inner(task)
    )
    states = launcher.wait(poll_s=0.01)
    assert {s for t, s in states.items() if t.startswith("log/")} == {"deferred"}
    assert {s for t, s in states.items() if not t.startswith("log/")} == {"done"}


def test_a_cpu_training_takes_a_slot_per_process(minimal, tmp_path):
    """With 3 slots and 2-process trainings, two trainings never run at once, but a training and one light stage
    do; a pool smaller than a training still runs it alone."""
    minimal["factors"] = {"source": {"levels": ["a", "b", "c"]}}
    minimal["train"] = {**minimal.get("train", {}), "processes": 2}
    minimal["launcher"] = {"kind": "local", "local": {"cpu_slots": 3}}
    _, _, tasks, launcher, _ = make(minimal, tmp_path)
    by_stage = {t.stage: t for t in tasks}
    assert cpu_slots_needed(by_stage["train"], launcher.spec) == 2
    assert cpu_slots_needed(by_stage["eval"], launcher.spec) == 1
    busy: list[tuple[str, ...]] = []
    start = launcher._start

    def spy(task, gpus, cpu_slots=0):
        start(task, gpus, cpu_slots)
        busy.append(tuple(sorted(r.task.stage for r in launcher._running.values())))

    launcher._start = spy
    assert set(launcher.wait(poll_s=0.01).values()) == {"done"}
    assert busy and all(stages.count("train") <= 1 for stages in busy)
    assert all(sum(2 if s == "train" else 1 for s in stages) <= 3 for stages in busy)

    minimal["launcher"] = {"kind": "local", "local": {"cpu_slots": 1}}
    _, _, tasks, launcher, _ = make(minimal, tmp_path / "one")
    assert cpu_slots_needed(next(t for t in tasks if t.stage == "train"), launcher.spec) == 1
    assert set(launcher.wait(poll_s=0.01).values()) == {"done"}


def test_cancel_gives_a_training_time_to_checkpoint(minimal, tmp_path, monkeypatch):
    monkeypatch.setattr(local, "STOP_GRACE_S", 0.5)
    monkeypatch.setattr(local, "TRAIN_STOP_GRACE_S", 10.0)
    _, _, tasks, launcher, _ = make(minimal, tmp_path)
    saved, ready = tmp_path / "checkpoint-written", tmp_path / "handler-installed"
    stop = (
        "import signal, sys, time\n"
        "def on_term(*_):\n"
        "    time.sleep(1.5)  # writing a checkpoint\n"
        f"    open({str(saved)!r}, 'w').close(); sys.exit(75)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    launcher.command = lambda task: [sys.executable, "-c", stop]
    train = next(t for t in tasks if t.stage == "train")
    launcher._start(train, [])
    deadline = time.monotonic() + 30
    while not ready.exists():  # a SIGTERM before the handler is installed would just kill it
        assert time.monotonic() < deadline, "the stand-in training never started"
        time.sleep(0.05)
    launcher.cancel()
    assert saved.exists() and launcher.states[train.id] == "cancelled"


def test_evals_of_different_baseline_models_are_different_tasks(minimal, tmp_path):
    """Hub baselines have no dependency to tell them apart: grouping by deps alone put both models in one process
    (and the engine cache would hold both on one GPU)."""
    minimal["baselines"] = ["base", {"name": "math72b", "model": {"name_or_path": "Qwen/Qwen2.5-Math-72B-Instruct"}}]
    minimal["eval"]["benchmarks"] = ["aime24", "aime25"]
    plan = build_plan(spec_from_dict(minimal), strict=False)
    evals = [t for t in pending_tasks(plan, Store(tmp_path / "store")) if t.stage == "eval"]
    for t in evals:
        assert len({json.dumps(j.config.get("checkpoint") or j.config["model"], sort_keys=True) for j in t.jobs}) == 1
        assert len(t.jobs) == 2  # still one task per model for all its benchmarks
    baseline_cells = [sorted({c for j in t.jobs for c in j.cells}) for t in evals if not t.deps]
    assert sorted(baseline_cells) == [["baseline=base"], ["baseline=math72b"]]
