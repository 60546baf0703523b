"""Grading throughput: grade_many against math-verify's parse + verify in a plain loop, per core.

    .venv/bin/python benchmarks/grading.py [--n 5000] [--workers N] [--fast-share 0.4] [--seed 0]

The items are generated answer/expected pairs: a `--fast-share` of them are exact or plain-number matches (decided
without sympy), the rest need real equivalence checks (radicals, factored polynomials, units, sets, intervals,
percentages), half right and half wrong. Every pair is distinct, so neither deduplication nor math-verify's caches
flatter the numbers. grade_many's time includes starting its worker processes. Also prints how many verdicts differ
from the plain library's, which should be zero.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections.abc import Callable

from framework.grading import grade_many

Pair = tuple[str, str]


def _fast_pair(rng: random.Random, i: int) -> Pair:
    a, b = rng.randint(1, 999), i + 2  # b makes every pair distinct
    right = rng.random() < 0.5
    kind = i % 4
    if kind == 0:
        return str(a + 1000 * i), str(a + 1000 * i if right else a + 1000 * i + 1)
    if kind == 1:
        return f"{i * 1000 + a:,}", str(i * 1000 + a if right else i * 1000 + a + 7)
    if kind == 2:
        return f"\\dfrac{{{a}}}{{{b}}}", f"\\frac{{{a if right else a + 1}}}{{{b}}}"
    return f"{a}/{b}", f"\\frac{{{2 * a if right else 2 * a + 1}}}{{{2 * b}}}"


def _slow_pair(rng: random.Random, i: int) -> Pair:
    a, b = i + 2, rng.randint(2, 50)  # i makes every pair distinct
    right = rng.random() < 0.5
    off = 0 if right else 1
    kind = i % 6
    if kind == 0:
        return f"\\frac{{{a}\\sqrt{{2}}}}{{2}}", f"\\frac{{{a + off}}}{{\\sqrt{{2}}}}"
    if kind == 1:
        return f"x^2 + {a + b}x + {a * b}", f"(x+{a})(x+{b + off})"
    if kind == 2:
        return f"{a} \\text{{ cm}}", str(a + off)
    if kind == 3:
        return f"{b + a}, {a}", f"{a}, {b + a + off}"
    if kind == 4:
        return f"(-{a}, {b}]", f"(-{a},{b})" if off else f"(-{a},{b}]"
    return f"{a}\\%", f"{a + off}"


def make_items(n: int, fast_share: float, seed: int) -> list[Pair]:
    rng = random.Random(seed)
    n_fast = round(n * fast_share)
    items = [_fast_pair(rng, i) for i in range(n_fast)] + [_slow_pair(rng, i) for i in range(n - n_fast)]
    rng.shuffle(items)
    assert len(set(items)) == len(items), "items must be distinct"
    return items


def raw_library(items: list[Pair]) -> list[bool]:
    """math-verify the way it is usually called: parse both sides, verify gold first, one process."""
    from math_verify import parse, verify

    out = []
    for answer, expected in items:
        gold = parse(f"\\boxed{{{expected}}}")
        pred = parse(f"\\boxed{{{answer}}}")
        out.append(verify(gold, pred))
    return out


def _proc_cpu() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) for every process, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


class CpuMeter:
    """CPU seconds spent by this process and its descendants while active.

    Forkserver workers are grandchildren, so their time never reaches getrusage(RUSAGE_CHILDREN); they are sampled
    from /proc instead (a worker's last < 0.25 s before it exits is missed). The sampler's own CPU is excluded.
    """

    def __init__(self) -> None:
        self.cpu_s: float | None = None
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()

    def _descendants(self) -> dict[int, float]:
        procs = _proc_cpu()
        family, frontier = {}, [os.getpid()]
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, cpu) in procs.items():
                if ppid == parent and pid not in family:
                    family[pid] = cpu
                    frontier.append(pid)
        return family

    def _sample(self) -> None:
        for pid, cpu in self._descendants().items():
            self._seen[pid] = max(cpu, self._seen.get(pid, 0.0))

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()
        self._sampler_cpu = time.thread_time()

    def __enter__(self) -> CpuMeter:
        if not os.path.exists("/proc/self/stat"):
            return self
        self._baseline = self._descendants()  # e.g. a forkserver left from an earlier run
        self._own = time.process_time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not hasattr(self, "_thread"):
            return
        self._sample()
        self._stop.set()
        self._thread.join()
        children = sum(cpu - self._baseline.get(pid, 0.0) for pid, cpu in self._seen.items())
        self.cpu_s = time.process_time() - self._own - self._sampler_cpu + children


def measure(fn: Callable[[], list]) -> tuple[list, float, float | None]:
    """(result, wall seconds, CPU seconds of this process and its descendants)."""
    with CpuMeter() as meter:
        start = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - start
    return result, wall, meter.cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fast-share", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    items = make_items(args.n, args.fast_share, args.seed)
    print(f"{len(items)} items ({args.fast_share:.0%} exact/plain-number), {os.cpu_count()} CPUs")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    raw_library(items[:10])  # import and warm math-verify outside the timings, as the pool workers do
    pooled, wall_pool, cpu_pool = measure(lambda: grade_many(items, workers=args.workers))
    inproc, wall_inproc, cpu_inproc = measure(lambda: grade_many(items, workers=0))
    raw, wall_raw, cpu_raw = measure(lambda: raw_library(items))

    n = len(items)
    print(f"{'':36} {'wall s':>7} {'answers/s':>9} {'CPU s':>7} {'answers/s/core':>14} {'vs raw':>7}")
    for name, wall, cpu in [
        (f"grade_many, {args.workers} worker processes", wall_pool, cpu_pool),
        ("grade_many, in-process (workers=0)", wall_inproc, cpu_inproc),
        ("math_verify parse+verify loop", wall_raw, cpu_raw),
    ]:
        if cpu is None or cpu_raw is None:
            print(f"{name:36} {wall:7.2f} {n / wall:9.0f} {'-':>7} {'-':>14} {'-':>7}")
        else:
            print(f"{name:36} {wall:7.2f} {n / wall:9.0f} {cpu:7.2f} {n / cpu:14.0f} {cpu_raw / cpu:6.2f}x")
    print("answers/s/core = answers per CPU-second over every process involved (parent, forkserver, workers),")
    print("so it does not depend on other load on the machine; wall rates do.")

    methods: dict[str, int] = {}
    for v in pooled:
        methods[v.method] = methods.get(v.method, 0) + 1
    print("verdict methods:", ", ".join(f"{k}={v}" for k, v in sorted(methods.items())))
    errors = sum(v.error is not None for v in pooled)
    differ = [(item, v.correct, r) for item, v, r in zip(items, pooled, raw) if v.correct != r]
    print(f"errors: {errors}; verdicts differing from the raw library: {len(differ)}")
    for item, ours, theirs in differ[:5]:
        print(f"  {item}: grade_many={ours} raw={theirs}")
    assert [v.correct for v in pooled] == [v.correct for v in inproc], "pool and in-process verdicts differ"


if __name__ == "__main__":
    main()
