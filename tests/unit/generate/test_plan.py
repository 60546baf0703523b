"""How generated sources enter the plan: what keys a generation, its place before the pool, refinement chains."""

from __future__ import annotations

import copy

import pytest

from framework.spec import spec_from_dict
from framework.spec.errors import SpecErrors
from framework.sweep.plan import build_plan

ENDPOINT = {"base_url": "http://127.0.0.1:9/v1", "model": "teacher", "api_key_env": "KEY"}
SPEC = {
    "name": "g",
    "model": {"name_or_path": "toy:base"},
    "pool": [
        {"preset": "toy"},
        {"source": "t", "generate": {"problems": {"preset": "toy", "limit": 8}, "teacher": {"endpoint": ENDPOINT}}},
        {"source": "t2", "generate": {"refine": "t", "teacher": {"endpoint": ENDPOINT}, "prompt": "Fix: {trace}"}},
    ],
    "factors": {"source": {"levels": ["long_cot", "t", "t2"]}},
    "seeds": [0],
    "eval": {"benchmarks": [{"name": "toy", "limit": 4}], "samples": 1, "sampling": {"max_tokens": 64}},
}


def plan(edit=None):
    data = copy.deepcopy(SPEC)
    if edit:
        edit(data)
    return build_plan(spec_from_dict(data))


def generate_jobs(p):
    return [j for j in p.jobs.values() if j.stage == "generate"]


def test_generations_come_before_the_pool_and_a_refinement_after_what_it_rewrites():
    p = plan()
    first, refine = generate_jobs(p)
    (pool,) = p.by_stage("pool")
    assert pool.deps == [first.id, refine.id] and refine.deps == [first.id] and first.deps == []
    assert p.generated == {1: first.id, 2: refine.id}
    order = list(p.jobs)
    assert order.index(first.id) < order.index(refine.id) < order.index(pool.id)
    assert set(p.cell_jobs[p.cells[0].id]["generate"]) == {first.id, refine.id}


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["pool"][1]["generate"]["teacher"]["endpoint"].update(base_url="https://elsewhere/v1"),
        lambda d: d["pool"][1]["generate"]["teacher"]["endpoint"].update(concurrency=2, max_retries=1, timeout_s=5),
        lambda d: d["pool"][1]["generate"]["teacher"]["endpoint"].update(api_key_env="OTHER"),
        lambda d: d["pool"][1]["generate"].update(max_failed_fraction=0.1),
    ],
    ids=["url", "client", "key-variable", "failure-budget"],
)
def test_how_a_teacher_is_reached_keys_nothing(edit):
    assert [j.id for j in generate_jobs(plan(edit))] == [j.id for j in generate_jobs(plan())]


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["pool"][1]["generate"]["teacher"]["endpoint"].update(model="other"),
        lambda d: d["pool"][1]["generate"]["teacher"].update(revision="abc123"),
        lambda d: d["pool"][1]["generate"].update(samples=4),
        lambda d: d["pool"][1]["generate"].update(prompt="Solve: {problem}"),
        lambda d: d["pool"][1]["generate"].update(sampling={"temperature": 1.0}),
        lambda d: d["pool"][1]["generate"]["problems"].update(limit=9),
    ],
    ids=["model", "revision", "samples", "prompt", "sampling", "problems"],
)
def test_what_determines_the_traces_keys_the_generation_and_what_follows(edit):
    before, after = plan(), plan(edit)
    first_b, refine_b = generate_jobs(before)
    first_a, refine_a = generate_jobs(after)
    assert first_a.id != first_b.id and refine_a.id != refine_b.id  # the refinement rewrites other traces
    assert before.by_stage("pool")[0].id != after.by_stage("pool")[0].id


def test_a_spec_without_generation_plans_no_generate_job():
    p = plan(lambda d: d.update(pool=[{"preset": "toy"}], factors={"source": {"levels": ["long_cot", "terse"]}}))
    assert generate_jobs(p) == [] and p.generated == {}
    assert all(stages["generate"] == [] for stages in p.cell_jobs.values())


@pytest.mark.parametrize(
    ("generate", "message"),
    [
        ({"teacher": {"endpoint": ENDPOINT}}, "exactly one of 'problems'"),
        ({"refine": "t", "teacher": {"endpoint": ENDPOINT}}, "must contain {trace}"),
        ({"problems": {"preset": "toy"}, "teacher": {"model": "x", "endpoint": ENDPOINT}}, "exactly one of 'model'"),
        ({"problems": {"preset": "toy"}, "teacher": {"model": "x"}, "prompt": "no field"}, "names no field"),
        (
            {"problems": {"preset": "toy"}, "teacher": {"endpoint": {**ENDPOINT, "api_key_env": "sk-abc def"}}},
            "NAME of an environment variable",
        ),
        ({"problems": {"preset": "toy"}, "teacher": {"endpoint": {**ENDPOINT, "base_url": "localhost:8000"}}}, "http"),
    ],
)
def test_bad_generate_blocks_are_refused_with_a_reason(generate, message):
    data = copy.deepcopy(SPEC)
    data["pool"] = [{"source": "t", "generate": generate}]
    with pytest.raises(SpecErrors, match=message) as info:
        spec_from_dict(data)
    assert "sk-abc" not in str(info.value)  # a key pasted as the variable's name is not repeated


def test_a_generated_source_takes_no_file_location():
    data = copy.deepcopy(SPEC)
    data["pool"][1]["path"] = "x.jsonl"
    with pytest.raises(SpecErrors, match="drop 'path'"):
        spec_from_dict(data)


def test_problems_of_a_tested_benchmark_are_refused_unless_allowed(tmp_path):
    import json

    import pandas as pd

    from framework.generate.stage import GenerateError, read_problems, refuse_test_problems
    from framework.toy import benchmark_rows, make_world

    tested = benchmark_rows(make_world(0), split="test")[2]["problem"]
    rows = [{"question": "  " + tested.upper() + " "}, {"question": "a problem nobody tests"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = copy.deepcopy(SPEC)
    data["pool"][1]["generate"]["problems"] = {"path": str(tmp_path / "p.jsonl"), "columns": {"problem": "question"}}
    data["eval"]["benchmarks"] = [{"name": "toy"}]
    spec = spec_from_dict(data)
    problems = read_problems(spec.pool[1].generate.problems, "pool[1].generate", lambda p: tmp_path / "p.jsonl")
    assert len(problems) == 2 and problems["problem_id"].is_unique
    with pytest.raises(GenerateError, match=r"1 of them are problems of benchmark toy.*allow_test_problems"):
        refuse_test_problems(problems, spec, lambda p: None, "pool[1].generate")
    refuse_test_problems(problems.iloc[[1]], spec, lambda p: None, "pool[1].generate")  # the other one is fine
    assert isinstance(problems, pd.DataFrame)


def test_plan_estimates_requests_tokens_and_cost_and_counts_journaled_answers(tmp_path):
    from framework.generate.estimate import estimate, render
    from framework.generate.journal import JournalWriter
    from framework.generate.requests import build_requests
    from framework.generate.stage import journal_dir, read_problems

    def priced(d):
        d["pool"][1]["generate"]["teacher"]["endpoint"].update(price_input_per_mtok=1.0, price_output_per_mtok=4.0)
        d["pool"][1]["generate"].update(samples=2, sampling={"max_tokens": 100})

    p = plan(priced)
    gen = p.spec.pool[1].generate
    teacher = p.jobs[p.generated[1]].config["teacher"]
    requests = build_requests(read_problems(gen.problems, "w", lambda x: None), gen, teacher)
    with JournalWriter(journal_dir(tmp_path, teacher, gen)) as w:  # three answered before, of 10 tokens each
        for r in requests[:3]:
            w.write({"request_id": r.request_id, "status": "ok", "text": "x", "completion_tokens": 10})
    from framework.store import Store

    first, refine = estimate(p, None, Store(tmp_path))
    n = len(requests)
    assert first.requests == n and first.journaled == 3 and first.max_output_tokens == (n - 3) * 100
    assert first.expected_output_tokens == (n - 3) * 10
    prompt_tokens = sum(len(r.prompt) for r in requests) / 4
    assert first.cost_max == pytest.approx((prompt_tokens * (n - 3) / n * 1.0 + (n - 3) * 100 * 4.0) / 1e6)
    assert refine.requests == n and refine.cost_max is None  # its prompts hold traces not written yet
    lines = render([first, refine])
    assert f"{n} requests (3 already answered, {n - 3} to ask)" in lines[0] and "cost at most" in lines[0]


def test_the_report_lists_each_generation_with_its_usage(tmp_path):
    from framework.report import _generation_section, generation_frame
    from framework.store import Store, write_json_atomic

    p = plan()
    store = Store(tmp_path / "store")
    stage, key = p.generated[1].split("/")
    usage = {"requests": 16, "finished": 15, "failed": 1, "empty": 0, "truncated": 2, "prompt_tokens": 100}
    with store.build(stage, key) as build:
        write_json_atomic(build.dir / "usage.json", {**usage, "completion_tokens": 900, "cost": 0.0123, "seconds": 3})
    frame = generation_frame(p, store)
    assert list(frame["source"]) == ["t", "t2"] and list(frame["done"]) == [True, False]
    assert frame.loc[0, "finished"] == 15 and frame.loc[0, "cost"] == 0.0123
    text = _generation_section(frame)
    assert "| t | teacher | 15 of 16 | 1 | 2 | 900 | 0.01 |" in text and "| t2 | teacher | not generated yet |" in text


def test_generations_sharing_a_journal_run_one_after_the_other():
    def two_askers(d):
        more = copy.deepcopy(d["pool"][1])
        more["source"], more["generate"]["samples"] = "t-more", 4
        other = copy.deepcopy(d["pool"][1])
        other["source"], other["generate"]["sampling"] = "t-hot", {"temperature": 1.2}
        d["pool"][3:3] = [more, other]

    p = plan(two_askers)
    first, refine, more, other = (p.jobs[p.generated[i]] for i in (1, 2, 3, 4))
    assert more.deps == [first.id, refine.id]  # same teacher and sampling: one journal, never two askers at once
    assert other.deps == []  # another sampling: a journal of its own


def test_on_missing_of_a_generated_source_keys_the_pool_when_it_is_not_the_default():
    pools = {
        rule: plan(lambda d, r=rule: d["pool"][1].update(on_missing=r) if r else None).by_stage("pool")[0].id
        for rule in (None, "error", "drop", "keep")
    }
    assert pools[None] == pools["error"] and len({pools[None], pools["drop"], pools["keep"]}) == 3


def test_a_second_refinement_names_its_own_parent(tmp_path):
    import pandas as pd

    from framework.generate.stage import read_refined
    from framework.sources import trace_id

    def chain(d):
        third = copy.deepcopy(d["pool"][2])
        third["source"], third["generate"]["refine"] = "t3", "t2"
        d["pool"].append(third)

    spec = plan(chain).spec
    first = pd.DataFrame({"problem_id": ["p1"], "problem": ["1+1"], "trace": ["two"], "_where": ["g problem p1"]})
    second = first.assign(trace="2, checked", parent_source="t", parent_trace_id=trace_id("t", "p1", "two"))
    dirs = {1: tmp_path / "g1", 2: tmp_path / "g2"}
    for i, frame in ((1, first), (2, second)):
        dirs[i].mkdir()
        frame.to_parquet(dirs[i] / "traces.parquet")
    rows = read_refined(spec, 3, lambda p: None, dirs, "pool[3].generate")
    assert list(rows["parent_source"]) == ["t2"] and list(rows["trace"]) == ["2, checked"]
    assert list(rows["parent_trace_id"]) == [trace_id("t2", "p1", "2, checked")]


def test_plan_counts_a_refinement_of_a_files_traces(tmp_path):
    from framework.generate.estimate import estimate
    from framework.store import Store

    def refine_file(d):
        d["pool"] = [
            {"preset": "toy", "options": {"n_problems": 6}},
            {
                "source": "t2",
                "generate": {"refine": "long_cot", "teacher": {"endpoint": ENDPOINT}, "prompt": "{trace}"},
            },
        ]
        d["factors"] = {"source": {"levels": ["long_cot", "t2"]}}

    (only,) = estimate(plan(refine_file), None, Store(tmp_path))
    assert only.requests == 6 and only.journaled == 0 and only.prompt_tokens > 0  # six long chains, one each


def test_a_generation_asks_for_its_own_teachers_gpus(tmp_path):
    from framework.store import Store
    from launchers.base import pending_tasks
    from launchers.local import gpus_needed

    def two_offline(d):
        d["pool"][1]["generate"]["teacher"] = {"model": "toy:base", "tensor_parallel_size": 4}
        d["pool"][2]["generate"]["teacher"] = {"model": "toy:base"}

    p = plan(two_offline)
    tasks = {t.jobs[0].id: t for t in pending_tasks(p, Store(tmp_path)) if t.stage == "generate"}
    assert [gpus_needed(tasks[p.generated[i]], p.spec, 8) for i in (1, 2)] == [4, 1]
    endpoint = plan()
    (task, _) = [t for t in pending_tasks(endpoint, Store(tmp_path / "e")) if t.stage == "generate"]
    assert gpus_needed(task, endpoint.spec, 8) == 0  # requests to a server elsewhere
