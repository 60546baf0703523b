"""Slurm launcher without a cluster: generated scripts (golden files), resource merging, dependency wiring against
fake sbatch/squeue/scontrol, and the job script's signal, marker and requeue logic run under plain bash.

Golden files live in tests/unit/launchers/golden/. After an intended change to the scripts, regenerate them with
    ABLATE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/launchers/test_slurm.py
and review the diff like code: it is what every cluster job will run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework.errors import UserError
from framework.spec import SpecErrors, spec_from_dict
from framework.store import Store
from framework.sweep.plan import build_plan
from framework.sweep.pruning import PRUNED, is_pruned
from framework.sweep.resources import StageResources, stage_resources
from launchers import slurm
from launchers.base import pending_tasks
from launchers.slurm import SlurmLauncher, parse_job_id, record_path, script_path, task_state
from tests.unit.launchers.fakes import task

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("ABLATE_UPDATE_GOLDEN") == "1"

CLUSTER_32B = {
    "kind": "slurm",
    "slurm": {
        "partition": "gpu",
        "account": "reasoning",
        "qos": "high",
        "gpus_per_node": 8,
        "cpus_per_task": 96,
        "mem": "1800G",
        "time": "12:00:00",
        "constraint": "h100",
        "extra_sbatch": ["--exclusive", "#SBATCH --mail-type=FAIL"],
        "setup": [
            "module load cuda/12.4 nccl/2.21",
            "export NCCL_IB_HCA=mlx5",
            "source /shared/venvs/ablate/bin/activate",
        ],
        "container": "apptainer exec --nv --bind /shared /shared/images/ablate-2025.sif",
        "stages": {
            "eval": {"gpus_per_node": 8, "time": "04:00:00", "qos": None},
            "data": {"partition": "cpu", "cpus_per_task": 8, "mem": "64G", "time": "01:00:00"},
        },
    },
}


def spec_32b(minimal, **launcher):
    minimal["name"] = "paper-32b"
    minimal["model"] = {"name_or_path": "Qwen/Qwen2.5-32B"}
    minimal["train"] = {"nodes": 2}
    minimal["launcher"] = {**CLUSTER_32B, **launcher}
    return spec_from_dict(minimal)


def golden_launcher(spec) -> SlurmLauncher:
    return SlurmLauncher(
        spec,
        "/shared/ablations/paper-32b.yaml",
        Store("/shared/results/paper-32b/store"),
        python="/shared/venvs/ablate/bin/python",
        workdir="/shared/work",
        env={"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000", "HF_HOME": "/shared/hf cache"},
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; create it with ABLATE_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed; if intended, regenerate with ABLATE_UPDATE_GOLDEN=1"


# ------------------------------------------------------------------------------------------ golden scripts
def test_golden_multinode_train_script(minimal):
    launcher = golden_launcher(spec_32b(minimal))
    text = launcher.script(task("train", "3f1c9a7be2d04c55"))
    check_golden("train_2x8_32b.sbatch", text)
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --gpus-per-node=8" in text
    assert "--dependency" not in text  # on the command line only: a kept script must resubmit by hand


def test_golden_vllm_eval_script(minimal):
    launcher = golden_launcher(spec_32b(minimal))
    cells = [f"source={s},keywords={k},seed=0" for s in ("qwq", "human") for k in ("keep", "mask")]
    text = launcher.script(task("eval", "9d0e7a11c3b24f68", "51aa0c2e8f7d9b03", cells=cells))
    check_golden("eval_1x8_vllm.sbatch", text)
    assert "#SBATCH --nodes=1" in text and "--qos" not in text  # `qos: null` in stages.eval drops the default
    assert text.count("/SUCCESS'") + text.count("/SUCCESS\n") == 2  # one marker per benchmark of the checkpoint


def test_golden_generation_scripts_gpu_teacher_and_endpoint(minimal, tmp_path):
    """Sampling QwQ-32B-Preview 8 times per problem on GPUs, and rewriting human solutions through an endpoint:
    the Slurm jobs each would submit."""
    problems = {"preset": "nemotron-math-human-reasoning"}
    qwq = {
        "model": "Qwen/QwQ-32B-Preview",
        "revision": "91906fe41a48b6a89ce2970abfd1269eefee170e",
        "tensor_parallel_size": 8,
    }
    sampling = {"temperature": 0.7, "max_tokens": 30000}
    minimal["pool"] += [
        {"source": "qwq-x8", "generate": {"problems": problems, "teacher": qwq, "samples": 8, "sampling": sampling}},
        {
            "source": "human-checked",
            "generate": {
                "refine": "human_stage4",
                "teacher": {"endpoint": {"base_url": "https://api.internal/v1", "model": "qwen2.5-72b-instruct"}},
                "prompt": "Rewrite this solution, checking each step:\n{trace}",
            },
        },
    ]
    minimal["factors"]["source"]["levels"] += ["qwq-x8", "human-checked"]
    spec = spec_32b(minimal, slurm={**CLUSTER_32B["slurm"], "stages": {"generate": {"time": "24:00:00"}}})
    plan = build_plan(spec)
    tasks = [t for t in pending_tasks(plan, Store(tmp_path / "store")) if t.stage == "generate"]
    gpu, endpoint = tasks
    launcher = golden_launcher(spec)
    gpu_text = launcher.script(gpu)
    check_golden("generate_qwq_1x8.sbatch", gpu_text)
    assert "#SBATCH --gpus-per-node=8" in gpu_text and "#SBATCH --time=24:00:00" in gpu_text
    endpoint_text = launcher.script(endpoint)
    check_golden("generate_endpoint_cpu.sbatch", endpoint_text)
    assert "--gpus-per-node" not in endpoint_text  # requests to a server elsewhere: no GPU held idle
    assert stage_resources(spec, "generate", "cpu").gpus_per_node == 0


def test_script_is_valid_bash(minimal, tmp_path):
    launcher = golden_launcher(spec_32b(minimal))
    path = tmp_path / "job.sbatch"
    path.write_text(launcher.script(task("train", "3f1c9a7be2d04c55")))
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


# ------------------------------------------------------------------------------------------- resources
def test_resources_merge_defaults_with_stage_overrides(minimal):
    spec = spec_32b(minimal)
    train = stage_resources(spec, "train")
    assert (train.nodes, train.gpus_per_node, train.partition, train.qos, train.time) == (
        2,
        8,
        "gpu",
        "high",
        "12:00:00",
    )
    assert train.extra_sbatch == ("--exclusive", "#SBATCH --mail-type=FAIL")
    ev = stage_resources(spec, "eval")
    assert (ev.nodes, ev.gpus_per_node, ev.qos, ev.time, ev.account) == (1, 8, None, "04:00:00", "reasoning")
    data = stage_resources(spec, "data")
    assert (data.nodes, data.gpus_per_node, data.partition, data.mem, data.cpus_per_task) == (1, 0, "cpu", "64G", 8)
    log = stage_resources(spec, "log")  # a CPU stage without overrides: defaults, but no GPU and one node
    assert (log.nodes, log.gpus_per_node, log.partition, log.mem) == (1, 0, "gpu", "1800G")


def test_cpu_stage_may_ask_for_gpus_explicitly(minimal):
    minimal["launcher"] = {"kind": "slurm", "slurm": {"gpus_per_node": 8, "stages": {"pool": {"gpus_per_node": 1}}}}
    spec = spec_from_dict(minimal)
    assert stage_resources(spec, "pool").gpus_per_node == 1
    assert stage_resources(spec, "data") == StageResources(gpus_per_node=0)


def test_stage_extra_sbatch_replaces_the_default_list(minimal):
    launcher = {"kind": "slurm", "slurm": {"extra_sbatch": ["--exclusive"], "stages": {"log": {"extra_sbatch": []}}}}
    minimal["launcher"] = launcher
    spec = spec_from_dict(minimal)
    assert stage_resources(spec, "train").extra_sbatch == ("--exclusive",)
    assert stage_resources(spec, "log").extra_sbatch == ()


def test_train_nodes_must_match_the_training_layout(minimal):
    minimal["launcher"] = {"kind": "slurm", "slurm": {"nodes": 4}}
    minimal["train"] = {"nodes": 2}
    with pytest.raises(UserError, match=r"launcher.slurm.nodes = 4 but train.nodes = 2"):
        stage_resources(spec_from_dict(minimal), "train")


def test_unknown_slurm_option_is_a_spec_error_with_a_suggestion(minimal):
    minimal["launcher"] = {"kind": "slurm", "slurm": {"stages": {"train": {"gpus": 8}}}}
    with pytest.raises(SpecErrors, match="gpus_per_node"):
        spec_from_dict(minimal)


def test_requeue_off_and_signal_time(minimal):
    spec = spec_32b(minimal)
    spec.launcher.slurm.requeue = False
    launcher = golden_launcher(spec)
    launcher.signal_s = 900
    text = launcher.script(task("train", "3f1c9a7be2d04c55"))
    assert "#SBATCH --no-requeue" in text and "#SBATCH --signal=B:USR1@900" in text and "requeue=no" in text


def sweep(minimal, tmp_path):
    minimal["seeds"] = [0]
    minimal["launcher"] = {"kind": "slurm"}
    spec = spec_from_dict(minimal)
    plan = build_plan(spec)
    store = Store(tmp_path / "results" / spec.name / "store")
    launcher = SlurmLauncher(spec, tmp_path / "spec.yaml", store, echo=lambda *a: None)
    return plan, store, launcher


def test_submission_wires_afterok_dependencies_and_records_jobs(minimal, tmp_path, fake_slurm):
    plan, store, launcher = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    launcher.submit(tasks)
    calls = fake_slurm.calls
    assert len(calls) == len(tasks)
    for t, argv in zip(tasks, calls, strict=True):
        assert argv[:2] == ["--parsable", "--kill-on-invalid-dep=yes"]
        dep = [a for a in argv if a.startswith("--dependency=")]
        expected = sorted(launcher.jobs[d] for d in t.deps)
        if expected:
            assert sorted(int(x) for x in dep[0].removeprefix("--dependency=afterok:").split(":")) == expected
        else:
            assert dep == []
        assert argv[-1] == str(script_path(store, t.stage, t.keys[0]).absolute())
        for k in t.keys:
            rec = json.loads(record_path(store, t.stage, k).read_text())
            assert rec["job_id"] == launcher.jobs[t.id] and rec["keys"] == t.keys
    # a dependency is always submitted before its dependents
    order = {t.id: launcher.jobs[t.id] for t in tasks}
    assert all(order[d] < order[t.id] for t in tasks for d in t.deps)
    script = script_path(store, tasks[0].stage, tasks[0].keys[0]).read_text()
    assert f"--results-dir {(tmp_path / 'results').absolute()}" in script  # no dependence on the cwd of a job


def test_second_run_reuses_queued_jobs_and_replaces_ended_ones(minimal, tmp_path, fake_slurm):
    plan, store, launcher = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    launcher.submit(tasks)
    first = dict(launcher.jobs)
    gone = tasks[-1]
    fake_slurm.set(first[gone.id], "FAILED")
    stuck = tasks[-2]
    fake_slurm.set(first[stuck.id], "PENDING:DependencyNeverSatisfied")
    running = tasks[0]
    fake_slurm.set(first[running.id], "RUNNING")
    _, _, again = sweep(minimal, tmp_path)
    again.submit(pending_tasks(plan, store))
    assert again.jobs[running.id] == first[running.id]
    assert again.reused == {t.id for t in tasks} - {gone.id, stuck.id}
    assert again.jobs[gone.id] > max(first.values()) and again.jobs[stuck.id] > max(first.values())
    assert first[stuck.id] in fake_slurm.cancelled  # the stuck one is cleaned up
    new_calls = fake_slurm.calls[len(tasks) :]
    assert len(new_calls) == 2
    # the resubmitted task depends on the reused jobs
    deps = [a for a in new_calls[-1] if a.startswith("--dependency=")]
    wanted = {again.jobs[d] for d in gone.deps}
    assert wanted and {int(x) for x in deps[0].split(":")[1:]} == wanted


def test_refresh_reports_failures_with_exit_code_and_log(minimal, tmp_path, fake_slurm):
    plan, store, launcher = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    launcher.submit(tasks)
    fake_slurm.set(launcher.jobs[tasks[0].id], "FAILED")
    for t in tasks[1:]:
        fake_slurm.set(launcher.jobs[t.id], "CANCELLED:DependencyNeverSatisfied")
    changes = {tid: (state, detail) for tid, state, detail in launcher.refresh()}
    state, detail = changes[tasks[0].id]
    assert state == "failed" and "exit 3" in detail and str(store.log_path(tasks[0].stage, tasks[0].keys[0])) in detail
    assert all(changes[t.id][0] == "cancelled" for t in tasks[1:])
    assert launcher.wait(poll_s=0) == launcher.status()  # everything ended: returns at once


def test_a_job_that_publishes_during_the_poll_is_done_not_failed(minimal, tmp_path, fake_slurm, monkeypatch):
    plan, store, launcher = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    launcher.submit(tasks)
    first = tasks[0]
    fake_slurm.set(launcher.jobs[first.id], "COMPLETED")
    lookup = slurm._lookup

    def finishing_lookup(*args, **kwargs):  # the job publishes and leaves the queue in between
        for key in first.keys:
            with store.build(first.stage, key) as b:
                assert b is not None
        return lookup(*args, **kwargs)

    monkeypatch.setattr(slurm, "_lookup", finishing_lookup)
    changes = {tid: state for tid, state, _ in launcher.refresh()}
    assert changes[first.id] == "done"


def test_start_without_wait_returns_after_submission(minimal, tmp_path, fake_slurm):
    plan, store, launcher = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    run = SlurmLauncher.start(launcher.spec, tmp_path / "spec.yaml", store, tasks, wait=False, echo=lambda *a: None)
    assert set(run.status().values()) == {"queued"} and len(fake_slurm.calls) == len(tasks)
    assert "#SBATCH --signal=B:USR1@300" in script_path(store, "train", plan.by_stage("train")[0].key).read_text()


def test_missing_slurm_commands_is_a_user_error(minimal, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    plan, store, launcher = sweep(minimal, tmp_path)
    with pytest.raises(UserError, match="sbatch"):
        launcher.submit(pending_tasks(plan, store))


# ------------------------------------------------------------------------ slurm words -> task states
@pytest.mark.parametrize(
    ("info", "done", "expected"),
    [
        ({"state": "PENDING", "reason": "Dependency"}, False, ("queued", "Dependency")),
        ({"state": "RUNNING", "reason": "None", "node": "gpu042"}, False, ("running", "gpu042")),
        ({"state": "FAILED", "exit_code": "134:0"}, True, ("done", "")),  # an abort after publishing is done
        ({"state": "COMPLETED"}, False, ("failed", "exit 0 but the stage's outputs are not marked done")),
        ({"state": "CANCELLED", "reason": "DependencyNeverSatisfied"}, False, ("cancelled", "a dependency failed")),
        ({"state": "TIMEOUT", "exit_code": "0:15"}, False, ("failed", "TIMEOUT, killed by signal 15")),
        ({"state": "PREEMPTED"}, False, ("queued", "preempted")),
        # gone from the controller (sacct): no requeue is coming
        (
            {"state": "PREEMPTED", "exit_code": "0:15", "source": "sacct"},
            False,
            ("failed", "PREEMPTED, killed by signal 15"),
        ),
        (
            {"state": "FAILED", "exit_code": "75:0"},
            False,
            ("deferred", "retry later (exit 75): the next `ablate run` resubmits it"),
        ),
        ({"state": "PENDING", "reason": "DependencyNeverSatisfied"}, False, ("cancelled", "a dependency failed")),
        (None, False, ("failed", "the job left the queue without completing the stage's outputs")),
    ],
)
def test_task_state(info, done, expected):
    assert task_state(info, done) == expected


def test_parse_job_id():
    assert parse_job_id("1234\n") == 1234 and parse_job_id("77;cluster-a\n") == 77
    with pytest.raises(UserError):
        parse_job_id("sbatch: error: oops")


# -------------------------------------------------------------- the job script's own logic, under plain bash
STAGE = """
import os, signal, sys, time
from framework.store import Store
store, stage, key, mode = Store(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def stop(sig, frame):  # "checkpoint": stops at a checkpoint, exit 75 (TrainingStopped); otherwise just fails
    open(sys.argv[5], "w").write(signal.Signals(sig).name)
    sys.exit(75 if mode == "checkpoint" else 1)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGUSR1, stop)
if mode == "publish-then-abort":
    with store.build(stage, key) as b:
        pass
    os.abort()
if mode == "exit0":
    sys.exit(0)
if mode == "rebuild":  # as framework/sweep/execute.py builds a training: a pruned one is built again
    from framework.sweep.pruning import PRUNED
    with store.build(stage, key, resume=True, redo=lambda final: (final / PRUNED).is_file()) as b:
        open(sys.argv[5] + ".ran", "w").write("rebuilt" if b is not None else "skipped")
    sys.exit(0)
open(sys.argv[5] + ".started", "w").close()
time.sleep(60)
"""


def run_script(
    minimal,
    tmp_path,
    mode: str,
    *,
    job_state: str = "RUNNING",
    sig: int | None = None,
    stage: str = "train",
    then=None,
    store: Store | None = None,
    key: str = "00aa11bb22cc33dd",
    requeue: bool = True,
    restarts: int = 0,
):
    """Run a job script with bash as Slurm would (SLURM_* set), with a fake scontrol that logs its calls; `sig`,
    then `then` a second later, go to the batch shell once the stage runs."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    minimal["launcher"] = {"kind": "slurm", "slurm": {"requeue": requeue}}
    spec = spec_from_dict(minimal)
    store = store or Store(tmp_path / "store")
    got = tmp_path / "signal"
    launcher = SlurmLauncher(
        spec,
        "spec.yaml",
        store,
        env={},
        command=lambda t: [sys.executable, "-c", STAGE, str(store.root), t.stage, t.keys[0], mode, str(got)],
    )
    t = task(stage, key)
    path = tmp_path / "job.sbatch"
    path.write_text(launcher.script(t))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n'
        f'case "$1 $2" in "show job") echo "JobId=42 JobState={job_state} Reason=None";; '
        '"show hostnames") echo node1;; esac\n'
    )
    (bin_dir / "scontrol").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_RESTART_COUNT": str(restarts),
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    proc = subprocess.Popen(["bash", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if sig is not None:
        deadline = time.monotonic() + 30
        while not Path(f"{got}.started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)  # what --signal=B:... and `scancel --batch` do: only the batch shell is signalled
        if then is not None:
            time.sleep(1)
            proc.send_signal(then)
    out, _ = proc.communicate(timeout=60)
    calls = (tmp_path / "scontrol.log").read_text() if (tmp_path / "scontrol.log").exists() else ""
    return proc.returncode, out, calls, got.read_text() if got.exists() else None, store


def test_script_forwards_the_signal_and_requeues_an_interrupted_stage(minimal, tmp_path):
    rc, out, calls, got, _ = run_script(minimal, tmp_path, "checkpoint", sig=signal.SIGUSR1)
    assert got == "SIGUSR1", out  # the stage itself received it, so it could checkpoint
    assert "requeue 42" in calls and rc == 0, out
    assert "show hostnames node[1-2]" in calls  # MASTER_ADDR: the first node of the allocation


@pytest.mark.parametrize("stage", ["train", "eval"])
def test_script_does_not_requeue_a_cancelled_job(minimal, tmp_path, stage):
    rc, out, calls, got, _ = run_script(
        minimal, tmp_path, "checkpoint", job_state="COMPLETING", sig=signal.SIGTERM, stage=stage
    )
    assert got == "SIGTERM"
    assert "requeue" not in calls and rc == 75, out
    assert "not requeued: JobState=COMPLETING" in out


def test_script_never_requeues_a_stage_that_did_not_stop_at_a_checkpoint(minimal, tmp_path):
    """A training that fails after the time-limit warning (exit 1, not 75) is a failure to report, not a restart
    from zero."""
    rc, out, calls, got, _ = run_script(minimal, tmp_path, "sleep", sig=signal.SIGUSR1)
    assert got == "SIGUSR1" and "requeue" not in calls and rc == 1, out
    assert "not requeued: the stage did not stop at a checkpoint (exit 1, not 75)" in out


@pytest.mark.parametrize("stage", ["train", "eval"])
def test_script_requeues_any_stage_preempted_while_running(minimal, tmp_path, stage):
    """TERM while the job is still RUNNING is a preemption: whatever the stage did with it (a training that could
    not checkpoint, an evaluation that cannot), it is requeued, and resumes or starts over."""
    rc, out, calls, got, _ = run_script(minimal, tmp_path, "sleep", sig=signal.SIGTERM, stage=stage)
    assert got == "SIGTERM" and "requeue 42" in calls and rc == 0, out
    assert "requeued after SIGTERM" in out


@pytest.mark.parametrize(
    ("requeue", "restarts", "why"),
    [(False, 0, "requeue is disabled for this sweep"), (True, 20, "already restarted 20 times (limit 20)")],
)
def test_a_preempted_stage_is_not_requeued_when_requeue_is_off_or_used_up(minimal, tmp_path, requeue, restarts, why):
    rc, out, calls, got, _ = run_script(
        minimal, tmp_path, "sleep", sig=signal.SIGTERM, stage="eval", requeue=requeue, restarts=restarts
    )
    assert got == "SIGTERM" and "requeue 42" not in calls and rc == 1, out
    assert f"not requeued: {why}" in out


def test_a_stage_that_cannot_checkpoint_ignores_usr1_and_is_requeued_only_when_preempted(minimal, tmp_path):
    """eval (like data, pool, log) has no USR1 handler: the warning would kill it, and a requeue after it restart it
    from zero each time it outruns its limit. It gets no --signal and ignores a USR1 all the same; a TERM while it
    runs (preemption) still requeues it."""
    minimal["launcher"] = {"kind": "slurm"}
    launcher = SlurmLauncher(spec_from_dict(minimal), "spec.yaml", Store(tmp_path / "s"), env={})
    assert "#SBATCH --signal" not in launcher.script(task("eval", "00aa11bb22cc33dd"))
    assert "#SBATCH --signal=B:USR1@300" in launcher.script(task("train", "00aa11bb22cc33dd"))
    rc, out, calls, got, _ = run_script(
        minimal, tmp_path / "run", "checkpoint", stage="eval", sig=signal.SIGUSR1, then=signal.SIGTERM
    )
    assert "got SIGUSR1: ignored" in out and got == "SIGTERM", out  # the stage never saw the USR1
    assert "requeue 42" in calls and rc == 0 and "requeued after SIGTERM" in out, out


def test_script_exit_status_follows_the_markers(minimal, tmp_path):
    rc, out, calls, _, store = run_script(minimal, tmp_path / "a", "publish-then-abort")
    assert rc == 0 and "counted as done" in out and store.is_done("train", "00aa11bb22cc33dd")
    rc, out, calls, _, _ = run_script(minimal, tmp_path / "b", "exit0")
    assert rc == 1 and "outputs not complete (exit 0)" in out and "requeue" not in calls


def test_wait_keeps_following_through_a_few_failed_polls(minimal, tmp_path, fake_slurm, monkeypatch):
    plan, store, launcher = sweep(minimal, tmp_path)
    tasks = pending_tasks(plan, store)
    launcher.submit(tasks)
    for t in tasks:
        fake_slurm.set(launcher.jobs[t.id], "CANCELLED")
    refresh, calls = launcher.refresh, []

    def flaky():
        calls.append(1)
        if len(calls) <= 2:
            raise UserError("squeue failed: slurm_load_jobs error: Socket timed out")
        return refresh()

    monkeypatch.setattr(launcher, "refresh", flaky)
    assert set(launcher.wait(poll_s=0).values()) == {"cancelled"} and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(launcher, "refresh", lambda: (_ for _ in ()).throw(UserError("squeue failed: down")))
    launcher.states = {t.id: "queued" for t in tasks}
    with pytest.raises(UserError, match="down"):
        launcher.wait(poll_s=0)


# ------------------------------------------------------------------- train.keep_checkpoint: false on Slurm
def test_a_pruned_training_submitted_again_is_rebuilt_not_taken_for_done(minimal, tmp_path, fake_slurm):
    """A benchmark added after a checkpoint was pruned: pending_tasks submits its training again before the new
    evaluation. Its SUCCESS marker is still there (with PRUNED.json): neither refresh() nor the job script may take
    it for done, or the evaluation would run without a model. Once rebuilt, and even once pruned again after the
    evaluation, it is done."""
    minimal["train"] = {"keep_checkpoint": False}
    plan, store, launcher = sweep(minimal, tmp_path)
    for job in plan.jobs.values():
        with store.build(job.stage, job.key) as b:
            assert b is not None
    ev = next(j for j in plan.jobs.values() if j.stage == "eval" and any(d.startswith("train/") for d in j.deps))
    train_key = next(d for d in ev.deps if d.startswith("train/")).split("/")[1]
    (store.path("train", train_key) / PRUNED).write_text("{}")
    shutil.rmtree(store.path("eval", ev.key))  # the new benchmark's evaluation, not run yet
    tasks = pending_tasks(plan, store)
    train = next(t for t in tasks if t.stage == "train")
    evaluation = next(t for t in tasks if t.stage == "eval")
    assert train.keys == [train_key] and train.id in evaluation.deps
    launcher.submit(tasks)
    assert launcher.refresh() == [] and launcher.states[train.id] == "queued"
    fake_slurm.set(launcher.jobs[train.id], "RUNNING")
    assert launcher.refresh() == [(train.id, "running", "")]

    rc, out, _, _, _ = run_script(minimal, tmp_path / "job", "rebuild", store=store, key=train_key)
    assert "outputs already complete" not in out and rc == 0, out
    assert (tmp_path / "job" / "signal.ran").read_text() == "rebuilt" and not is_pruned(store, train_key)
    # the evaluation ran and pruned the checkpoint again before the launcher polled: both are done
    with store.build("eval", ev.key) as b:
        assert b is not None
    (store.path("train", train_key) / PRUNED).write_text("{}")
    fake_slurm.set(launcher.jobs[train.id], "COMPLETED")
    fake_slurm.set(launcher.jobs[evaluation.id], "COMPLETED")
    changes = {tid: state for tid, state, _ in launcher.refresh()}
    assert changes[train.id] == "done" and changes[evaluation.id] == "done"
