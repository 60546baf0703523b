"""What the launcher tests share: a small sweep whose stage commands are stand-ins (they publish their outputs,
or sleep), a fake Slurm, and a stand-in `ablate run` started as a real process to be killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep.plan import Job, build_plan
from launchers.base import Task, pending_tasks
from launchers.local import LocalLauncher

# A stand-in `ablate run`: the minimal sweep, each stage job the Python code given as argv[2] (argv: pid file,
# store, stage, keys), then a summary, and a broken pipe taken for a success as framework/cli.py does.
LAUNCHER = """
import copy, json, sys
from tests.helpers import MINIMAL
from framework.spec import spec_from_dict
from framework.sweep.plan import build_plan
from framework.store import Store
from launchers.base import pending_tasks
from launchers.local import LocalLauncher
tmp, body, first = sys.argv[1], sys.argv[2], sys.argv[3]
m = copy.deepcopy(MINIMAL); m["model"] = {"tiny": {}}
spec = spec_from_dict(m); plan = build_plan(spec); store = Store(tmp + "/store")
cmd = lambda t: [sys.executable, "-c", body, first, str(store.root), t.stage, ",".join(t.keys)]
launcher = LocalLauncher(spec, "spec.yaml", store, command=cmd)
launcher.submit(pending_tasks(plan, store))
try:
    try:
        launcher.wait(poll_s=0.05)
    finally:
        open(tmp + "/states.json", "w").write(json.dumps(launcher.states))
    bad = [t for t, s in launcher.states.items() if s != "done"]
    print(f"finished: {len(bad)} not done")
    sys.exit(1 if bad else 0)
except BrokenPipeError:
    sys.exit(0)
"""


def pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def publish_command(store: Store, fail: set[str], order_log, exit_code: int = 0):
    code = (
        "import sys, time, os; from framework.store import Store\n"
        "store, stage, keys, fail, log, rc = Store(sys.argv[1]), sys.argv[2], sys.argv[3].split(','), sys.argv[4], sys.argv[5], int(sys.argv[6])\n"
        "open(log, 'a').write(stage + '/' + keys[0] + '\\n')\n"
        "if stage + '/' + keys[0] in fail.split(','): sys.exit(3)\n"
        "for k in keys:\n"
        "    with store.build(stage, k) as b: pass\n"
        "sys.exit(rc)\n"
    )

    def command(task):
        return [
            sys.executable,
            "-c",
            code,
            str(store.root),
            task.stage,
            ",".join(task.keys),
            ",".join(fail),
            str(order_log),
            str(exit_code),
        ]

    return command


def make(minimal, tmp_path, fail=(), exit_code=0):
    minimal["model"] = {"tiny": {}}
    spec = spec_from_dict(minimal)
    plan = build_plan(spec)
    store = Store(tmp_path / "store")
    tasks = pending_tasks(plan, store)
    log = tmp_path / "order.log"
    launcher = LocalLauncher(
        spec, "spec.yaml", store, echo=lambda *a: None, command=publish_command(store, set(fail), log, exit_code)
    )
    launcher.submit(tasks)
    return plan, store, tasks, launcher, log


def task(stage: str, *keys: str, cells=("source=qwq_32b_preview,keywords=keep,seed=0",)) -> Task:
    return Task(stage, [Job(stage, k, [], {}, list(cells)) for k in keys])


# ------------------------------------------------------------------------ submission against a fake Slurm
class FakeSlurm:
    """Stands in for the sbatch/squeue/scontrol/scancel subprocess calls: job states are whatever a test sets."""

    def __init__(self) -> None:
        self.next_id = 100
        self.calls: list[list[str]] = []  # sbatch argv, without the program name
        self.jobs: dict[int, str] = {}  # job id -> "STATE" or "STATE:Reason"
        self.names: dict[int, str] = {}  # job id -> job name, from the script's #SBATCH --job-name
        self.after: dict[int, set[int]] = {}  # job id -> the jobs it waits for (afterok)
        self.after_any: dict[int, set[int]] = {}  # job id -> the jobs whose end, any end, it waits for (afterany)
        self.cancelled: list[int] = []

    def set(self, job_id: int, value: str) -> None:
        self.jobs[job_id] = value

    def __call__(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        prog, args, out, rc = cmd[0], cmd[1:], "", 0
        if prog == "sbatch":
            self.calls.append(args)
            out, self.jobs[self.next_id] = f"{self.next_id}\n", "PENDING:Dependency"
            script = Path(args[-1]).read_text()
            dependency = next((a.removeprefix("--dependency=") for a in args if a.startswith("--dependency=")), "")
            kinds = dict(d.split(":", 1) for d in dependency.split(",") if d)
            self.after[self.next_id] = {int(j) for j in kinds.pop("afterok", "").split(":") if j}
            self.after_any[self.next_id] = {int(j) for j in kinds.pop("afterany", "").split(":") if j}
            assert not kinds, f"unexpected dependency {dependency}"
            self.names[self.next_id] = script.split("#SBATCH --job-name=", 1)[1].split("\n", 1)[0]
            self.next_id += 1
        elif prog == "squeue":
            ids = [int(i) for i in args[args.index("-j") + 1].split(",")]
            for i in (i for i in ids if i in self.jobs):
                state, _, reason = self.jobs[i].partition(":")
                out += f"{i}|{state}|{reason or 'None'}||{self.names.get(i, 'name')}\n"
        elif prog == "scontrol" and int(args[-1]) in self.jobs:
            state = self.jobs[int(args[-1])].split(":")[0]
            out = f"JobId={args[-1]} JobName=x JobState={state} Reason=NonZeroExitCode ExitCode=3:0 NodeList=n1\n"
        elif prog == "scancel":
            self.cancelled += [int(a) for a in args]
            gone = {int(a) for a in args}
            while gone:  # --kill-on-invalid-dep=yes: a queued job waiting on a cancelled one is cancelled too
                for i in gone & set(self.jobs):
                    self.jobs[i] = "CANCELLED"
                gone = {j for j, deps in self.after.items() if deps & gone and self.jobs[j].startswith("PENDING")}
        else:
            rc = 1
        return subprocess.CompletedProcess(cmd, rc, out, "")


REPO = Path(__file__).resolve().parents[3]


SLEEP = "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(120)"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def start_launcher(tmp_path: Path, body: str, pids_arg: str = "", **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-c", LAUNCHER, str(tmp_path), body, pids_arg or str(tmp_path / "pids")]
    return subprocess.Popen(argv, env=env, cwd=REPO, **kw)


def wait_for_stage(tmp_path: Path, proc: subprocess.Popen) -> list[int]:
    deadline = time.monotonic() + 60
    while not pids(tmp_path / "pids"):
        assert time.monotonic() < deadline and proc.poll() is None, "no stage process started"
        time.sleep(0.05)
    return pids(tmp_path / "pids")


def kill_all(tmp_path: Path, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for p in pids(tmp_path / "pids"):
        if alive(p):
            os.kill(p, signal.SIGKILL)
