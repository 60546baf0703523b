"""`ablate run` on the local launcher evaluates in warm processes (framework/exec_worker.py): with one CPU slot,
two fine-tunes of one base are evaluated by one process, the second by loading its weights into the engine the
first built; each evaluation keeps its own log and result, and the samples are those of one process per
evaluation (`eval.reuse_engine: false`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import perturbed_toy_copy

pytestmark = pytest.mark.integration


def spec(one: Path, two: Path, reuse: bool) -> dict:
    return {
        "name": "warm",
        "model": {"name_or_path": "toy:base"},
        "pool": [{"preset": "toy"}],
        "n_examples": 4,
        "baselines": [
            {"name": "one", "model": {"name_or_path": str(one)}},
            {"name": "two", "model": {"name_or_path": str(two)}},
        ],
        "prompt": {"user_template": "{problem}"},
        "eval": {
            "benchmarks": [{"name": "toy", "limit": 6}],
            "samples": 2,
            "sampling": {"temperature": 0.6, "max_tokens": 32},
            "reuse_engine": reuse,
        },
        "launcher": {"kind": "local", "local": {"cpu_slots": 1}},
    }


def run(cwd: Path) -> str:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(
        [sys.executable, "-m", "framework.cli", "run", "spec.yaml"], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def samples(cwd: Path) -> dict[str, list[str]]:
    store = cwd / "results" / "warm" / "store" / "eval"
    return {d.name: pd.read_parquet(d / "samples.parquet")["text"].tolist() for d in sorted(store.glob("*/"))}


def test_one_warm_process_evaluates_both_models_and_samples_what_one_process_each_would(tmp_path: Path):
    one, two = tmp_path / "one", tmp_path / "two"
    perturbed_toy_copy(one, 1)
    perturbed_toy_copy(two, 2)
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    for cwd, reuse in ((warm, True), (cold, False)):
        cwd.mkdir()
        (cwd / "spec.yaml").write_text(yaml.safe_dump(spec(one, two, reuse)))

    said = run(warm)
    pids = re.findall(r"start  eval/\S+  \(baseline=\w+; in evaluation process (\d+)\)", said)
    assert len(pids) == 2 and pids[0] == pids[1], said
    logs = {p.stem: p.read_text() for p in (warm / "results" / "warm" / "store" / "eval").glob("*.log")}
    assert sum("into the engine built for" in text for text in logs.values()) == 1, logs
    assert all(len(re.findall(r": done -> ", text)) == 1 for text in logs.values()), logs  # each its own log

    said = run(cold)
    assert "in evaluation process" not in said
    assert samples(warm) == samples(cold)
    assert len(samples(warm)) == 2 and len(set(map(tuple, samples(warm).values()))) == 2
