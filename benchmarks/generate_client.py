"""Requests per second through the generate stage's endpoint client against raw `openai` and `httpx` clients.

    .venv/bin/python benchmarks/generate_client.py [--requests 1000] [--concurrency 16 64] [--delay-ms 10]
                                                   [--repeats 3]

The server is the tests' OpenAI-compatible fake (tests/openai_server.py: real sockets, a thread per connection)
in a process of its own, answering every chat completion after a fixed `--delay-ms`, so the clients, not a model,
are measured; with `--delay-ms` d and concurrency c no client can beat c / d requests per second. Each side sends
the same requests with the same concurrency, from a fresh client:

  client             framework.generate.client.generate, outcomes collected in memory
  client+write       the same, each outcome appended to a file and flushed (no fsync)
  client+journal     the same, each outcome written by the stage's JournalWriter (flush + fsync per record),
                     which is what the stage adds to the client
  openai             openai.AsyncOpenAI(max_retries=0).chat.completions.create under an asyncio.Semaphore
  httpx              httpx.AsyncClient.post + json parse under an asyncio.Semaphore (the client's library until its
                     connection pool was measured here: 0.29x openai at 64 in flight)
  httpx2             the same with httpx2, the library the client and `openai` itself are built on

Prints, per concurrency, each side's median requests/s, its ratio to `openai` and the client process's CPU time
per request (the server's is not counted); and the mean and 90th percentile of one journal write (json, flush,
fsync) under results/: the client hands each outcome to the journal from a worker thread, so an fsync does not
stall the answers in flight, and records are written one at a time (a lock), so 1000 / mean is the most requests
per second the stage can journal, whatever the concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

try:  # the HTTP library recent `openai` releases are built on, where installed
    import httpx2
except ImportError:
    httpx2 = None

from framework.generate import client
from framework.generate.journal import JournalWriter

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench-teacher"
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 64}

SERVER = r"""
import sys
from tests.openai_server import FakeOpenAI, Reply, serving  # a deep backlog, Nagle off
delay = float(sys.argv[1])
with serving(FakeOpenAI(lambda k, req: Reply(delay_s=delay))) as url:
    print(url, flush=True)
    sys.stdin.read()  # serve until the parent closes stdin
"""


def record(o: client.Outcome) -> dict:
    """The record the stage journals per outcome."""
    return {
        "request_id": o.request_id, "status": "ok" if o.ok else "failed", "problem_id": "p", "sample": 0,
        "text": o.text, "finish_reason": o.finish_reason, "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens, "attempts": o.attempts, "error": o.error, "at": time.time(),
    }  # fmt: skip


def ours(url: str, calls: list[client.Call], concurrency: int, sink: str, tmp: Path) -> int:
    ep = client.Endpoint(url, MODEL, None, True, concurrency, 60.0, 0, 0.01, dict(SAMPLING))
    ok = 0
    if sink == "journal":
        with JournalWriter(Path(tempfile.mkdtemp(dir=tmp))) as writer:

            def on_result(o: client.Outcome) -> None:
                nonlocal ok
                ok += o.ok
                writer.write(record(o))

            client.generate(ep, calls, on_result)
        return ok
    if sink == "write":
        with (Path(tempfile.mkdtemp(dir=tmp)) / "plain.jsonl").open("a", encoding="utf-8") as f:

            def on_result(o: client.Outcome) -> None:
                nonlocal ok
                ok += o.ok
                f.write(json.dumps(record(o), sort_keys=True) + "\n")
                f.flush()

            client.generate(ep, calls, on_result)
        return ok
    outcomes: list[client.Outcome] = []
    client.generate(ep, calls, outcomes.append)
    return sum(o.ok for o in outcomes)


async def _raw_openai(url: str, calls: list[client.Call], concurrency: int) -> int:
    api = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60.0)
    sem = asyncio.Semaphore(concurrency)

    async def one(c: client.Call) -> bool:
        async with sem:
            r = await api.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": c.prompt}], n=1, seed=c.seed, **SAMPLING
            )
            return isinstance(r.choices[0].message.content, str)

    try:
        return sum(await asyncio.gather(*(one(c) for c in calls)))
    finally:
        await api.close()


async def _raw_httpx(url: str, calls: list[client.Call], concurrency: int, lib: Any = httpx) -> int:
    limits = lib.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    async with lib.AsyncClient(limits=limits, timeout=60.0) as http:

        async def one(c: client.Call) -> bool:
            async with sem:
                body = {"model": MODEL, "messages": [{"role": "user", "content": c.prompt}], "n": 1, "seed": c.seed}
                r = await http.post(f"{url}/chat/completions", json={**body, **SAMPLING})
                return r.status_code == 200 and isinstance(r.json()["choices"][0]["message"]["content"], str)

        return sum(await asyncio.gather(*(one(c) for c in calls)))


def journal_write_ms(directory: Path, n: int = 300) -> tuple[float, float]:
    """Mean and 90th percentile of one JournalWriter.write (json + flush + fsync) of a stage-sized record."""
    o = client.Outcome("r" * 16, True, "step " * 150, "stop", 40, 150, attempts=1)
    times = []
    with JournalWriter(directory / "probe") as writer:
        for _ in range(n):
            t = time.perf_counter()
            writer.write(record(o))
            times.append(time.perf_counter() - t)
    return statistics.mean(times) * 1e3, statistics.quantiles(times, n=10)[-1] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    calls = [client.Call(f"r{i:06d}", f"Problem {i}: what is {i} + {i % 7}?", i) for i in range(args.requests)]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.delay_ms / 1e3)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        if not url.startswith("http"):
            sys.exit("the fake server did not start")
        with tempfile.TemporaryDirectory(dir=ROOT / "results") as tmp:
            write_ms, write_p90 = journal_write_ms(Path(tmp))
            sides: dict[str, Callable[[int], int]] = {
                "client": lambda c: ours(url, calls, c, "none", Path(tmp)),
                "client+write": lambda c: ours(url, calls, c, "write", Path(tmp)),
                "client+journal": lambda c: ours(url, calls, c, "journal", Path(tmp)),
                "openai": lambda c: asyncio.run(_raw_openai(url, calls, c)),
                "httpx": lambda c: asyncio.run(_raw_httpx(url, calls, c)),
            }
            if httpx2 is not None:
                sides["httpx2"] = lambda c: asyncio.run(_raw_httpx(url, calls, c, httpx2))
            print(
                f"{args.requests} requests, server delay {args.delay_ms:g} ms, median of {args.repeats}; "
                f"journal write under results/: mean {write_ms:.2f} ms, p90 {write_p90:.2f} ms"
            )
            for conc in args.concurrency:
                rates: dict[str, list[float]] = {name: [] for name in sides}
                cpu: dict[str, list[float]] = {name: [] for name in sides}
                for _ in range(args.repeats):
                    for name, side in sides.items():  # interleaved, so drift in machine load hits every side
                        t, c0 = time.perf_counter(), time.process_time()
                        ok = side(conc)
                        seconds = time.perf_counter() - t
                        cpu[name].append((time.process_time() - c0) / args.requests * 1e3)
                        if ok != args.requests:
                            sys.exit(f"{name}: {ok} of {args.requests} requests succeeded")
                        rates[name].append(args.requests / seconds)
                ceiling = conc / (args.delay_ms / 1e3) if args.delay_ms else float("inf")
                print(f"\nconcurrency {conc} (ceiling set by the server delay: {ceiling:.0f} req/s)")
                base = statistics.median(rates["openai"])
                for name, r in rates.items():
                    med = statistics.median(r)
                    print(
                        f"  {name:<15} {med:8.0f} req/s   {med / base:5.2f}x openai   "
                        f"client CPU {statistics.median(cpu[name]):.2f} ms/request"
                    )
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
