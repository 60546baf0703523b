"""Starting the training processes: the torchrun (or srun + torchrun) command, its environment, its log.

Processes must not outlive the stage that started them: a preempted or killed stage whose workers train on
would race the next attempt for the same work directory. torchrun puts its workers in sessions of their own, so
a signal to the stage's process group never reaches them; instead every layer asks the kernel to kill it when its
parent dies (PR_SET_PDEATHSIG). Run as `python -m framework.train.launch --parent PID -- CMD...` this module is
that guard for torchrun itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from framework.train.jit_ops import extensions_dir

if TYPE_CHECKING:  # the guard below runs as its own process: keep its imports to the standard library
    from framework.train.config import Layout

WORKER_MODULE = "framework.train.worker"
TORCHRUN = (sys.executable, "-m", "torch.distributed.run")
_PR_SET_PDEATHSIG = 1
_REPO_ROOT = str(Path(__file__).resolve().parents[2])


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None) -> None:
    """Have the kernel send `sig` to this process when its parent exits (Linux; a no-op elsewhere)."""
    parent = os.getppid() if expected_parent is None else expected_parent
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def visible_gpus(env: Mapping[str, str] | None = None) -> int:
    """GPUs this process may use, without importing torch: CUDA_VISIBLE_DEVICES (set by Slurm), else nvidia-smi."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def local_command(lay: Layout, args_file: Path, *, parent_pid: int) -> list[str]:
    """One node: torchrun on a free port, behind the guard that ends it with the stage."""
    guard = [sys.executable, "-m", "framework.train.launch", "--parent", str(parent_pid), "--"]
    torchrun = [*TORCHRUN, "--standalone", "--nnodes", "1", "--nproc_per_node", str(lay.procs_per_node)]
    return [*guard, *torchrun, "-m", WORKER_MODULE, str(args_file)]


def slurm_command(lay: Layout, args_file: Path, env: Mapping[str, str], master: str) -> list[str]:
    """Several nodes inside a Slurm allocation: one torchrun per node via srun, rendezvous on the first node.

    The port is derived from the job id, so jobs sharing a first node do not collide.
    """
    job = env["SLURM_JOB_ID"]
    port = 29500 + int(job) % 2000 if job.isdigit() else 29500
    return [
        "srun",
        f"--nodes={lay.nodes}",
        f"--ntasks={lay.nodes}",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        *TORCHRUN,
        "--nnodes",
        str(lay.nodes),
        "--nproc_per_node",
        str(lay.procs_per_node),
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"{master}:{port}",
        "--rdzv_id",
        job,
        "-m",
        WORKER_MODULE,
        str(args_file),
    ]


def slurm_master(nodelist: str) -> str:
    """The first host of a Slurm node list (`node[01-04]` → `node01`)."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def launch_command(lay: Layout, args_file: Path, env: Mapping[str, str], *, parent_pid: int) -> list[str]:
    """The command for this layout: local torchrun for one node, srun + torchrun across a Slurm allocation."""
    # lazy: run as a module this file is the torchrun guard, whose imports stay in the standard library (no pydantic)
    from framework.train.config import TrainConfigError

    if lay.nodes == 1:
        return local_command(lay, args_file, parent_pid=parent_pid)
    have = env.get("SLURM_NNODES")
    if "SLURM_JOB_ID" not in env or have is None:
        raise TrainConfigError(f"train.nodes = {lay.nodes} needs a Slurm allocation (run under the slurm launcher)")
    if int(have) < lay.nodes:
        raise TrainConfigError(f"train.nodes = {lay.nodes} but this Slurm allocation has {have} node(s)")
    return slurm_command(lay, args_file, env, slurm_master(env["SLURM_JOB_NODELIST"]))


SHUTDOWN_GRACE_S = 900


def worker_env(lay: Layout, base: Mapping[str, str]) -> dict[str, str]:
    """Environment of the training processes: CPU-only DeepSpeed settings, no tokenizer threads, this code."""
    env = dict(base)
    env["TOKENIZERS_PARALLELISM"] = "false"
    # torchrun, when signalled, gives its workers this long to exit before it kills them (30 s by default): time
    # to finish a step and write the checkpoint the signal asks for. A scheduler's own grace period still bounds it.
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_GRACE_S))
    env["PYTHONPATH"] = os.pathsep.join([_REPO_ROOT, *filter(None, [base.get("PYTHONPATH")])])
    # DeepSpeed's just-in-time built ops go to this environment's own directory (`framework.train.jit_ops`).
    env["TORCH_EXTENSIONS_DIR"] = str(extensions_dir(base))
    if not lay.gpu:
        env["DS_ACCELERATOR"] = "cpu"
    # Each rank gets its share of the cores: torchrun would set 1 thread, and on GPUs the offloaded optimizer's
    # CPU AdamW (billions of parameters a rank) would then step on one core.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // lay.procs_per_node)))
    return env


def run_logged(cmd: Sequence[str], env: Mapping[str, str], log_path: Path) -> int:
    """Run `cmd` with stdout and stderr appended to `log_path`; stop it if this process is interrupted."""
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=dict(env))
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


def log_tail(log_path: Path, lines: int = 40) -> str:
    """The last lines of a log, for error messages."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _guard(argv: list[str]) -> None:
    """`--parent PID -- CMD...`: die with PID (SIGTERM, so torchrun can stop its workers), then exec CMD."""
    if len(argv) < 4 or argv[0] != "--parent" or argv[2] != "--":
        raise SystemExit("usage: python -m framework.train.launch --parent PID -- CMD...")
    die_with_parent(signal.SIGTERM, expected_parent=int(argv[1]))
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    _guard(sys.argv[1:])
