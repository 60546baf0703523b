"""`ablate ui` for a finished synthetic sweep, looked at by headless Chromium: the MLflow UI is a JavaScript app
whose REST calls run in the page, so the DOM is dumped after a virtual-time budget and searched for the
experiment, the sweep's parent run and a cell's params and metrics (values as the store has them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.log.stage import ui_command
from framework.sweep.execute import execute
from tests.synthetic import synthetic_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install -y chromium)"),
]
CELL = "source=human_stage4,keywords=mask,seed=0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A logged sweep in a sqlite store, served by the command `ablate ui` runs; stopped by pid afterwards."""
    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}"
    sw = synthetic_sweep(tmp, seeds=(0,), uri=uri, tracking={"uri": uri, "experiment": "synth-ui"})
    records = {}
    for job in sw.plan.by_stage("log"):
        execute(sw.loaded, sw.plan, sw.store, "log", job.key)
        record = json.loads((sw.store.path("log", job.key) / "run.json").read_text())
        records[record["run_name"]] = record
    port = free_port()
    log = open(tmp / "ui.log", "wb")  # noqa: SIM115 -- lives as long as the server
    proc = subprocess.Popen(ui_command(uri, port=port), cwd=tmp, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the UI server did not come up: {(tmp / 'ui.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield {"url": f"http://127.0.0.1:{port}", "records": records, "sweep": sw, "tmp": tmp}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def page_text(url: str, profile: Path) -> str:
    """The page's visible text after its scripts ran (15 s of virtual time for the REST calls)."""
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--virtual-time-budget=15000", "--dump-dom", url,
    ]  # fmt: skip
    html = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=True).stdout
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_experiment_page_lists_the_sweep(ui: dict):
    record = ui["records"][CELL]
    # MLflow 3 opens on its GenAI pages unless told the workflow is model training
    url = f"{ui['url']}/#/experiments/{record['experiment_id']}?workflowType=machine_learning"
    text = page_text(url, ui["tmp"] / "chrome-1")
    assert f"Runs - Experiment {record['experiment_id']}" in text and "synth-ui" in text
    assert re.search(r"\bsynth\b", text)  # the sweep's parent run (cells are nested under it)
    assert "6 matching runs" in text  # the parent and five cells


def test_run_page_shows_a_cells_params_and_metrics(ui: dict):
    record = ui["records"][CELL]
    url = f"{ui['url']}/#/experiments/{record['experiment_id']}/runs/{record['run_id']}"
    text = page_text(url, ui["tmp"] / "chrome-2")
    sw = ui["sweep"]
    (eval_job,) = sw.plan.cell_jobs[CELL]["eval"]
    stored = json.loads((sw.store.path(*eval_job.split("/")) / "metrics.json").read_text())["metrics"]
    assert CELL in text
    assert "factor.source human_stage4" in text and "factor.keywords mask" in text
    assert f"aime24/pass_at_1 {stored['pass@1']!r}" in text
    assert "Parent run synth" in text
