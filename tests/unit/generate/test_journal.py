"""The request journal: durable per finished request, tolerant of a torn last line, shared by writers."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest

from framework.errors import DataError
from framework.generate.journal import JournalWriter, read_journal
from framework.generate.requests import build_requests, render, request_seed
from framework.spec.pool import GenerateSpec


def test_success_wins_over_failure_in_any_order(tmp_path: Path):
    with JournalWriter(tmp_path) as w:
        w.write({"request_id": "a", "status": "ok", "text": "A"})
        w.write({"request_id": "b", "status": "failed", "error": "HTTP 500"})
    with JournalWriter(tmp_path) as w:  # a later run: b succeeds, a fails again (it is still done)
        w.write({"request_id": "b", "status": "ok", "text": "B"})
        w.write({"request_id": "a", "status": "failed", "error": "x"})
        w.write({"request_id": "c", "status": "failed", "error": "HTTP 400"})
    done, failed = read_journal(tmp_path)
    assert {k: v["text"] for k, v in done.items()} == {"a": "A", "b": "B"}
    assert list(failed) == ["c"]


def test_a_torn_last_line_loses_only_that_request(tmp_path: Path):
    with JournalWriter(tmp_path) as w:
        w.write({"request_id": "a", "status": "ok", "text": "A"})
        path = w.path
    with path.open("a") as f:  # a kill in the middle of writing the next record
        f.write(json.dumps({"request_id": "b", "status": "ok", "text": "B"})[:20])
    done, _ = read_journal(tmp_path)
    assert list(done) == ["a"]
    with JournalWriter(tmp_path) as w:  # the rerun writes to a file of its own: the torn one stays torn, harmless
        w.write({"request_id": "b", "status": "ok", "text": "B"})
    assert sorted(read_journal(tmp_path)[0]) == ["a", "b"]


def _write_many(directory: str, start: int) -> None:
    with JournalWriter(Path(directory)) as w:
        for i in range(start, start + 200):
            w.write({"request_id": f"r{i}", "status": "ok", "text": "x" * 5000})


def test_concurrent_writers_lose_nothing(tmp_path: Path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), k * 200)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    done, _ = read_journal(tmp_path)
    assert len(done) == 600 and all(len(v["text"]) == 5000 for v in done.values())


def test_missing_journal_is_empty(tmp_path: Path):
    assert read_journal(tmp_path / "nope") == ({}, {})


def gen(**kw) -> GenerateSpec:
    return GenerateSpec.model_validate({"problems": {"path": "p.jsonl"}, "teacher": {"model": "toy:base"}, **kw})


def test_render_fills_fields_and_leaves_other_braces():
    assert render("{problem} in \\boxed{} {x}", {"problem": "1+1", "x": 3}) == "1+1 in \\boxed{} 3"


def test_requests_are_content_addressed_and_extend_with_samples():
    problems = pd.DataFrame({"problem_id": ["p1", "p2"], "problem": ["1+1", "2+2"]})
    two = build_requests(problems, gen(samples=2), {"m": 1})
    four = build_requests(problems, gen(samples=4), {"m": 1})
    assert len(two) == 4 and len(four) == 8
    assert {r.request_id for r in two} < {r.request_id for r in four}  # more samples: only new requests
    assert len({r.request_id for r in four}) == 8 and len({r.seed for r in four}) == 8
    other = build_requests(problems, gen(samples=2, sampling={"temperature": 1.0}), {"m": 1})
    assert not {r.request_id for r in other} & {r.request_id for r in two}
    fewer = build_requests(problems.head(1), gen(samples=2), {"m": 1})
    assert {r.request_id for r in fewer} < {r.request_id for r in two}  # ids do not depend on the other problems
    assert all(0 <= request_seed(2**40, r.request_id) < 2**31 for r in four)


def test_unknown_placeholder_is_a_clear_error():
    problems = pd.DataFrame({"problem_id": ["p1"], "problem": ["1+1"]})
    with pytest.raises(DataError, match=r"\{solution\}.*fields: problem_id, problem"):
        build_requests(problems, gen(prompt="{problem} {solution}"), {})
