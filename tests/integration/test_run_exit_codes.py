"""`ablate run`'s exit status when work is deferred: a real local sweep whose only missing stages are the log stages,
against a tracking URI where no server listens. Each `ablate exec log` exits 75; the sweep must too, so that a
script or a Slurm wrapper never takes a sweep whose cells are missing from MLflow for a complete one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from framework.errors import RetryLater
from tests.mlflow_server import free_port
from tests.synthetic import synthetic_spec, synthetic_sweep

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_run_exits_75_when_the_tracking_server_is_down(tmp_path: Path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    kw = {"uri": uri, "tracking": {"uri": uri}, "seeds": (0,)}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(synthetic_spec(tmp_path, **kw), sort_keys=False))
    sw = synthetic_sweep(tmp_path, **kw)  # every stage but log published
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ABLATE_RESULTS_DIR")}
    env["PYTHONPATH"] = str(REPO)
    run = subprocess.run(
        [sys.executable, "-m", "framework.cli", "run", str(spec)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = [j.key for j in sw.plan.by_stage("log")]
    assert run.returncode == RetryLater.exit_code, run.stdout + run.stderr
    assert f"0 done, 0 not done, {len(logs)} deferred" in run.stdout
    assert not any(sw.store.is_done("log", k) for k in logs)
    assert (sw.store.root.parent / "report.md").is_file()  # the report from the store is still written
