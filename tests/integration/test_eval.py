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
    assert "eval: 1 x 2 (tensor x data parallel): on CPU, as the spec fixes" in out.stdout  # the layout it ran
    d = pd.read_parquet(store / dp_key / "samples.parquet")
    assert list(d["problem_id"]) == list(pd.read_parquet(store / hf_key / "samples.parquet")["problem_id"])
    d = d.sort_values("problem_id")
    assert list(d["text"]) == list(h["text"]) and list(d["n_tokens"]) == list(h["n_tokens"])


STOPS_PROBE = """
import json, sys
from pathlib import Path
from framework.benchmarks.loading import load_benchmark
from framework.eval.stage import generate_vllm
from framework.formatting import prompt_ids
from framework.model_source import ModelSource, load_tokenizer
from framework.locations import toy_base_path
from framework.spec.models import BenchmarkSpec, EvalSpec, PromptSpec

base = toy_base_path()
tok = load_tokenizer(ModelSource("local", str(base)))
problems = load_benchmark(BenchmarkSpec(name="toy", limit=3), lambda p: p)
prompts = [prompt_ids(tok, p, PromptSpec()) for p in problems["problem"]]
ev = {"benchmarks": [{"name": "toy"}], "samples": 1, "sampling": {"temperature": 0.0, "max_tokens": 16}}
out = {}
for dp, stops in json.loads(sys.argv[1]):
    spec = EvalSpec.model_validate({**ev, "data_parallel_size": dp})
    out[f"{dp}:{stops}"] = generate_vllm(base, prompts, spec, "float32", 512, stops)
print(json.dumps(out))
"""


def test_the_stop_ids_given_end_every_sample_in_one_engine_and_in_data_parallel_ones(tmp_path: Path):
    """The ids evaluation stops on reach the engine: a stop id the model emits first ends each sample there."""
    eos = 0  # the toy base's <|endoftext|>
    free = json.loads(run_probe([[1, [eos]]], tmp_path))[f"1:{[eos]}"]
    first = sorted({o[0]["n_tokens"] for o in free})
    assert first[0] > 1, free  # each sample is longer than one token without the extra stop id
    from transformers import AutoTokenizer

    from framework.locations import toy_base_path

    tok = AutoTokenizer.from_pretrained(toy_base_path())
    first_ids = [tok(o[0]["text"], add_special_tokens=False)["input_ids"][0] for o in free]
    stops = [*sorted(set(first_ids)), eos]
    stopped = json.loads(run_probe([[1, stops], [2, stops]], tmp_path))
    for samples in stopped.values():
        assert [(o[0]["n_tokens"], o[0]["finish_reason"]) for o in samples] == [(1, "stop")] * len(free)


def run_probe(calls: list, cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", STOPS_PROBE, json.dumps(calls)], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]
