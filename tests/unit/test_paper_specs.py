"""Every paper spec plans and fills every arm on data of the released shape.

The released pool holds 50 problems, each with one QwQ-32B-Preview trace and four human stages; OpenMathReasoning
is a large pool with pass rates; comp-math-24-25 is in NeMo-Skills' layout. Synthetic copies of those files are
laid out where `ablate fetch` writes them, the base model is the shipped toy (its tokenizer counts tokens, no hub
download), and each generated source gets its generate job's output written into the store as that stage would
(8 QwQ samples per problem: a spread of lengths, some wrong answers). `prepare` then builds the pool and every
data cell, so an arm that cannot be filled fails here, not after a GPU allocation.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from framework.artifacts import GENERATED_FILE
from framework.generate.requests import build_requests
from framework.generate.stage import read_problems, read_refined, traces_frame
from framework.report import write_report
from framework.spec import LoadedSpec, load_spec, validate
from framework.spec.yamlsrc import Source
from framework.store import Store
from framework.sweep.execute import prepare
from framework.sweep.plan import Plan, build_plan
from framework.sweep.power import estimate_power
from tests.synthetic import synthetic_sweep

ROOT = Path(__file__).resolve().parents[2]
PAPER_SPECS = sorted((ROOT / "ablations").glob("paper-*.yaml"))
NEMOTRON = "data/pools/nemotron-math-human-reasoning/train.parquet"
OPEN_MATH = "data/pools/open-math-reasoning/cot.parquet"
COMP_MATH = "data/benchmarks/comp-math-24-25/test.jsonl"
N_PROBLEMS = 50
TOPICS = {
    "geometry": "triangle circle radius angle chord tangent inscribed",
    "algebra": "polynomial roots equation coefficient quadratic",
    "number theory": "prime divisor modulo remainder integer",
    "combinatorics": "ways arrange choose committee permutations",
}


def _draw(*parts: Any) -> int:
    """A stable number from the parts (no global random state: every run writes the same files)."""
    return int.from_bytes(hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=4).digest(), "big")


def _chain(steps: int, answer: str, reflect: bool) -> str:
    said = [f"Step {k}: we compute the next quantity and compare it with the last one." for k in range(steps)]
    if reflect:
        said = [s + (" Wait, let me check that." if k % 4 == 3 else "") for k, s in enumerate(said)]
    return " ".join(said) + f" So the answer is \\boxed{{{answer}}}."


def nemotron_rows() -> pd.DataFrame:
    """The released schema: problem, solution, solution_type, expected_answer; five rows per problem. QwQ's traces
    vary in length and 9 of 50 are wrong, so its length thirds hold 17/17/16 and its wrong ones are too few for an
    arm of 20, as in the released file; two problems have no expected answer, as some released rows do not."""
    rows = []
    for i in range(N_PROBLEMS):
        a, b = 3 + i, 7 + 2 * i
        problem = f"Problem {i}: what is {a} times {b} plus {i}?"
        answer = str(a * b + i)
        expected = None if i in (11, 37) else answer
        wrong = str(a * b + i + 1)
        rows.append(
            (
                problem,
                _chain(4 + _draw("qwq", i) % 60, wrong if i % 6 == 0 else answer, True),
                "qwq_32b_preview",
                expected,
            )
        )
        for stage in range(1, 5):
            text = f"Multiply {a} by {b} and add {i}. " * stage + f"The answer is \\boxed{{{answer}}}."
            rows.append((problem, text, f"human_stage{stage}", expected))
    return pd.DataFrame(rows, columns=["problem", "solution", "solution_type", "expected_answer"])


def open_math_rows() -> pd.DataFrame:
    """OpenMathReasoning's columns; four topics' worth of problems (the diversity spec clusters them) with a
    spread of pass rates (the difficulty spec bins them), and rows its filter must leave out."""
    rows = []
    for t, (topic, words) in enumerate(TOPICS.items()):
        for j in range(60):
            n = 60 * t + j
            problem = f"A {topic} question about {words} number {n}: find the value {n}."
            rows.append(
                {
                    "problem": problem,
                    "generated_solution": _chain(3 + _draw("omr", n) % 30, str(n), True),
                    "generation_model": "DeepSeek-R1" if n % 2 else "QwQ-32B",
                    "expected_answer": str(n),
                    "pass_rate_72b_tir": str(round((_draw("rate", n) % 33) / 32, 4)),
                    "inference_mode": "cot",
                    "problem_type": "converted_proof" if n % 17 == 0 else "has_answer_extracted",
                    "problem_source": "aops_c6_high_school_olympiads",
                }
            )
    return pd.DataFrame(rows)


def comp_math_rows() -> list[dict[str, Any]]:
    subsets = ["aime24", "aime25", "hmmt_feb_2024", "hmmt_feb_2025"]
    return [
        {"id": f"cm-{k}", "problem": f"Contest problem {k}: count the lattice points.", "expected_answer": str(k),
         "subset_for_metrics": subsets[k % 4]}
        for k in range(16)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory laid out as `ablate fetch` leaves one, holding synthetic copies of the released files."""
    root = tmp_path_factory.mktemp("fetched")
    for rel, frame in ((NEMOTRON, nemotron_rows()), (OPEN_MATH, open_math_rows())):
        (root / rel).parent.mkdir(parents=True)
        frame.to_parquet(root / rel, index=False)
    (root / COMP_MATH).parent.mkdir(parents=True)
    (root / COMP_MATH).write_text("".join(json.dumps(r) + "\n" for r in comp_math_rows()))
    return root


def on_toy_base(path: Path) -> LoadedSpec:
    """The spec as written, with the base model swapped for the shipped toy and the evaluation's token budget cut
    to fit the toy's context (nothing the pool or data stages read changes)."""
    loaded = load_spec(path)
    data = copy.deepcopy(loaded.source.data)
    data["model"] = {"name_or_path": "toy:base"}
    data["eval"]["sampling"]["max_tokens"] = 256
    source = Source(data=data, lines=loaded.source.lines, files=loaded.source.files)
    return LoadedSpec(spec=validate(source), path=path, source=source)


def generated_text(source: str, item: dict[str, Any], sample: int) -> str:
    """What a teacher would write: QwQ samples of many lengths, a third of them wrong; an instruct model's short
    answer; a refinement of the trace it was given."""
    answer = str(item.get("expected_answer") or "0")
    if source == "qwq-x8":
        wrong = (_draw(item["problem_id"], sample) % 3) == 0
        return _chain(3 + _draw("len", item["problem_id"], sample) % 70, answer + ("1" if wrong else ""), True)
    if item.get("parent_trace_id") is not None:
        return f"Let me work through this carefully. {item.get('trace', '')} Checking each step, it holds."
    return f"We compute directly. The answer is \\boxed{{{answer}}}."


def write_generations(loaded: LoadedSpec, plan: Plan, store: Store) -> None:
    """Each generated source's `traces.parquet`, made by the generate stage's own request and frame builders from
    stand-in answers, published in the store in pool order (a refinement reads the generations before it)."""
    spec, outputs = loaded.spec, {}
    for index, job_id in sorted(plan.generated.items()):
        gen = spec.pool[index].generate
        assert gen is not None
        where = f"pool[{index}].generate"
        if gen.problems is not None:
            items, key = read_problems(gen.problems, where, _local), "problem_id"
        else:
            items, key = read_refined(spec, index, _local, outputs, where), "parent_trace_id"
        job = plan.jobs[job_id]
        requests = build_requests(items, gen, job.config["teacher"], key)
        by_item = items.set_index(key, drop=False)
        label = spec.pool[index].source or gen.teacher.name
        done = {
            r.request_id: {
                "text": generated_text(label, by_item.loc[r.item].to_dict(), r.sample),
                "finish_reason": "stop",
            }
            for r in requests
        }
        frame = traces_frame(items, requests, done, gen, job.config["teacher"], where)
        with store.build(job.stage, job.key) as build:
            assert build is not None
            frame.to_parquet(build.dir / GENERATED_FILE, index=False)
        outputs[index] = store.path(job.stage, job.key)


def _local(path: str) -> Path | None:
    return Path(path) if Path(path).exists() else None


def test_there_is_a_paper_spec_for_the_released_results():
    names = {p.stem for p in PAPER_SPECS}
    assert {"paper-source", "paper-source-50"} <= names
    assert load_spec(ROOT / "ablations" / "paper-source-50.yaml").spec.n_examples == 50


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.name)
def test_paper_spec_plans_and_fills_every_arm(path: Path, fetched: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(fetched)
    loaded = on_toy_base(path)
    plan = build_plan(loaded.spec, path, strict=False)
    assert plan.warnings == [], "the spec reads only files `ablate fetch` writes"
    store = Store(tmp_path / "store")
    write_generations(loaded, plan, store)
    prepare(loaded, plan, store)  # raises DataError naming every cell that cannot be filled
    data_jobs = plan.by_stage("data")
    assert data_jobs and all(store.is_done("data", j.key) for j in data_jobs)
    assert all(store.is_done("pool", j.key) for j in plan.by_stage("pool"))
    trained = [c for c in plan.cells if c.baseline is None]
    assert len(plan.by_stage("train")) == len(trained)
    # and plan says what each comparison can detect, on every benchmark
    power = estimate_power(plan, store, path.parent)
    levels = sum(len(f.levels) - 1 for f in loaded.spec.factors.values())
    assert len(power) == levels * len(loaded.spec.eval.benchmarks)
    assert all(r.problems and 0 < r.detectable < 1 for r in power)


def test_paper_specs_grade_cut_off_answers_as_nemo_skills_and_the_report_says_which_rule(
    fetched: Path, tmp_path: Path, monkeypatch
):
    assert all(load_spec(p).spec.eval.grading.score_truncated for p in PAPER_SPECS)
    monkeypatch.chdir(fetched)
    path = ROOT / "ablations" / "paper-keywords.yaml"
    loaded = on_toy_base(path)
    plan = build_plan(loaded.spec, path)
    report = write_report(loaded, plan, Store(tmp_path / "store"), tmp_path / "out", track=False)
    assert (
        "cut off at the token limit is graded as it stands (`eval.grading.score_truncated: true`" in report.read_text()
    )
    other = synthetic_sweep(tmp_path / "default")  # ablate's default rule
    report = write_report(other.loaded, other.plan, other.store, tmp_path / "out2", track=False)
    assert "cut off at the token limit is scored wrong (`eval.grading.score_truncated: false`" in report.read_text()
