"""Store behaviour under faults: forced rebuilds that fail, fsync errors, a flaky heartbeat, a crash while making
the store id, a stalled builder that resumes after a takeover, and Ctrl-C."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest

import framework.store.locks
import framework.sweep.execute
from framework.spec import load_spec
from framework.store import _ID_GRACE_S, _PAUSE_ENV, MARKER, Lock, Store, write_json_atomic
from framework.sweep.execute import execute, open_store
from framework.sweep.plan import build_plan

KEY = "0123456789abcdef"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def _build(store: Store, text: str, **kwargs) -> None:
    with store.build("train", KEY, **kwargs) as b:
        assert b is not None
        (b.dir / "out.txt").write_text(text)


def _out(store: Store) -> str:
    return (store.path("train", KEY) / "out.txt").read_text()


def _marked_dir(path: Path, text: str) -> Path:
    """A complete build's directory, as a dead builder would have left it."""
    path.mkdir(parents=True)
    (path / "out.txt").write_text(text)
    write_json_atomic(path / "manifest.json", {"stage": "train", "key": KEY})
    write_json_atomic(path / MARKER, {"stage": "train", "key": KEY})
    return path


# ------------------------------------------------------------------------------------- forced rebuilds


def test_a_failed_forced_rebuild_keeps_the_old_result(store: Store) -> None:
    _build(store, "old")
    old_manifest = store.manifest("train", KEY)
    with pytest.raises(ValueError, match="boom"), store.build("train", KEY, replace=True) as b:
        assert b is not None and b.dir == store.work_path("train", KEY)
        assert store.is_done("train", KEY) and _out(store) == "old"  # still published while rebuilding
        (b.dir / "out.txt").write_text("half")
        raise ValueError("boom")
    assert store.is_done("train", KEY) and _out(store) == "old"
    assert store.manifest("train", KEY) == old_manifest
    assert store.status("train", KEY).state == "done"


def test_a_forced_rebuild_starts_fresh_and_swaps_in_only_when_complete(store: Store) -> None:
    _build(store, "old")
    work = store.work_path("train", KEY)
    work.mkdir()
    (work / "ckpt-100").write_text("an earlier attempt's checkpoint")
    with store.build("train", KEY, resume=True, replace=True) as b:
        assert b is not None and not b.resumed and not (b.dir / "ckpt-100").exists()
        (b.dir / "out.txt").write_text("new")
        assert _out(store) == "old"
    assert store.is_done("train", KEY) and _out(store) == "new"
    assert store.manifest("train", KEY)["resumed"] is False
    assert sorted(p.name for p in store.path("train", KEY).parent.iterdir()) == [KEY]  # no tombstone, no lock


def test_a_crash_inside_the_swap_leaves_old_or_new_and_the_tombstone_is_cleaned(store: Store) -> None:
    stage_dir = store.path("train", KEY).parent
    # Killed after moving the old result aside, before renaming the new one in: the new one is published.
    tomb = _marked_dir(stage_dir / f"{KEY}.0123456789ab.replaced", "old")
    _marked_dir(store.work_path("train", KEY), "new")
    assert store.status("train", KEY).state == "pending"
    store.clean_orphans()
    assert not tomb.exists()
    assert _out(store) == "new" and sorted(p.name for p in stage_dir.iterdir()) == [KEY]
    # Only the moved-aside result is left (its successor lost): it is put back, not deleted.
    shutil.rmtree(store.path("train", KEY))
    _marked_dir(tomb, "old")
    with store.build("train", KEY) as b:
        assert b is None
    assert _out(store) == "old" and sorted(p.name for p in stage_dir.iterdir()) == [KEY]


def _fail_second_time(calls: list[str]):
    def fake_pool(ctx) -> None:
        calls.append(ctx.job.key)
        (ctx.out / "pool.txt").write_text(f"attempt {len(calls)}")
        if len(calls) > 1:
            raise RuntimeError("the rebuild failed")

    return fake_pool


def test_exec_force_keeps_the_old_result_when_the_rebuild_fails(
    write_spec, minimal, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(framework.sweep.execute, "stage_function", lambda s: _fail_second_time(calls))
    loaded = load_spec(write_spec(minimal))
    plan = build_plan(loaded.spec, loaded.path)
    store = open_store(loaded)
    key = plan.by_stage("pool")[0].key
    assert execute(loaded, plan, store, "pool", key)
    with pytest.raises(RuntimeError, match="the rebuild failed"):
        execute(loaded, plan, store, "pool", key, force=True)
    assert len(calls) == 2 and store.is_done("pool", key)
    assert (store.path("pool", key) / "pool.txt").read_text() == "attempt 1"


# ------------------------------------------------------------------------------------------ fsync errors


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, err: int, *, dirs: bool, name: str | None = None) -> None:
    """os.fsync raises `err` for directories (dirs=True) or for the regular file called `name`."""
    real = os.fsync

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if (is_dir and dirs) or (not is_dir and os.readlink(f"/proc/self/fd/{fd}").endswith(f"/{name}")):
            raise OSError(err, os.strerror(err))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC, errno.EDQUOT], ids=errno.errorcode.get)
@pytest.mark.parametrize("dirs", [False, True], ids=["file", "dir"])
def test_an_fsync_error_fails_the_build(store: Store, monkeypatch: pytest.MonkeyPatch, err: int, dirs: bool) -> None:
    _fail_fsync(monkeypatch, err, dirs=dirs, name="out.txt")
    with pytest.raises(OSError) as raised:
        _build(store, "data the disk may have lost")
    assert raised.value.errno == err
    assert not store.is_done("train", KEY) and not (store.work_path("train", KEY) / MARKER).exists()
    monkeypatch.undo()
    assert store.status("train", KEY).state == "failed"


def test_a_file_system_that_cannot_fsync_directories_still_builds(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_fsync(monkeypatch, errno.EINVAL, dirs=True)
    with store.build("train", KEY) as b:
        (b.dir / "out.txt").write_text("ok")
        (b.dir / "dangling").symlink_to(b.dir / "nowhere")  # not regular files: nothing to fsync, not an error
        os.mkfifo(b.dir / "fifo")
    assert store.is_done("train", KEY)


# ------------------------------------------------------------------------------------------- heartbeat


def test_the_heartbeat_outlives_transient_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = framework.store.locks.read_lock
    failures = iter([errno.ESTALE, errno.EIO, errno.ESTALE])

    def flaky(path: Path):
        if threading.current_thread().name.startswith("heartbeat") and (err := next(failures, None)):
            raise OSError(err, os.strerror(err))
        return real(path)

    monkeypatch.setattr(framework.store.locks, "read_lock", flaky)
    lock = Lock(tmp_path / "x.lock", heartbeat_s=0.02, stale_after_s=1.0)
    caplog.set_level(logging.WARNING, logger="framework.store")
    assert lock.acquire() is None
    try:
        os.utime(lock.path, (0, 0))
        deadline = time.monotonic() + 5
        while lock.path.stat().st_mtime == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock.path.stat().st_mtime > 0, "the heartbeat stopped"
        assert next(failures, None) is None and lock._thread is not None and lock._thread.is_alive()
        assert len([r for r in caplog.records if "heartbeat" in r.getMessage()]) == 1  # logged once
    finally:
        lock.release()


# -------------------------------------------------------------------------------------------- store id


def test_a_crash_while_making_the_store_id_leaves_no_empty_file(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(fd: int) -> None:
        raise KeyboardInterrupt  # stands in for a kill between creating the file and writing it

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        store.identity()
    monkeypatch.undo()
    assert [p.name for p in store.root.iterdir()] == []
    ident = store.identity()
    assert len(ident) == 16 and Store(store.root).identity() == ident


def test_an_old_empty_store_id_is_replaced(store: Store) -> None:
    store.root.mkdir(parents=True)
    path = store.root / ".store-id"
    path.touch()  # left by an older ablate killed between create and write
    then = time.time() - _ID_GRACE_S - 5
    os.utime(path, (then, then))
    t0 = time.monotonic()
    ident = store.identity()
    assert len(ident) == 16 and path.read_text() == ident and time.monotonic() - t0 < 2
    assert Store(store.root).identity() == ident
    assert sorted(p.name for p in store.root.iterdir() if p.name != ".clock") == [".store-id"]


def test_a_fresh_empty_store_id_is_waited_for(store: Store) -> None:
    store.root.mkdir(parents=True)
    path = store.root / ".store-id"
    path.touch()  # an older ablate between create and write, right now
    writer = threading.Timer(0.3, lambda: path.write_text("feedfacecafebeef"))
    writer.start()
    try:
        assert store.identity() == "feedfacecafebeef"
    finally:
        writer.join()


def test_a_store_id_is_made_where_hard_links_are_not_supported(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    ident = store.identity()
    assert len(ident) == 16 and Store(store.root).identity() == ident
    assert sorted(p.name for p in store.root.iterdir() if p.name != ".clock") == [".store-id"]


def _identity_worker(root: str, barrier, out) -> None:
    barrier.wait()
    out.put(Store(root).identity())


@pytest.mark.parametrize("legacy_empty", [False, True], ids=["fresh", "old-empty-file"])
def test_concurrent_processes_agree_on_the_store_id(store: Store, legacy_empty: bool) -> None:
    if legacy_empty:
        store.root.mkdir(parents=True)
        (store.root / ".store-id").touch()
        then = time.time() - _ID_GRACE_S - 5
        os.utime(store.root / ".store-id", (then, then))
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_identity_worker, args=(str(store.root), barrier, out)) for _ in range(6)]
    for p in procs:
        p.start()
    ids = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert len(set(ids)) == 1 and store.identity() == ids[0]


# ----------------------------------------------------------------------------------- stalled builder


@pytest.mark.parametrize("published", ["its-own-work", "another-build"])
def test_a_stalled_builder_never_deletes_a_published_result(
    store: Store, monkeypatch: pytest.MonkeyPatch, published: str
) -> None:
    """The builder stalls between marking its work dir and renaming it (checked its lock, then was suspended);
    meanwhile another host judged it dead and published. Resumed, it must leave the published result alone."""
    monkeypatch.setenv(_PAUSE_ENV, "0.5")
    errors: list[BaseException] = []

    def stalled() -> None:
        try:
            _build(store, "mine")
        except BaseException as e:
            errors.append(e)

    builder = threading.Thread(target=stalled)
    builder.start()
    work, final = store.work_path("train", KEY), store.path("train", KEY)
    deadline = time.monotonic() + 5
    while not (work / MARKER).exists():
        assert time.monotonic() < deadline, "the builder never marked its work dir"
        time.sleep(0.01)
    if published == "its-own-work":  # the taker-over found it complete and published it (Store._recover)
        os.rename(work, final)
    else:
        _marked_dir(final, "theirs")
    builder.join()
    assert not errors and store.is_done("train", KEY)
    assert _out(store) == ("mine" if published == "its-own-work" else "theirs")
    assert not work.exists()


# --------------------------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_build_is_pending_not_failed(store: Store, exc: type[BaseException]) -> None:
    with pytest.raises(exc), store.build("train", KEY, keep_work_on_failure=False) as b:
        (b.dir / "ckpt-100").write_text("step 100")
        raise exc
    assert not (store.root / "train" / f"{KEY}.failed.json").exists()
    assert store.status("train", KEY).state == "pending"
    assert (store.work_path("train", KEY) / "ckpt-100").read_text() == "step 100"  # kept for a resume
    assert not (store.root / "train" / f"{KEY}.lock").exists()
