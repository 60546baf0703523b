"""A whole sweep through `ablate run` on the local launcher, with real ZeRO-3, vLLM and MLflow (sqlite):
killed (SIGKILL to the launcher and its children) in the middle of training and of evaluation, then finished
by two `ablate run` started at once. Every stage is built exactly once, every cell has one MLflow run, nothing
is left half-written, a further run does no work, and editing one level re-runs only the cells it touches."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_MODEL

pytestmark = pytest.mark.integration

SPEC = {
    "name": "sweep-it",
    "model": TINY_MODEL,
    "pool": [{"preset": "toy"}],
    "factors": {"source": {"levels": ["long_cot", "direct"]}},
    "n_examples": 8,
    "seeds": [0],
    "baselines": ["base"],
    "prompt": {"user_template": "{problem}"},
    "train": {
        "epochs": 2,
        "learning_rate": 5.0e-4,
        "global_batch_size": 4,
        "max_seq_len": 256,
        "gradient_checkpointing": False,
        "processes": 2,
        "keep_checkpoint": False,  # each checkpoint is deleted once its evaluations are done
    },
    "eval": {
        "benchmarks": [{"name": "toy", "limit": 6}],
        "samples": 2,
        "sampling": {"temperature": 0.6, "max_tokens": 32},
    },
}


def start(cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "framework.cli", "run", "spec.yaml"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (the launcher starts each stage in a session of its own)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while listed
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL the launcher and every process under it at once, as a crash or a lost machine would."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "the sweep never reached the point to kill it at"
        time.sleep(0.5)
    below = descendants(proc.pid)
    for pid in [proc.pid, *below]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)  # frozen first, so none reacts to another's death
    for pid in [proc.pid, *below]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def plan_json(cwd: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "framework.cli", "plan", "spec.yaml", "--json", "--no-build"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_killed_sweep_resumes_concurrently_and_builds_each_stage_once(tmp_path: Path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    store = tmp_path / "results" / "sweep-it" / "store"

    # 1. SIGKILL while a training job is running (its work dir exists), 2. while an evaluation is running.
    kill_when(start(tmp_path), lambda: any(store.glob("train/*.work")))
    kill_when(start(tmp_path), lambda: any(store.glob("eval/*.lock")))

    # 3. Two runs at once finish the sweep.
    a, b = start(tmp_path), start(tmp_path)
    out_a, out_b = a.communicate(timeout=1500)[0], b.communicate(timeout=1500)[0]
    # 75: a log stage deferred on a locked sqlite file; the run says so, and the next one retries it
    assert a.returncode in (0, 75), out_a[-3000:]
    assert b.returncode in (0, 75), out_b[-3000:]

    plan = plan_json(tmp_path)
    if not all(j["done"] for j in plan["jobs"]):  # work is missing: a run said so, in its output and its status
        assert "deferred" in out_a + out_b and 75 in (a.returncode, b.returncode), out_a[-2000:] + out_b[-2000:]
        subprocess.run(
            [sys.executable, "-m", "framework.cli", "run", "spec.yaml"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=600,
        )
        plan = plan_json(tmp_path)
    assert all(j["done"] for j in plan["jobs"]), [j["id"] for j in plan["jobs"] if not j["done"]]
    # Built exactly once: across every job log, each job reports "done ->" once (other attempts say
    # "already done" or were killed before publishing).
    logs = "".join(p.read_text(errors="replace") for p in store.glob("*/*.log"))
    for job in plan["jobs"]:
        assert len(re.findall(rf"{job['id']}: done ->", logs)) == 1, job["id"]
    # Nothing half-written or orphaned.
    assert not list(store.glob("*/*.work")) and not list(store.glob("*/*.lock"))
    assert all((d / "SUCCESS").exists() for d in store.glob("*/*") if d.is_dir())
    # Every checkpoint was deleted after its evaluations, its metrics kept.
    trains = [d for d in store.glob("train/*") if d.is_dir()]
    assert trains and all((d / "PRUNED.json").is_file() and not (d / "model").exists() for d in trains)
    assert all((d / "metrics.json").is_file() for d in trains)

    # One MLflow run per cell (plus the sweep's parent), however many times log stages ran.
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep-it")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    cells = [r.data.tags.get("ablate.cell") for r in runs if r.data.tags.get("ablate.cell")]
    assert sorted(cells) == sorted(c["id"] for c in plan["cells"])

    # The report has a row per cell x benchmark.
    report = (tmp_path / "results" / "sweep-it" / "report.md").read_text()
    for c in plan["cells"]:
        assert c["id"] in report

    # A further run does no work.
    again = subprocess.run(
        [sys.executable, "-m", "framework.cli", "run", "spec.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and "0 tasks to run" in again.stdout

    # Editing one level re-runs only the cells it touches.
    SPEC2 = json.loads(json.dumps(SPEC))
    SPEC2["factors"]["source"]["levels"] = ["long_cot", "terse"]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC2))
    plan2 = plan_json(tmp_path)
    pending_cells = {c["id"] for c in plan2["cells"] if not all(j["done"] for s in c["stages"].values() for j in s)}
    assert pending_cells == {"source=terse,seed=0"}
