"""Run a sweep's stage jobs on this machine, in dependency order, with a pool of GPU or CPU slots.

Each task is a subprocess in its own session (so Ctrl-C, SIGTERM or SIGHUP reaches the launcher, which stops
children cleanly and a re-run resumes; a reaper stops them if the launcher is killed outright, see
local_reaper.py), with its log in the store, and sees only the GPUs it was given (none for a
CPU task, see uses_gpu_off_slot). A failed task fails only the tasks that depend on it. The store's markers, not
exit codes, decide success: a job that finished its outputs and then crashed at exit is done.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from framework.errors import RetryLater, UserError
from framework.redaction import redact_log
from framework.spec.ablation import AblationSpec
from framework.store import Store, write_json_atomic
from framework.store.locks import HOST
from framework.sweep.eval_layout import GpuId, eval_gpus, visible_gpu_ids
from framework.sweep.live_runs import RUNS_DIR, live_runs
from framework.sweep.live_runs import process_alive as _alive
from framework.sweep.plan import Plan
from framework.sweep.resources import processes_per_node, split_evenly
from framework.sweep.stages import job_device, trains
from launchers.base import Launcher, Task, exec_command, log_tail, shell_join
from launchers.local_reaper import group_alive, process_start


def visible_gpus(option: list[int] | str) -> list[GpuId]:
    """GPU ids to schedule on: the spec's list, else those visible here (framework.sweep.eval_layout says how)."""
    return list(option) if isinstance(option, list) else visible_gpu_ids()


def uses_gpu_off_slot(task: Task) -> bool:
    """A CPU-stage task that may still use a GPU if it sees one: a pool whose topics are clustered on a model
    embedder runs that model on cuda when available. It keeps this process's GPU visibility (as before) rather
    than being hidden from every GPU and made to embed on the CPU."""
    if task.stage != "pool":
        return False
    for job in task.jobs:
        annotate = job.config.get("annotate") or {}
        embedder = (annotate.get("topic_clusters") or {}).get("embedder", "tfidf")
        if annotate.get("topics") == "cluster" and embedder != "tfidf":
            return True
    return False


def gpus_needed(task: Task, spec: AblationSpec, available: int, per_eval: int | None = None) -> int:
    """`per_eval`: an evaluation's GPUs when already worked out (eval_gpus reads model files and asks nvidia-smi)."""
    if job_device(task.stage, task.jobs[0].config) != "gpu" or available == 0:
        return 0
    if trains(task.stage, task.jobs[0].config):
        return min(available, spec.train.processes or available)
    if task.stage == "generate":  # its own teacher's tensor parallelism
        return min(available, max(j.gpus or 1 for j in task.jobs))
    return per_eval if per_eval is not None else eval_gpus(spec, available)


def cpu_slots_needed(task: Task, spec: AblationSpec) -> int:
    """A CPU training (or a search worker, whose trials train) takes one slot per process, so two trainings never
    share cores they would both fill; every other stage takes one. Capped at the pool, so that a training always
    fits on its own."""
    need = processes_per_node(spec.train, gpus=0) if trains(task.stage, task.jobs[0].config) else 1
    return min(need, spec.launcher.local.cpu_slots)


def local_cores(option: list[int] | str) -> list[int]:
    """The cores to allot: the spec's list, else those this process may run on. A listed core this process may not
    run on is a user error: every job pinned to it would fail."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if not isinstance(option, list):
        return allowed
    outside = sorted(set(option) - set(allowed))
    if outside:
        raise UserError(
            f"launcher.local.cores {outside} are not among the cores this process may run on ({allowed}): "
            "list cores from those, or leave cores: auto"
        )
    return sorted(set(option))


def slot_cores(cores: list[int], slots: int) -> list[list[int]]:
    """The cores of each CPU slot: contiguous, disjoint and as even as can be. More slots than cores (asked for)
    share cores round-robin, one each."""
    if slots > len(cores):
        return [[cores[i % len(cores)]] for i in range(slots)]
    return split_evenly(cores, slots)


# Sets the affinity, then becomes the command: every thread the command and its children start inherits the cores,
# with no window in which one started elsewhere (the launcher has threads of its own, so no preexec_fn).
_PIN = "import os, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(','))); os.execvp(sys.argv[2], sys.argv[2:])"


def pinned(cmd: list[str], cores: list[int]) -> list[str]:
    """`cmd` started on `cores` alone (unchanged where the platform cannot pin)."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return cmd
    return [sys.executable, "-I", "-S", "-c", _PIN, ",".join(map(str, cores)), *cmd]


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(env: dict[str, str], task: Task, cores: list[int]) -> dict[str, str]:
    """Threads as many as the task's cores: a training splits them between its processes itself
    (framework.train.launch.worker_env counts the cores it may run on), so it gets none set here."""
    out = {k: v for k, v in env.items() if k not in THREAD_VARS}
    if not trains(task.stage, task.jobs[0].config):
        out.update(dict.fromkeys(THREAD_VARS, str(len(cores))))
    return out


STOP_GRACE_S = 15.0
TRAIN_STOP_GRACE_S = 600.0  # a ZeRO checkpoint of a large model takes minutes to write
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # `kill`, a job scheduler's stop, a closed terminal or ssh session
HELD_SIGNALS = (signal.SIGINT, *STOP_SIGNALS)
_READER_GONE = (errno.EPIPE, errno.EIO)
WORKER_LOGS = ".workers"  # under the store: the warm evaluation processes' own logs  # a pipe without reader; a terminal hung up (ssh session closed)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP to the launcher, handled as Ctrl-C is (children stopped, a re-run resumes): by default
    either would kill the launcher alone and leave its stage processes, in their own sessions, holding the GPUs."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@dataclass
class EvalWorker:
    """A warm evaluation process (framework/exec_worker.py) and the GPUs or CPU slots it holds while it lives."""

    proc: subprocess.Popen
    replies: int  # read end of the pipe its replies come on (non-blocking)
    gpus: list[GpuId]
    slots: list[int]
    log: Path  # its own output between jobs (a crash at start-up, say)
    task: str | None = None  # the task it runs now; None: idle
    buffer: bytes = b""
    retiring: float | None = None  # when it was told to exit (stdin closed), to free what it holds
    logs: list[Path] = field(default_factory=list)  # the job logs it wrote: redacted again when it ends

    def reply(self) -> int | None:
        """The exit status of the job it was running, once it has sent it."""
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.replies, 4096):
                self.buffer += chunk
        if b"\n" not in self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return int(json.loads(line)["rc"])


@dataclass
class Running:
    task: Task
    proc: subprocess.Popen
    gpus: list[GpuId]
    log: Path
    started: float
    slots: list[int] = field(default_factory=list)
    worker: EvalWorker | None = None  # the warm evaluation process running it, which outlives it


@dataclass
class LocalLauncher(Launcher):
    """Each task a child process of this one, started when its dependencies are done and slots are free; status()
    and cancel() may be called from a signal handler or another thread."""

    name: ClassVar[str] = "local"
    poll_s: ClassVar[float] = 0.2
    always_waits: ClassVar[bool] = True  # its tasks are this process's children: a local run always waits
    live_view: ClassVar[bool] = True
    logs: dict[str, Path] = field(default_factory=dict)
    # argv of a warm evaluation process, the reply pipe's descriptor appended (tests substitute a stand-in)
    worker_command: list[str] | None = None
    _tasks: list[Task] = field(default_factory=list)
    _running: dict[str, Running] = field(default_factory=dict)
    _gpus_free: list[GpuId] = field(default_factory=list)  # the slots not taken, set when a wait begins
    _n_gpus: int = 0
    _slots_free: list[int] | None = None  # CPU slots not taken; None outside a wait (following() counts them)
    _slot_cores: list[list[int]] = field(default_factory=list)  # the cores of each CPU slot
    _workers: list[EvalWorker] = field(default_factory=list)  # warm evaluation processes, busy or idle
    _per_eval: int | None = None  # an evaluation's GPUs, worked out once a wait begins
    _quiet: bool = False  # the reader of our output is gone: keep scheduling, stop printing
    _reaper: subprocess.Popen | None = None  # stops the stage jobs if this process dies (launchers/local_reaper.py)
    _reaper_fd: int | None = None  # the only write end of the reaper's pipe
    _record: Path | None = None  # this run in the store's list of live runs (`ablate cancel` reads it)

    def submit(self, tasks: list[Task]) -> None:
        self._tasks = list(tasks)
        for t in tasks:
            self.states[t.id] = "pending"
            self.logs[t.id] = self.store.log_path(t.stage, t.keys[0])

    def cancel(self) -> None:
        """TERM every running task's process group, then KILL what is still alive after a grace period: long
        enough for a training to write its checkpoint (which TERM asks for), unless Ctrl-C (or TERM, HUP) comes
        again. Those signals are only noted meanwhile: a second one must not cut the stopping short and leave
        children running in their own sessions."""
        with _signals_held() as again:
            for proc in self._procs():
                _signal_group(proc, signal.SIGTERM)
            try:
                training = any(trains(r.task.stage, r.task.jobs[0].config) for r in self._running.values())
                grace = TRAIN_STOP_GRACE_S if training else STOP_GRACE_S
                if training:
                    self._say(f"waiting up to {grace:.0f} s for training to checkpoint (Ctrl-C again to kill it now)")
                deadline = time.monotonic() + grace
                while not again and time.monotonic() < deadline:  # a signal again: kill now
                    if all(proc.poll() is not None for proc in self._procs()):
                        break
                    time.sleep(0.2)
            finally:
                for proc in self._procs():  # every KILL first, then the waits
                    _signal_group(proc, signal.SIGKILL)
                for proc in self._procs():
                    proc.wait()
                    self._tell({"end": proc.pid})
                for tid, r in self._running.items():
                    redact_log(r.log)
                    self.states[tid] = "cancelled"
                self._running.clear()
                self._close_workers()
                for tid, state in self.states.items():
                    if state == "pending":
                        self.states[tid] = "cancelled"

    @contextlib.contextmanager
    def following(self) -> Iterator[None]:
        """Whatever ends the wait early (Ctrl-C, SIGTERM, SIGHUP, any error) stops the running stage processes
        first, then propagates: they run in their own sessions, so nothing else would stop them. cancel() runs in a
        finally, so that not even a failing line of output (a terminal hung up) can skip it."""
        with _stop_signals_raise():
            try:
                self._guard()
                self._gpus_free = visible_gpus(self.spec.launcher.local.gpus)
                self._n_gpus = len(self._gpus_free)
                spec_dir = Path(self.spec_path).resolve().parent
                self._per_eval = eval_gpus(self.spec, self._n_gpus, spec_dir=spec_dir) if self._n_gpus else 0
                cores = local_cores(self.spec.launcher.local.cores)
                slots = self.spec.launcher.local.cpu_slots
                self._slot_cores = slot_cores(cores, slots)
                self._slots_free = list(range(slots))
                if slots > len(cores):
                    self._say(
                        f"note: launcher.local.cpu_slots {slots} > {len(cores)} cores: slots share cores, "
                        "and jobs running at once slow each other down"
                    )
                yield
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    why = f"got {e}" if isinstance(e, Terminated) else "interrupted"
                else:
                    why = f"launcher error ({type(e).__name__})"
                try:
                    self._say(f"{why}: stopping running stage jobs (a re-run resumes)")
                finally:
                    self.cancel()
                raise
            finally:
                self._close_workers()
                self._unguard()

    def poll(self) -> None:
        """Reap the tasks that ended, skip those whose dependencies failed, start those whose dependencies are done
        as long as their slots are free."""
        if self._slots_free is None:
            raise RuntimeError("LocalLauncher.poll() runs inside wait(), which counts the free slots first")
        for tid in list(self._running):
            r = self._running[tid]
            rc = r.worker.reply() if r.worker is not None else None
            if rc is None:
                rc = r.proc.poll()  # a worker that died mid-job, or a process of its own that ended
            if rc is None:
                continue
            self._finish(r, rc)
            del self._running[tid]
            if r.worker is not None:
                self._idle(r.worker)
            else:
                self._tell({"end": r.proc.pid})
                self._release(r.gpus, r.slots)
        self._reap_workers()
        self._skip_blocked()
        for task in self._tasks:
            if self.states[task.id] != "pending" or not all(self.states[d] == "done" for d in task.deps):
                continue
            need = gpus_needed(task, self.spec, self._n_gpus, self._per_eval)
            slots = 0 if need else cpu_slots_needed(task, self.spec)
            if self._warm(task) and (idle := self._idle_worker(need, slots)):
                self._slots_free = [i for i in self._slots_free if i not in idle.slots]
                self._start_on(idle, task)
            elif need and len(self._gpus_free) >= need:
                take, self._gpus_free = self._gpus_free[:need], self._gpus_free[need:]
                self._launch(task, take, [])
            elif not need and len(self._slots_free) >= slots:
                take, self._slots_free = self._slots_free[:slots], self._slots_free[slots:]
                self._launch(task, [], take)
            elif need:
                self._retire_idle_worker(need)  # it holds GPUs this task waits for: the task goes first

    def _warm(self, task: Task) -> bool:
        """Whether the task runs in a warm evaluation process: every evaluation, unless eval.reuse_engine is off or
        the tasks run a command of their own."""
        own = self.command is None or self.worker_command is not None
        return task.stage == "eval" and self.spec.eval.reuse_engine and own

    def _launch(self, task: Task, gpus: list[GpuId], slots: list[int]) -> None:
        if not self._warm(task):
            self._start(task, gpus, slots)
            return
        cpu_workers = [w for w in self._workers if not w.gpus and w.retiring is None]
        idle = [w for w in cpu_workers if w.task is None]
        if not gpus and idle and len(cpu_workers) >= len(self._slot_cores):  # no more than slots: each holds memory
            self._retire(idle[0])
        try:
            worker = self._start_worker(gpus, slots)
        except OSError as e:
            self._say(f"could not start an evaluation process ({e}): running {task.id} in one of its own")
            self._start(task, gpus, slots)
            return
        self._start_on(worker, task)

    def _release(self, gpus: list[GpuId], slots: list[int]) -> None:
        assert self._slots_free is not None
        self._gpus_free.extend(gpus)
        self._slots_free = sorted(self._slots_free + slots)

    def _procs(self) -> list[subprocess.Popen]:
        """Every process this launcher started that may still run: tasks' own, and warm workers, busy or idle."""
        procs = {id(r.proc): r.proc for r in self._running.values()}
        procs.update({id(w.proc): w.proc for w in self._workers})
        return list(procs.values())

    @classmethod
    def running_detail(cls, store: Store, stage: str, key: str, detail: str) -> str:
        return running_detail(store, stage, key, detail)  # the module's function below, not this method

    @classmethod
    def stop_sweep(cls, plan: Plan, store: Store) -> str:
        pids = cancel_local(store)
        return f"stopped {len(pids)} local process(es): {' '.join(map(str, pids))}" if pids else ""

    def _guard(self) -> None:
        """Start the reaper that stops our stage jobs if this process is killed outright, and list this run among
        the store's live runs, for `ablate cancel` and for other runs that find its jobs holding a lock."""
        r, w = os.pipe()
        try:
            self._reaper = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).with_name("local_reaper.py")), str(os.getpid())],
                stdin=r,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a kill of our process group or session must not reach it
            )
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        os.set_blocking(w, False)  # a reaper that stopped reading must never stall the sweep
        self._reaper_fd = w
        self._record = register_run(self.store, str(self.spec_path))

    def _unguard(self) -> None:
        """Every stage job has been reaped or stopped: the reaper finds none at the end of file, and exits."""
        if self._record is not None:
            self._record.unlink(missing_ok=True)
            self._record = None
        if self._reaper_fd is not None:
            os.close(self._reaper_fd)
            self._reaper_fd = None
        if self._reaper is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=10)
            self._reaper = None

    def _tell(self, message: dict[str, Any]) -> None:
        """One line to the reaper. Never blocks nor fails the sweep: a reaper gone only loses the guard."""
        if self._reaper_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._reaper_fd, (json.dumps(message) + "\n").encode())

    def _say(self, line: str) -> None:
        """Print a status line. A reader that went away (`ablate run | tee log`, tee killed with the ssh session:
        EPIPE; the terminal itself hung up: EIO) silences the launcher instead of ending it: the sweep goes on, or
        is stopped cleanly, its outcome in the store and exit status."""
        if self._quiet:
            return
        try:
            self.echo(line)
        except OSError as e:
            if e.errno not in _READER_GONE:
                raise
            self._quiet = True
            if self.echo is print:
                _detach_stdout()

    def _env(self, task: Task | None, gpus: list[GpuId], slots: list[int], *, cpu_only: bool) -> dict[str, str]:
        """A child's environment: the GPUs it was given (none for a CPU slot), threads as many as its cores."""
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        elif cpu_only:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU slot: no GPU another task was given, nor any other
        # (A GPU-stage task without GPUs: none was found, so it sees what this process sees, as it always did.)
        if slots and task is not None:
            env = thread_env(env, task, self._cores(slots))
        elif slots:  # a warm evaluation process: whatever it evaluates uses its cores
            env = {**env, **dict.fromkeys(THREAD_VARS, str(len(self._cores(slots))))}
        return env

    def _cores(self, slots: list[int]) -> list[int]:
        return sorted({c for i in slots for c in self._slot_cores[i]})

    def _start(self, task: Task, gpus: list[GpuId], slots: list[int] | None = None) -> None:
        slots = slots or []
        cmd = self.command(task) if self.command else exec_command(task, self.spec_path, self.results_dir)
        cpu_only = job_device(task.stage, task.jobs[0].config) != "gpu" and not uses_gpu_off_slot(task)
        env = self._env(task, gpus, slots, cpu_only=cpu_only)
        log = self.logs[task.id]
        log.parent.mkdir(parents=True, exist_ok=True)
        held = [(key, h) for key in task.keys if (h := self._builder_of(task.stage, key))]
        # A stop signal between the fork and the record would leave the child running unknown to cancel(): it is
        # held until the child is recorded, then raised again.
        got: list[int] = []
        try:
            with _signals_held() as got, log.open("a") as f:
                f.write(f"$ {shell_join(cmd)}{self._on(slots)}\n")
                f.flush()
                proc = subprocess.Popen(
                    pinned(cmd, self._cores(slots)), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, start_new_session=True,
                )  # fmt: skip
                self._running[task.id] = Running(task, proc, gpus, log, time.monotonic(), slots)
                self.states[task.id] = "running"
                grace = TRAIN_STOP_GRACE_S if trains(task.stage, task.jobs[0].config) else STOP_GRACE_S
                self._tell({"start": proc.pid, "ticks": process_start(proc.pid), "grace": grace, "log": str(log)})
        finally:
            if got:
                signal.raise_signal(got[0])
        self._said_start(task, held)

    def _on(self, slots: list[int]) -> str:
        cores = self._cores(slots)
        return f"  (cores {','.join(map(str, cores))})" if cores else ""

    def _said_start(self, task: Task, held: list[tuple[str, str]], worker: EvalWorker | None = None) -> None:
        where = f"; in evaluation process {worker.proc.pid}" if worker is not None else ""
        self._say(
            f"start  {task.id}  ({', '.join(task.jobs[0].cells[:2])}{' ...' if len(task.jobs[0].cells) > 2 else ''}"
            f"{where})"
        )
        for key, h in held:  # it waits for that build to end: never silently
            self._say(f"waiting on {task.stage}/{key} ({h})")

    # ---- warm evaluation processes (framework/exec_worker.py)
    def _start_worker(self, gpus: list[GpuId], slots: list[int]) -> EvalWorker:
        """A new evaluation process holding `gpus` or CPU `slots` for as long as it lives."""
        log = self.store.root / WORKER_LOGS / f"{HOST}.{os.getpid()}.{time.time_ns()}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        read, write = os.pipe()
        try:
            cmd = [*(self.worker_command or [sys.executable, "-m", "framework.exec_worker"]), str(write)]
            got: list[int] = []
            try:
                with _signals_held() as got, log.open("a") as out:
                    out.write(f"$ {shell_join(cmd)}{self._on(slots)}{f'  (GPUs {gpus})' if gpus else ''}\n")
                    out.flush()
                    proc = subprocess.Popen(
                        pinned(cmd, self._cores(slots)), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                        env=self._env(None, gpus, slots, cpu_only=not gpus), start_new_session=True,
                        pass_fds=(write,),
                    )  # fmt: skip
                    worker = EvalWorker(proc, read, gpus, slots, log)
                    self._workers.append(worker)
                    self._tell({"start": proc.pid, "ticks": process_start(proc.pid), "grace": STOP_GRACE_S})
            finally:
                if got:
                    signal.raise_signal(got[0])
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        os.set_blocking(read, False)
        return worker

    def _idle_worker(self, gpus: int, slots: int) -> EvalWorker | None:
        """An idle evaluation process that can run a task now: holding as many GPUs, or pinned to as many CPU slots,
        all free. (An idle CPU worker holds no slot: it sleeps, and another job may use its cores meanwhile.)"""
        assert self._slots_free is not None
        for w in self._workers:
            if w.task is not None or w.retiring is not None or w.proc.poll() is not None:
                continue
            if gpus and len(w.gpus) == gpus:
                return w
            if not gpus and not w.gpus and len(w.slots) == slots and set(w.slots) <= set(self._slots_free):
                return w
        return None

    def _start_on(self, worker: EvalWorker, task: Task) -> None:
        """Hand a task to a warm evaluation process; one that cannot take it (it died) is reaped at the next poll,
        and the task stays pending for another."""
        cmd = exec_command(task, self.spec_path, self.results_dir)
        log = self.logs[task.id]
        log.parent.mkdir(parents=True, exist_ok=True)
        held = [(key, h) for key in task.keys if (h := self._builder_of(task.stage, key))]
        with log.open("a") as f:
            f.write(f"$ {shell_join(cmd)}{self._on(worker.slots)}  (in evaluation process {worker.proc.pid})\n")
        try:
            assert worker.proc.stdin is not None
            worker.proc.stdin.write((json.dumps({"argv": cmd[3:], "log": str(log)}) + "\n").encode())
            worker.proc.stdin.flush()
        except OSError:  # it has died: reaped at the next poll, its GPUs with it; the slots it was given come back
            worker.retiring = time.monotonic()
            if not worker.gpus:
                self._release([], worker.slots)
            return
        worker.task = task.id
        worker.logs.append(log)
        self._running[task.id] = Running(task, worker.proc, worker.gpus, log, time.monotonic(), worker.slots, worker)
        self.states[task.id] = "running"
        # the reaper notes in this job's log why it stopped it, should this process die meanwhile
        self._tell({"start": worker.proc.pid, "ticks": process_start(worker.proc.pid), "grace": STOP_GRACE_S,
                    "log": str(log)})  # fmt: skip
        self._said_start(task, held, worker)

    def _idle(self, worker: EvalWorker) -> None:
        """Its job has ended: the CPU slots it ran on go back (its GPUs it keeps), and a stop of the launcher from
        now on concerns no job's log."""
        worker.task = None
        self._release([], worker.slots)
        if worker.proc.poll() is None:
            self._tell({"start": worker.proc.pid, "ticks": process_start(worker.proc.pid), "grace": STOP_GRACE_S})

    def _reap_workers(self) -> None:
        """Forget the evaluation processes that ended (retired, or died: their task was finished by poll), and free
        what they held; kill one told to exit that has not done so within its grace."""
        for w in self._workers:
            if w.retiring is not None and w.proc.poll() is None and time.monotonic() - w.retiring > STOP_GRACE_S:
                _signal_group(w.proc, signal.SIGKILL)
        for w in [w for w in self._workers if w.proc.poll() is not None and w.task is None]:
            self._workers.remove(w)
            self._ended(w)
            self._release(w.gpus, [])  # its slots were freed when its last task ended

    def _ended(self, worker: EvalWorker) -> None:
        """What is left of an evaluation process that exited: the rest of its process group (an engine's own
        processes) stopped, its pipe closed, the reaper told, and the logs it wrote redacted again (an engine process
        started during one job may have written into that job's log after it ended)."""
        _signal_group(worker.proc, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.close(worker.replies)
        self._tell({"end": worker.proc.pid})
        for log in {*worker.logs, worker.log}:
            redact_log(log)

    def _retire_idle_worker(self, need: int) -> None:
        """Tell an idle evaluation process holding GPUs to exit, when what it holds and what is free together give
        a waiting task the `need` GPUs it waits for; one at a time, so that a few blocked tasks do not empty the pool."""
        if any(w.retiring is not None and w.gpus for w in self._workers):
            return  # the GPUs it frees come back when it has exited
        idle = [w for w in self._workers if w.task is None and w.retiring is None and w.gpus]
        if idle and len(self._gpus_free) + sum(len(w.gpus) for w in idle) >= need:
            self._retire(idle[0])

    def _retire(self, worker: EvalWorker) -> None:
        worker.retiring = time.monotonic()
        with contextlib.suppress(OSError):
            assert worker.proc.stdin is not None
            worker.proc.stdin.close()

    def _close_workers(self) -> None:
        """At the end of a wait: every evaluation process is told to exit (end of its input) and waited for; one that
        does not exit in time is killed."""
        for w in self._workers:
            self._retire(w)
        deadline = time.monotonic() + STOP_GRACE_S
        for w in self._workers:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(w.proc, signal.SIGKILL)
                w.proc.wait()
            self._ended(w)
            self._gpus_free.extend(w.gpus)
        self._workers.clear()

    def _builder_of(self, stage: str, key: str) -> str:
        """Who builds (stage, key) now, if anyone: a job of this host's (and of which run), or one elsewhere."""
        if (h := lock_holder(self.store, stage, key)) is not None:
            return h.describe()
        status = self.store.status(stage, key)
        return status.detail if status.state == "running" else ""

    def _finish(self, r: Running, rc: int) -> None:
        redact_log(r.log)  # before its tail is shown: an error may quote a URL with its password
        done = all(self.store.is_done(r.task.stage, k) for k in r.task.keys)
        took = time.monotonic() - r.started
        if done:
            self.states[r.task.id] = "done"
            note = f" (exit {rc} after its outputs were complete)" if rc else ""
            self._say(f"done   {r.task.id}  {took:.0f}s{note}")
        elif rc == RetryLater.exit_code:
            self.states[r.task.id] = "deferred"
            self.reasons[r.task.id] = f"retry later; log: {r.log}"
            self._say(f"defer  {r.task.id}  (retry later; log: {r.log})")
        else:
            self.states[r.task.id] = "failed"
            self.reasons[r.task.id] = f"exit {rc}; log: {r.log}"
            self._say(f"FAILED {r.task.id}  exit {rc}  log: {r.log}")
            for line in log_tail(r.log, 5):
                self._say(f"       | {line}")

    def _skip_blocked(self) -> None:
        changed = True
        while changed:
            changed = False
            for task in self._tasks:
                if self.states[task.id] == "pending":
                    bad = [d for d in task.deps if self.states[d] in ("failed", "skipped", "cancelled", "deferred")]
                    if bad:
                        self.states[task.id] = "skipped"
                        self.reasons[task.id] = f"dependency {bad[0]} did not finish"
                        changed = True


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise Terminated (as SIGINT raises KeyboardInterrupt); the previous
    handlers are restored on the way out. Handlers can only be set from the main thread: elsewhere, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    # A signal ignored by whoever started us stays ignored: `nohup ablate run ... &` must outlive the ssh session.
    previous = {
        sig: signal.signal(sig, raise_terminated) for sig in STOP_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """While inside, SIGINT, SIGTERM and SIGHUP are only noted, in the list yielded: for a section that a signal
    must not cut short. Ignored ones stay ignored; the previous handlers are restored on the way out. Outside the
    main thread (no handlers can be set there, and signals go to the main thread anyway) the list stays empty."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def note(signum: int, frame: Any) -> None:
        got.append(signum)

    previous: dict[int, Any] = {}
    try:
        for sig in HELD_SIGNALS:
            handler = signal.getsignal(sig)
            if handler is not None and handler != signal.SIG_IGN:  # None: set outside Python, cannot be restored
                previous[sig] = signal.signal(sig, note)
        yield got
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _detach_stdout() -> None:
    """Point a stdout whose reader is gone at /dev/null: any later output (the CLI's summary) and the interpreter's
    final flush would fail on it again, and the CLI takes a broken pipe for a success (exit 0)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# ---- live runs and the stage jobs they started, for `ablate cancel` and for a run that finds a lock held
# (the records are read by framework/sweep/live_runs.py, which `ablate clean` uses too)
def register_run(store: Store, spec_path: str) -> Path:
    """Record this process as a live local run of the store's sweep; the caller removes the record at its end (a
    record left by a killed run names a dead pid, which readers skip)."""
    path = store.root / RUNS_DIR / f"{HOST}.{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{HOST}.*.json"):  # left by killed runs
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            rec = json.loads(old.read_text())
            if not _alive(int(rec["pid"]), rec.get("pid_start")):
                old.unlink(missing_ok=True)
    record = {"pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": HOST, "spec": spec_path}
    write_json_atomic(path, {**record, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return path


@dataclass
class Holder:
    """A live process on this host that holds a stage's build lock, and the run that started it."""

    stage: str
    key: str
    pid: int
    started: str
    run: int | None  # pid of the live local run whose job it is; None: that run is gone, or it was run by hand
    leader: bool  # it leads its own process group (as the local launcher starts stage jobs)
    own_session: bool  # it leads its own session, as only the local launcher starts a stage job

    @property
    def orphan(self) -> bool:
        """A stage job whose run is gone. A process in a terminal's session (`ablate plan` building the data, an
        `ablate exec` run by hand) is the user's own, never an orphan to stop."""
        return self.run is None and self.own_session

    def describe(self) -> str:
        if self.run:
            by = f"a run still going (pid {self.run})"
        else:
            by = "an earlier run" if self.own_session else "a command outside any run"
        return f"pid {self.pid}, started by {by} at {self.started}"


def _holder(store: Store, stage: str, key: str, lock: Path, runs: dict[int, dict[str, Any]]) -> Holder | None:
    try:
        owner = json.loads(lock.read_text())
        pid, start = int(owner["pid"]), owner.get("pid_start")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if owner.get("host") != HOST or not _alive(pid, start):
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        parent, group, session = int(fields[1]), int(fields[2]), int(fields[3])
    except (OSError, IndexError, ValueError):
        parent, group, session = 0, 0, 0
    run = parent if parent in runs else None
    return Holder(stage, key, pid, str(owner.get("started", "?")), run, group == pid, session == pid)


def lock_holder(store: Store, stage: str, key: str) -> Holder | None:
    """Who on this host holds (stage, key)'s build lock, if a live process does."""
    return _holder(store, stage, key, store.path(stage, key).with_name(f"{key}.lock"), live_runs(store))


def live_holders(store: Store) -> list[Holder]:
    """Every live process on this host holding a build lock of the store, whatever plan its keys came from."""
    runs = live_runs(store)
    found = []
    for lock in sorted(store.root.glob("*/*.lock")):
        stage, key = lock.parent.name, lock.name[: -len(".lock")]
        if stage.startswith("."):  # the store's own locks (.locks/: a log stage electing the sweep's run)
            continue
        if (h := _holder(store, stage, key, lock, runs)) is not None:
            found.append(h)
    return found


def running_detail(store: Store, stage: str, key: str, detail: str) -> str:
    """What `ablate status` says of a build in progress: on this host, whose job it is (a run still going, or an
    earlier one that is gone, which `ablate cancel` stops); elsewhere, the lock's own description."""
    h = lock_holder(store, stage, key)
    if h is None:
        return detail
    return h.describe() + ("; its run is gone: `ablate cancel` stops it" if h.orphan else "")


def cancel_local(store: Store, echo: Any = print, poll_s: float = 0.2) -> list[int]:
    """`ablate cancel` on this host: TERM every live local run of the sweep (each stops its stage jobs as on
    Ctrl-C) and every stage job whose run is gone (its whole process group), then wait for all of them; KILL
    what outlives its grace (a training's is long: it writes its checkpoint). Returns the pids signalled."""
    runs = live_runs(store)
    holders = live_holders(store)
    orphans = [h for h in holders if h.orphan]
    for h in holders:
        if h.run is None and not h.orphan:
            echo(f"not stopping {h.stage}/{h.key}: {h.describe()} (stop it where it runs)")
    targets: dict[int, tuple[str, float]] = {pid: (f"run pid {pid}", TRAIN_STOP_GRACE_S + 60) for pid in runs}
    for h in orphans:
        grace = TRAIN_STOP_GRACE_S if h.stage in ("train", "search") else STOP_GRACE_S
        targets[h.pid] = (f"{h.stage}/{h.key} (pid {h.pid}, started by an earlier run at {h.started})", grace)
    groups = {h.pid for h in orphans if h.leader}  # a job the launcher started: its whole group (torchrun, vLLM)

    def kill(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if pid in groups else os.kill)(pid, sig)

    for pid, (what, _) in targets.items():
        echo(f"stopping {what}")
        kill(pid, signal.SIGTERM)
    t0, left = time.monotonic(), dict(targets)
    if any(grace > STOP_GRACE_S for _, grace in left.values()):
        echo("waiting for them to stop (a training writes its checkpoint first)")
    while left:
        left = {p: t for p, t in left.items() if (group_alive(p) if p in groups else _alive(p, None))}
        for pid in [p for p, (_, grace) in left.items() if time.monotonic() - t0 >= grace]:
            kill(pid, signal.SIGKILL)
            del left[pid]
        time.sleep(poll_s)
    return sorted(targets)


if __name__ == "__main__":  # pragma: no cover - use `ablate run`
    sys.exit("use: ablate run SPEC")
