"""eval.bundle: evaluations of several checkpoints of one base model in one Slurm job (launchers/base.py
eval_bundles, pending_tasks), and what the Slurm launcher makes of such a task: its time limit, its keys' logs,
and each evaluation's own state when the job fails."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime

import pytest

from framework.cli import main
from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep.plan import Plan, build_plan
from launchers.base import Task, eval_group, pending_tasks
from launchers.local import LocalLauncher
from launchers.slurm import SlurmLauncher, key_state, partition_max_time, read_record, slurm_states
from launchers.slurm_script import bundle_time, scaled_time


def plan_of(minimal, *, benchmarks=("aime24", "aime25"), kind="local", **eval_extra) -> Plan:
    minimal["model"] = {"tiny": {}}
    minimal["eval"] = {**minimal["eval"], "benchmarks": list(benchmarks), **eval_extra}
    minimal["launcher"] = {"kind": kind}
    return build_plan(spec_from_dict(minimal))


def checkpoints(task: Task) -> set[tuple[str, ...]]:
    return {eval_group(j) for j in task.jobs}


def evals(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if t.stage == "eval"]


def assert_valid_order(tasks: list[Task]) -> None:
    seen: set[str] = set()
    for t in tasks:
        assert set(t.deps) <= seen, f"{t.id} comes before {set(t.deps) - seen}"
        seen.add(t.id)


def publish(store: Store, stage: str, key: str) -> None:
    with store.build(stage, key) as b:
        assert b is not None


def test_bundles_hold_up_to_n_checkpoints_and_wait_for_all_their_trainings(minimal, tmp_path):
    plan = plan_of(minimal)
    store = Store(tmp_path / "store")
    alone = evals(pending_tasks(plan, store))
    assert len(alone) == 9 and all(len(checkpoints(t)) == 1 for t in alone)  # 8 trained cells + the base
    assert evals(pending_tasks(plan, store, bundle=1)) == alone
    tasks = pending_tasks(plan, store, bundle=4)
    bundled = evals(tasks)
    assert [len(checkpoints(t)) for t in bundled] == [4, 4, 1]
    assert sorted(k for t in bundled for k in t.keys) == sorted(k for t in alone for k in t.keys)  # each once
    by_job = {j.id: t.id for t in tasks for j in t.jobs}
    for t in bundled:
        assert len(t.keys) == 2 * len(checkpoints(t))  # every benchmark of each checkpoint
        assert set(t.deps) == {by_job[d] for j in t.jobs for d in j.deps if d in by_job}  # the union
        assert len([d for d in t.deps if d.startswith("train/")]) == len(checkpoints(t)) - ("model/" in str(t.deps))
    assert_valid_order(tasks)
    log = next(t for t in tasks if t.stage == "log")
    assert any(d in {b.id for b in bundled} for d in log.deps)  # a cell's log waits for its bundle


def test_a_baseline_of_another_model_or_dtype_is_never_bundled_with_the_trained_checkpoints(minimal, tmp_path):
    minimal["baselines"] = [
        "base",
        {"name": "other", "model": {"tiny": {"hidden_size": 256, "num_heads": 4}}},
        {"name": "half", "model": {"tiny": {}, "dtype": "bfloat16"}},
    ]
    plan = plan_of(minimal, benchmarks=("aime24",))
    tasks = evals(pending_tasks(plan, Store(tmp_path / "store"), bundle=20))
    cells = [{c for j in t.jobs for c in j.cells} for t in tasks]
    assert {"baseline=other"} in cells and {"baseline=half"} in cells  # each alone
    assert len(tasks) == 3 and "baseline=base" in max(cells, key=len)  # the base model's evaluations: one bundle


def test_a_rerun_after_part_of_the_sweep_bundles_only_what_is_left_as_before(minimal, tmp_path):
    plan = plan_of(minimal)
    store = Store(tmp_path / "store")
    first = evals(pending_tasks(plan, store, bundle=4))
    a, b, c = first
    # The first checkpoint of the first bundle and the whole last one are done; one benchmark of the second's
    # second checkpoint is done too.
    for job in [*a.jobs[:2], *c.jobs, b.jobs[2]]:
        publish(store, "eval", job.key)
    again = evals(pending_tasks(plan, store, bundle=4))
    assert [t.keys for t in again] == [a.keys[2:], [k for k in b.keys if k != b.keys[2]]]
    assert again[1].keys[0] == b.keys[0]  # the same Slurm job name: a job of b still queued is reused for it


def test_second_rounds_are_bundled_apart_from_the_first_rounds_they_wait_for(minimal, tmp_path):
    plan = plan_of(minimal, benchmarks=("aime24",), samples={"budget": 16, "first_round": 4, "max": 64})
    tasks = pending_tasks(plan, Store(tmp_path / "store"), bundle=3)
    assert_valid_order(tasks)  # no bundle waits for a bundle that waits for it
    for t in evals(tasks):
        rounds = {j.config.get("round", 1) for j in t.jobs}
        assert len(rounds) == 1 and len(checkpoints(t)) <= 3


def test_only_the_slurm_launcher_bundles_for_ablate_run(minimal, tmp_path):
    plan = plan_of(minimal, bundle=3)
    store = Store(tmp_path / "store")
    assert max(len(checkpoints(t)) for t in evals(SlurmLauncher.pending(plan, store))) == 3
    assert max(len(checkpoints(t)) for t in evals(LocalLauncher.pending(plan, store))) == 1


def test_bundle_is_validated_and_leaves_every_key_unchanged(minimal):
    assert plan_of(dict(minimal), bundle=5).jobs.keys() == plan_of(dict(minimal)).jobs.keys()
    with pytest.raises(Exception, match="bundle"):
        plan_of(dict(minimal), bundle=0)


@pytest.mark.parametrize(
    ("limit", "factor", "expected"),
    [
        ("00:10:00", 1, "00:10:00"),
        ("00:10:00", 2, "0-00:20:00"),
        ("90", 3, "0-04:30:00"),  # minutes
        ("30:00", 2, "0-01:00:00"),  # MM:SS
        ("1-12", 2, "3-00:00:00"),  # D-HH
        ("UNLIMITED", 4, "UNLIMITED"),
        (None, 4, None),
    ],
)
def test_scaled_time(limit, factor, expected):
    assert scaled_time(limit, factor) == expected


def slurm_sweep(minimal, tmp_path, bundle=2):
    minimal["seeds"] = [0]
    plan = plan_of(minimal, kind="slurm", bundle=bundle)
    plan.spec.launcher.slurm.stages = {}
    plan.spec.launcher.slurm.time = "00:10:00"
    store = Store(tmp_path / "results" / plan.spec.name / "store")
    launcher = SlurmLauncher(plan.spec, tmp_path / "spec.yaml", store, echo=lambda *a: None)
    return plan, store, launcher


def test_a_bundles_job_gets_each_checkpoints_time_and_every_keys_log_leads_to_its_own(minimal, tmp_path, fake_slurm):
    plan, store, launcher = slurm_sweep(minimal, tmp_path)
    tasks = SlurmLauncher.pending(plan, store)
    bundle = next(t for t in tasks if t.stage == "eval" and len(checkpoints(t)) == 2)
    train = next(t for t in tasks if t.stage == "train")
    old = store.log_path("eval", bundle.keys[3])  # an earlier job's output for one key: kept, and told where to look
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text("earlier output\n")
    launcher.submit(tasks)
    script = store.log_path("eval", bundle.keys[0]).with_suffix(".sbatch").read_text()
    assert "#SBATCH --time=0-00:20:00" in script  # two checkpoints, each its 10 minutes
    assert " ".join(bundle.keys) in script  # one `ablate exec eval K1 K2 K3 K4`
    assert "#SBATCH --time=00:10:00" in store.log_path("train", train.keys[0]).with_suffix(".sbatch").read_text()
    log = store.log_path("eval", bundle.keys[0])
    for key in bundle.keys[1:3]:
        link = store.log_path("eval", key)
        assert link.is_symlink() and link.resolve() == log.resolve()
    text = old.read_text()
    assert text.startswith("earlier output\n") and f"[{bundle.id}]" in text and str(log.absolute()) in text


def test_a_failed_bundle_says_which_evaluations_are_done_and_status_shows_each(minimal, tmp_path, fake_slurm):
    plan, store, launcher = slurm_sweep(minimal, tmp_path)
    tasks = SlurmLauncher.pending(plan, store)
    launcher.submit(tasks)
    bundle = next(t for t in tasks if t.stage == "eval" and len(checkpoints(t)) == 2)
    done, failed, running = bundle.keys[:2], bundle.keys[2], bundle.keys[3]
    for key in done:
        publish(store, "eval", key)
    fake_slurm.set(launcher.jobs[bundle.id], "RUNNING")
    infos = slurm_states(plan, store)
    info = infos[launcher.jobs[bundle.id]]
    assert info["state"] == "running"
    assert key_state(store, info, running)["state"] == "queued"  # not begun: waits its turn in the job
    assert key_state(store, info, done[0]) is info

    with pytest.raises(RuntimeError), store.build("eval", failed) as b:
        assert b is not None
        raise RuntimeError("the benchmark file is broken")
    fake_slurm.set(launcher.jobs[bundle.id], "FAILED")
    changes = {tid: (state, detail) for tid, state, detail in launcher.refresh()}
    state, detail = changes[bundle.id]
    said = detail.split("; log: ")[0]
    assert state == "failed" and "2 of 4 done" in said and f"eval/{failed}" in said and done[0] not in said
    info = slurm_states(plan, store)[launcher.jobs[bundle.id]]
    own = key_state(store, info, failed)
    assert own["state"] == "failed" and "the benchmark file is broken" in own["detail"]
    assert key_state(store, info, running)["state"] == "failed"  # never ran: the job's own failure


def test_an_evaluation_that_failed_in_a_bundle_still_running_shows_as_failed(minimal, tmp_path, fake_slurm):
    plan, store, launcher = slurm_sweep(minimal, tmp_path)
    tasks = SlurmLauncher.pending(plan, store)
    launcher.submit(tasks)
    bundle = next(t for t in tasks if t.stage == "eval" and len(checkpoints(t)) == 2)
    failed, earlier, later = bundle.keys[0], bundle.keys[1], bundle.keys[3]
    for key in (failed, earlier):
        with pytest.raises(RuntimeError), store.build("eval", key) as b:
            assert b is not None
            raise RuntimeError(f"broken weights of {key}")
    record = store.status("eval", earlier).path
    submitted = datetime.fromisoformat(read_record(store, "eval", earlier)["submitted"]).timestamp()
    os.utime(record, (submitted - 3600, submitted - 3600))  # left by a job before this one
    fake_slurm.set(launcher.jobs[bundle.id], "RUNNING")
    info = slurm_states(plan, store)[launcher.jobs[bundle.id]]
    assert info["state"] == "running"
    own = key_state(store, info, failed)
    assert own["state"] == "failed" and f"broken weights of {failed}" in own["detail"]
    assert key_state(store, info, earlier)["state"] == "queued"  # an old failure: not yet retried by this job
    assert key_state(store, info, later)["state"] == "queued"


# ---- the time limit a bundle asks for, said by `ablate plan` (against the partition's MaxTime when sinfo says it)
def fake_sinfo(tmp_path, monkeypatch, script: str) -> None:
    """A `sinfo` first on PATH: `script` is its shell body (what a real one prints for `-h -o '%P|%l' [-p P]`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


SINFO = """case "$*" in
  *"-p short,long"*) printf 'short|2:00:00\\nlong|7-00:00:00\\n' ;;
  *"-p gpu"*) echo 'gpu|1:00:00' ;;
  *"-p"*) exit 1 ;;
  *) printf 'debug*|00:15:00\\ngpu|1:00:00\\nbig|infinite\\n' ;;
esac"""


def test_the_partition_max_time_comes_from_sinfo_or_is_unknown_without_failing(tmp_path, monkeypatch):
    fake_sinfo(tmp_path, monkeypatch, SINFO)
    assert partition_max_time(None) == ("debug", "00:15:00")  # the default partition, starred
    assert partition_max_time("gpu") == ("gpu", "1:00:00")
    assert partition_max_time("short,long") == ("long", "7-00:00:00")  # a list: the job may go to either
    assert partition_max_time("nope") is None
    fake_sinfo(tmp_path, monkeypatch, "echo 'debug*|n/a'")
    assert partition_max_time(None) is None
    fake_sinfo(tmp_path, monkeypatch, "exec sleep 30")  # no controller answers: unknown, and soon
    monkeypatch.setattr("launchers.slurm.SINFO_TIMEOUT_S", 0.3)
    started = time.monotonic()
    assert partition_max_time(None) is None and time.monotonic() - started < 10
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # a laptop without Slurm's commands
    assert partition_max_time(None) is None


def bundle_notes(minimal, tmp_path, max_time, **slurm):
    plan, store, _ = slurm_sweep(minimal, tmp_path)
    plan.spec.launcher.slurm = plan.spec.launcher.slurm.model_copy(update=slurm)
    notes, over = bundle_time(plan.spec, SlurmLauncher.pending(plan, store), max_time)
    assert over == ("over partition" in " ".join(notes))  # what `ablate run` refuses
    return " ".join(notes)


def test_plan_says_the_time_limit_of_a_bundle_and_warns_when_it_is_over_the_partitions(minimal, tmp_path):
    said = "eval.bundle 2: an evaluation job of 2 checkpoints asks for 2 x 00:10:00 = 00:20:00 (launcher.slurm.time)"
    assert bundle_notes(dict(minimal), tmp_path / "a", None).startswith(f"{said}; the partition's MaxTime is unknown")
    assert (
        bundle_notes(dict(minimal), tmp_path / "b", ("gpu", "1:00:00"))
        == f"{said}, within partition gpu's MaxTime 1:00:00"
    )
    assert bundle_notes(dict(minimal), tmp_path / "c", ("big", "infinite")) == f"{said}; partition big has no MaxTime"
    over = bundle_notes(dict(minimal), tmp_path / "d", ("debug", "00:15:00"))
    assert over.startswith(f"{said}, over partition debug's MaxTime 00:15:00") and "at most 1" in over
    assert "lower launcher.slurm.time" in bundle_notes(dict(minimal), tmp_path / "e", ("debug", "00:05:00"))
    assert "not 2 times one checkpoint's" in bundle_notes(dict(minimal), tmp_path / "f", None, time=None)
    assert bundle_notes(dict(minimal), tmp_path / "g", None, time="UNLIMITED") == ""


def test_plan_shows_a_bundles_time_limit_beside_the_evaluations_cost(write_spec, minimal, in_tmp, monkeypatch, capsys):
    fake_sinfo(in_tmp, monkeypatch, SINFO)
    minimal["model"] = {"tiny": {}}
    minimal["eval"] = {**minimal["eval"], "bundle": 4}
    minimal["launcher"] = {"kind": "slurm", "slurm": {"time": "00:10:00"}}
    assert main(["plan", str(write_spec(minimal)), "--json", "--no-build"]) == 0
    (evals,) = [s for s in json.loads(capsys.readouterr().out)["cost"]["stages"] if s["stage"] == "eval"]
    assert any(
        "4 x 00:10:00 = 00:40:00" in n and "over partition debug's MaxTime 00:15:00" in n for n in evals["notes"]
    )
    minimal["eval"]["bundle"] = 1
    assert main(["plan", str(write_spec(minimal)), "--json", "--no-build"]) == 0
    assert not any(
        "eval.bundle" in n for s in json.loads(capsys.readouterr().out)["cost"]["stages"] for n in s["notes"]
    )


def test_run_refuses_a_bundle_over_its_partitions_max_time_before_submitting_anything(
    write_spec, minimal, in_tmp, monkeypatch, capsys
):
    """Slurm would refuse the bundle after the trainings were queued, or leave it pending for ever (and a waiting
    `ablate run` with it): a user error, before any sbatch."""
    fake_sinfo(in_tmp, monkeypatch, SINFO)
    submitted = []
    monkeypatch.setattr("launchers.slurm.SlurmLauncher.submit", lambda self, tasks: submitted.append(tasks))
    minimal["model"] = {"tiny": {}}
    minimal["eval"] = {**minimal["eval"], "bundle": 4}
    minimal["launcher"] = {"kind": "slurm", "slurm": {"time": "00:10:00"}}
    assert main(["run", str(write_spec(minimal)), "--no-wait"]) == 2
    err = capsys.readouterr().err
    assert "over partition debug's MaxTime 00:15:00" in err and "at most 1" in err and "Traceback" not in err
    assert submitted == []
    # a QOS may lift the partition's limit, and a partition given in extra_sbatch is not the one sinfo was asked of
    for slurm in ({"qos": "long"}, {"extra_sbatch": ["--partition=big"]}):
        minimal["launcher"]["slurm"] = {"time": "00:10:00", **slurm}
        assert main(["run", str(write_spec(minimal)), "--no-wait"]) == 0
        assert "not refused" in capsys.readouterr().err
    assert len(submitted) == 2


# ---- a failed training does not cancel its bundle: the bundle waits for its trainings to end, whatever way
def test_a_bundle_waits_for_its_trainings_to_end_and_skips_the_checkpoint_whose_training_failed(
    minimal, tmp_path, fake_slurm, monkeypatch
):
    plan, store, launcher = slurm_sweep(minimal, tmp_path)
    tasks = SlurmLauncher.pending(plan, store)
    launcher.submit(tasks)
    by_id = {t.id: t for t in tasks}
    bundle = next(t for t in tasks if t.stage == "eval" and len(checkpoints(t)) == 2)
    job = launcher.jobs[bundle.id]
    trainings = {launcher.jobs[d] for d in bundle.deps}
    assert len(trainings) == 2 and fake_slurm.after_any[job] == trainings and not fake_slurm.after[job]
    alone = [t for t in tasks if t.stage == "eval" and len(checkpoints(t)) == 1]
    assert alone and all(
        fake_slurm.after[launcher.jobs[t.id]] and not fake_slurm.after_any[launcher.jobs[t.id]] for t in alone
    )
    assert all(fake_slurm.after[launcher.jobs[t.id]] for t in tasks if t.stage == "log" and bundle.id in t.deps)

    failed, good = bundle.deps  # one training fails; the bundle then evaluates the other's checkpoint only
    fake_slurm.set(launcher.jobs[failed], "FAILED")
    publish(store, "train", by_id[good].keys[0])
    fake_slurm.set(launcher.jobs[good], "COMPLETED")
    skipped = [j.key for j in bundle.jobs if f"train/{by_id[failed].keys[0]}" in j.deps]
    for j in bundle.jobs:
        if j.key not in skipped:
            publish(store, "eval", j.key)
    fake_slurm.set(job, "FAILED")  # it exits non-zero: not every evaluation is done
    launcher.refresh()
    assert launcher.states[bundle.id] == "failed"
    said = launcher.reasons[bundle.id]
    assert "2 of 4 done" in said and f"dependency {failed} did not finish" in said
    assert launcher.states[failed] == "failed" and launcher.states[good] == "done"
    monkeypatch.setattr("launchers.slurm.shutil.which", lambda name: f"/usr/bin/{name}")  # squeue "on PATH"
    rows = SlurmLauncher.live_jobs(plan, store)  # each key as `ablate status` shows it
    for key in skipped:
        assert rows[("eval", key)]["state"] == "cancelled"
        assert f"its input train/{by_id[failed].keys[0]} did not finish" in rows[("eval", key)]["detail"]


def test_exec_of_a_bundle_skips_a_checkpoint_whose_training_is_not_done_and_evaluates_the_others(
    write_spec, minimal, in_tmp, capsys, monkeypatch
):
    """What a bundle's job relies on once it runs after a failed training (`afterany`): `ablate exec eval K...`
    evaluates the keys whose inputs are done, says which it skipped, and exits non-zero (a user error, 2)."""
    ran: list[str] = []
    monkeypatch.setattr("framework.sweep.execute.stage_function", lambda stage: lambda ctx: ran.append(ctx.job.key))
    minimal["model"] = {"tiny": {}}
    path = write_spec(minimal)
    plan = build_plan(spec_from_dict(minimal))
    trained = next(j for j in plan.by_stage("eval") if any(d.startswith("train/") for d in j.deps))
    base = next(j for j in plan.by_stage("eval") if all(d.startswith("model/") for d in j.deps))
    store = Store(in_tmp / "results" / plan.spec.name / "store")
    publish(store, *base.deps[0].split("/"))  # the tiny base model is built; the training failed
    assert main(["exec", "eval", trained.key, base.key, "--spec", str(path)]) == 2
    assert f"eval/{trained.key}: not done: ExecError: {trained.id} needs {trained.deps[0]}" in capsys.readouterr().err
    assert ran == [base.key] and store.is_done("eval", base.key) and not store.is_done("eval", trained.key)
