"""Secrets planted in every place a user can put one (the spec's description, Slurm setup lines, a pool field,
environment variables) go through a real sweep (`ablate run`: tiny model trained, evaluated, logged to a real
`mlflow server`, reported) and appear nowhere: not in results/ (store, records, logs, report), not in the
server's database or artifact store, not in the run's output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.helpers import TINY_MODEL
from tests.mlflow_server import Server, running_server

pytestmark = pytest.mark.integration

HEX40 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
SK_PROJ = "sk-proj-" + "Ab3dE" * 8
HF = "hf_" + "QwErTy12" * 4
SECRETS = {
    "known key formats": [SK_PROJ, HF, "ghp_" + "Zz9" * 12],
    "shell exports": ["sk-test-123", HEX40],
    "URL passwords and query strings": ["pw-in-url-1", "qs-token-77"],
    "headers": ["bearer-cred-55", "xapikey-66"],
    "JSON and YAML": ["json-tok-88", "yaml-pw-99"],
    "pool field": ["pw-in-pool-url"],
    "names and shapes found in review": ["db-pass-21", "at-user-pw-22", "block-pw-23", "b3BlbnNzaC1rZXktcut24"],
    "environment": ["sk-env-note-1"],
}
DESCRIPTION = (
    f"Does the trace source matter? Keys: {SK_PROJ} and {HF}; run `export OPENAI_API_KEY=sk-test-123` first. "
    'Config: {"token": "json-tok-88"}.\nmlflow_password: yaml-pw-99\n'
    "Data at https://alice:pw-in-url-1@data.example.com/x?token=qs-token-77\n"
    "Authorization: Bearer bearer-cred-55\nX-Api-Key: xapikey-66\n"
    "DB_PASS=db-pass-21 psql; tracking at https://me@corp.com:at-user-pw-22@mlflow.corp.com\n"
    "password:\n  block-pw-23\n"
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktcut24\n"
)
SPEC = {
    "name": "secrets-it",
    "description": DESCRIPTION,
    "model": TINY_MODEL,
    # a filter value that matches no row, so the pool is the toy one
    "pool": [{"preset": "toy", "filter": {"source": ["long_cot", "https://pool:pw-in-pool-url@hub.example.com"]}}],
    "factors": {"source": {"levels": ["long_cot"]}},
    "n_examples": 4,
    "seeds": [0],
    "prompt": {"user_template": "{problem}"},
    "train": {
        "epochs": 1,
        "learning_rate": 5.0e-4,
        "global_batch_size": 2,
        "max_seq_len": 256,
        "gradient_checkpointing": False,
        "processes": 1,
    },
    "eval": {
        "backend": "hf",
        "benchmarks": [{"name": "toy", "limit": 2}],
        "samples": 1,
        "sampling": {"max_tokens": 16},
    },
    "launcher": {
        "kind": "local",
        "slurm": {"setup": [f"export WANDB_API_KEY={HEX40}", "huggingface-cli login --token ghp_" + "Zz9" * 12]},
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("mlflow-secrets")) as srv:
        yield srv


def leaks(root: Path, secrets: list[str]) -> list[str]:
    """'file: secret' for every planted secret found in any file under root (bytes: databases included)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: {s}" for s in secrets if s.encode() in data]
    return found


def test_planted_secrets_reach_no_output_of_a_real_sweep(server: Server, tmp_path: Path):
    spec = {**SPEC, "tracking": {"uri": server.uri}, "results_dir": str(tmp_path / "results")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env |= {"ABLATE_NOTE": "sk-env-note-1", "WANDB_API_KEY": HEX40}
    env.pop("MLFLOW_TRACKING_URI", None)
    run = subprocess.run(
        [sys.executable, "-m", "framework.cli", "run", "spec.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # every output exists, so that finding no secret in it means something
    results = tmp_path / "results" / "secrets-it"
    assert (results / "report.md").is_file() and list((results / "store" / "log").glob("*/run.json"))
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("secrets-it")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`ablate.role` = 'sweep'")
    (cell,) = client.search_runs([exp.experiment_id], filter_string="tags.`ablate.role` = 'cell'")
    assert "report/report.md" in {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    spec_yaml = Path(client.download_artifacts(cell.info.run_id, "spec.yaml", str(tmp_path / "dl")))
    setup = yaml.safe_load(spec_yaml.read_text())["launcher"]["slurm"]["setup"]
    assert setup[0] == "export WANDB_API_KEY=[REDACTED]"
    assert "Does the trace source matter? Keys: [REDACTED] and [REDACTED]" in cell.data.tags["mlflow.note.content"]

    planted = [s for group in SECRETS.values() for s in group]
    found = leaks(tmp_path / "results", planted) + leaks(server.root, planted)
    found += [f"ablate run output: {s}" for s in planted if s in run.stdout + run.stderr]
    client.download_artifacts(parent.info.run_id, "", str(tmp_path / "dl" / "parent"))
    found += leaks(tmp_path / "dl", planted)
    assert found == []
