"""Cost of logging one cell to MLflow: the log stage's batched calls vs one call per value.

    .venv/bin/python benchmarks/tracking.py [--backend sqlite|http|both] [--points 1000] [--repeats 3]

A cell is `--points` metric points (a loss and a learning-rate curve), ~60 params, ~12 tags and five artifact
files (spec, training set, generations sample, metrics). "batched" is what the log stage does
(`framework.log.mlflow_client.log_batched`: log_batch in chunks within MLflow's limits, then one log_artifacts);
"per-call" is log_metric / log_param / set_tag / log_artifact once per value. The http backend starts a local
`mlflow server` (stopped by pid at the end). Prints the median seconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from framework.log.mlflow_client import log_batched


def cell_payload(points: int, root: Path) -> tuple[list[Metric], list[Param], list[RunTag], Path]:
    ts = int(time.time() * 1000)
    half = points // 2
    metrics = [Metric("train/loss", 2.0 * 0.99**s, ts, s) for s in range(half)]
    metrics += [Metric("train/lr", 1e-5 * (1 - s / half), ts, s) for s in range(points - half)]
    params = [Param(f"train.option_{i}", str(i * 0.5)) for i in range(50)]
    params += [Param(f"factor.f{i}", f"level_{i}") for i in range(4)] + [Param("seed", "0"), Param("cell", "a=b")]
    tags = [RunTag(f"ablate.tag_{i}", f"value-{i}") for i in range(12)]
    art = root / "artifacts"
    (art / "data").mkdir(parents=True)
    (art / "generations").mkdir()
    (art / "spec.yaml").write_text("name: bench\n" + "".join(f"key_{i}: {i}\n" for i in range(200)))
    (art / "data" / "train.jsonl").write_text("".join(json.dumps({"trace": "wait, " * 400}) + "\n" for _ in range(20)))
    (art / "generations" / "bench.jsonl").write_text(
        "".join(json.dumps({"text": "let me check " * 300}) + "\n" for _ in range(50))
    )
    (art / "metrics.json").write_text(json.dumps({"pass@1": 0.5, "maj@64": 0.6}))
    (art / "env.json").write_text(json.dumps({"python": sys.version}))
    return metrics, params, tags, art


def batched(client: MlflowClient, run_id: str, metrics, params, tags, art: Path) -> float:
    """Log the cell as the log stage does; returns the seconds spent on the values (the rest is artifacts)."""
    t0 = time.perf_counter()
    log_batched(client, run_id, metrics, params, tags)
    values_s = time.perf_counter() - t0
    client.log_artifacts(run_id, str(art))
    return values_s


def per_call(client: MlflowClient, run_id: str, metrics, params, tags, art: Path) -> float:
    t0 = time.perf_counter()
    for m in metrics:
        client.log_metric(run_id, m.key, m.value, m.timestamp, m.step)
    for p in params:
        client.log_param(run_id, p.key, p.value)
    for t in tags:
        client.set_tag(run_id, t.key, t.value)
    values_s = time.perf_counter() - t0
    for f in sorted(art.rglob("*")):
        if f.is_file():
            client.log_artifact(run_id, str(f), str(f.parent.relative_to(art)) if f.parent != art else None)
    return values_s


def time_it(client: MlflowClient, exp: str, fn: Callable, payload: tuple, repeats: int) -> tuple[float, float]:
    """Median (total, values-only) seconds over `repeats` fresh runs."""
    totals, values = [], []
    for _ in range(repeats):
        run_id = client.create_run(exp).info.run_id
        t0 = time.perf_counter()
        values.append(fn(client, run_id, *payload))
        totals.append(time.perf_counter() - t0)
    return statistics.median(totals), statistics.median(values)


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--uvicorn-opts", "--timeout-graceful-shutdown 3",
    ]  # fmt: skip
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=log, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((root / "server.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def bench(uri: str, root: Path, points: int, repeats: int) -> None:
    client = MlflowClient(uri)
    exp = client.create_experiment(f"bench-{time.time_ns()}", artifact_location=(root / "art").as_uri())
    payload = cell_payload(points, root / f"payload-{time.time_ns()}")
    (b_total, b_values), (c_total, c_values) = (time_it(client, exp, f, payload, repeats) for f in (batched, per_call))
    kind = uri.split(":", 1)[0]
    n = len(payload[0]) + len(payload[1]) + len(payload[2])
    print(
        f"{kind:6s} one cell ({n} values + 5 files): batched {b_total:.3f} s (values {b_values:.3f} s), "
        f"per-call {c_total:.3f} s (values {c_values:.3f} s); ratio {c_total / b_total:.1f}x "
        f"(values only {c_values / b_values:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "http", "both"], default="both")
    parser.add_argument("--points", type=int, default=1000, help="metric points of the cell")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is printed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
        root = Path(tmp)
        if args.backend in ("sqlite", "both"):
            bench(f"sqlite:///{root / 'bench.db'}", root, args.points, args.repeats)
        if args.backend in ("http", "both"):
            server_root = root / "server"
            server_root.mkdir()
            with mlflow_server(server_root) as uri:
                bench(uri, root, args.points, args.repeats)


if __name__ == "__main__":
    main()
