"""What TERM and USR1 mean while a model trains: a checkpointed stop when the job is being stopped, death otherwise.

Slurm preempts a job, or warns of its time limit, by signalling its processes; each training process should then
finish the step, write a checkpoint and stop, so that the rerun resumes there. The stage process takes the signal
and writes STOP_FILE, which the workers' callback turns into that stop at the next step end (`stop_requests`).

A worker gets TERM in two other cases that must not wait for a step end: torchrun tears the job down after a peer
failed (the survivors sit in a collective with a dead rank, and a step never ends), or the stage itself is being
interrupted. Neither writes STOP_FILE. So a worker's signal asks for the stop only when the training loop runs and
STOP_FILE appears within `STOP_FILE_WAIT_S` (the stage signalled at the same moment); otherwise the worker exits at
once, as it would without a handler (`worker_signals`). A thread woken through Python's signal wake-up fd decides,
because the main thread may be blocked in a collective where no Python handler runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
STOP_FILE_WAIT_S = 5.0


@contextlib.contextmanager
def stop_requests(stop_file: Path, signals: Sequence[int] = STOP_SIGNALS) -> Iterator[list[str]]:
    """The stage: while inside, USR1 or TERM does not kill this process but writes `stop_file`, which the workers
    turn into a checkpoint and a clean stop at the next step end. Yields the names of the signals received."""
    received: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop_file.touch()

    try:
        previous = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def worker_signals(
    stop_file: Path,
    training: threading.Event,
    signals: Sequence[int] = STOP_SIGNALS,
    wait_s: float = STOP_FILE_WAIT_S,
) -> Iterator[None]:
    """A training process: while inside, USR1 or TERM is a stop request if the stage asked for a stop too and
    `training` is set (the loop runs, so a step end will come); otherwise the process dies of the signal at once."""
    wanted = {int(s) for s in signals}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def watch() -> None:
        while data := os.read(read_fd, 64):
            for signum in data:
                if signum in wanted and not _stop_asked(stop_file, training, wait_s):
                    os._exit(128 + signum)  # the shell's code for death by that signal; no cleanup, as with none

    previous = {s: signal.signal(s, lambda signum, frame: None) for s in signals}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="stop-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for s, h in previous.items():
            signal.signal(s, h)
        os.close(write_fd)  # ends the watcher's read
        watcher.join(timeout=wait_s + 1)
        os.close(read_fd)


def _stop_asked(stop_file: Path, training: threading.Event, wait_s: float) -> bool:
    if not training.is_set():
        return False  # before the loop no step end is near: whatever the stage asked, go now
    deadline = time.monotonic() + wait_s
    while not stop_file.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
