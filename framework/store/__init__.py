"""Content-addressed stage outputs that survive crashes, and locks that work across hosts.

Layout of one stage run under ``<root>/<stage>/``:

* ``<key>.work/``      build directory; a stable name, so a long stage can resume from its checkpoints
* ``<key>/``           published output, renamed from the work dir in one step
* ``<key>/SUCCESS``    written (with every file fsynced) in the work dir just before the rename; done iff it exists
* ``<key>.lock``       JSON ``{host, pid, started, token}``, O_EXCL-created, mtime refreshed by a heartbeat
* ``<key>.failed.json`` the last failure; removed by the next success
* ``<key>.<hex>.replaced/`` a forced rebuild's predecessor, for the moment of the swap (``build(replace=True)``)
* ``<key>.log``        reserved for launchers
* ``<root>/.clock``    touched to read the file system's clock, against which heartbeats are aged
* ``<root>/.store-id`` a random id made once, by which tracking tells apart sweeps of the same name
* ``<root>/.locks/<name>.lock`` a store-wide lock for short critical sections (``Store.mutex``)

A process killed at any moment leaves either an unmarked work dir (redone), a marked one (published by the next
run), or the published output. A forced rebuild keeps the old output published until the new one is complete.
Locks are in ``framework.store.locks``, the crash-safe file writes in ``framework.store.durable``.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import logging
import os
import platform
import re
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.errors import RetryLater, UserError
from framework.redaction import redact, redact_records
from framework.store.durable import fsync_dir, fsync_tree, write_json_atomic
from framework.store.locks import BREAK_TURN_S, HOST, Lock, LockBusy, LockLost, fs_now, is_stale, now_iso, read_lock

__all__ = ["MARKER", "Build", "LockBusy", "LockLost", "StageStatus", "Store", "fsync_tree", "write_json_atomic"]

log = logging.getLogger(__name__)

MARKER = "SUCCESS"
# An empty .store-id younger than this may be an older ablate between its create and its write.
_ID_GRACE_S = 5.0
# Test hook: widens the window between marking a complete work dir and renaming it into place, so the crash
# tests can kill a build inside it. Value in seconds.
_PAUSE_ENV = "ABLATE_STORE_TEST_PAUSE_BEFORE_RENAME"
# No dots: the suffixes (.work, .lock, ...) must be unambiguous when scanning a stage directory.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def _remove_marked(path: Path) -> None:
    """Marker first, so that an interrupted delete never leaves a marked, partial copy."""
    with contextlib.suppress(OSError):
        (path / MARKER).unlink()
        fsync_dir(path)
    shutil.rmtree(path, ignore_errors=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers often run as a uid without a passwd entry
        return str(os.getuid())


def _origin() -> dict[str, Any]:
    """Who ran something and where: for manifests and failure records."""
    return {"host": HOST, "pid": os.getpid(), "user": _user(), "python": platform.python_version()}


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


def _check_root(root: Path) -> None:
    """A file where the results directory should be is the user's to move: said before any build starts, not
    as a launcher error halfway through a run."""
    for p in (root, *root.parents):
        if p.is_dir():
            return
        if p.exists() or p.is_symlink():
            raise UserError(
                f"the results directory {p} is not a directory (a file or a broken link is there); move it, or "
                "choose another place with results_dir, --results-dir or $ABLATE_RESULTS_DIR"
            )


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
        _check_root(self.root)

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

    def _lock(self, stage: str, key: str) -> Lock:
        path = self._entry(stage, key, ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        return Lock(path, self.heartbeat_s, self.stale_after_s)

    @contextlib.contextmanager
    def locked(self, stage: str, key: str) -> Iterator[bool]:
        """The key's build lock, for a short change to a published result (pruning a checkpoint); yields False,
        without waiting, while another process holds it."""
        lock = self._lock(stage, key)
        if lock.acquire() is not None:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    @contextlib.contextmanager
    def mutex(self, name: str, *, poll_s: float = 0.1, timeout_s: float = 600.0) -> Iterator[None]:
        """A short critical section shared by every process of this store, on any host: waits for the holder and
        breaks the lock of a dead one as build locks do. For decisions that must be taken once per store, such as
        electing the sweep's parent run in MLflow, which concurrent log stages would otherwise each create."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid lock name: {name!r}")
        path = self.root / ".locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = Lock(path, self.heartbeat_s, self.stale_after_s)
        deadline = time.monotonic() + timeout_s
        while (holder := lock.acquire()) is not None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the store's {name} lock is still held by {holder} after {timeout_s:.0f} s")
            time.sleep(poll_s)
        try:
            yield
        finally:
            lock.release()

    def is_done(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MARKER).is_file()

    def manifest(self, stage: str, key: str) -> dict[str, Any] | None:
        if not self.is_done(stage, key):
            return None
        return json.loads((self.path(stage, key) / "manifest.json").read_text(encoding="utf-8"))

    def identity(self) -> str:
        """A random id made once per store. Tracking tells sweeps apart by it: two specs that share a name but
        keep their results in different stores must not supersede each other's runs.

        The file is made with its content in one step, so a crash never leaves it empty; an empty one left by an
        older ablate is replaced once it is old enough that its writer cannot still be on its way.
        """
        path = self.root / ".store-id"
        deadline = time.monotonic() + 2 * BREAK_TURN_S
        while True:
            try:
                mtime = os.stat(path).st_mtime
                if text := path.read_text(encoding="utf-8").strip():
                    return text
            except FileNotFoundError:
                self.root.mkdir(parents=True, exist_ok=True)
                tmp = self._new_identity_file()
                try:
                    os.link(tmp, path)  # all or nothing, and never over an id another process made meanwhile
                    fsync_dir(self.root)
                except FileExistsError:
                    pass  # theirs is read next
                except OSError as exc:
                    if exc.errno not in _NO_HARD_LINKS:
                        raise
                    self._create_identity_in_place(path, tmp.read_text(encoding="utf-8"))
                finally:
                    tmp.unlink()
                continue
            if fs_now(self.root) - mtime > _ID_GRACE_S and self._replace_empty_identity(path):
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} stays empty")
            time.sleep(0.05)

    def _new_identity_file(self) -> Path:
        """A complete, durable temporary file with a fresh id, to be linked or renamed into place."""
        tmp = self.root / f".store-id.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                f.write(uuid.uuid4().hex[:16])
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _create_identity_in_place(self, path: Path, text: str) -> None:
        """Where hard links are not supported (some FUSE and SMB mounts): O_EXCL, then write. A crash in between
        leaves an empty file, which identity() replaces once it is old enough."""
        with contextlib.suppress(FileExistsError), open(path, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def _replace_empty_identity(self, path: Path) -> bool:
        """Replace an empty id file, in an O_EXCL turn so that concurrent repairers agree on one id; False when
        another process has the turn."""
        turn = path.with_name(".store-id.repair")
        try:
            os.close(os.open(turn, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):  # a repairer that died in its turn left it
                if fs_now(self.root) - os.stat(turn).st_mtime > BREAK_TURN_S:
                    turn.unlink()
            return False
        try:
            if not path.read_text(encoding="utf-8").strip():  # not repaired by whoever had the turn before us
                os.replace(self._new_identity_file(), path)
                fsync_dir(self.root)
        finally:
            turn.unlink(missing_ok=True)
        return True

    def done_keys(self, stage: str) -> set[str]:
        stage_dir = self.root / stage
        if not stage_dir.is_dir():
            return set()
        return {p.name for p in stage_dir.iterdir() if _NAME.fullmatch(p.name) and (p / MARKER).is_file()}

    # Every entry status() reads besides the result itself: a key with none of them is pending.
    _STATUS_SUFFIXES = ("", ".work", ".lock", ".failed.json")

    def statuses(self, stage: str, keys: list[str]) -> dict[str, StageStatus]:
        """status() of many keys of a stage from one listing of its directory: a key without an entry there is
        pending at no further cost (a 10,000-cell sweep's status made four file look-ups per job)."""
        try:
            names = set(os.listdir(self.root / stage))
        except (FileNotFoundError, NotADirectoryError):
            names = set()
        return {
            k: self.status(stage, k) if any(k + s in names for s in self._STATUS_SUFFIXES) else StageStatus("pending")
            for k in keys
        }

    def status(self, stage: str, key: str) -> StageStatus:
        if self.is_done(stage, key):
            return StageStatus("done", path=self.path(stage, key))
        if (self.work_path(stage, key) / MARKER).is_file():  # its builder died between marker and rename
            return StageStatus("pending", "complete; the next run publishes it", self.work_path(stage, key))
        lock_path = self._entry(stage, key, ".lock")
        snap = read_lock(lock_path)
        if snap is not None and not is_stale(lock_path, snap, self.stale_after_s):
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
        replace: bool = False,
        redo: Callable[[Path], bool] | None = None,
    ) -> Iterator[Build | None]:
        """Build (stage, key) into a work dir and publish it; yield None if it is already done.

        wait=False raises LockBusy while another live process builds it; otherwise wait for that process,
        at most timeout_s (TimeoutError), and yield None if it succeeded or take over if it failed or died.
        replace=True (``--force``) builds even a done stage, from scratch (never resumed), and keeps the old result
        published until the new one replaces it: a rebuild that fails or is killed leaves the old result.
        redo(published dir) -> True marks a done result as needing a rebuild (a pruned checkpoint). Unlike
        replace, it is judged under the lock (two processes never both rebuild), and the rebuild resumes and is
        recovered like a first build; the result it replaces stays published until then.
        A KeyboardInterrupt or SystemExit is an interruption, not a failure: no record, the work dir is kept.
        """
        lock = self._lock(stage, key)
        anyway = replace or redo is not None
        if not self._acquire(lock, stage, key, wait=wait, poll_s=poll_s, timeout_s=timeout_s, replace=anyway):
            yield None
            return

        def stale() -> bool:
            return redo is not None and self.is_done(stage, key) and redo(self.path(stage, key))

        try:
            swap = replace
            if not replace:
                self._recover(stage, key, replace=stale())
                swap = stale()
                if self.is_done(stage, key) and not swap:  # done by another process, or one that died before its rename
                    yield None
                    return
            handle = self._prepare(stage, key, manifest, resume and not replace)
            started, t0 = now_iso(), time.monotonic()
            try:
                yield handle
                self._publish(stage, key, handle, started, time.monotonic() - t0, lock, swap)
            except (LockLost, KeyboardInterrupt, SystemExit):
                # Lost: the work dir and the key's records belong to the builder that took the lock over.
                # Interrupted: pending, not failed, and the work dir stays for a resume.
                raise
            except BaseException as exc:
                self._record_failure(stage, key, exc)
                if not keep_work_on_failure:
                    shutil.rmtree(handle.dir, ignore_errors=True)
                raise
        finally:
            lock.release()

    def _acquire(
        self,
        lock: Lock,
        stage: str,
        key: str,
        *,
        wait: bool,
        poll_s: float,
        timeout_s: float | None,
        replace: bool = False,
    ) -> bool:
        """Take the lock; return False instead once the stage is done (by whoever held the lock), unless it is to
        be replaced."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while replace or not self.is_done(stage, key):
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
        if final.exists() and not self.is_done(stage, key):  # published by a build that died before its marker
            shutil.rmtree(final)  # (a done one is being replaced: it stays until the new one is complete)
        resumed = resume and work.is_dir()
        if work.exists() and not resumed:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        return Build(dir=work, manifest=dict(manifest or {}), resumed=resumed)

    def _publish(
        self, stage: str, key: str, handle: Build, started: str, duration_s: float, lock: Lock, replace: bool
    ) -> None:
        """Complete the work dir (manifest, every file on disk, then the marker) and rename it into place: the
        rename is the publication, so a crash at any point leaves either nothing done or all of it."""
        finished = now_iso()
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
        write_json_atomic(handle.dir / "manifest.json", redact(record))
        redact_records(handle.dir)  # stats, metrics, logs: what a person reads or copies is free of secrets
        fsync_tree(handle.dir)
        if not lock.held():  # judged dead by another host, which has taken over this work dir
            raise LockLost(f"{stage}/{key}: lost the build lock to another process; this build is not published")
        write_json_atomic(handle.dir / MARKER, {"stage": stage, "key": key, "finished": finished})
        if pause := os.environ.get(_PAUSE_ENV):
            time.sleep(float(pause))
        self._rename_into_place(stage, key, replace=replace)

    def _rename_into_place(self, stage: str, key: str, *, replace: bool = False) -> None:
        """Publish the marked work dir. A done result is swapped out only when replacing it: otherwise it was
        published by a builder that took over from a stalled one (us), and the work dir is dropped instead."""
        final, work = self.path(stage, key), self.work_path(stage, key)
        if self.is_done(stage, key):
            if not replace:
                log.warning("%s/%s was published meanwhile by another build; dropping %s", stage, key, work)
                shutil.rmtree(work, ignore_errors=True)
                return
            # Old result aside, new one in. A crash in between leaves the marked work dir, which the next run
            # publishes, or failing that the marked tombstone, which it restores (see _recover).
            tomb = final.with_name(f"{key}.{uuid.uuid4().hex[:12]}.replaced")
            os.rename(final, tomb)
            try:
                os.rename(work, final)
            except BaseException:
                os.rename(tomb, final)
                raise
            fsync_dir(final.parent)
            _remove_marked(tomb)  # a leftover (a file held open on NFS) goes with the next build of the key
        else:
            if final.exists():  # an unmarked directory (an interrupted copy, an older ablate's half publication)
                shutil.rmtree(final)
            os.rename(work, final)
            fsync_dir(final.parent)
        self._entry(stage, key, ".failed.json").unlink(missing_ok=True)

    def _tombstones(self, stage: str, key: str) -> list[Path]:
        return sorted(self.root.joinpath(stage).glob(f"{key}.*.replaced"))

    def _recover(self, stage: str, key: str, *, replace: bool = False) -> None:
        """Under the key's lock, finish what a dead builder left complete: publish its marked work dir (over the
        published result when that one is being replaced), or failing that, restore a replaced result whose
        successor never landed. Tombstones of a done result are removed."""
        if (self.work_path(stage, key) / MARKER).is_file():
            self._rename_into_place(stage, key, replace=replace)
        if self.is_done(stage, key):
            for tomb in self._tombstones(stage, key):
                _remove_marked(tomb)
        else:
            final = self.path(stage, key)
            for tomb in self._tombstones(stage, key):
                if (tomb / MARKER).is_file():
                    if final.exists():
                        shutil.rmtree(final)
                    os.rename(tomb, final)
                    fsync_dir(final.parent)
                    return

    def _record_failure(self, stage: str, key: str, exc: BaseException) -> None:
        info = {
            "stage": stage,
            "key": key,
            "retry_later": isinstance(exc, RetryLater),  # stopped at a checkpoint, or waiting on a service
            "error_type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
            "time": now_iso(),
            **_origin(),
        }
        try:
            write_json_atomic(self._entry(stage, key, ".failed.json"), redact(info))
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
            for tomb in self._tombstones(stage, key):  # nor a replaced one
                shutil.rmtree(tomb, ignore_errors=True)
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
        return found + sorted(leftovers) + self._tombstones(stage, key) + sorted(stage_dir.glob(f".{key}.*.tmp"))

    def unplanned_leftovers(self, stage: str, key: str) -> list[Path]:
        """What a key that no plan needs any more leaves besides a done result (kept: a spec edited back would
        want it): its work dir, failure record, log and Slurm job record, and what dead builds left."""
        found = self._orphans(stage, key)
        if not self.is_done(stage, key):
            extra = (".failed.json", ".log", ".slurm.json")
            found += [p for p in (self._entry(stage, key, s) for s in extra) if p.exists()]
        return found

    def _kept_for_later(self, stage: str, key: str) -> str:
        """Why an unplanned key's leftovers may still be wanted by a job no lock shows ("" if by none): a Slurm job
        holds no lock while it is queued, nor a training deferred at a checkpoint until its requeued job starts,
        and that work dir is the checkpoint it resumes from."""
        if self._entry(stage, key, ".slurm.json").exists():
            return "a Slurm job was submitted for it and may be queued or requeued (see squeue); --force removes it"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(self._entry(stage, key, ".failed.json").read_text(encoding="utf-8")).get("retry_later"):
                return "deferred: a re-run or a requeued job resumes from its work dir; --force removes it"
        return ""

    def clean_unplanned(
        self, planned: set[str], *, delete: bool, force: bool = False
    ) -> tuple[list[Path], dict[str, str]]:
        """Leftovers of the keys outside `planned` (job ids, "stage/key"), removed when `delete`; and the job ids
        kept, with why: a live process holds their lock, or (unless `force`) a queued or deferred job may resume
        from them. Each key is cleaned under its lock, as in clean_orphans; a dry run takes no lock and changes
        nothing, so it keeps every locked key."""
        found: list[Path] = []
        kept: dict[str, str] = {}
        stage_dirs = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        for stage_dir in (d for d in stage_dirs if _NAME.fullmatch(d.name)):
            stage = stage_dir.name
            keys = {p.name.lstrip(".").split(".")[0] for p in stage_dir.iterdir()}
            for key in sorted(k for k in keys if _NAME.fullmatch(k) and f"{stage}/{k}" not in planned):
                job = f"{stage}/{key}"
                if not force and (why := self._kept_for_later(stage, key)):
                    kept[job] = why
                    continue
                locked = self._entry(stage, key, ".lock").exists()
                if not delete:
                    if locked:
                        kept[job] = "its lock is held (a build may be running; --yes breaks only an expired lock)"
                    else:
                        found += self.unplanned_leftovers(stage, key)
                    continue
                if not locked and not self.unplanned_leftovers(stage, key):
                    continue
                lock = self._lock(stage, key)
                if lock.acquire() is not None:
                    kept[job] = "its lock is held by a build that is running"
                    continue
                try:
                    if not force and (why := self._kept_for_later(stage, key)):  # deferred since the first look
                        kept[job] = why
                        continue
                    self._recover(stage, key)  # a complete build that died before its rename is published, kept
                    paths = self.unplanned_leftovers(stage, key)
                    found += paths
                    for p in paths:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                finally:
                    lock.release()
        return found, kept

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
                    self._recover(stage, key)  # complete results are published, never deleted
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
