"""Grading of extracted answers for math and multiple-choice benchmarks (extraction: framework.grading.extraction).

Small grading errors flip research conclusions, so every verdict says how it was reached (`Verdict.method`) and
why it could not be (`Verdict.error`), and grading can never hang the caller:

* `extract_answer` / `extract_choice` (framework.grading.extraction, re-exported here) pull the final answer out of a
  response; the method string says which rule fired, so "no answer" and "wrong answer" stay distinguishable.
* `grade_math` decides cheap cases (normalized string match, plain rationals) in Python and sends the rest to
  math-verify, gold first (its comparison is not symmetric).
* `grade_many` grades a batch: fast-path items never leave the caller's process; the rest go to worker processes
  whose per-item time limit is enforced from the outside, by killing and replacing a worker that overruns.

math-verify's own time limits use SIGALRM, which only works in a process's main thread and cannot interrupt long C
calls; that is why the hard limit lives in the parent. sympy and math-verify are imported lazily, so importing this
module (e.g. for `normalize_answer`) stays cheap.

Multiple answers: math-verify reads "2, 3" as the set {2, 3}, so "3, 2" is graded equal (order and repetition are
ignored). That matches "find all solutions" problems, the common source of comma-separated answers. Ordered answers
must be written as tuples, "(2, 3)", which are compared in order.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import multiprocessing
import numbers
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from typing import Any

from framework.grading.extraction import extract_answer, extract_choice, unwrap_text
from framework.registry import GRADERS

__all__ = [
    "Verdict",
    "extract_answer",
    "extract_choice",
    "grade_many",
    "grade_math",
    "grade_multiple_choice",
    "normalize_answer",
]

# Extra seconds the parent waits beyond `timeout_s` before killing a worker, so math-verify's own (cheaper) alarm
# gets the first chance to end a slow comparison without the cost of starting a new process.
KILL_GRACE_S = 0.5
# A worker that has not finished importing after this long is treated as broken.
WORKER_START_TIMEOUT_S = 120.0
# Parsed answers kept per process; sympy objects are immutable, so sharing them between comparisons is safe.
PARSE_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Verdict:
    """One graded answer: how the verdict was reached, and why grading could not finish if it did not.

    method: "no_answer" (nothing extracted), "exact" (equal after `normalize_answer`), "numeric" (plain rationals
    compared in Python), "math_verify", "grader" (a custom grader), or "worker" (the pool gave up on the item).
    error: None, "timeout", "parse_error", "verify_error", "worker_crashed" or "grader_error: ..."; the built-in
    graders never mark an item with an error correct.
    """

    correct: bool
    answer: str | None
    method: str
    error: str | None = None


# ----------------------------------------------------------------------------------------------- normalization

_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACED_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_INT_RE = re.compile(r"-?\d+")
_DECIMAL_RE = re.compile(r"-?\d*\.\d+")
_SLASH_RE = re.compile(r"(-?\d+)/(\d+)")
_FRAC_RE = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}")


def normalize_answer(answer: str) -> str:
    """A canonical string for exact matching and vote counting.

    Removes only notation that cannot change the value: whitespace and spacing commands (except between two
    digits: "2 3" is not 23, and is math-verify's to judge), \\left/\\right, \\text{} wrappers, a trailing period,
    thousands separators ("1,000", "1{,}000", "1 000", "1\\,000"; but "726, 707" with a space is a list and stays
    one), and maps \\dfrac/\\tfrac to \\frac.
    Anything that needs mathematics (units, percentages, equivalent forms) is left to math-verify.
    """
    s = answer.strip()
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = unwrap_text(s)
    s = re.sub(r"\\[,;:! ]|~", " ", s).replace("{,}", ",")
    listed = re.search(r",\s", s) is not None  # "726, 707" is two answers; "726,707" is one number
    s = re.sub(r"\s+", " ", s).strip()
    if _SPACED_THOUSANDS_RE.fullmatch(s.rstrip(".")):
        s = s.replace(" ", "")
    s = re.sub(r"(?<!\d) | (?!\d)", "", s).rstrip(".")  # a space between two digits separates two numbers
    if not listed and _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    return s


def _as_rational(s: str) -> tuple[Fraction, bool] | None:
    """(value, exact) for a plain integer, decimal, a/b or \\frac{a}{b}; `exact` is False for decimals."""
    if _INT_RE.fullmatch(s):
        return Fraction(int(s)), True
    if _DECIMAL_RE.fullmatch(s):
        return Fraction(s), False
    m = _SLASH_RE.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2))), True
    m = _FRAC_RE.fullmatch(s)
    if m and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return (-value if m.group(1) else value), True
    return None


def _fast_math(answer: str | None, expected: str) -> Verdict | None:
    """The verdict when it needs no sympy, else None.

    Equal plain rationals are correct; unequal ones are wrong only when both are exact (integers or fractions),
    because math-verify accepts a decimal rounded to 6 places ("0.333333" for 1/3) and this path must agree with it.
    """
    if answer is None or not answer.strip():
        return Verdict(False, answer, "no_answer")
    a, e = normalize_answer(answer), normalize_answer(str(expected))
    if a == e:
        return Verdict(True, answer, "exact")
    ra, re_ = _as_rational(a), _as_rational(e)
    if ra is not None and re_ is not None:
        if ra[0] == re_[0]:
            return Verdict(True, answer, "numeric")
        if ra[1] and re_[1]:
            return Verdict(False, answer, "numeric")
    return None


# ------------------------------------------------------------------------------------------------ math-verify


def _signals_usable() -> bool:
    """math-verify's SIGALRM timeouts raise outside the main thread; there they must be switched off."""
    return threading.current_thread() is threading.main_thread()


_PARSE_CACHE: dict[str, list[Any]] = {}


def _verify_math(answer: str, expected: str, timeout_s: float) -> Verdict:
    """math-verify equivalence within a total budget of about `timeout_s` (alarms run in whole seconds)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    config = (LatexExtractionConfig(), ExprExtractionConfig())
    deadline = time.monotonic() + timeout_s
    use_alarm = _signals_usable()

    def budget() -> int | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutException("grading budget spent")
        return max(1, math.ceil(remaining)) if use_alarm else None

    def parsed(text: str) -> list[Any]:
        # Wrapped in \boxed{} so math-verify reads the whole string as one answer instead of hunting for numbers in
        # it (it was already extracted). Cached: a gold is compared with every sample of its problem.
        hit = _PARSE_CACHE.get(text)
        if hit is None:
            hit = parse(f"\\boxed{{{text}}}", config, parsing_timeout=budget(), raise_on_error=True)
            if len(_PARSE_CACHE) >= PARSE_CACHE_SIZE:
                _PARSE_CACHE.clear()
            _PARSE_CACHE[text] = hit
        return hit

    try:
        gold = parsed(expected)
        pred = parsed(answer)
    except TimeoutException:
        return Verdict(False, answer, "math_verify", "timeout")
    except Exception:
        return Verdict(False, answer, "math_verify", "parse_error")
    error: str | None = None
    for g in gold:
        for p in pred:
            try:
                if verify(g, p, timeout_seconds=budget(), raise_on_error=True):
                    return Verdict(True, answer, "math_verify")
            except TimeoutException:
                return Verdict(False, answer, "math_verify", "timeout")
            except Exception:
                error = error or "verify_error"
    if not gold or not pred:
        error = "parse_error"
    return Verdict(False, answer, "math_verify", error)


def grade_math(answer: str | None, expected: str, *, timeout_s: float = 5.0) -> Verdict:
    """Is `answer` mathematically equal to `expected`? Exact and plain-number cases skip sympy entirely.

    In-process the limit relies on math-verify's SIGALRM (main thread only, and it cannot interrupt C code); use
    `grade_many` for a hard limit.
    """
    expected = str(expected)  # datasets sometimes store integer answers as ints
    fast = _fast_math(answer, expected)
    if fast is not None:
        return fast
    assert answer is not None
    return _verify_math(answer, expected, timeout_s)


def grade_multiple_choice(answer: str | None, expected: str) -> Verdict:
    """Is the chosen letter the expected one? Accepts "B", "(B)", "\\text{B}", or a phrase like "answer is B"."""
    if answer is None or not answer.strip():
        return Verdict(False, answer, "no_answer")
    want = unwrap_text(expected).strip().strip("()").strip().upper()
    got = unwrap_text(answer).strip().strip("()").strip().rstrip(".").upper()
    if len(got) != 1:
        letter, _ = extract_choice(answer, choices="ABCDEFGHIJ")
        got = letter or got
    return Verdict(got == want, answer, "exact")


# ------------------------------------------------------------------------------------------------ grade_many

Grader = Callable[..., Any]


def _resolve(grader: str) -> Grader:
    if grader == "math":
        return grade_math
    if grader == "multiple_choice":
        return grade_multiple_choice
    return GRADERS.resolve(grader)


def _call_grader(fn: Grader, answer: str | None, expected: str, timeout_s: float) -> Verdict:
    """Run one grader and coerce its result to a Verdict; a crash is a not-correct verdict, not a crashed batch."""
    try:
        try:
            takes_timeout = "timeout_s" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            takes_timeout = False
        result = fn(answer, expected, timeout_s=timeout_s) if takes_timeout else fn(answer, expected)
    except Exception as e:
        return Verdict(False, answer, "grader", f"grader_error: {type(e).__name__}: {e}"[:200])
    if isinstance(result, Verdict):
        return result
    return Verdict(bool(result), answer, "grader")


def _worker_main(conn: Connection, grader: str) -> None:
    """Worker loop: receive chunks of (key, answer, expected, timeout_s); send one (key, Verdict) each.

    The grader and math-verify are imported and warmed up before the worker reports ready, so start-up time, which
    can be seconds on a loaded machine, never counts against an item's limit.
    """
    import math_verify  # noqa: F401

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then kills the workers
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    fn = _resolve(grader)
    if fn is grade_math:  # math-verify's first comparison builds its parsers and regexes (~0.2 s)
        _verify_math("x+1", "1+x", WORKER_START_TIMEOUT_S)
    conn.send(("ready", None))
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for key, answer, expected, timeout_s in chunk:
            conn.send((key, _call_grader(fn, answer, expected, timeout_s)))


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver where available: a clean process (no inherited threads or CUDA state) that forks replacement
    workers with sympy already imported, so killing a hung worker costs milliseconds rather than a re-import."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["framework.grading", "math_verify"])
        return ctx
    return multiprocessing.get_context("spawn")


@dataclass
class _Worker:
    process: Any
    conn: Connection
    ready: bool = False
    started: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    queue: deque[int] = field(default_factory=deque)


class _Pool:
    """Worker processes with an outside per-item deadline: an overrunning worker is killed and replaced."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, size: int, grader: str) -> None:
        self.ctx = ctx
        self.grader = grader
        self.workers = [self._start() for _ in range(size)]

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=_worker_main, args=(child, self.grader), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def replace(self, worker: _Worker) -> _Worker:
        self._stop(worker, force=True)
        fresh = self._start()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    @staticmethod
    def _stop(worker: _Worker, *, force: bool) -> None:
        if force:
            worker.process.kill()
        else:
            with contextlib.suppress(OSError, BrokenPipeError):
                worker.conn.send(None)
        worker.process.join(timeout=None if force else 2.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()

    def close(self, *, force: bool = False) -> None:
        for worker in self.workers:
            self._stop(worker, force=force)


def _run_pool(jobs: list[tuple[str | None, str]], grader: str, timeout_s: float, size: int) -> list[Verdict]:
    """Grade `jobs` (already deduplicated) in `size` workers; returns one Verdict per job, in order."""
    results: list[Verdict | None] = [None] * len(jobs)
    todo: deque[int] = deque(range(len(jobs)))
    pool = _Pool(_mp_context(), size, grader)
    limit = timeout_s + KILL_GRACE_S
    try:
        while todo or any(w.queue for w in pool.workers):
            now = time.monotonic()
            for worker in pool.workers:
                if worker.ready and not worker.queue and todo:
                    # Small chunks cut pipe round trips; each result re-arms the deadline for the next item.
                    chunk_size = max(1, min(16, len(todo) // (4 * len(pool.workers))))
                    chunk = [todo.popleft() for _ in range(min(chunk_size, len(todo)))]
                    worker.queue.extend(chunk)
                    worker.conn.send([(k, *jobs[k], timeout_s) for k in chunk])
                    worker.deadline = now + limit
            waits = [
                w.deadline if w.ready else w.started + WORKER_START_TIMEOUT_S
                for w in pool.workers
                if w.queue or not w.ready
            ]
            timeout = max(0.0, min(waits) - now) if waits else None
            for conn in wait([w.conn for w in pool.workers], timeout=timeout):
                worker = next(w for w in pool.workers if w.conn is conn)
                try:
                    key, verdict = conn.recv()
                except (EOFError, OSError):  # the worker died (segfault, OOM kill): blame its current item only
                    if worker.queue:
                        k = worker.queue.popleft()
                        results[k] = Verdict(False, jobs[k][0], "worker", "worker_crashed")
                        todo.extendleft(reversed(worker.queue))
                    elif not worker.ready:
                        raise RuntimeError("a grading worker exited during start-up") from None
                    pool.replace(worker)
                    continue
                if key == "ready":
                    worker.ready = True
                    continue
                worker.queue.popleft()
                results[key] = verdict
                worker.deadline = time.monotonic() + limit
            now = time.monotonic()
            for worker in list(pool.workers):
                if worker.ready and worker.queue and now > worker.deadline:
                    k = worker.queue.popleft()
                    results[k] = Verdict(False, jobs[k][0], "worker", "timeout")
                    todo.extendleft(reversed(worker.queue))
                    pool.replace(worker)
                elif not worker.ready and now > worker.started + WORKER_START_TIMEOUT_S:
                    raise RuntimeError(f"a grading worker did not start within {WORKER_START_TIMEOUT_S:.0f} s")
    except BaseException:
        pool.close(force=True)
        raise
    pool.close()
    missing = [k for k, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"grading pool lost {len(missing)} items")
    return [r for r in results if r is not None]


def grade_many(
    items: Sequence[tuple[str | None, str]],
    *,
    grader: str = "math",
    timeout_s: float = 5.0,
    workers: int | None = None,
) -> list[Verdict]:
    """Grade (answer, expected) pairs; one Verdict per item, in order, and never hangs.

    `grader` is "math", "multiple_choice" or a "package.module:attr" callable taking (answer, expected) and
    optionally `timeout_s`, returning a Verdict or a bool. Identical pairs are graded once, and pairs the fast path
    decides never leave this process. The rest run in `workers` processes (None: one per CPU) with a hard
    per-item limit of `timeout_s` (+ a short grace) enforced from outside: an item that overruns gets
    error="timeout" and its worker is replaced. `workers=0` grades in-process, where only math-verify's own alarm
    limits time (main thread only).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    fn = _resolve(grader)  # fail here, on a bad name, rather than in every worker
    unique: dict[tuple[str | None, str], Verdict | None] = {}
    for answer, expected in items:
        key = (answer, expected)
        if key in unique:
            continue
        if fn is grade_math:
            unique[key] = _fast_math(answer, expected)
        elif fn is grade_multiple_choice:
            unique[key] = grade_multiple_choice(answer, expected)
        else:
            unique[key] = None
    slow = [key for key, verdict in unique.items() if verdict is None]
    size = (os.cpu_count() or 1) if workers is None else workers
    if size < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    # A daemonic process (e.g. a multiprocessing worker) may not have children: grade in-process there.
    if slow and (size == 0 or multiprocessing.current_process().daemon):
        for key in slow:
            unique[key] = _call_grader(fn, key[0], key[1], timeout_s)
    elif slow:
        for key, verdict in zip(slow, _run_pool(slow, grader, timeout_s, min(size, len(slow)))):
            unique[key] = verdict
    return [unique[(answer, expected)] for answer, expected in items]


def answer_text(value: object) -> str | None:
    """An expected answer as text, None when missing. A column read with gaps holds 204 as 204.0 (numpy's too),
    and pandas holds a missing value as NaN, NA or NaT: none of them may reach the grader as "204.0" or "nan"."""
    import pandas as pd

    if value is None or (not isinstance(value, (str, bytes, list, tuple, dict)) and pd.isna(value)):
        return None
    fractional = isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral))
    if fractional and float(value).is_integer():
        return str(int(value))
    text = str(value)
    return text if text.strip() else None
