"""The local launcher when its surroundings fail: a SIGTERM/SIGHUP to it, a reader of its output gone, an error in
its own loop (none may leave stage processes running, or end the sweep as if it had succeeded); and which GPUs a
task sees (GPU UUIDs, MIG listings, CPU tasks)."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import launchers.local as local
from framework.sweep.plan import Job
from launchers.base import Task
from launchers.local import Terminated, uses_gpu_off_slot, visible_gpus
from tests.unit.launchers.fakes import SLEEP, alive, kill_all, make, pids, start_launcher, wait_for_stage

PUBLISH = (
    "import sys; from framework.store import Store\n"
    "if sys.argv[3] == 'log' and sys.argv[1] == 'fail-log': sys.exit(3)\n"
    "for k in sys.argv[4].split(','):\n"
    "    with Store(sys.argv[2]).build(sys.argv[3], k): pass\n"
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_the_launcher_stops_its_stage_processes(tmp_path, sig):
    """Stage processes run in their own sessions: killed with the launcher alone, they would hold the GPUs."""
    proc = start_launcher(tmp_path, SLEEP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pids(tmp_path / "pids"):
            assert time.monotonic() < deadline and proc.poll() is None, "no stage process started"
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) != 0
        children = pids(tmp_path / "pids")
        assert children and not [p for p in children if alive(p)]
        assert set(json.loads((tmp_path / "states.json").read_text()).values()) == {"cancelled"}
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in pids(tmp_path / "pids"):
            if alive(p):
                os.kill(p, signal.SIGKILL)


def assert_stopped_cleanly(tmp_path: Path, proc: subprocess.Popen) -> None:
    """The launcher ended unsuccessfully, with no stage process left behind and every task cancelled."""
    assert proc.wait(timeout=60) != 0
    children = pids(tmp_path / "pids")
    assert children and not [p for p in children if alive(p)]
    assert set(json.loads((tmp_path / "states.json").read_text()).values()) == {"cancelled"}


def test_a_launcher_started_under_nohup_outlives_the_hangup(tmp_path):
    """`nohup ablate run SPEC &`, then the ssh session closes: SIGHUP, ignored by nohup, must stay ignored (the
    sweep goes on); SIGTERM still stops it cleanly."""
    proc = start_launcher(
        tmp_path,
        SLEEP,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # what nohup does before exec
    )
    try:
        children = wait_for_stage(tmp_path, proc)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)  # the launcher polls every 0.05 s: it would have stopped by now
        assert proc.poll() is None and all(alive(p) for p in children)
        proc.send_signal(signal.SIGTERM)
        assert_stopped_cleanly(tmp_path, proc)
    finally:
        kill_all(tmp_path, proc)


def test_a_terminal_hung_up_stops_the_stage_processes_all_the_same(tmp_path):
    """The terminal the launcher prints to is gone (ssh closed without nohup): SIGHUP comes, and every write to
    the terminal now fails with EIO, the message that the launcher is stopping included. It must stop the stage
    processes anyway."""
    master, slave = os.openpty()
    proc = start_launcher(tmp_path, SLEEP, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    try:
        wait_for_stage(tmp_path, proc)
        assert select.select([master], [], [], 30)[0] and b"start" in os.read(master, 4096)
        os.close(master)  # hang up: writes to the terminal fail with EIO from now on
        master = -1
        proc.send_signal(signal.SIGHUP)
        assert_stopped_cleanly(tmp_path, proc)
    finally:
        if master >= 0:
            os.close(master)
        kill_all(tmp_path, proc)


def test_a_reader_gone_from_its_stdout_does_not_end_the_sweep(tmp_path):
    """`ablate run SPEC | tee log`, and tee dies with the ssh session: the launcher goes on, silently, to the end,
    and a failed task still makes the exit status 1 (not the 0 a broken pipe maps to)."""
    proc = start_launcher(tmp_path, PUBLISH, "fail-log", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # the reader is gone: the next line printed breaks the pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    states = json.loads((tmp_path / "states.json").read_text())
    assert {s for t, s in states.items() if not t.startswith("log/")} == {"done"}
    assert {s for t, s in states.items() if t.startswith("log/")} == {"failed"}
    assert "BrokenPipeError" not in err


@pytest.mark.parametrize("code", [errno.EPIPE, errno.EIO])  # a pipe without reader; a terminal hung up
def test_a_reader_gone_in_the_echo_is_survived_and_signal_handlers_are_restored(minimal, tmp_path, code):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    _, _, _, launcher, _ = make(minimal, tmp_path)

    def echo(line: str) -> None:
        raise OSError(code, os.strerror(code))

    launcher.echo = echo
    assert set(launcher.wait(poll_s=0.01).values()) == {"done"}
    assert {s: signal.getsignal(s) for s in before} == before


def test_any_error_in_the_wait_stops_the_running_stage_processes(minimal, tmp_path):
    _, _, _, launcher, _ = make(minimal, tmp_path)
    launcher.command = lambda task: [sys.executable, "-c", "import time; time.sleep(120)"]
    procs = spy_on_procs(launcher)

    def echo(line: str) -> None:  # fails again on the line saying it stops: cancel() must run all the same
        if line.startswith("start") or "stopping" in line:
            raise RuntimeError("the launcher's own bug")

    launcher.echo = echo
    try:
        with pytest.raises(RuntimeError, match="own bug"):
            launcher.wait(poll_s=0.01)
        assert procs and all(p.poll() is not None for p in procs)
        assert not launcher._running and "pending" not in launcher.states.values()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def spy_on_procs(launcher) -> list[subprocess.Popen]:
    procs: list[subprocess.Popen] = []
    start = launcher._start

    def spy(task, gpus, cpu_slots=0):
        try:
            start(task, gpus, cpu_slots)
        finally:
            procs.extend(r.proc for r in launcher._running.values() if r.proc not in procs)

    launcher._start = spy
    return procs


def test_a_signal_right_after_the_fork_does_not_orphan_the_child(minimal, tmp_path, monkeypatch):
    """SIGTERM between Popen and the child's record in _start: held until the child is recorded, so cancel()
    stops it too."""
    _, _, _, launcher, _ = make(minimal, tmp_path)
    launcher.command = lambda task: [sys.executable, "-c", "import time; time.sleep(120)"]
    forked: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def popen_then_signal(*args, **kwargs):
        proc = popen(*args, **kwargs)
        if "local_reaper.py" in str(args[0]):  # the launcher's reaper, not a stage job
            return proc
        forked.append(proc)
        if len(forked) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs here, before Popen has returned, unless the signal is held
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen_then_signal)
    try:
        with pytest.raises(Terminated):
            launcher.wait(poll_s=0.01)
        assert forked and all(p.poll() is not None for p in forked)
        assert set(launcher.states.values()) == {"cancelled"}
    finally:
        for p in forked:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_second_signal_while_cancelling_kills_at_once_and_spares_no_child(minimal, tmp_path, monkeypatch):
    """SIGTERM, then SIGTERM again while cancel() is stopping the children (here: as it sends them TERM, which they
    ignore): the second one means "kill now", and must not escape before the children are killed."""
    monkeypatch.setattr(local, "STOP_GRACE_S", 30.0)
    _, _, _, launcher, _ = make(minimal, tmp_path)
    ready = tmp_path / "ready"
    launcher.command = lambda task: ["sh", "-c", f"trap '' TERM; touch {ready}; exec sleep 120"]
    procs = spy_on_procs(launcher)
    signal_group = local._signal_group

    def term_then_signal_again(proc, sig):
        signal_group(proc, sig)
        if sig == signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs here unless the signal is held

    def first_signal() -> None:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(local, "_signal_group", term_then_signal_again)
    killer = threading.Thread(target=first_signal)
    killer.start()
    try:
        started = time.monotonic()
        with pytest.raises(Terminated):
            launcher.wait(poll_s=0.01)
        assert time.monotonic() - started < 20  # killed at once, not after the grace period
        assert procs and all(p.poll() is not None for p in procs)
        assert not launcher._running and set(launcher.states.values()) == {"cancelled"}
    finally:
        killer.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


# ------------------------------------------------------------------------------------------------------ GPUs
def test_visible_gpus_keeps_uuids_and_reads_gpu_indices_past_mig_lines(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1c3e2f,GPU-77fe0b1d")
    assert visible_gpus("auto") == ["GPU-8a1c3e2f", "GPU-77fe0b1d"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert visible_gpus("auto") == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,0")  # CUDA stops at the first invalid entry
    assert visible_gpus("auto") == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus("auto") == []
    for no_gpu in ("NoDevFiles", "none", "all", "void"):  # what schedulers and containers set: no GPU at all
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", no_gpu)
        assert visible_gpus("auto") == [], no_gpu
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,GPU-8a1c3e2f,MIG-0b7d/1/0,NoDevFiles,3")
    assert visible_gpus("auto") == [0, "GPU-8a1c3e2f", "MIG-0b7d/1/0"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(
        "#!/bin/sh\ncat <<'EOF'\n"
        "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-8a1c3e2f)\n"
        "  MIG 3g.40gb     Device  0: (UUID: MIG-0b7d)\n"
        "  MIG 3g.40gb     Device  1: (UUID: MIG-4e21)\n"
        "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-77fe0b1d)\n"
        "EOF\n"
    )
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert visible_gpus("auto") == [0, 1]
    assert visible_gpus([3, 5]) == [3, 5]


def devices_seen_by_stage(minimal, tmp_path) -> dict[str, set[str]]:
    """Run the sweep with stand-in stages that record the CUDA_VISIBLE_DEVICES each was given, by stage."""
    _, _, _, launcher, _ = make(minimal, tmp_path)
    seen = tmp_path / "seen"
    body = (
        "import os, sys\n"
        "open(sys.argv[5], 'a').write(sys.argv[3] + ' ' + repr(os.environ.get('CUDA_VISIBLE_DEVICES')) + '\\n')\n"
    )
    launcher.command = lambda t: [
        sys.executable, "-c", body + PUBLISH, "-", str(launcher.store.root), t.stage, ",".join(t.keys), str(seen)
    ]  # fmt: skip
    assert set(launcher.wait(poll_s=0.01).values()) == {"done"}
    by_stage: dict[str, set[str]] = {}
    for line in seen.read_text().splitlines():
        stage, value = line.split(" ", 1)
        by_stage.setdefault(stage, set()).add(value)
    return by_stage


def test_cpu_tasks_see_no_gpu_and_gpu_tasks_only_theirs(minimal, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    minimal["launcher"] = {"kind": "local", "local": {"gpus": [0, 1]}}
    by_stage = devices_seen_by_stage(minimal, tmp_path)
    assert {",".join(sorted(v.strip("'").split(","))) for v in by_stage["train"]} == {"0,1"}
    assert by_stage["eval"] <= {"'0'", "'1'"}
    for stage in ("model", "pool", "data", "log"):
        assert by_stage[stage] == {"''"}, stage


def test_without_gpus_found_gpu_tasks_keep_the_environment_and_cpu_tasks_see_none(minimal, tmp_path, monkeypatch):
    """No GPU found (NoDevFiles from a scheduler): a training or evaluation still sees the environment it always
    did, rather than CUDA_VISIBLE_DEVICES="" forcing it off any GPU; the CPU stages see none."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "NoDevFiles")
    by_stage = devices_seen_by_stage(minimal, tmp_path)
    assert by_stage["train"] == by_stage["eval"] == {"'NoDevFiles'"}
    for stage in ("model", "pool", "data", "log"):
        assert by_stage[stage] == {"''"}, stage


def test_a_pool_embedding_topics_with_a_model_keeps_the_gpus_it_sees():
    def pool(annotate: dict) -> Task:
        return Task("pool", [Job("pool", "k", [], {"annotate": annotate}, ["c"])])

    assert uses_gpu_off_slot(pool({"topics": "cluster", "topic_clusters": {"embedder": "BAAI/bge-small-en"}}))
    assert not uses_gpu_off_slot(pool({"topics": "cluster", "topic_clusters": {"embedder": "tfidf"}}))
    assert not uses_gpu_off_slot(pool({"topics": "given", "topic_clusters": {"embedder": "BAAI/bge-small-en"}}))
    assert not uses_gpu_off_slot(Task("data", [Job("data", "k", [], {}, ["c"])]))
