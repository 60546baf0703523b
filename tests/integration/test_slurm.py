"""The Slurm launcher against a real single-node Slurm (munged, slurmctld, slurmd started for this module).

Stage bodies are replaced by small Python commands that publish the job's store marker, as in the local launcher's
tests: what is under test is what Slurm does with the generated scripts (dependencies, kill-on-invalid-dep, reuse
of queued jobs, signal forwarding and requeue, cancel), not the stages. Two tests use the real stages: a training
preempted the way Slurm does it resumes from its checkpoint, and the whole quickstart runs through Slurm with the
real `ablate exec` of every stage.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.spec import load_spec, spec_from_dict
from framework.store import Store
from framework.sweep.plan import build_plan
from launchers.base import Task, pending_tasks
from launchers.slurm import (
    SlurmLauncher,
    _recorded,
    cancel_sweep,
    partition_max_time,
    read_record,
    scontrol_job,
    slurm_states,
    squeue,
)
from launchers.slurm_reuse import running_superseded
from tests.integration.slurm_cluster import SlurmCluster, ensure_installed

# A wedged job must fail its test, not hang the suite (the fixture's teardown still stops the cluster).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]

# One stage job: log start/end times, fail on request, publish the markers. A "preemptible" task sleeps until
# SIGTERM/SIGUSR1, then writes a checkpoint and exits 75 as a stopped training does (TrainingStopped); run again,
# it finds the checkpoint and finishes.
STAGE = r"""
import os, signal, sys, time
from framework.store import Store
root, stage, keys, events, fail, slow, ckpt_dir = sys.argv[1:8]
store, keys = Store(root), keys.split(",")
tid = stage + "/" + keys[0]
def event(what):
    with open(events, "a") as f:
        f.write(f"{what} {tid} {time.time():.6f} {os.environ.get('SLURM_JOB_ID')}\n")
event("start")
if tid in fail.split(","):
    event("fail")
    sys.exit(3)
if tid in slow.split(","):
    ckpt = os.path.join(ckpt_dir, keys[0] + ".ckpt")
    if not os.path.exists(ckpt):
        def stop(sig, frame):
            open(ckpt, "w").write(signal.Signals(sig).name)
            event("checkpointed")
            sys.exit(75)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGUSR1, stop)
        event("waiting")
        time.sleep(300)
        sys.exit(2)
for k in keys:
    with store.build(stage, k) as b:
        pass
event("end")
"""


def stage_command(store: Store, events: Path, fail=(), slow=()):
    def command(task: Task) -> list[str]:
        return [
            sys.executable,
            "-c",
            STAGE,
            str(store.root),
            task.stage,
            ",".join(task.keys),
            str(events),
            ",".join(fail),
            ",".join(slow),
            str(events.parent),
        ]

    return command


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A private Slurm for the session; daemons and job processes are stopped at the end, whatever happens:
    pass, fail, Ctrl-C, or a SIGTERM from a CI timeout (turned into KeyboardInterrupt so teardown runs)."""
    reason = ensure_installed()
    if reason:
        pytest.skip(f"no Slurm: {reason}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=2)
    atexit.register(cluster.stop)  # also when the session dies before fixture teardown
    old_conf = os.environ.get("SLURM_CONF")
    old_term = signal.getsignal(signal.SIGTERM)
    if old_term == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, old_term)
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf


def make(minimal, tmp_path: Path, **command_kw):
    minimal["seeds"] = [0]
    minimal["launcher"] = {"kind": "slurm", "slurm": {"time": "00:10:00"}}
    spec = spec_from_dict(minimal)
    plan = build_plan(spec)
    store = Store(tmp_path / "results" / spec.name / "store")
    events = tmp_path / "events.log"

    def launcher(**kw) -> SlurmLauncher:
        return SlurmLauncher(
            spec,
            tmp_path / "spec.yaml",
            store,
            echo=print,
            workdir=tmp_path,
            command=stage_command(store, events, **command_kw),
            **kw,
        )

    return plan, store, events, launcher


def read_events(events: Path) -> list[tuple[str, str, float, str]]:
    out = []
    for line in events.read_text().splitlines():
        what, tid, t, job = line.split()
        out.append((what, tid, float(t), job))
    return out


def wait_for(predicate, timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def settled(job: str) -> None:
    """A task is done once its output is published, but its job script may still be RUNNING (it looks at the
    markers after the stage exits) and then COMPLETING: wait for the job's final state."""
    wait_for(lambda: (scontrol_job(job) or {}).get("JobState") in ENDED, what=f"job {job} to end")


def test_sweep_runs_in_dependency_order_and_is_never_submitted_twice(slurm, minimal, tmp_path):
    plan, store, events, launcher = make(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    first = launcher()
    first.submit(tasks)
    # A second `ablate run` while the first one's jobs are queued submits nothing and follows the same jobs.
    second = launcher()
    second.submit(pending_tasks(plan, store))
    assert second.reused == {t.id for t in tasks} and second.jobs == first.jobs
    states = second.wait(poll_s=0.5)
    assert set(states.values()) == {"done"}, {t: (s, second.reasons[t]) for t, s in states.items() if s != "done"}
    assert all(store.is_done(j.stage, j.key) for j in plan.jobs.values())
    assert pending_tasks(plan, store) == []  # and after it, nothing is left to submit
    ev = read_events(events)
    starts = {tid: t for what, tid, t, _ in ev if what == "start"}
    ends = {tid: t for what, tid, t, _ in ev if what == "end"}
    assert len(starts) == len(tasks)  # each task ran exactly once
    for task in tasks:
        for dep in task.deps:
            assert ends[dep.split("+")[0]] <= starts[task.id.split("+")[0]], f"{task.id} started before {dep} ended"
    for task in tasks:
        assert store.log_path(task.stage, task.keys[0]).read_text().count("=== ") >= 2  # the job logged there


def test_failed_train_cancels_its_dependents_only(slurm, minimal, tmp_path):
    plan, store, events, launcher = make(minimal, tmp_path / "probe")
    target = next(t for t in pending_tasks(plan, store) if t.stage == "train")
    plan, store, events, launcher = make(minimal, tmp_path / "run", fail=[target.id])
    tasks = pending_tasks(plan, store)
    run = launcher()
    run.submit(tasks)
    states = run.wait(poll_s=0.5)
    assert states[target.id] == "failed"
    assert "exit 3" in run.reasons[target.id] and str(store.log_path("train", target.keys[0])) in run.reasons[target.id]
    dependents = {t.id for t in tasks if target.id in t.deps}
    downstream = dependents | {t.id for t in tasks if set(t.deps) & dependents}
    assert dependents and all(states[d] == "cancelled" for d in downstream)
    assert all(run.reasons[d].startswith("dependency ") for d in downstream)
    assert all(f"dependency {target.id} " in run.reasons[t.id] for t in tasks if t.deps == [target.id])
    assert all(states[t.id] == "done" for t in tasks if t.id not in downstream | {target.id})
    ran = {tid for what, tid, _, _ in read_events(events) if what == "start"}
    assert not ran & {d.split("+")[0] for d in downstream}  # Slurm never started them
    by_job = slurm_states(plan, store)
    assert by_job[run.jobs[target.id]]["state"] == "failed" and by_job[run.jobs[target.id]]["exit_code"] == "3:0"


def test_preempted_task_is_requeued_and_resumes(slurm, minimal, tmp_path):
    plan, store, events, launcher = make(minimal, tmp_path, slow=["__any__"])
    train = next(t for t in pending_tasks(plan, store) if t.stage == "train")
    task = Task("train", train.jobs)  # alone: its inputs do not matter to the stand-in command
    _, store, events, launcher = make(minimal, tmp_path, slow=[task.id])
    run = launcher()
    run.submit([task])
    job = run.jobs[task.id]
    wait_for(lambda: events.exists() and "waiting" in events.read_text(), what="the task to start")
    # What Slurm does at preemption or --signal=B:USR1@N: signal the batch shell only; it forwards to the stage.
    subprocess.run(["scancel", "--batch", "--signal=TERM", str(job)], check=True)
    states = run.wait(poll_s=0.5)
    assert states[task.id] == "done", run.reasons
    settled(job)  # the stage records its end after publishing
    log = store.log_path("train", task.keys[0]).read_text()
    assert "requeued after SIGTERM" in log and "restart 1" in log, log
    assert (events.parent / f"{task.keys[0]}.ckpt").read_text() == "SIGTERM"
    what = [w for w, *_ in read_events(events)]
    assert what == ["start", "waiting", "checkpointed", "start", "end"]
    info = scontrol_job(job)
    assert info is not None and info["Restarts"] == "1" and info["JobState"] == "COMPLETED"


def test_cancel_stops_queued_and_running_jobs_without_requeue(slurm, minimal, tmp_path):
    plan, store, events, launcher = make(minimal, tmp_path, slow=["__any__"])
    tasks = pending_tasks(plan, store)
    train = next(t for t in tasks if t.stage == "train")
    after = next(t for t in tasks if train.id in t.deps)
    _, store, events, launcher = make(minimal, tmp_path, slow=[train.id])
    run = launcher()
    run.submit([Task("train", train.jobs), Task(after.stage, after.jobs, [train.id])])
    wait_for(lambda: events.exists() and "waiting" in events.read_text(), what="the task to start")
    by_job = slurm_states(plan, store)
    assert by_job[run.jobs[train.id]]["state"] == "running"
    assert by_job[run.jobs[after.id]]["state"] == "queued" and by_job[run.jobs[after.id]]["reason"] == "Dependency"
    cancelled = cancel_sweep(plan, store)
    assert sorted(cancelled) == sorted(run.jobs.values())
    states = run.wait(poll_s=0.5)
    assert set(states.values()) == {"cancelled"}
    time.sleep(3)  # a requeue by the job script would show up as PENDING again by now
    settled(run.jobs[train.id])
    info = scontrol_job(run.jobs[train.id])
    assert info is not None and info["JobState"] == "CANCELLED" and info["Restarts"] == "0"
    log = store.log_path("train", train.keys[0])
    wait_for(lambda: "not requeued" in log.read_text(), what="the job script's note that it did not requeue")
    assert cancel_sweep(plan, store) == []


def test_a_stage_that_cannot_checkpoint_ignores_usr1_and_is_requeued_when_preempted(slurm, minimal, tmp_path):
    """An eval job gets no time-limit warning, and a USR1 sent all the same does not reach the stage; a TERM while
    the job runs (preemption) requeues it, and it starts over to the end."""
    plan, store, events, launcher = make(minimal, tmp_path, slow=["__any__"])
    evaluation = next(t for t in pending_tasks(plan, store) if t.stage == "eval")
    task = Task("eval", evaluation.jobs)  # alone: its inputs do not matter to the stand-in command
    _, store, events, launcher = make(minimal, tmp_path, slow=[task.id.split("+")[0]])
    run = launcher()
    run.submit([task])
    job = run.jobs[task.id]
    assert "#SBATCH --signal" not in Path(scontrol_job(job)["Command"]).read_text()
    wait_for(lambda: events.exists() and "waiting" in events.read_text(), what="the task to start")
    log = store.log_path("eval", task.keys[0])
    subprocess.run(["scancel", "--batch", "--signal=USR1", str(job)], check=True)
    wait_for(lambda: "got SIGUSR1: ignored" in log.read_text(), what="the job script to ignore USR1")
    assert (scontrol_job(job) or {}).get("JobState") == "RUNNING" and "checkpointed" not in events.read_text()
    subprocess.run(["scancel", "--batch", "--signal=TERM", str(job)], check=True)
    states = run.wait(poll_s=0.5)
    assert states[task.id] == "done", run.reasons
    settled(job)
    info = scontrol_job(job)
    assert info is not None and info["Restarts"] == "1" and info["JobState"] == "COMPLETED", info
    assert "requeued after SIGTERM" in log.read_text()


def test_a_benchmark_added_cancels_the_queued_eval_jobs_it_supersedes(slurm, minimal, tmp_path):
    """A re-run whose evaluations are grouped differently cancels the earlier eval jobs (and Slurm their dependents)
    before submitting the new ones, and reuses the rest by their real Slurm job names: no live job of the sweep is
    left untracked."""
    minimal["eval"]["benchmarks"] = ["aime24", "aime25"]
    plan, store, _, _ = make(copy.deepcopy(minimal), tmp_path)
    trains = [t.id for t in pending_tasks(plan, store) if t.stage == "train"]
    plan, store, _, launcher = make(copy.deepcopy(minimal), tmp_path, slow=trains)
    first = launcher()
    first.submit(pending_tasks(plan, store))
    minimal["eval"]["benchmarks"] = ["aime24", "aime25", "math-500"]
    plan2, store, _, launcher2 = make(copy.deepcopy(minimal), tmp_path, slow=trains)
    again = launcher2()
    try:
        again.submit(pending_tasks(plan2, store))
        assert {tid for tid in again.jobs if tid.startswith(("pool/", "data/", "train/"))} <= again.reused
        old = {j for tid, j in first.jobs.items() if tid.startswith(("eval/", "log/"))}
        assert old and not old & set(again.jobs.values())

        def live() -> set[int]:
            infos = squeue(set(first.jobs.values()) | set(again.jobs.values()))
            return {j for j, i in infos.items() if i["state"] in ("PENDING", "RUNNING", "CONFIGURING")}

        wait_for(lambda: not live() & old, what="the superseded jobs to be cancelled")
        assert live() <= set(_recorded(plan2, store))
    finally:
        cancel_sweep(plan2, store)


def test_a_benchmark_added_lets_a_running_eval_job_end_and_submits_after_it(slurm, minimal, tmp_path):
    """An evaluation already running when a benchmark is added is not cancelled: it stays tracked, and the new
    evaluation of the grown group starts once it has ended, whatever way (afterany, which Slurm takes beside
    afterok), and finishes the group."""
    minimal["eval"]["benchmarks"] = ["aime24"]
    plan, store, _, _ = make(copy.deepcopy(minimal), tmp_path)
    evaluation = next(t for t in pending_tasks(plan, store) if t.stage == "eval")
    first_tid = evaluation.id.split("+")[0]
    _, store, events, launcher = make(copy.deepcopy(minimal), tmp_path, slow=[first_tid])
    first = launcher()
    first.submit([Task("eval", evaluation.jobs)])  # alone: its inputs do not matter to the stand-in command
    running = first.jobs[evaluation.id]
    wait_for(lambda: events.exists() and "waiting" in events.read_text(), what="the evaluation to start")
    minimal["eval"]["benchmarks"] = ["aime24", "aime25"]
    plan2, store, events, launcher2 = make(copy.deepcopy(minimal), tmp_path, slow=[first_tid])
    grown = next(t for t in pending_tasks(plan2, store) if t.stage == "eval" and evaluation.keys[0] in t.keys)
    assert len(grown.keys) == 2
    again = launcher2()
    try:
        again.submit([Task("eval", grown.jobs)])
        new = again.jobs[grown.id]
        assert new != running and f"afterany:{running}" in (scontrol_job(new) or {}).get("Dependency", "")
        record = read_record(store, "eval", grown.keys[0])
        assert record is not None and running in running_superseded(record)  # tracked: `ablate cancel` stops it
        time.sleep(2)
        assert (scontrol_job(running) or {}).get("JobState") == "RUNNING"
        assert (scontrol_job(new) or {}).get("JobState") == "PENDING"
        subprocess.run(["scancel", str(running)], check=True)  # it ends: the replacement starts
        states = again.wait(poll_s=0.5)
        assert states[grown.id] == "done", again.reasons
        assert all(store.is_done("eval", k) for k in grown.keys)
        ev = read_events(events)
        ended = max(t for _, _, t, job in ev if job == str(running))
        assert min(t for _, _, t, job in ev if job == str(new)) > ended
    finally:
        cancel_sweep(plan2, store)


LOG_EVENT = re.compile(r"^=== (\S+ \S+) job \d+ \[([^\]+]+)[^\]]*\] (start|done)", re.MULTILINE)


# A bundle's stand-in evaluation: publishes each key whose inputs are done and skips the others, as `ablate exec`
# does with several keys, then exits non-zero if it skipped any (its outputs are then incomplete).
BUNDLE = r"""
import json, os, sys, time
from framework.store import Store
root, keys, needs, events = sys.argv[1], sys.argv[2].split(","), json.loads(sys.argv[3]), sys.argv[4]
store = Store(root)
with open(events, "a") as f:
    f.write(f"start eval/{keys[0]} {time.time():.6f} {os.environ.get('SLURM_JOB_ID')}\n")
skipped = [k for k in keys if not all(store.is_done(*d.split("/")) for d in needs[k])]
for k in keys:
    if k not in skipped:
        with store.build("eval", k) as b:
            pass
sys.exit(2 if skipped else 0)
"""


def test_a_bundle_waits_for_every_training_to_end_even_requeued_and_evaluates_those_that_did_not_fail(
    slurm, minimal, tmp_path
):
    """eval.bundle's dependency is afterany: a failed training no longer cancels its bundle, a training requeued
    after a preemption is still waited for, and the bundle evaluates the checkpoint that is done. The partition's
    MaxTime reads as `ablate plan` asks sinfo for it."""
    assert partition_max_time(None) == ("debug", "infinite")
    minimal["eval"] = {**minimal["eval"], "benchmarks": ["aime24"], "bundle": 2}
    plan, store, events, _ = make(minimal, tmp_path)
    tasks = SlurmLauncher.pending(plan, store)
    bundle = next(t for t in tasks if t.stage == "eval" and len(t.keys) == 2)
    failed, requeued = (next(t for t in tasks if t.id == d) for d in bundle.deps)
    stand_in = stage_command(store, events, fail=[failed.id], slow=[requeued.id])

    def command(task: Task) -> list[str]:
        if task.stage != "eval":
            return stand_in(task)
        needs = json.dumps({k: plan.jobs[f"eval/{k}"].deps for k in task.keys})
        return [sys.executable, "-c", BUNDLE, str(store.root), ",".join(task.keys), needs, str(events)]

    run = SlurmLauncher(plan.spec, tmp_path / "spec.yaml", store, echo=print, workdir=tmp_path, command=command)
    run.submit([Task("train", failed.jobs), Task("train", requeued.jobs), Task("eval", bundle.jobs, bundle.deps)])
    wait_for(lambda: events.exists() and "waiting" in events.read_text(), what="the second training to start")
    settled(run.jobs[failed.id])
    assert squeue([run.jobs[bundle.id]])[run.jobs[bundle.id]]["state"] == "PENDING"  # not cancelled: it waits
    subprocess.run(["scancel", "--batch", "--signal=TERM", str(run.jobs[requeued.id])], check=True)  # preempted
    states = run.wait(poll_s=0.5)
    assert states == {failed.id: "failed", requeued.id: "done", bundle.id: "failed"}, run.reasons
    assert (
        "1 of 2 done" in run.reasons[bundle.id] and f"dependency {failed.id} did not finish" in run.reasons[bundle.id]
    )
    ev = read_events(events)
    starts = [t for what, tid, t, _ in ev if what == "start" and tid.startswith("eval/")]
    (trained,) = [t for what, tid, t, _ in ev if what == "end" and tid == requeued.id]  # after its restart
    assert len(starts) == 1 and starts[0] >= trained  # once, after the requeued training had finished
    skipped = next(j.key for j in bundle.jobs if failed.id in j.deps)
    assert [store.is_done("eval", k) for k in bundle.keys] == [k != skipped for k in bundle.keys]
    assert SlurmLauncher.live_jobs(plan, store)[("eval", skipped)]["state"] == "cancelled"


# The whole quickstart with the real stages (8 trainings, 9 vLLM evaluations, one job at a time on two cores):
# about 12 minutes here.
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_quickstart_end_to_end_through_slurm(slurm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec_path = REPO / "ablations" / "quickstart.yaml"
    loaded = load_spec(spec_path)
    loaded.spec.launcher.slurm.cpus_per_task = 2  # one torch job at a time on two cores
    plan = build_plan(loaded.spec, spec_path)
    store = Store(tmp_path / "results" / loaded.spec.name / "store")
    tasks = pending_tasks(plan, store)
    launcher = SlurmLauncher.start(loaded.spec, spec_path, store, tasks, str(tmp_path / "results"), poll_s=2)
    assert set(launcher.status().values()) == {"done"}, launcher.reasons
    assert all(store.is_done(j.stage, j.key) for j in plan.jobs.values())
    assert pending_tasks(plan, store) == []  # `ablate run` again would submit nothing
    # Each job's log in the store says when Slurm ran it: no job started before the jobs it depends on were done.
    when: dict[str, dict[str, str]] = {}
    for task in tasks:
        for stamp, job, event in LOG_EVENT.findall(store.log_path(task.stage, task.keys[0]).read_text()):
            when.setdefault(job, {})[event] = stamp
    for task in tasks:
        job = f"{task.stage}/{task.keys[0]}"
        for dep in task.deps:
            dep_job = dep.split("+")[0]
            assert when[dep_job]["done"] <= when[job]["start"], f"{job} started before {dep_job} was done"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_training_preempted_by_slurm_checkpoints_requeues_and_resumes(slurm, tmp_path, monkeypatch):
    """Preemption as Slurm does it, on the real train stage: TERM to every process of the job at once (the batch
    shell, the stage, torchrun, both workers). The workers finish their step and write a checkpoint, the job
    requeues itself, and the rerun resumes from that checkpoint to the last step."""
    import copy
    import json

    import yaml

    from framework.model.stage import build, toy_corpus
    from framework.spec.models import TinyModelSpec
    from tests.integration.test_train import SPEC, STEPS, publish_inputs, toy_like_rows

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = copy.deepcopy(SPEC)
    data["launcher"] = {"kind": "slurm", "slurm": {"time": "00:15:00", "cpus_per_task": 2}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    loaded = load_spec(spec_path)
    plan = build_plan(loaded.spec, spec_path)
    store = Store(tmp_path / "results" / loaded.spec.name / "store")
    build(TinyModelSpec.model_validate(data["model"]["tiny"]), tmp_path / "tiny", toy_corpus())
    key = publish_inputs(store, plan, tmp_path / "tiny", toy_like_rows())
    train = next(t for t in pending_tasks(plan, store) if t.stage == "train")
    task = Task("train", train.jobs)
    launcher = SlurmLauncher.start(
        loaded.spec, spec_path, store, [task], str(tmp_path / "results"), wait=False, poll_s=1
    )
    work_log = store.work_path("train", key) / "train.log"
    wait_for(
        lambda: work_log.exists() and "'loss':" in work_log.read_text(errors="replace"),
        timeout_s=300,
        what="the training loop to start",
    )
    subprocess.run(["scancel", "--full", "--signal=TERM", str(launcher.jobs[task.id])], check=True)
    states = launcher.wait(poll_s=1)
    assert states[task.id] == "done", launcher.reasons
    job_log = store.log_path("train", key).read_text()
    assert "requeued after SIGTERM" in job_log and "restart 1" in job_log, job_log
    metrics = json.loads((store.path("train", key) / "metrics.json").read_text())
    assert 0 < metrics["resumed_from_step"] < STEPS
    assert [e["step"] for e in metrics["loss_curve"]] == list(range(1, STEPS + 1))


def test_a_bundle_evaluates_two_checkpoints_in_one_job_and_a_broken_one_leaves_the_other_done(
    slurm, tmp_path, monkeypatch, capsys
):
    """eval.bundle: 2 with the real `ablate exec eval` (transformers backend, so no engine start): two trained
    checkpoints' evaluations run in one Slurm job with twice the eval time; the first checkpoint's weights are
    broken, its evaluation fails, the second's still runs and is done, and `ablate status` shows each."""
    import json
    import shutil

    import yaml

    from framework.cli import main
    from framework.model.stage import build, toy_corpus
    from framework.spec.models import TinyModelSpec
    from tests.helpers import TINY_MODEL

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = {
        "name": "bundle-it",
        "model": TINY_MODEL,
        "pool": [{"preset": "toy"}],
        "seeds": [0, 1],
        "prompt": {"user_template": "{problem}"},
        "eval": {
            "benchmarks": [{"name": "toy", "limit": 2}],
            "samples": 1,
            "sampling": {"temperature": 0.0, "max_tokens": 8},
            "backend": "hf",
            "bundle": 2,
        },
        "launcher": {"kind": "slurm", "slurm": {"time": "00:05:00", "cpus_per_task": 2}},
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    loaded = load_spec(spec_path)
    plan = build_plan(loaded.spec, spec_path)
    store = Store(tmp_path / "results" / loaded.spec.name / "store")
    (bundle,) = [t for t in SlurmLauncher.pending(plan, store) if t.stage == "eval"]
    assert len(bundle.keys) == 2 and len(bundle.deps) == 2  # both checkpoints' evaluations, after both trainings
    # The two trainings' checkpoints, published as the train stage would; the first one's weights are broken.
    build(TinyModelSpec.model_validate(TINY_MODEL["tiny"]), tmp_path / "tiny", toy_corpus())
    broken, good = (plan.jobs[f"eval/{k}"].deps[0].split("/")[1] for k in bundle.keys)
    for key in (broken, good):
        with store.build("train", key) as b:
            assert b is not None
            shutil.copytree(tmp_path / "tiny", b.dir / "model")
    weights = store.path("train", broken) / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (bundle,) = [t for t in SlurmLauncher.pending(plan, store) if t.stage == "eval"]
    assert not bundle.deps  # the trainings are done
    launcher = SlurmLauncher.start(loaded.spec, spec_path, store, [bundle], str(tmp_path / "results"), poll_s=1)
    assert launcher.status() == {bundle.id: "failed"}
    first, second = bundle.keys
    assert not store.is_done("eval", first) and store.is_done("eval", second)
    assert "1 of 2 done" in launcher.reasons[bundle.id] and f"eval/{first}" in launcher.reasons[bundle.id]
    job = launcher.jobs[bundle.id]
    assert {read_record(store, "eval", k)["job_id"] for k in bundle.keys} == {job}  # one Slurm job for both
    assert scontrol_job(job)["TimeLimit"] == "00:10:00"  # each checkpoint its 5 minutes
    log = store.log_path("eval", first).read_text()
    assert f"eval/{first}: not done: SafetensorError" in log and f"eval/{second}: done" in log
    assert store.log_path("eval", second).resolve() == store.log_path("eval", first).resolve()
    capsys.readouterr()
    assert main(["status", str(spec_path), "--json", "--results-dir", str(tmp_path / "results")]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["stages"] if r["stage"] == "eval"}
    assert rows[second]["state"] == "done"
    assert rows[first]["state"] == "failed" and rows[first]["slurm_job"] == job
