"""What TERM and USR1 do to the stage and to its workers (the end-to-end stop and resume is in test_train.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from framework.train.stop_signals import stop_requests

REPO = Path(__file__).resolve().parents[3]


def test_usr1_and_term_ask_for_a_stop_instead_of_killing(tmp_path):
    stop = tmp_path / "STOP"
    before = signal.getsignal(signal.SIGTERM)
    with stop_requests(stop) as received:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.exists()
    assert received == ["SIGUSR1", "SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored once the workers are done


WORKER = """
import sys, threading, time
from pathlib import Path
from framework.train.stop_signals import worker_signals
stop, training = Path(sys.argv[1]), threading.Event()
if sys.argv[2] == "training":
    training.set()
with worker_signals(stop, training, wait_s=float(sys.argv[4])):
    print("ready", flush=True)
    time.sleep(float(sys.argv[3]))
print("finished", flush=True)
"""


def _signalled_worker(tmp_path: Path, *, stop_file: bool, phase: str, wait_s: float = 1.0) -> tuple[int, str, float]:
    stop = tmp_path / "STOP"
    if stop_file:
        stop.touch()
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(stop), phase, "4", str(wait_s)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out, time.monotonic() - t0


def test_a_worker_signalled_without_the_stages_stop_file_exits_at_once(tmp_path: Path) -> None:
    """torchrun ending the job (a peer failed): no STOP file, so no waiting for a step end that may never come."""
    rc, out, took = _signalled_worker(tmp_path, stop_file=False, phase="training")
    assert rc == 128 + signal.SIGTERM and "finished" not in out
    assert took < 3.5  # the 1 s wait for the file, not the 4 s the main thread was still to sleep


def test_a_worker_signalled_with_the_stop_file_carries_on_to_its_checkpoint(tmp_path: Path) -> None:
    rc, out, _ = _signalled_worker(tmp_path, stop_file=True, phase="training")
    assert rc == 0 and "finished" in out


def test_a_worker_signalled_before_its_training_loop_exits_even_with_the_stop_file(tmp_path: Path) -> None:
    """Before the loop (loading, a build, the rendezvous) no step end is near, and nothing is lost by going."""
    rc, out, _ = _signalled_worker(tmp_path, stop_file=True, phase="setup")
    assert rc == 128 + signal.SIGTERM and "finished" not in out


def test_a_worker_signalled_before_its_training_loop_does_not_wait_for_the_stop_file(tmp_path: Path) -> None:
    """A 32B model loads for minutes: a TERM then ends the worker now, not after the wait for the stage's file."""
    rc, out, took = _signalled_worker(tmp_path, stop_file=False, phase="setup", wait_s=10.0)
    assert rc == 128 + signal.SIGTERM and "finished" not in out
    assert took < 3.0  # the main thread had 4 s left to sleep, and the file wait was 10 s
