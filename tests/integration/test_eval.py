"""The eval stage for real: vLLM's CPU build generates for a tiny model on the toy benchmark through
`ablate exec eval`, and its greedy output equals transformers' `generate` on the same prompt tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import TINY_MODEL

pytestmark = pytest.mark.integration

SPEC = {
    "name": "eval-it",
    "model": TINY_MODEL,
    "pool": [{"preset": "toy"}],
    "baselines": ["base"],
    "prompt": {"user_template": "{problem}"},
    "eval": {
        "benchmarks": [{"name": "toy", "limit": 6}],
        "samples": 1,
        "sampling": {"temperature": 0.0, "max_tokens": 24},
    },
}


def ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "framework.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_vllm_greedy_matches_hf_resumes_and_runs_data_parallel(tmp_path: Path):
    (tmp_path / "vllm.yaml").write_text(yaml.safe_dump(SPEC))
    hf_spec = {**SPEC, "eval": {**SPEC["eval"], "backend": "hf"}}
    (tmp_path / "hf.yaml").write_text(yaml.safe_dump({**hf_spec, "name": "eval-it"}))
    plan = json.loads(ablate("plan", "vllm.yaml", "--json", cwd=tmp_path).stdout)
    (base,) = [c for c in plan["cells"] if c["baseline"] == "base"]
    model_key = base["stages"]["model"][0]["key"]
    eval_key = base["stages"]["eval"][0]["key"]
    ablate("exec", "model", model_key, "--spec", "vllm.yaml", cwd=tmp_path)
    ablate("exec", "eval", eval_key, "--spec", "vllm.yaml", cwd=tmp_path)
    hf_plan = json.loads(ablate("plan", "hf.yaml", "--json", "--no-build", cwd=tmp_path).stdout)
    hf_key = next(c for c in hf_plan["cells"] if c["baseline"] == "base")["stages"]["eval"][0]["key"]
    assert hf_key != eval_key  # the backend is part of the key
    ablate("exec", "eval", hf_key, "--spec", "hf.yaml", cwd=tmp_path)

    store = tmp_path / "results" / "eval-it" / "store" / "eval"
    v = pd.read_parquet(store / eval_key / "samples.parquet").sort_values("problem_id")
    h = pd.read_parquet(store / hf_key / "samples.parquet").sort_values("problem_id")
    assert len(v) == 6 and list(v["problem_id"]) == list(h["problem_id"])
    assert list(v["text"]) == list(h["text"])  # greedy decoding: identical text from both engines
    assert list(v["n_tokens"]) == list(h["n_tokens"]) and list(v["finish_reason"]) == list(h["finish_reason"])
    metrics = json.loads((store / eval_key / "metrics.json").read_text())
    assert metrics["n_problems"] == 6 and 0.0 <= metrics["metrics"]["pass@1"] <= 1.0
    assert set(v.columns) >= {"text", "n_tokens", "finish_reason", "seed", "answer", "correct", "reflection_count"}
    # finished benchmarks are never regenerated
    again = ablate("exec", "eval", eval_key, "--spec", "vllm.yaml", cwd=tmp_path)
    assert "already done" in again.stdout

    # two data-parallel engines (one core each here) give the same greedy samples, in benchmark order
    dp_spec = {**SPEC, "eval": {**SPEC["eval"], "data_parallel_size": 2}}
    (tmp_path / "dp.yaml").write_text(yaml.safe_dump(dp_spec))
    dp_plan = json.loads(ablate("plan", "dp.yaml", "--json", "--no-build", cwd=tmp_path).stdout)
    dp_key = next(c for c in dp_plan["cells"] if c["baseline"] == "base")["stages"]["eval"][0]["key"]
    assert dp_key == eval_key  # how many engines run is not part of what is computed
    out = ablate("exec", "eval", dp_key, "--spec", "dp.yaml", "--force", cwd=tmp_path)
    assert "2 vLLM engines side by side, prompts [3, 3]" in out.stdout
    d = pd.read_parquet(store / dp_key / "samples.parquet")
    assert list(d["problem_id"]) == list(pd.read_parquet(store / hf_key / "samples.parquet")["problem_id"])
    d = d.sort_values("problem_id")
    assert list(d["text"]) == list(h["text"]) and list(d["n_tokens"]) == list(h["n_tokens"])
