"""Workers sharing one study, as separate processes on a real storage under the store's mutex -- sqlite, and a
PostgreSQL server started for the tests where one is installed: the study gets exactly its number of trials, a
grid point is never run twice, and a worker killed mid-trial has its trial failed by another after the grace
period and its parameters run again, counted once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from framework.search.study import open_storage
from framework.spec.search import SearchSpec

WORKER = Path(__file__).with_name("worker_process.py")
ROOT = Path(__file__).resolve().parents[3]
FAST = {"heartbeat_s": 1.0, "grace_s": 2.0}


@pytest.fixture(scope="module")
def postgres() -> Any:
    from tests.postgres_server import postgres_server, unavailable

    why = unavailable()
    if why:
        pytest.skip(f"no PostgreSQL server here: {why}")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The study's storage: a sqlite file, or a database of its own on the test's PostgreSQL server (each test
    names its study after itself, so the tests never share one)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return request.getfixturevalue("postgres")


def _start(tmp: Path, search: dict[str, Any], worker: int, **extra: Any) -> subprocess.Popen:
    args = {
        "url": URL[tmp],
        "store": str(tmp / "store"),
        "study": STUDY[tmp],
        "search": search,
        "worker": worker,
        "sleep_s": 0.3,
        "calls": str(tmp / "calls.jsonl"),
        **extra,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(WORKER), json.dumps(args)], cwd=ROOT, env=env)


URL: dict[Path, str] = {}  # a test's tmp_path -> its storage URL
STUDY: dict[Path, str] = {}  # a test's tmp_path -> its study name


@pytest.fixture(autouse=True)
def _storage(request: pytest.FixtureRequest, tmp_path: Path, url: str) -> Any:
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[-80:]  # a store lock name's characters
    URL[tmp_path], STUDY[tmp_path] = url, f"ablate-{name}"
    yield
    URL.pop(tmp_path), STUDY.pop(tmp_path)


def _study(tmp: Path, search: dict[str, Any]) -> optuna.Study:
    storage = open_storage(URL[tmp], SearchSpec.model_validate(search))
    return optuna.load_study(study_name=STUDY[tmp], storage=storage)


def _calls(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "calls.jsonl").read_text().splitlines()]


def _wait(procs: list[subprocess.Popen], timeout: float = 90) -> None:
    try:
        for p in procs:
            assert p.wait(timeout=timeout) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_workers_complete_exactly_the_trials_asked(tmp_path: Path) -> None:
    search = {
        "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "objective": {"benchmark": "toy-dev"},
        "sampler": {"kind": "random"},
        "trials": 6,
        **FAST,
    }
    procs = [_start(tmp_path, search, w) for w in range(2)]
    _wait(procs)
    trials = _study(tmp_path, search).get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 6
    assert len(trials) == 6  # no trial asked beyond the target, none left running
    assert len(_calls(tmp_path)) == 6
    per_worker = [json.loads((tmp_path / f"calls.worker{w}.json").read_text()) for w in range(2)]
    assert sum(len(r) for r in per_worker) == 6 and all(per_worker)  # both pulled trials
    assert len({t.params["learning_rate"] for t in trials}) == 6  # the workers' samplers draw different streams


def test_a_grid_point_is_never_run_twice_by_concurrent_workers(tmp_path: Path) -> None:
    search = {
        "params": {
            "epochs": {"type": "int", "low": 1, "high": 4},
            "lr_scheduler": {"type": "categorical", "choices": ["cosine", "linear"]},
        },
        "objective": {"benchmark": "toy-dev"},
        "sampler": {"kind": "grid", "seed": 3},
        **FAST,
    }
    procs = [_start(tmp_path, search, w, sleep_s=0.1) for w in range(3)]
    _wait(procs)
    points = [(c["params"]["epochs"], c["params"]["lr_scheduler"]) for c in _calls(tmp_path)]
    assert len(points) == 8 and len(set(points)) == 8  # every point of the 4 x 2 grid, each once
    study = _study(tmp_path, search)
    assert study.user_attrs["grid_enqueued"] == 8  # queued by one worker only
    assert len(study.get_trials()) == 8


def test_a_killed_workers_trial_is_failed_and_its_parameters_retried_once(tmp_path: Path) -> None:
    search = {
        "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "objective": {"benchmark": "toy-dev"},
        "sampler": {"kind": "random"},
        "trials": 3,
        **FAST,
    }
    doomed = _start(tmp_path, search, 0, hang=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "calls.jsonl").is_file():  # the doomed worker is inside its first trial
            assert time.monotonic() < deadline and doomed.poll() is None
            time.sleep(0.1)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    first = _calls(tmp_path)[0]
    t0 = time.monotonic()
    _wait([_start(tmp_path, search, 1)])
    trials = _study(tmp_path, search).get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    assert failed.number == first["number"]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == failed.params == first["params"]  # the same parameters, run again
    assert time.monotonic() - t0 >= 2.0  # not before the grace period had passed
