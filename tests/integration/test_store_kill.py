"""SIGKILL a real build process at chosen moments; the store must never show a partial result as done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from framework.store import MARKER, Store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEY = "feedfacecafebeef"
N_FILES = 40
Starter = Callable[..., subprocess.Popen[str]]

# Writes N_FILES files slowly, announcing progress on stdout, then lingers in the body before publishing.
BUILDER = f"""
import sys, time
from framework.store import Store
root, linger = sys.argv[1], float(sys.argv[2])
with Store(root, heartbeat_s=0.1, stale_after_s=60).build("train", "{KEY}") as b:
    for i in range({N_FILES}):
        (b.dir / f"part-{{i:03d}}.txt").write_text(str(i) * 1000)
        print("wrote", i, flush=True)
        time.sleep(0.01)
    print("body-done", flush=True)
    time.sleep(linger)
print("published", flush=True)
"""


@pytest.fixture
def start_builder(tmp_path: Path) -> Iterator[Starter]:
    """Start the builder on tmp_path; whatever a failing test left running is killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(*, linger: float = 0.0, pause_before_rename: float = 0.0) -> subprocess.Popen[str]:
        path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        if pause_before_rename:
            env["ABLATE_STORE_TEST_PAUSE_BEFORE_RENAME"] = str(pause_before_rename)
        argv = [sys.executable, "-c", BUILDER, str(tmp_path), str(linger)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_for_line(proc: subprocess.Popen[str], wanted: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == wanted:
            return
    raise AssertionError(f"builder exited (rc={proc.wait()}) before printing {wanted!r}")


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def _assert_not_done(store: Store) -> None:
    final = store.path("train", KEY)
    assert not store.is_done("train", KEY)
    assert not (final / MARKER).exists()
    assert store.done_keys("train") == set()
    status = store.status("train", KEY)  # the dead holder's lock does not count as running, and says it died
    assert status.state == "failed" and "ended without recording why" in status.detail
    assert store.manifest("train", KEY) is None


def _rebuild_and_check(store: Store) -> None:
    with store.build("train", KEY, wait=False) as b:
        assert b is not None
        for i in range(N_FILES):
            (b.dir / f"part-{i:03d}.txt").write_text(str(i) * 1000)
    final = store.path("train", KEY)
    assert store.is_done("train", KEY)
    names = sorted(p.name for p in final.iterdir())
    assert names == sorted([MARKER, "manifest.json", *(f"part-{i:03d}.txt" for i in range(N_FILES))])
    assert all((final / f"part-{i:03d}.txt").read_text() == str(i) * 1000 for i in range(N_FILES))
    assert store.manifest("train", KEY)["pid"] == os.getpid()
    assert sorted(p.name for p in final.parent.iterdir()) == [KEY]  # lock, work dir, tombstones all gone


MOMENTS = {"start": "wrote 0", "writing": f"wrote {N_FILES // 2}", "end-of-body": "body-done"}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_before_publication(tmp_path: Path, start_builder: Starter, moment: str) -> None:
    store = Store(tmp_path)
    proc = start_builder(linger=30)
    _wait_for_line(proc, MOMENTS[moment])
    _kill(proc)
    _assert_not_done(store)
    assert not store.path("train", KEY).exists()
    assert store.work_path("train", KEY).is_dir()
    _rebuild_and_check(store)


def test_kill_between_marker_and_rename_loses_nothing(tmp_path: Path, start_builder: Starter) -> None:
    """The build was complete (marked in its work dir) but not yet renamed into place: the next build publishes
    it as it is instead of redoing it (for a training, hours of work)."""
    store = Store(tmp_path)
    proc = start_builder(pause_before_rename=30)
    _wait_for_line(proc, "body-done")
    marker = store.work_path("train", KEY) / MARKER
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "builder never marked its work dir"
        time.sleep(0.01)
    builder_pid = proc.pid
    _kill(proc)
    assert not store.is_done("train", KEY) and store.done_keys("train") == set()
    assert store.status("train", KEY).detail == "complete; the next run publishes it"
    with store.build("train", KEY, wait=False) as b:
        assert b is None  # published, not rebuilt
    final = store.path("train", KEY)
    assert store.is_done("train", KEY) and store.manifest("train", KEY)["pid"] == builder_pid
    assert all((final / f"part-{i:03d}.txt").read_text() == str(i) * 1000 for i in range(N_FILES))
    assert sorted(p.name for p in final.parent.iterdir()) == [KEY]


def test_killed_build_resumes_from_its_work_dir(tmp_path: Path, start_builder: Starter) -> None:
    store = Store(tmp_path)
    proc = start_builder(linger=30)
    _wait_for_line(proc, "wrote 10")
    _kill(proc)
    with store.build("train", KEY, wait=False, resume=True) as b:
        assert b is not None and b.resumed
        done = {p.name for p in b.dir.glob("part-*.txt")}
        assert {f"part-{i:03d}.txt" for i in range(11)} <= done
        for i in range(N_FILES):
            if f"part-{i:03d}.txt" not in done:
                (b.dir / f"part-{i:03d}.txt").write_text(str(i) * 1000)
    assert store.is_done("train", KEY)
    assert len(list(store.path("train", KEY).glob("part-*.txt"))) == N_FILES


def test_unkilled_build_completes(tmp_path: Path, start_builder: Starter) -> None:
    """Control for the tests above: the same builder, left alone, publishes."""
    proc = start_builder()
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out.strip().endswith("published")
    assert Store(tmp_path).is_done("train", KEY)
