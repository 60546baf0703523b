"""A real single-node Slurm (munged + slurmctld + slurmd from Debian's slurm-wlm) under a temporary directory.

Everything is private to one instance: its own munge key and socket, free TCP ports, state, spool and log dirs, so
it coexists with a system Slurm or another test session on the same machine. Clients reach it through SLURM_CONF.
Daemons are stopped by the pids in their pid files, and job processes left behind by their SLURM_CONF.

Needs root (slurmd launches jobs as their submitter). By hand: `python tests/integration/slurm_cluster.py` starts one
and prints the `export SLURM_CONF=...` line; Ctrl-C stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / ".ci" / "install-slurm.sh"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")

CONF = """\
ClusterName=ablatetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (120 s by default)
AuthInfo=socket={root}/munge/munge.socket,cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MaxArraySize=1001
KillWait=5
MinJobAge=600
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def missing_binaries() -> list[str]:
    return [b for b in (*DAEMONS, *CLIENTS) if _which(b) is None]


def ensure_installed() -> str | None:
    """Install slurm-wlm and munge if they are missing; return why Slurm cannot run here, or None."""
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd starts jobs as their submitter)"
    if not missing_binaries():
        return None
    if shutil.which("apt-get") is None:
        return f"slurm-wlm is not installed ({', '.join(missing_binaries())} missing) and apt-get is unavailable"
    out = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False)
    if out.returncode != 0 or missing_binaries():
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return f"slurm-wlm is not installed and could not be installed: {' | '.join(tail)}"
    return None


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _real_memory_mb() -> int:
    """Comfortably below the machine's memory, or slurmd drains the node ('Low RealMemory')."""
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return max(512, min(4096, total_kb // 1024 // 2))


class SlurmCluster:
    """start() brings the node to idle; stop() cancels every job and stops the daemons (safe to call twice)."""

    def __init__(self, root: Path | None = None, cpus: int | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="ablate-slurm-"))
        self.cpus = cpus or min(2, os.cpu_count() or 1)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.started: list[str] = []

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.root / "run" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _daemon(self, name: str, *args: str) -> None:
        out = subprocess.run([_which(name) or name, *args], env=self.env, capture_output=True, text=True, check=False)
        self.started.append(name)
        if out.returncode != 0:
            raise RuntimeError(f"{name} did not start: {out.stderr.strip()}\n{self.logs()}")

    def start(self, timeout_s: float = 60) -> SlurmCluster:
        for d in ("munge", "state", "spool", "log", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o755)
        key = self.root / "munge" / "munge.key"
        subprocess.run([_which("mungekey") or "mungekey", "--create", "--keyfile", str(key)], check=True)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(
            CONF.format(
                host=self.host,
                root=self.root,
                ctld_port=ctld_port,
                slurmd_port=slurmd_port,
                cpus=self.cpus,
                mem_mb=_real_memory_mb(),
            )
        )
        munge = self.root / "munge"
        self._daemon(
            "munged",
            "--force",  # as root: the key and socket are private to this instance anyway
            f"--socket={munge}/munge.socket",
            f"--key-file={key}",
            f"--log-file={munge}/munged.log",
            f"--pid-file={self.root}/run/munged.pid",
            f"--seed-file={munge}/munged.seed",
        )
        self._daemon("slurmctld", "-c", "-f", str(self.conf))
        self._daemon("slurmd", "-f", str(self.conf), "-N", self.host)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
            if out.stdout.strip() == "idle":
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the Slurm node did not become idle in {timeout_s:.0f} s\n{self.logs()}")

    def logs(self, lines: int = 15) -> str:
        parts = []
        for path in [*sorted((self.root / "log").glob("*.log")), self.root / "munge" / "munged.log"]:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel all jobs, stop slurmd, slurmctld, munged by pid, then kill job processes that outlived them."""
        if self._pid("slurmctld"):
            with contextlib.suppress(subprocess.TimeoutExpired):  # a wedged controller must not block the rest
                ids = subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True, timeout=20
                ).stdout.split()
                if ids:
                    subprocess.run(["scancel", *ids], env=self.env, capture_output=True, check=False, timeout=20)
                    time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self._pid(name)
            if pid is not None:
                _terminate(pid)
        for pid in self._job_processes():
            _terminate(pid, grace_s=2)
        self.started.clear()

    def _job_processes(self) -> list[int]:
        """Processes started under this instance: they carry its SLURM_CONF in their environment."""
        mark = f"SLURM_CONF={self.conf}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if mark in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
        return found

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def _terminate(pid: int, grace_s: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":  # pragma: no cover - a manual tool
    reason = ensure_installed()
    if reason:
        raise SystemExit(reason)
    with SlurmCluster() as cluster:
        print(f"export SLURM_CONF={cluster.conf}   # Ctrl-C stops the cluster")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
