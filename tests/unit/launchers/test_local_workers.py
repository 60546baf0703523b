"""The local launcher's warm evaluation processes, scheduled with stand-in stage commands and a stand-in worker that
speaks framework/exec_worker.py's protocol: what they hold (GPUs while they live, CPU slots only while they run a
job), that a worker's death fails only its job, and that a waiting task gets the GPUs an idle worker held."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from launchers.base import Task
from tests.unit.launchers.fakes import make

# Reads requests as framework/exec_worker.py does; publishes each job's outputs, notes its pid and GPUs in the job's
# log, replies {"rc": 0}; exits at once, replying nothing, when asked to build a key listed in argv[2].
WORKER = r"""
import json, os, sys
from framework.store import Store
store, die_on, replies = Store(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3])
for line in sys.stdin:
    req = json.loads(line)
    argv = req["argv"]
    stage, keys = argv[1], argv[2 : argv.index("--spec")]
    with open(req["log"], "a") as f:
        f.write("WORKER " + json.dumps({"pid": os.getpid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")
    if keys[0] in die_on:
        os._exit(9)
    for k in keys:
        with store.build(stage, k) as b:
            pass
    os.write(replies, (json.dumps({"rc": 0}) + "\n").encode())
"""


def with_workers(minimal, tmp_path: Path, die_on: tuple[str, ...] = ()):
    plan, store, tasks, launcher, _ = make(minimal, tmp_path)
    launcher.worker_command = [sys.executable, "-c", WORKER, str(store.root), ",".join(die_on)]
    return plan, store, tasks, launcher


def worker_lines(store, task: Task) -> list[dict]:
    text = store.log_path("eval", task.keys[0]).read_text()
    return [json.loads(line[7:]) for line in text.splitlines() if line.startswith("WORKER ")]


def test_with_one_cpu_slot_every_evaluation_runs_in_one_warm_process_between_other_jobs(minimal, tmp_path):
    minimal["launcher"] = {"kind": "local", "local": {"cpu_slots": 1}}
    _, store, tasks, launcher = with_workers(minimal, tmp_path)
    assert set(launcher.wait(poll_s=0.01).values()) == {"done"}
    evals = [t for t in tasks if t.stage == "eval"]
    assert len(evals) > 2 and any(t.stage == "train" for t in tasks)
    pids = {line["pid"] for t in evals for line in worker_lines(store, t)}
    assert len(pids) == 1  # an idle worker held no slot: the trainings between evaluations ran beside it
    assert launcher._workers == []  # closed at the end of the wait


def test_a_worker_that_dies_fails_only_its_evaluation_and_the_next_one_gets_a_new_worker(minimal, tmp_path):
    minimal["launcher"] = {"kind": "local", "local": {"cpu_slots": 1}}
    _, _, tasks, _, _ = make(minimal, tmp_path / "probe")
    victim = next(t for t in tasks if t.stage == "eval" and t.jobs[0].deps)
    _, store, tasks, launcher = with_workers(minimal, tmp_path / "run", die_on=(victim.keys[0],))
    states = launcher.wait(poll_s=0.01)
    evals = [t for t in tasks if t.stage == "eval"]
    assert states[victim.id] == "failed" and launcher.reasons[victim.id].startswith("exit 9;")
    assert all(states[t.id] == "done" for t in evals if t.id != victim.id)
    assert not any(store.is_done("eval", k) for k in victim.keys)
    assert len({line["pid"] for t in evals for line in worker_lines(store, t)}) == 2
    assert launcher._slots_free == [0]  # nothing leaked: the dead worker's slot came back


def test_idle_gpu_workers_keep_their_gpus_until_a_training_needs_them(minimal, tmp_path):
    minimal["launcher"] = {"kind": "local", "local": {"gpus": [0, 1]}}
    minimal["train"] = {**minimal.get("train", {}), "processes": 2}
    _, store, tasks, launcher = with_workers(minimal, tmp_path)
    held: list[list] = []
    poll = launcher.poll

    def spy() -> None:
        poll()
        own = [g for r in launcher._running.values() if r.worker is None for g in r.gpus]
        workers = [g for w in launcher._workers if w.proc.poll() is None or w.task for g in w.gpus]
        held.append(own + workers)

    launcher.poll = spy
    states = launcher.wait(poll_s=0.01)
    assert set(states.values()) == {"done"}
    assert all(len(h) == len(set(h)) <= 2 for h in held)  # no GPU given twice, never more than there are
    evals = [t for t in tasks if t.stage == "eval"]
    cuda = [line["cuda"] for t in evals for line in worker_lines(store, t)]
    assert set(cuda) <= {"0", "1"} and len(cuda) == len(evals)  # one GPU each (a tiny model's engine is one GPU)
    assert launcher._gpus_free and sorted(map(str, launcher._gpus_free)) == ["0", "1"]
