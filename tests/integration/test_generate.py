"""The generate stage for real: `ablate exec generate` against an OpenAI-compatible server on a real socket (one
that fails in the middle, one killed mid-generation) and with vLLM's CPU build offline; its traces graded in
the pool, refined by a second pass, and the API key nowhere in what it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import generation_spec
from tests.openai_server import FakeOpenAI, Reply, serving

pytestmark = pytest.mark.integration

KEY = "sk-planted-teacher-key-0123456789abcdef"


def spec(url: str, **endpoint) -> dict:
    teacher = {"endpoint": {"base_url": url, "model": "fake-teacher", "api_key_env": "TEACHER_KEY", **endpoint}}
    generated = {"problems": {"preset": "toy", "limit": 30}, "teacher": teacher, "samples": 2}
    refined = {
        "refine": "teacher-x",
        "teacher": teacher,
        "prompt": "Rewrite, checking each step:\n{trace}",
        "chat": False,
    }
    data = generation_spec("teacher-x", generated)
    data["pool"].append({"source": "teacher-x-checked", "generate": refined})
    data["factors"]["source"]["levels"].append("teacher-x-checked")
    return data


def ablate(*args: str, cwd: Path, ok: bool = True, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEACHER_KEY": KEY}
    out = subprocess.run(
        [sys.executable, "-m", "framework.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def generate_keys(cwd: Path) -> list[str]:
    plan = json.loads(ablate("plan", "spec.yaml", "--json", "--no-build", cwd=cwd).stdout)
    return list(dict.fromkeys(j["key"] for c in plan["cells"] for j in c["stages"]["generate"]))


def journaled(cwd: Path) -> int:
    return sum(
        sum(1 for line in p.read_text().splitlines() if '"status": "ok"' in line)
        for p in (cwd / "results" / "gen" / "store" / ".requests").rglob("*.jsonl")
    )


def test_a_server_failing_midway_then_a_rerun_asks_each_request_once(tmp_path: Path):
    failing = FakeOpenAI(lambda k, req: Reply() if k < 6 else Reply(500, b"overloaded"))
    with serving(failing) as url:
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec(url, max_retries=1, backoff_s=0.01, concurrency=1)))
        first, refine = generate_keys(tmp_path)
        out = ablate("exec", "generate", first, "--spec", "spec.yaml", cwd=tmp_path, ok=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "10 of 16 requests failed" in out.stderr and "HTTP 500: overloaded" in out.stderr
    assert journaled(tmp_path) == 6  # what finished before the failures is kept

    healthy = FakeOpenAI()
    with serving(healthy) as url:
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec(url, concurrency=4)))
        assert generate_keys(tmp_path) == [first, refine]  # the URL and client settings key nothing
        ablate("exec", "generate", first, "--spec", "spec.yaml", cwd=tmp_path)
        assert len(healthy.received) == 10  # only the failed ones, each once
        ablate("exec", "generate", refine, "--spec", "spec.yaml", cwd=tmp_path)
        assert len(healthy.received) == 10 + 16 and {r["_path"] for r in healthy.received[10:]} == {"/v1/completions"}
        ablate("exec", "generate", first, "--spec", "spec.yaml", cwd=tmp_path)  # done: asks nothing
        assert len(healthy.received) == 26
        plan = ablate("plan", "spec.yaml", cwd=tmp_path)  # builds the pool and data from the generated traces
    assert "generate 2/2" in plan.stdout and "pool 1/1" in plan.stdout

    store = tmp_path / "results" / "gen" / "store"
    traces = pd.read_parquet(store / "generate" / first / "traces.parquet")
    assert len(traces) == 16 and traces["request_id"].is_unique and set(traces["sample"]) == {0, 1}
    usage = json.loads((store / "generate" / first / "usage.json").read_text())
    assert usage["finished"] == 16 and usage["asked_now"] == 10 and usage["reused"] == 6
    (pool_dir,) = (store / "pool").iterdir()
    pool = pd.read_parquet(pool_dir / "pool.parquet")
    gen = pool[pool["source"] == "teacher-x"]
    assert len(gen) == 16 and gen["correct"].notna().all() and (gen["teacher"] == "fake-teacher").all()
    refined = pool[pool["source"] == "teacher-x-checked"]
    assert len(refined) == 16 and set(refined["parent_trace_id"]) == set(gen["trace_id"])  # pairs with its parent
    assert refined["trace"].str.startswith("Answer to [Rewrite, checking each step:").all()
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaked == [] and KEY not in out.stderr + out.stdout


def test_a_kill_mid_generation_loses_only_the_requests_in_flight(tmp_path: Path):
    slow = FakeOpenAI(lambda k, req: Reply(delay_s=0.15))
    with serving(slow) as url:
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec(url, concurrency=2)))
        first, _ = generate_keys(tmp_path)
        env = {**os.environ, "TEACHER_KEY": KEY}
        cmd = [sys.executable, "-m", "framework.cli", "exec", "generate", first, "--spec", "spec.yaml"]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while journaled(tmp_path) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kept, asked_before = journaled(tmp_path), len(slow.received)
        assert 5 <= kept < 16
        ablate("exec", "generate", first, "--spec", "spec.yaml", cwd=tmp_path)
    asked_after = len(slow.received) - asked_before
    assert asked_after == 16 - kept  # a finished request is never paid for twice
    assert asked_before - kept <= 2  # lost: at most the requests in flight (concurrency 2)
    traces = pd.read_parquet(tmp_path / "results" / "gen" / "store" / "generate" / first / "traces.parquet")
    assert len(traces) == 16 and traces["request_id"].is_unique


def test_vllm_offline_teacher_writes_graded_traces(tmp_path: Path):
    data = generation_spec(
        "toy-base-teacher",
        {
            "problems": {"preset": "toy", "limit": 12},
            "teacher": {"model": "toy:base", "batch_size": 4},
            "prompt": "{problem}",
            "samples": 2,
            "sampling": {"temperature": 0.8, "max_tokens": 4096},  # beyond the toy's context
        },
    )
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    (key,) = generate_keys(tmp_path)
    ablate("exec", "generate", key, "--spec", "spec.yaml", cwd=tmp_path)
    out = tmp_path / "results" / "gen" / "store" / "generate" / key
    traces = pd.read_parquet(out / "traces.parquet")
    usage = json.loads((out / "usage.json").read_text())
    problems = traces["problem_id"].nunique()
    assert usage["requests"] == 2 * problems and usage["finished"] == usage["requests"]
    assert len(traces) == usage["finished"] - usage["empty"]
    context = json.loads((Path(__file__).parents[2] / "framework/toy/assets/base/config.json").read_text())
    assert usage["capped"] == usage["finished"] and "fewer than max_tokens 4096" in usage["warning"]  # said so
    limits = context["max_position_embeddings"] - traces["prompt_tokens"]  # each request's own room
    assert (traces["completion_tokens"] <= limits).all() and str(traces["sample"].dtype) == "Int64"
    assert set(traces["finish_reason"]) <= {"stop", "length"} and (traces["teacher"] == "toy:base").all()
    ablate("exec", "generate", key, "--spec", "spec.yaml", cwd=tmp_path, ok=True)  # done: returns at once
