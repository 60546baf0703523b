"""Build directories and stale build locks of DeepSpeed's just-in-time ops (a real run is in test_train.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from framework.train import jit_ops

REPO = Path(__file__).resolve().parents[3]


def test_each_python_environment_builds_in_a_directory_of_its_own(tmp_path: Path, monkeypatch) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    here = jit_ops.extensions_dir(env)
    monkeypatch.setattr(sys, "prefix", "/some/other/venv")
    assert jit_ops.extensions_dir(env) != here and here.is_relative_to(tmp_path)
    assert jit_ops.extensions_dir({**env, "TORCH_EXTENSIONS_DIR": "/mine"}) == Path("/mine")  # the user's wins


def test_needed_ops() -> None:
    assert jit_ops.needed_ops(gpu=False, offload_optimizer=False) == [jit_ops.CPU_COMM_OP]
    assert jit_ops.needed_ops(gpu=True, offload_optimizer=False) == []
    assert jit_ops.needed_ops(gpu=True, offload_optimizer=True) == [jit_ops.CPU_ADAM_OP]


def test_a_lock_that_outlives_the_settle_time_is_a_dead_builds_and_goes(tmp_path: Path) -> None:
    (tmp_path / jit_ops.BATON).touch()
    t0 = time.monotonic()
    assert jit_ops.clear_stale_baton(tmp_path, settle_s=0.5)
    assert not (tmp_path / jit_ops.BATON).exists() and time.monotonic() - t0 >= 0.5


def test_a_lock_released_within_the_settle_time_is_left_to_its_holder(tmp_path: Path) -> None:
    baton = tmp_path / jit_ops.BATON
    baton.touch()
    threading.Timer(0.3, baton.unlink).start()  # a process loading the built op lets go
    assert not jit_ops.clear_stale_baton(tmp_path, settle_s=5.0)


HOLDER = """
import sys, time
from pathlib import Path
from framework.train.jit_ops import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_the_flock_of_a_killed_holder_is_free_at_once(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    acquired = threading.Event()

    def take() -> None:
        with jit_ops.exclusive(tmp_path):
            acquired.set()

    threading.Thread(target=take, daemon=True).start()
    assert not acquired.wait(0.5)  # held by the live process
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert acquired.wait(5)
