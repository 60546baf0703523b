"""Store semantics: publication, failure records, resume, lock takeover rules and cross-process exclusion."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.errors import RetryLater
from framework.store import MARKER, Lock, LockBusy, LockLost, Store, read_lock, write_json_atomic

KEY = "0123456789abcdef"


def _build_ok(store: Store, stage: str = "train", key: str = KEY, **kwargs) -> None:
    with store.build(stage, key, **kwargs) as b:
        assert b is not None
        (b.dir / "out.txt").write_text("ok")


def _write_lock(store: Store, stage: str, key: str, *, host: str, pid: int, age_s: float = 0.0) -> Path:
    lock = store.root / stage / f"{key}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": host, "pid": pid, "started": "2024-01-01T00:00:00", "token": "x"}))
    if age_s:
        then = time.time() - age_s
        os.utime(lock, (then, then))
    return lock


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: a zombie would still answer os.kill(pid, 0)
    return proc.pid


@pytest.fixture
def live_pid():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_build_publishes_output_marker_and_manifest(store: Store) -> None:
    given_manifest = {"inputs": {"data": "abc"}, "config": {"lr": 1e-5}, "code_version": "deadbeef"}
    with store.build("train", KEY, given_manifest) as b:
        assert b is not None and not b.resumed
        assert b.dir == store.work_path("train", KEY)
        (b.dir / "weights.bin").write_bytes(b"\x00" * 10)
        b.manifest["train_loss"] = 0.25
        assert not store.is_done("train", KEY)
    final = store.path("train", KEY)
    assert store.is_done("train", KEY)
    assert (final / MARKER).is_file()
    assert (final / "weights.bin").read_bytes() == b"\x00" * 10
    assert not store.work_path("train", KEY).exists()
    assert not (store.root / "train" / f"{KEY}.lock").exists()
    m = store.manifest("train", KEY)
    assert m is not None
    assert m == json.loads((final / "manifest.json").read_text())
    assert m["inputs"] == {"data": "abc"} and m["config"] == {"lr": 1e-5} and m["code_version"] == "deadbeef"
    assert m["train_loss"] == 0.25
    assert (m["stage"], m["key"], m["pid"], m["host"]) == ("train", KEY, os.getpid(), socket.gethostname())
    assert m["started"] <= m["finished"] and m["duration_s"] >= 0
    assert m["user"] and m["python"].startswith(f"{sys.version_info.major}.")
    assert given_manifest == {"inputs": {"data": "abc"}, "config": {"lr": 1e-5}, "code_version": "deadbeef"}
    assert store.done_keys("train") == {KEY}
    assert store.status("train", KEY).state == "done"


def test_done_stage_yields_none_and_skips_body(store: Store) -> None:
    _build_ok(store)
    with store.build("train", KEY) as b:
        assert b is None
    assert store.manifest("eval", KEY) is None
    assert store.done_keys("eval") == set()


def test_failure_is_recorded_work_kept_and_cleared_by_retry(store: Store) -> None:
    with pytest.raises(ValueError, match="boom"), store.build("train", KEY) as b:
        (b.dir / "partial.txt").write_text("half")
        raise ValueError("boom")
    failed = store.root / "train" / f"{KEY}.failed.json"
    info = json.loads(failed.read_text())
    assert info["error_type"] == "ValueError" and info["message"] == "boom"
    assert "raise ValueError" in info["traceback"]
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["time"]
    assert not store.is_done("train", KEY) and not store.path("train", KEY).exists()
    assert (store.work_path("train", KEY) / "partial.txt").read_text() == "half"
    assert not (store.root / "train" / f"{KEY}.lock").exists()
    status = store.status("train", KEY)
    assert (status.state, status.detail, status.path) == ("failed", "ValueError: boom", failed)

    _build_ok(store)  # resume=False: the failed attempt's files must not leak into the output
    assert not failed.exists()
    assert sorted(p.name for p in store.path("train", KEY).iterdir()) == [MARKER, "manifest.json", "out.txt"]


def test_failure_can_drop_work_dir(store: Store) -> None:
    with pytest.raises(RuntimeError), store.build("train", KEY, keep_work_on_failure=False):
        raise RuntimeError("x")
    assert not store.work_path("train", KEY).exists()
    assert store.status("train", KEY).state == "failed"


def test_resume_keeps_previous_work(store: Store) -> None:
    with store.build("train", KEY, resume=True) as b:
        assert b is not None and not b.resumed  # nothing to resume yet
    store.invalidate("train", KEY)
    with pytest.raises(KeyboardInterrupt), store.build("train", KEY) as b:
        (b.dir / "ckpt-100").write_text("step 100")
        raise KeyboardInterrupt
    with store.build("train", KEY, resume=True) as b:
        assert b is not None and b.resumed
        assert (b.dir / "ckpt-100").read_text() == "step 100"
    assert store.manifest("train", KEY)["resumed"] is True


def test_without_resume_work_dir_is_wiped(store: Store) -> None:
    work = store.work_path("train", KEY)
    work.mkdir(parents=True)
    (work / "ckpt").write_text("old")
    with store.build("train", KEY) as b:
        assert not b.resumed and not (b.dir / "ckpt").exists()


def test_unmarked_final_dir_is_rebuilt(store: Store) -> None:
    final = store.path("train", KEY)
    final.mkdir(parents=True)
    (final / "stale.txt").write_text("from a killed build")
    assert not store.is_done("train", KEY) and store.done_keys("train") == set()
    assert store.status("train", KEY).state == "pending"
    _build_ok(store)
    assert not (final / "stale.txt").exists() and (final / "out.txt").exists()


def test_lock_of_dead_local_pid_is_taken_over(store: Store, dead_pid: int) -> None:
    _write_lock(store, "train", KEY, host=socket.gethostname(), pid=dead_pid)
    status = store.status("train", KEY)  # killed without a failure record: failed, and saying so
    assert status.state == "failed" and f"pid {dead_pid}" in status.detail and "(killed?)" in status.detail
    _build_ok(store, wait=False)
    assert store.is_done("train", KEY)
    assert not list((store.root / "train").glob("*.stale"))


def test_lock_of_live_pid_is_respected(store: Store, live_pid: int) -> None:
    lock = _write_lock(store, "train", KEY, host=socket.gethostname(), pid=live_pid)
    status = store.status("train", KEY)
    assert status.state == "running" and f"pid {live_pid} on {socket.gethostname()}" in status.detail
    with pytest.raises(LockBusy, match=str(live_pid)), store.build("train", KEY, wait=False):
        pytest.fail("body must not run")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError), store.build("train", KEY, poll_s=0.05, timeout_s=0.3):
        pytest.fail("body must not run")
    assert 0.3 <= time.monotonic() - t0 < 2.0
    assert json.loads(lock.read_text())["pid"] == live_pid  # untouched
    assert not store.work_path("train", KEY).exists()


def test_waiter_sees_result_of_holder(store: Store, live_pid: int) -> None:
    lock = _write_lock(store, "train", KEY, host=socket.gethostname(), pid=live_pid)

    def finish_elsewhere() -> None:
        time.sleep(0.2)
        final = store.path("train", KEY)
        final.mkdir()
        (final / MARKER).write_text("{}")
        lock.unlink()

    t = threading.Thread(target=finish_elsewhere)
    t.start()
    with store.build("train", KEY, poll_s=0.02, timeout_s=5) as b:
        assert b is None
    t.join()


def test_takeover_race_loser_leaves_the_winners_lock(tmp_path: Path, dead_pid: int) -> None:
    """Two processes judge the same dead lock stale; the slower one must not remove the winner's new lock."""
    path = _write_lock(Store(tmp_path), "train", KEY, host=socket.gethostname(), pid=dead_pid)
    judged_stale = read_lock(path)
    winner = Lock(path, heartbeat_s=30, stale_after_s=300)
    assert winner.acquire() is None
    Lock(path, heartbeat_s=30, stale_after_s=300)._break(judged_stale)  # the loser acts on its stale view
    assert json.loads(path.read_text())["token"] == winner.token
    assert list(path.parent.iterdir()) == [path]
    assert Lock(path, heartbeat_s=30, stale_after_s=300).acquire() is not None
    winner.release()
    assert not path.exists()


def test_breakers_take_turns_and_a_turn_left_by_a_dead_breaker_expires(store: Store, dead_pid: int) -> None:
    path = _write_lock(store, "train", KEY, host=socket.gethostname(), pid=dead_pid)
    turn = path.with_name(f"{path.name}.break")
    turn.write_text("")  # another breaker's turn: the dead lock is left to it
    with pytest.raises(TimeoutError):
        _build_ok(store, poll_s=0.05, timeout_s=0.5)
    assert path.exists()
    then = time.time() - 31  # ... unless that breaker died in its turn
    os.utime(turn, (then, then))
    _build_ok(store, wait=False)
    assert store.is_done("train", KEY) and not turn.exists()


def test_other_host_lock_is_judged_by_age(store: Store) -> None:
    lock = _write_lock(store, "train", KEY, host="some-other-node", pid=999_999_999)
    # The pid means nothing here, so only the heartbeat age can prove the holder dead.
    with pytest.raises(LockBusy), store.build("train", KEY, wait=False):
        pytest.fail("body must not run")
    then = time.time() - 301
    os.utime(lock, (then, then))
    assert store.status("train", KEY).state == "failed"
    _build_ok(store, wait=False)
    assert store.is_done("train", KEY)


@pytest.mark.parametrize("skew_s", [3600.0, -3600.0], ids=["this-clock-ahead", "this-clock-behind"])
def test_other_host_lock_age_is_measured_on_the_stores_clock_not_this_hosts(
    store: Store, monkeypatch: pytest.MonkeyPatch, skew_s: float
) -> None:
    """Heartbeats are stamped by the storage; a host whose clock is an hour off must not judge a live holder
    dead (clock ahead) or a dead one alive (clock behind)."""
    lock = _write_lock(store, "train", KEY, host="some-other-node", pid=999_999_999)  # a fresh heartbeat
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew_s)
    assert store.status("train", KEY).state == "running"
    with pytest.raises(LockBusy), store.build("train", KEY, wait=False):
        pytest.fail("body must not run")
    then = real() - 301  # the holder stopped beating five minutes ago
    os.utime(lock, (then, then))
    assert store.status("train", KEY).state == "failed"
    _build_ok(store, wait=False)
    assert store.is_done("train", KEY)


def test_corrupt_lock_is_broken_only_after_grace(store: Store) -> None:
    lock = store.root / "train" / f"{KEY}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")  # holder died (or is) between O_EXCL create and write
    with pytest.raises(LockBusy), store.build("train", KEY, wait=False):
        pytest.fail("body must not run")
    then = time.time() - 60
    os.utime(lock, (then, then))
    _build_ok(store, wait=False)
    assert store.is_done("train", KEY)


def test_heartbeat_refreshes_lock_and_release_spares_foreign_lock(tmp_path: Path) -> None:
    store = Store(tmp_path, heartbeat_s=0.05, stale_after_s=1.0)
    lock = tmp_path / "train" / f"{KEY}.lock"
    with pytest.raises(LockLost), store.build("train", KEY) as b:
        assert b is not None
        os.utime(lock, (0, 0))
        time.sleep(0.3)
        assert time.time() - lock.stat().st_mtime < 1.0
        assert Store(tmp_path).status("train", KEY).state == "running"
        # Someone broke our lock (e.g. we hung past stale_after_s): we must neither publish over their build
        # nor delete their lock.
        lock.write_text(json.dumps({"host": "h", "pid": 1, "started": "", "token": "theirs"}))
    assert json.loads(lock.read_text())["token"] == "theirs" and not store.is_done("train", KEY)
    # their work dir and their key's records are left alone, even by a build that discards its work on failure
    assert store.work_path("train", KEY).is_dir()
    assert not (tmp_path / "train" / f"{KEY}.failed.json").exists()
    with pytest.raises(LockLost), store.build("train", KEY, keep_work_on_failure=False) as b:
        lock.write_text(json.dumps({"host": "h", "pid": 1, "started": "", "token": "theirs-too"}))
    assert store.work_path("train", KEY).is_dir()


def test_invalid_names_and_settings_are_rejected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for stage, key in [("train", "../x"), ("train", "a.work"), ("", KEY), ("a/b", KEY)]:
        with pytest.raises(ValueError):
            store.path(stage, key)
    with pytest.raises(ValueError):
        Store(tmp_path, heartbeat_s=10, stale_after_s=5)


def test_status_states(store: Store, live_pid: int) -> None:
    assert store.status("eval", KEY).state == "pending"
    with pytest.raises(OSError), store.build("eval", KEY):
        raise OSError("disk full")
    assert store.status("eval", KEY).state == "failed"
    with pytest.raises(RetryLater), store.build("eval", KEY):
        raise RetryLater("the tracking server is down")  # retried by the next run: deferred, not failed
    status = store.status("eval", KEY)
    assert status.state == "deferred" and "the tracking server is down" in status.detail
    lock = _write_lock(store, "eval", KEY, host=socket.gethostname(), pid=live_pid)
    assert store.status("eval", KEY).state == "running"  # a live retry outranks the old failure
    lock.unlink()
    _build_ok(store, "eval")
    status = store.status("eval", KEY)
    assert (status.state, status.path) == ("done", store.path("eval", KEY))


def test_invalidate(store: Store, live_pid: int) -> None:
    _build_ok(store)
    store.work_path("train", KEY).mkdir()  # a complete build left unpublished must not come back either
    (store.work_path("train", KEY) / MARKER).write_text("{}")
    store.invalidate("train", KEY)
    assert not store.is_done("train", KEY) and not store.path("train", KEY).exists()
    assert not store.work_path("train", KEY).exists()
    assert store.status("train", KEY).state == "pending"
    _build_ok(store)
    assert store.is_done("train", KEY)
    _write_lock(store, "train", KEY, host=socket.gethostname(), pid=live_pid)
    with pytest.raises(LockBusy):
        store.invalidate("train", KEY)
    assert store.is_done("train", KEY)


def test_clean_orphans(store: Store, dead_pid: int, live_pid: int) -> None:
    host = socket.gethostname()
    _build_ok(store, key="done1")
    with pytest.raises(ValueError), store.build("train", "failed1"):
        raise ValueError("x")
    unmarked = store.path("train", "unmarked1")
    unmarked.mkdir()
    dead_lock = _write_lock(store, "train", "dead1", host=host, pid=dead_pid)
    store.work_path("train", "dead1").mkdir()
    tomb = store.root / "train" / "dead1.lock.0123abcd.stale"
    tomb.write_text("")
    tmp = store.root / "train" / ".failed1.failed.json.0123abcd.tmp"
    tmp.write_text("{")
    live_lock = _write_lock(store, "train", "live1", host=host, pid=live_pid)
    store.work_path("train", "live1").mkdir()

    removed = store.clean_orphans()

    assert set(removed) == {
        store.work_path("train", "failed1"),
        unmarked,
        dead_lock,
        store.work_path("train", "dead1"),
        tomb,
        tmp,
    }
    assert not any(p.exists() for p in removed)
    assert live_lock.exists() and store.work_path("train", "live1").exists()
    assert store.is_done("train", "done1") and store.status("train", "failed1").state == "failed"
    assert store.clean_orphans() == []


def test_write_json_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"path": tmp_path, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"path": str(tmp_path), "b": [1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(target, {1j: "complex keys cannot be encoded"})
    assert json.loads(target.read_text())["b"] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_the_crash_safe_writes_are_still_the_stores_names() -> None:
    """They live in framework.store.durable; the stages, launchers and workers that import them from
    framework.store get the same functions."""
    import framework.store
    import framework.store.durable

    for name in ("write_json_atomic", "fsync_tree", "fsync_dir"):
        assert getattr(framework.store, name) is getattr(framework.store.durable, name)
    assert all(hasattr(framework.store, name) for name in framework.store.__all__)


_keys = st.text("0123456789abcdef", min_size=16, max_size=16)


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(_keys, st.sampled_from(["done", "failed", "unmarked", "work"]), max_size=6))
def test_done_keys_are_exactly_the_marked_ones(outcomes: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = Store(d)
        for key, outcome in outcomes.items():
            if outcome == "done":
                _build_ok(store, key=key)
            elif outcome == "failed":
                with pytest.raises(ValueError), store.build("train", key):
                    raise ValueError
            else:
                path = store.path("train", key) if outcome == "unmarked" else store.work_path("train", key)
                path.mkdir(parents=True)
        expected = {k for k, o in outcomes.items() if o == "done"}
        assert store.done_keys("train") == expected
        assert {k for k in outcomes if store.is_done("train", k)} == expected


def _race_worker(root: str, counter: str, barrier) -> None:
    store = Store(root, heartbeat_s=0.05, stale_after_s=5.0)
    barrier.wait()
    with store.build("train", KEY, poll_s=0.02, timeout_s=8) as b:
        if b is None:
            return
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.2)
        (b.dir / "out.txt").write_text("ok")


@pytest.mark.parametrize("stale_lock", [False, True], ids=["fresh", "stale-lock"])
def test_concurrent_builders_build_once(tmp_path: Path, dead_pid: int, stale_lock: bool) -> None:
    store = Store(tmp_path / "store")
    if stale_lock:  # all racers try to break the same dead lock at once
        _write_lock(store, "train", KEY, host=socket.gethostname(), pid=dead_pid)
    counter = tmp_path / "counter"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    args = (str(store.root), str(counter), barrier)
    procs = [ctx.Process(target=_race_worker, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(15)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(counter.read_text().splitlines()) == 1
    assert store.is_done("train", KEY)
    assert sorted(p.name for p in (tmp_path / "store" / "train").iterdir()) == [KEY]


def test_a_live_holder_on_this_host_keeps_its_lock_however_old_its_heartbeat(store: Store, live_pid: int) -> None:
    """A builder stopped (SIGSTOP, a suspended job, a sleeping laptop) is alive: taking its lock would let two
    builds write one work dir. Only a lock from another host is judged by its heartbeat's age."""
    _write_lock(store, "train", KEY, host=socket.gethostname(), pid=live_pid, age_s=10_000)
    assert store.status("train", KEY).state == "running"
    with pytest.raises(LockBusy), store.build("train", KEY, wait=False):
        pass
    _write_lock(store, "train", KEY, host="elsewhere", pid=live_pid, age_s=10_000)
    assert store.status("train", KEY).state != "running"


def test_a_reused_pid_does_not_keep_a_dead_builders_lock(store: Store, live_pid: int) -> None:
    lock = _write_lock(store, "train", KEY, host=socket.gethostname(), pid=live_pid)
    owner = json.loads(lock.read_text())
    lock.write_text(json.dumps({**owner, "pid_start": "1"}))  # the pid now belongs to a later process
    with store.build("train", KEY, wait=False) as b:
        assert b is not None


def test_clean_orphans_publishes_a_complete_build_that_died_before_its_rename(store: Store) -> None:
    work = store.work_path("train", KEY)
    work.mkdir(parents=True)
    (work / "weights.bin").write_bytes(b"\x01")
    write_json_atomic(work / "manifest.json", {"stage": "train"})
    write_json_atomic(work / MARKER, {"stage": "train", "key": KEY})
    store.clean_orphans()
    assert store.is_done("train", KEY) and (store.path("train", KEY) / "weights.bin").read_bytes() == b"\x01"


def test_a_lock_briefly_moved_by_a_racer_is_still_held(tmp_path: Path) -> None:
    """`_break` renames a lock it judged stale and links it back when it was not the one it judged: in that
    moment the file is missing, and a builder checking its lock before publishing must not give up."""
    import threading

    lock = Lock(tmp_path / "x.lock", heartbeat_s=10, stale_after_s=60)
    assert lock.acquire() is None
    tomb = tmp_path / "x.lock.tomb"
    os.rename(lock.path, tomb)
    restore = threading.Timer(0.2, lambda: os.rename(tomb, lock.path))
    restore.start()
    try:
        assert lock.held(settle_s=2.0)
    finally:
        restore.join()
    os.rename(lock.path, tomb)  # gone for good
    assert not lock.held(settle_s=0.2)
    lock.release()


def test_clean_unplanned_removes_only_leftovers_of_keys_no_plan_needs(store: Store, dead_pid: int, live_pid: int):
    """A failed build of a key the spec no longer plans leaves its work dir, failure record and log forever;
    clean removes them, never a planned key's (a re-run resumes from them), a done result, or a live lock."""
    host = socket.gethostname()
    for key in ("old1", "kept1"):
        with pytest.raises(ValueError), store.build("train", key):
            raise ValueError("x")
        store.log_path("train", key).write_text("log")
    _build_ok(store, key="done1")
    tmp = store.root / "train" / ".old1.failed.json.0123abcd.tmp"
    tmp.write_text("{")
    _write_lock(store, "train", "dead1", host=host, pid=dead_pid)
    store.work_path("train", "dead1").mkdir()
    live_lock = _write_lock(store, "train", "live1", host=host, pid=live_pid)
    store.work_path("train", "live1").mkdir()
    old = [store.work_path("train", "old1"), store.root / "train" / "old1.failed.json", store.log_path("train", "old1")]
    planned = {"train/kept1"}

    listed, kept = store.clean_unplanned(planned, delete=False)
    assert set(listed) == {*old, tmp} and set(kept) == {"train/dead1", "train/live1"}
    assert all(p.exists() for p in listed)  # a dry run changes nothing

    removed, kept = store.clean_unplanned(planned, delete=True)
    assert set(removed) == {*old, tmp, store.work_path("train", "dead1")} and list(kept) == ["train/live1"]
    assert not any(p.exists() for p in removed) and not (store.root / "train" / "dead1.lock").exists()
    assert live_lock.exists() and store.work_path("train", "live1").exists()
    assert store.work_path("train", "kept1").exists() and store.status("train", "kept1").state == "failed"
    assert store.is_done("train", "done1")


def test_clean_unplanned_keeps_what_a_queued_or_deferred_job_resumes_from_unless_forced(store: Store):
    """No lock shows a Slurm job still queued, nor a training deferred at a checkpoint whose requeued job has not
    started: their work dirs (the checkpoint) stay unless forced, and the Slurm record goes with a forced key."""
    from framework.errors import RetryLater

    with pytest.raises(RetryLater), store.build("train", "deferred1") as b:
        (b.dir / "checkpoint.bin").write_bytes(b"x")
        raise RetryLater("stopped at a checkpoint before the time limit")
    with pytest.raises(ValueError), store.build("train", "queued1"):
        raise ValueError("an earlier attempt failed")
    record = store.root / "train" / "queued1.slurm.json"
    record.write_text('{"job_id": 123, "stage": "train", "keys": ["queued1"]}')
    assert store.status("train", "deferred1").state == "deferred"

    for delete in (False, True):
        found, kept = store.clean_unplanned(set(), delete=delete)
        assert found == [] and set(kept) == {"train/deferred1", "train/queued1"}
        assert "deferred" in kept["train/deferred1"] and "Slurm" in kept["train/queued1"]
    assert (store.work_path("train", "deferred1") / "checkpoint.bin").is_file() and record.is_file()

    found, kept = store.clean_unplanned(set(), delete=True, force=True)
    assert kept == {} and {store.work_path("train", "deferred1"), record} <= set(found)
    assert not store.work_path("train", "deferred1").exists() and not record.exists()
    assert store.status("train", "deferred1").state == "pending" and store.status("train", "queued1").state == "pending"


def test_a_results_directory_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    from framework.errors import UserError

    (tmp_path / "results").write_text("not a directory")
    with pytest.raises(UserError, match=rf"the results directory {tmp_path / 'results'} is not a directory"):
        Store(tmp_path / "results" / "sweep" / "store")
    Store(tmp_path / "elsewhere" / "sweep" / "store")  # not there yet: created when a build starts


def test_statuses_from_one_listing_agree_with_status_key_by_key(tmp_path):
    store = Store(tmp_path / "s")
    with store.build("data", "done1"):
        pass
    with pytest.raises(RuntimeError), store.build("data", "failed1"):
        raise RuntimeError("boom")
    keys = ["done1", "failed1", "running1", "never1"]
    with store.build("data", "running1"):
        got = store.statuses("data", keys)
        assert {k: (s.state, s.detail) for k, s in got.items()} == {
            k: (store.status("data", k).state, store.status("data", k).detail) for k in keys
        }
    assert [got[k].state for k in keys] == ["done", "failed", "running", "pending"]
    assert store.statuses("train", keys) == {k: store.status("train", k) for k in keys}  # no stage directory yet
