"""Content-addressed stage outputs that survive crashes, and locks that work across hosts.

Layout of one stage run under ``<root>/<stage>/``:

* ``<key>.work/``      build directory; a stable name, so a long stage can resume from its checkpoints
* ``<key>/``           published output, renamed from the work dir in one step
* ``<key>/SUCCESS``    written (with every file fsynced) in the work dir just before the rename; done iff it exists
* ``<key>.lock``       JSON ``{host, pid, started, token}``, O_EXCL-created, mtime refreshed by a heartbeat
* ``<key>.failed.json`` the last failure; removed by the next success
* ``<key>.log``        reserved for launchers
* ``<root>/.clock``    touched to read the file system's clock, against which heartbeats are aged
* ``<root>/.store-id`` a random id made once, by which tracking tells apart sweeps of the same name

A process killed at any moment leaves either an unmarked work dir (redone), a marked one (published by the next
run), or the published output.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import platform
import re
import shutil
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framework.errors import RetryLater

__all__ = ["MARKER", "Build", "LockBusy", "StageStatus", "Store", "write_json_atomic"]

log = logging.getLogger(__name__)

MARKER = "SUCCESS"
HOST = socket.gethostname()
# A lock file with unparsable content is a holder that died between create and write, or one that is in
# that window right now; give the latter this long before breaking its lock.
_CORRUPT_GRACE_S = 5.0
_BREAK_TURN_S = 30.0  # a breaker's turn (see _Lock._break) older than this was left by a process that died in it
# Test hook: widens the window between marking a complete work dir and renaming it into place, so the crash
# tests can kill a build inside it. Value in seconds.
_PAUSE_ENV = "ABLATE_STORE_TEST_PAUSE_BEFORE_RENAME"
# No dots: the suffixes (.work, .lock, ...) must be unambiguous when scanning a stage directory.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON so readers see the old file or the complete new one, never a prefix (even after a crash).

    Values JSON cannot encode (paths, dates) are written as their ``str()``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Persist a rename. Some filesystems refuse directory fsync; that only weakens power-loss durability."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Every file and directory under root on disk, so that a marker never outlives the data it vouches for."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(dirpath))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers often run as a uid without a passwd entry
        return str(os.getuid())


def _origin() -> dict[str, Any]:
    """Who ran something and where: for manifests and failure records."""
    return {"host": HOST, "pid": os.getpid(), "user": _user(), "python": platform.python_version()}


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
class StageStatus:
    state: str  # "done" | "running" | "failed" | "deferred" (retried by the next run) | "pending"
    detail: str = ""
    path: Path | None = None  # done: output dir; running: work dir; failed: the failure record


@dataclass
class Build:
    """What a build body gets: the directory to write into and the manifest it may extend."""

    dir: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False  # True when a previous attempt's work dir was kept (resume=True)


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


def _read_lock(path: Path) -> _Snapshot | None:
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


def _fs_now(root: Path) -> float:
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


def _is_stale(path: Path, snap: _Snapshot, stale_after_s: float) -> bool:
    """On this host the holder's process decides (a stopped or suspended builder is alive, and keeps its lock
    however old its heartbeat); on another host only the heartbeat can: dead process, dead host or lost mount."""
    if snap.owner is not None and snap.owner["host"] == HOST:
        return not _pid_alive(snap.owner["pid"], snap.owner.get("pid_start"))
    age = _fs_now(path.parent.parent) - snap.mtime
    return age > (stale_after_s if snap.owner is not None else min(_CORRUPT_GRACE_S, stale_after_s))


class _Lock:
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
                snap = _read_lock(self.path)
                if snap is None:
                    continue  # released between our open and read
                if not _is_stale(self.path, snap, self.stale_after_s):
                    return snap.describe()
                if not self._break(snap):
                    return f"{snap.describe()} (its lock is being taken over by another process)"
                continue
            with os.fdopen(fd, "w") as f:
                owner = {"host": HOST, "pid": os.getpid(), "pid_start": _process_start(os.getpid())}
                json.dump({**owner, "started": _now(), "token": self.token}, f)
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
                if _fs_now(self.path.parent.parent) - os.stat(turn).st_mtime > _BREAK_TURN_S:
                    turn.unlink()
                    return True
            return False
        try:
            now = _read_lock(self.path)
            if now is not None and now.ident == snap.ident:
                self.path.unlink()
                log.info("took over stale lock %s held by %s", self.path, snap.describe())
        finally:
            turn.unlink(missing_ok=True)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            snap = _read_lock(self.path)
            if snap is None:
                continue  # removed by a breaker that judged us dead: `held` says so before publishing
            if snap.owner is None or snap.owner.get("token") != self.token:
                log.warning("lost lock %s to %s", self.path, snap.describe())
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def held(self, settle_s: float = 1.0) -> bool:
        """Whether the lock file is still ours (a holder on another host may have judged us dead). A missing file
        is looked at again for `settle_s`, for file systems whose directory listings lag behind a rename."""
        deadline = time.monotonic() + settle_s
        while (snap := _read_lock(self.path)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return snap is not None and snap.owner is not None and snap.owner.get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        snap = _read_lock(self.path)
        if snap is not None and snap.owner is not None and snap.owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)


class Store:
    """Stage outputs under ``root``, addressed by (stage, key), each built at most once at a time."""

    def __init__(
        self, root: str | os.PathLike[str], *, heartbeat_s: float = 30.0, stale_after_s: float = 300.0
    ) -> None:
        if not 0 < heartbeat_s < stale_after_s:
            raise ValueError(f"need 0 < heartbeat_s < stale_after_s, got {heartbeat_s} and {stale_after_s}")
        self.root = Path(root)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s

    def _entry(self, stage: str, key: str, suffix: str) -> Path:
        for name in (stage, key):
            if not _NAME.fullmatch(name):
                raise ValueError(f"invalid stage or key name: {name!r}")
        return self.root / stage / f"{key}{suffix}"

    def path(self, stage: str, key: str) -> Path:
        return self._entry(stage, key, "")

    def work_path(self, stage: str, key: str) -> Path:
        return self._entry(stage, key, ".work")

    def log_path(self, stage: str, key: str) -> Path:
        return self._entry(stage, key, ".log")

    def _lock(self, stage: str, key: str) -> _Lock:
        path = self._entry(stage, key, ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        return _Lock(path, self.heartbeat_s, self.stale_after_s)

    def is_done(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MARKER).is_file()

    def manifest(self, stage: str, key: str) -> dict[str, Any] | None:
        if not self.is_done(stage, key):
            return None
        return json.loads((self.path(stage, key) / "manifest.json").read_text(encoding="utf-8"))

    def identity(self) -> str:
        """A random id made once per store. Tracking tells sweeps apart by it: two specs that share a name but
        keep their results in different stores must not supersede each other's runs."""
        path = self.root / ".store-id"
        with contextlib.suppress(FileNotFoundError):
            if text := path.read_text(encoding="utf-8").strip():
                return text
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # made by a concurrent process: wait for its content
            deadline = time.monotonic() + 10
            while not (text := path.read_text(encoding="utf-8").strip()) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not text:
                raise RuntimeError(f"{path} stays empty") from None
            return text
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(uuid.uuid4().hex[:16])
            f.flush()
            os.fsync(f.fileno())
        return path.read_text(encoding="utf-8").strip()

    def done_keys(self, stage: str) -> set[str]:
        stage_dir = self.root / stage
        if not stage_dir.is_dir():
            return set()
        return {p.name for p in stage_dir.iterdir() if _NAME.fullmatch(p.name) and (p / MARKER).is_file()}

    def status(self, stage: str, key: str) -> StageStatus:
        if self.is_done(stage, key):
            return StageStatus("done", path=self.path(stage, key))
        if (self.work_path(stage, key) / MARKER).is_file():  # its builder died between marker and rename
            return StageStatus("pending", "complete; the next run publishes it", self.work_path(stage, key))
        lock_path = self._entry(stage, key, ".lock")
        snap = _read_lock(lock_path)
        if snap is not None and not _is_stale(lock_path, snap, self.stale_after_s):
            return StageStatus("running", snap.describe(), self.work_path(stage, key))
        failed = self._entry(stage, key, ".failed.json")
        try:
            info = json.loads(failed.read_text(encoding="utf-8"))
            state = "deferred" if info.get("retry_later") else "failed"
            return StageStatus(state, f"{info['error_type']}: {info['message']}", failed)
        except FileNotFoundError:
            if snap is not None and snap.owner is not None:  # killed (OOM, SIGKILL, a lost node): no record
                reason = f"the build by {snap.describe()} ended without recording why (killed?)"
                return StageStatus("failed", reason, self.log_path(stage, key))
            return StageStatus("pending")
        except (ValueError, KeyError, TypeError):
            return StageStatus("failed", "unreadable failure record", failed)

    @contextlib.contextmanager
    def build(
        self,
        stage: str,
        key: str,
        manifest: dict[str, Any] | None = None,
        *,
        wait: bool = True,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        resume: bool = False,
        keep_work_on_failure: bool = True,
    ) -> Iterator[Build | None]:
        """Build (stage, key) into a work dir and publish it; yield None if it is already done.

        wait=False raises LockBusy while another live process builds it; otherwise wait for that process,
        at most timeout_s (TimeoutError), and yield None if it succeeded or take over if it failed or died.
        """
        lock = self._lock(stage, key)
        if not self._acquire(lock, stage, key, wait=wait, poll_s=poll_s, timeout_s=timeout_s):
            yield None
            return
        try:
            if self.is_done(stage, key):  # finished by another process between our check and the lock
                yield None
                return
            if (self.work_path(stage, key) / MARKER).is_file():  # complete, its builder died before the rename
                self._rename_into_place(stage, key)
                yield None
                return
            handle = self._prepare(stage, key, manifest, resume)
            started, t0 = _now(), time.monotonic()
            try:
                yield handle
                self._publish(stage, key, handle, started, time.monotonic() - t0, lock)
            except LockLost:
                raise  # the work dir and the key's records belong to the builder that took the lock over
            except BaseException as exc:
                self._record_failure(stage, key, exc)
                if not keep_work_on_failure:
                    shutil.rmtree(handle.dir, ignore_errors=True)
                raise
        finally:
            lock.release()

    def _acquire(
        self, lock: _Lock, stage: str, key: str, *, wait: bool, poll_s: float, timeout_s: float | None
    ) -> bool:
        """Take the lock; return False instead once the stage is done (by whoever held the lock)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.is_done(stage, key):
            holder = lock.acquire()
            if holder is None:
                return True
            if not wait:
                raise LockBusy(f"{stage}/{key} is being built by {holder}")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{stage}/{key} still being built by {holder} after {timeout_s} s")
            remaining = poll_s if deadline is None else max(0.0, deadline - time.monotonic())
            time.sleep(min(poll_s, remaining))
        return False

    def _prepare(self, stage: str, key: str, manifest: dict[str, Any] | None, resume: bool) -> Build:
        final, work = self.path(stage, key), self.work_path(stage, key)
        if final.exists():  # published by a build that died before writing its marker
            shutil.rmtree(final)
        resumed = resume and work.is_dir()
        if work.exists() and not resumed:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        return Build(dir=work, manifest=dict(manifest or {}), resumed=resumed)

    def _publish(self, stage: str, key: str, handle: Build, started: str, duration_s: float, lock: _Lock) -> None:
        """Complete the work dir (manifest, every file on disk, then the marker) and rename it into place: the
        rename is the publication, so a crash at any point leaves either nothing done or all of it."""
        finished = _now()
        record = {
            **handle.manifest,
            "stage": stage,
            "key": key,
            "started": started,
            "finished": finished,
            "duration_s": round(duration_s, 3),
            "resumed": handle.resumed,
            **_origin(),
        }
        write_json_atomic(handle.dir / "manifest.json", record)
        _fsync_tree(handle.dir)
        if not lock.held():  # judged dead by another host, which has taken over this work dir
            raise LockLost(f"{stage}/{key}: lost the build lock to another process; this build is not published")
        write_json_atomic(handle.dir / MARKER, {"stage": stage, "key": key, "finished": finished})
        if pause := os.environ.get(_PAUSE_ENV):
            time.sleep(float(pause))
        self._rename_into_place(stage, key)

    def _rename_into_place(self, stage: str, key: str) -> None:
        final = self.path(stage, key)
        if final.exists():  # an unmarked directory (an interrupted copy, an older ablate's half publication)
            shutil.rmtree(final)
        os.rename(self.work_path(stage, key), final)
        _fsync_dir(final.parent)
        self._entry(stage, key, ".failed.json").unlink(missing_ok=True)

    def _record_failure(self, stage: str, key: str, exc: BaseException) -> None:
        info = {
            "stage": stage,
            "key": key,
            "retry_later": isinstance(exc, RetryLater),  # stopped at a checkpoint, or waiting on a service
            "error_type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
            "time": _now(),
            **_origin(),
        }
        try:
            write_json_atomic(self._entry(stage, key, ".failed.json"), info)
        except OSError:  # never mask the build's own error
            log.exception("could not record the failure of %s/%s", stage, key)

    def invalidate(self, stage: str, key: str) -> None:
        """Forget a result so the next build redoes it; LockBusy if a live process is building it."""
        lock = self._lock(stage, key)
        holder = lock.acquire()
        if holder is not None:
            raise LockBusy(f"{stage}/{key} is being built by {holder}")
        try:
            (self.path(stage, key) / MARKER).unlink(missing_ok=True)  # first: never a marked partial dir
            shutil.rmtree(self.path(stage, key), ignore_errors=True)
            shutil.rmtree(self.work_path(stage, key), ignore_errors=True)  # nor a complete one left unpublished
            self._entry(stage, key, ".failed.json").unlink(missing_ok=True)
        finally:
            lock.release()

    def _orphans(self, stage: str, key: str) -> list[Path]:
        final = self.path(stage, key)
        stage_dir = final.parent
        found = [p for p in (self.work_path(stage, key),) if p.exists()]
        if final.exists() and not self.is_done(stage, key):
            found.append(final)
        leftovers = [*stage_dir.glob(f"{key}.lock.*.stale"), *stage_dir.glob(f"{key}.lock.break")]
        return found + sorted(leftovers) + sorted(stage_dir.glob(f".{key}.*.tmp"))

    def clean_orphans(self) -> list[Path]:
        """Remove what dead builds left: work dirs, unmarked outputs, stale locks, tombstones, temp files.

        Each key is cleaned while holding its lock, so a running (or just starting) build is never touched.
        Work dirs kept for resuming a failed build count as leftovers too.
        """
        removed: list[Path] = []
        stage_dirs = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        for stage_dir in stage_dirs:
            stage = stage_dir.name
            if not _NAME.fullmatch(stage):
                continue
            keys = {p.name.lstrip(".").split(".")[0] for p in stage_dir.iterdir()}
            for key in sorted(k for k in keys if _NAME.fullmatch(k)):
                lock_path = self._entry(stage, key, ".lock")
                had_lock = lock_path.exists()
                if not had_lock and not self._orphans(stage, key):
                    continue
                lock = self._lock(stage, key)
                if lock.acquire() is not None:
                    continue
                try:
                    if (self.work_path(stage, key) / MARKER).is_file():  # complete: publish it, never delete it
                        self._rename_into_place(stage, key)
                    for p in self._orphans(stage, key):  # re-checked under the lock
                        if p.is_dir():
                            shutil.rmtree(p)
                        else:
                            p.unlink(missing_ok=True)
                        removed.append(p)
                finally:
                    lock.release()
                if had_lock:
                    removed.append(lock_path)
        return removed
