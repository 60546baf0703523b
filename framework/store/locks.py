"""Build locks for the stage store that work across hosts: O_EXCL lock files kept fresh by a heartbeat.

On this host a holder is judged by its process (alive or not); on another host only by its heartbeat's age,
measured on the file system's clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("framework.store")

HOST = socket.gethostname()
# A lock file with unparsable content is a holder that died between create and write, or one that is in
# that window right now; give the latter this long before breaking its lock.
_CORRUPT_GRACE_S = 5.0
BREAK_TURN_S = 30.0  # a breaker's turn (see Lock._break) older than this was left by a process that died in it


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _pid_alive(pid: int, start: str | None = None) -> bool:
    """The process exists and, where its start time was recorded, is the same process (pids are reused)."""
    if pid <= 0:  # os.kill(0, ...) would address our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return start is None or _process_start(pid) in (None, start)


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name may contain spaces and ')'


class LockLost(Exception):
    """The build's lock was taken over (its holder looked dead from another host); its output is not published."""


class LockBusy(Exception):
    """The stage is being built by a live process."""


@dataclass
class _Snapshot:
    """One consistent read of a lock file; ``ident`` tells whether a later read saw the same file."""

    owner: dict[str, Any] | None  # None when the content is empty or corrupt
    mtime: float
    ident: tuple[Any, ...]

    def describe(self) -> str:
        if self.owner is None:
            return "a lock file still being written"
        return f"pid {self.owner['pid']} on {self.owner['host']} since {self.owner.get('started', '?')}"


def read_lock(path: Path) -> _Snapshot | None:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(raw)
    except ValueError:
        owner = None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) or "host" not in owner:
        owner = None
    return _Snapshot(owner, st.st_mtime, (st.st_dev, st.st_ino, st.st_mtime_ns, raw))


def fs_now(root: Path) -> float:
    """The file system's clock: the mtime of a file touched now. On shared storage the server stamps both this
    and every heartbeat, so a lock's age does not depend on how far this host's clock is from the holder's."""
    probe = root / ".clock"
    try:
        with open(probe, "a"):
            pass
        os.utime(probe)
        return os.stat(probe).st_mtime
    except OSError:  # a read-only store: this host's clock is all there is
        return time.time()


def is_stale(path: Path, snap: _Snapshot, stale_after_s: float) -> bool:
    """On this host the holder's process decides (a stopped or suspended builder is alive, and keeps its lock
    however old its heartbeat); on another host only the heartbeat can: dead process, dead host or lost mount."""
    if snap.owner is not None and snap.owner["host"] == HOST:
        return not _pid_alive(snap.owner["pid"], snap.owner.get("pid_start"))
    age = fs_now(path.parent.parent) - snap.mtime
    return age > (stale_after_s if snap.owner is not None else min(_CORRUPT_GRACE_S, stale_after_s))


class Lock:
    """An O_EXCL lock file kept fresh by a heartbeat thread, so holders on other hosts are judged by age."""

    def __init__(self, path: Path, heartbeat_s: float, stale_after_s: float) -> None:
        self.path = path
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Take the lock, breaking a stale one; return None on success, else a description of the holder."""
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                snap = read_lock(self.path)
                if snap is None:
                    continue  # released between our open and read
                if not is_stale(self.path, snap, self.stale_after_s):
                    return snap.describe()
                if not self._break(snap):
                    return f"{snap.describe()} (its lock is being taken over by another process)"
                continue
            with os.fdopen(fd, "w") as f:
                owner = {"host": HOST, "pid": os.getpid(), "pid_start": _process_start(os.getpid())}
                json.dump({**owner, "started": now_iso(), "token": self.token}, f)
                f.flush()
                os.fsync(f.fileno())
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
            self._thread.start()
            return None

    def _break(self, snap: _Snapshot) -> bool:
        """Remove a stale lock without a check-then-delete race; False if another process is doing so.

        Breakers take turns (an O_EXCL ``<lock>.break`` file), and in its turn each reads the lock again and
        removes it only if it is still the very file it judged stale: a lock someone took in the meantime is
        never removed.
        """
        turn = self.path.with_name(f"{self.path.name}.break")
        try:
            os.close(os.open(turn, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):  # a breaker that died in its turn left it
                if fs_now(self.path.parent.parent) - os.stat(turn).st_mtime > BREAK_TURN_S:
                    turn.unlink()
                    return True
            return False
        try:
            now = read_lock(self.path)
            if now is not None and now.ident == snap.ident:
                self.path.unlink()
                log.info("took over stale lock %s held by %s", self.path, snap.describe())
        finally:
            turn.unlink(missing_ok=True)
        return True

    def _beat(self) -> None:
        """Refresh the lock's mtime until released. A transient error (ESTALE, EIO on a flaky mount) skips one
        beat but never ends the thread: a silent heartbeat lets another host take over a live build."""
        failing = False
        while not self._stop.wait(self.heartbeat_s):
            try:
                snap = read_lock(self.path)
                if snap is None:
                    continue  # removed by a breaker that judged us dead: `held` says so before publishing
                if snap.owner is None or snap.owner.get("token") != self.token:
                    log.warning("lost lock %s to %s", self.path, snap.describe())
                    return
                os.utime(self.path)
            except OSError as exc:
                if not failing:  # once per run of failures, not once per beat
                    log.warning("heartbeat of %s failed (%s); still beating", self.path, exc)
                failing = True
                continue
            if failing:
                log.info("heartbeat of %s recovered", self.path)
                failing = False

    def held(self, settle_s: float = 1.0) -> bool:
        """Whether the lock file is still ours (a holder on another host may have judged us dead). A missing file
        is looked at again for `settle_s`, for file systems whose directory listings lag behind a rename."""
        deadline = time.monotonic() + settle_s
        while (snap := read_lock(self.path)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return snap is not None and snap.owner is not None and snap.owner.get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        snap = read_lock(self.path)
        if snap is not None and snap.owner is not None and snap.owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)
