"""A re-run of a Slurm sweep against a fake Slurm: which jobs of the earlier run it keeps, which it cancels, and that
it never leaves a live job of the sweep untracked or a dependent waiting on a job that failed."""

from __future__ import annotations

import json

import pytest

from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep.plan import build_plan
from launchers.base import pending_tasks
from launchers.slurm import SlurmLauncher, _recorded, cancel_sweep, record_path
from launchers.slurm_reuse import ALIVE, running_superseded
from tests.unit.launchers.fakes import FakeSlurm


@pytest.fixture
def fake(fake_slurm: FakeSlurm) -> FakeSlurm:
    return fake_slurm


def sweep(minimal, tmp_path, benchmarks=None):
    minimal["seeds"] = [0]
    minimal["launcher"] = {"kind": "slurm"}
    if benchmarks:
        minimal["eval"]["benchmarks"] = benchmarks
    spec = spec_from_dict(minimal)
    plan = build_plan(spec)
    store = Store(tmp_path / "results" / spec.name / "store")
    return plan, store, SlurmLauncher(spec, tmp_path / "spec.yaml", store, echo=lambda *a: None)


def dependency_of(argv: list[str], kind: str = "afterok") -> set[int]:
    dependency = next((a.removeprefix("--dependency=") for a in argv if a.startswith("--dependency=")), "")
    kinds = dict(d.split(":", 1) for d in dependency.split(",") if d)
    return {int(x) for x in kinds.get(kind, "").split(":") if x}


def tracked_jobs(plan, store) -> set[int]:
    """The jobs `ablate cancel` and a later run know of: recorded ones, and superseded ones left running."""
    records = _recorded(plan, store)
    return set(records) | {j for r in records.values() for j in running_superseded(r)}


def untracked_live_jobs(fake: FakeSlurm, plan, store) -> set[int]:
    live = {j for j, v in fake.jobs.items() if v.split(":")[0] in ALIVE}
    return live - tracked_jobs(plan, store)


def test_dependents_of_a_resubmitted_task_are_resubmitted_not_reused(minimal, tmp_path, fake):
    """The train job failed; Slurm has not yet cancelled its afterok dependents. Reusing them would leave them waiting
    on the failed job (then killed by --kill-on-invalid-dep) while the train is resubmitted."""
    plan, store, first = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    first.submit(tasks)
    train = next(t for t in tasks if t.stage == "train")
    downstream = {t.id for t in tasks if train.id in t.deps}
    downstream |= {t.id for t in tasks if set(t.deps) & downstream}
    fake.set(first.jobs[train.id], "FAILED")  # its dependents are still PENDING:Dependency
    _, _, again = sweep(minimal, tmp_path)
    again.submit(pending_tasks(plan, store))
    assert downstream and not downstream & again.reused
    assert again.reused == {t.id for t in tasks} - downstream - {train.id}
    assert sorted(fake.cancelled) == sorted(first.jobs[t] for t in downstream)  # no job waits on the failed one
    by_job = {again.jobs[t.id]: t for t in tasks}
    for argv, job in zip(fake.calls[len(tasks) :], sorted(set(again.jobs.values()) - set(first.jobs.values()))):
        assert dependency_of(argv) == {again.jobs[d] for d in by_job[job].deps}  # wired to the new jobs
    assert untracked_live_jobs(fake, plan, store) == set()


def test_a_benchmark_added_replaces_the_queued_eval_jobs_and_tracks_them(minimal, tmp_path, fake):
    plan, store, first = sweep(minimal, tmp_path, ["aime24", "aime25"])
    first.submit(pending_tasks(plan, store))
    old_evals = {tid: j for tid, j in first.jobs.items() if tid.startswith("eval/")}
    plan, store, again = sweep(minimal, tmp_path, ["aime24", "aime25", "math-500"])
    tasks = pending_tasks(plan, store)
    again.submit(tasks)
    assert set(old_evals.values()) <= set(fake.cancelled)  # none left running beside its replacement
    assert not {t.id for t in tasks if t.stage in ("eval", "log")} & again.reused
    assert {t.id for t in tasks if t.stage in ("pool", "data", "train")} <= again.reused
    assert untracked_live_jobs(fake, plan, store) == set()
    old_by_key = {tid.split("+")[0]: j for tid, j in old_evals.items()}
    for t in (t for t in tasks if t.stage == "eval"):  # the superseded job ids stay in the records
        for key in t.keys:
            rec = json.loads(record_path(store, t.stage, key).read_text())
            assert rec["job_id"] == again.jobs[t.id] and old_by_key[t.id.split("+")[0]] in rec["previous_jobs"]


def test_a_recorded_job_id_held_by_another_job_is_neither_reused_nor_cancelled(minimal, tmp_path, fake):
    """Job ids are reused by Slurm (a wrap-around, a controller whose state was reset): the job name tells."""
    plan, store, first = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    first.submit(tasks)
    log = tasks[-1]
    foreign = first.jobs[log.id]
    fake.names[foreign] = "somebody-elses-job"
    _, _, again = sweep(minimal, tmp_path)
    again.submit(pending_tasks(plan, store))
    assert log.id not in again.reused and again.jobs[log.id] != foreign
    assert again.reused == {t.id for t in tasks} - {log.id}
    assert foreign not in fake.cancelled
    fake.names[again.jobs[log.id]] = "somebody-elses-job-too"
    assert foreign not in cancel_sweep(plan, store) and again.jobs[log.id] not in fake.cancelled


def test_dependencies_are_submitted_first_whatever_the_order_given(minimal, tmp_path, fake):
    plan, store, launcher = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    launcher.submit(list(reversed(tasks)))
    for t in tasks:
        assert all(launcher.jobs[d] < launcher.jobs[t.id] for d in t.deps)
    by_job = {launcher.jobs[t.id]: t for t in tasks}
    for argv, job in zip(fake.calls, sorted(by_job), strict=True):
        assert dependency_of(argv) == {launcher.jobs[d] for d in by_job[job].deps}


def test_a_benchmark_added_never_cancels_a_running_eval_job_but_submits_after_it(minimal, tmp_path, fake):
    """An evaluation hours into generation when a benchmark is added: cancelling it would throw that work away. It
    runs on, tracked; its replacement (all the benchmarks) starts once it ends (afterany) and skips what it finished.
    The evaluations not started yet are cancelled and replaced at once."""
    plan, store, first = sweep(minimal, tmp_path, ["aime24"])
    first.submit(pending_tasks(plan, store))
    for job in plan.jobs.values():
        if job.stage in ("model", "pool", "data", "train"):
            with store.build(job.stage, job.key) as b:
                assert b is not None
    old_evals = {tid: j for tid, j in first.jobs.items() if tid.startswith("eval/")}
    running_tid, *queued_tids = sorted(old_evals)
    running = old_evals[running_tid]
    fake.set(running, "RUNNING")

    def replacement(launcher: SlurmLauncher) -> int:
        return next(j for tid, j in launcher.jobs.items() if tid.split("+")[0] == running_tid)

    plan, store, again = sweep(minimal, tmp_path, ["aime24", "aime25"])
    tasks = pending_tasks(plan, store)
    again.submit(tasks)
    assert running not in fake.cancelled and fake.jobs[running] == "RUNNING"
    assert queued_tids and {old_evals[t] for t in queued_tids} <= set(fake.cancelled)
    old_log = next(j for tid, j in first.jobs.items() if tid.startswith("log/") and fake.after[j] & {running})
    assert old_log in fake.cancelled  # a log of the old group (a key no longer planned) waiting for it: gone
    new = replacement(again)
    assert fake.after_any[new] == {running} and fake.after[new] == set()  # its training is done
    assert all(not fake.after_any[j] for tid, j in again.jobs.items() if j != new)
    assert untracked_live_jobs(fake, plan, store) == set()
    for t in (t for t in tasks if t.stage == "eval" and again.jobs[t.id] == new):
        for key in t.keys:
            rec = json.loads(record_path(store, "eval", key).read_text())
            assert rec["superseded_running"] == [{"job_id": running, "name": fake.names[running]}]

    # A third run, another benchmark added while the first job still runs: the second one (not started) is
    # cancelled, and the third waits for the running one all the same.
    plan, store, third = sweep(minimal, tmp_path, ["aime24", "aime25", "math-500"])
    third.submit(pending_tasks(plan, store))
    assert new in fake.cancelled and running not in fake.cancelled
    assert fake.after_any[replacement(third)] == {running}
    assert untracked_live_jobs(fake, plan, store) == set()
    assert running in cancel_sweep(plan, store)  # `ablate cancel` stops it too
