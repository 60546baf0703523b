"""Pool loading: formats, column mapping, presets on local files, stable ids, and located errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from framework.pool.stage import check_answers_agree, load_pool, trace_id
from framework.sources import PoolError, problem_id_for
from framework.spec import spec_from_dict

ROWS = [
    {"question": "What is 1+1?", "output": "1+1 = 2. \\boxed{2}", "model": "qwq", "gold": "2"},
    {"question": "What is 2+3?", "output": "We add: 5. \\boxed{5}", "model": "human", "gold": "5"},
    {"question": "What is 2+3?", "output": "Five. \\boxed{5}", "model": "qwq", "gold": "5"},
]
MAPPING = {"problem": "question", "trace": "output", "source": "model", "expected_answer": "gold"}


def spec_with(pool: list[dict]) -> object:
    return spec_from_dict({"name": "t", "model": {"name_or_path": "m/m"}, "pool": pool})


def resolver(tmp: Path):
    return lambda p: (tmp / p) if (tmp / p).exists() else None


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "json", "hf"])
def test_unfamiliar_columns_load_through_a_mapping(tmp_path, fmt):
    frame = pd.DataFrame(ROWS)
    name = {"hf": "ds"}.get(fmt, f"pool.{fmt}")
    target = tmp_path / name
    if fmt == "jsonl":
        write_jsonl(target, ROWS)
    elif fmt == "parquet":
        frame.to_parquet(target)
    elif fmt == "csv":
        frame.to_csv(target, index=False)
    elif fmt == "json":
        target.write_text(json.dumps(ROWS))
    else:
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(target))
    pool, report = load_pool(spec_with([{"path": name, "columns": MAPPING}]), resolver(tmp_path))
    assert list(pool["source"]) == ["qwq", "human", "qwq"]
    assert list(pool["expected_answer"]) == ["2", "5", "5"]
    # Problem ids are stable hashes of the normalized text: the two "2+3" rows share one.
    assert pool["problem_id"].iloc[1] == pool["problem_id"].iloc[2] == problem_id_for("  what IS 2+3? ")
    assert pool["trace_id"].is_unique and report["duplicate_traces_dropped"] == 0
    assert "origin" in pool.columns  # where each trace came from, for the user


@pytest.mark.parametrize("orient", [None, "columns", "index", "records", "split", "table"])
def test_json_written_by_pandas_loads_in_every_table_layout(tmp_path, orient):
    """`df.to_json(path)` writes {column: {index: value}} by default: a user's pandas export must load as the
    rows it holds, whatever orient wrote it, with numbers left as they were."""
    frame = pd.DataFrame([{**r, "n": i} for i, r in enumerate(ROWS)])
    frame.to_json(tmp_path / "pool.json", **({"orient": orient} if orient else {}))
    pool, _ = load_pool(spec_with([{"path": "pool.json", "columns": MAPPING}]), resolver(tmp_path))
    assert list(pool["problem"]) == [r["question"] for r in ROWS]
    assert list(pool["source"]) == ["qwq", "human", "qwq"] and list(pool["expected_answer"]) == ["2", "5", "5"]
    assert list(pool["n"]) == [0, 1, 2]


def test_json_columns_with_gaps_and_an_unreadable_layout(tmp_path):
    """A column without an index entry is a missing value of that row; a bare array of arrays (orient=values)
    names no columns and is refused with the layouts that load."""
    data = {"problem": {"0": "q0", "1": "q1"}, "trace": {"0": "t0", "1": "t1"}, "expected_answer": {"0": "1"}}
    (tmp_path / "gap.json").write_text(json.dumps(data))
    pool, report = load_pool(spec_with([{"path": "gap.json", "on_missing": "keep"}]), resolver(tmp_path))
    assert list(pool["expected_answer"]) == ["1", None] and report["missing_values"]["pool[0]"]["rows"] == 1
    by_id = {"p-a": {"question": "q0", "output": "t0"}, "p-b": {"question": "q1", "output": "t1"}}  # rows by id
    (tmp_path / "ids.json").write_text(json.dumps(by_id))
    columns = {"problem": "question", "trace": "output"}
    pool, _ = load_pool(spec_with([{"path": "ids.json", "columns": columns}]), resolver(tmp_path))
    assert list(pool["problem"]) == ["q0", "q1"] and list(pool["trace"]) == ["t0", "t1"]
    pd.DataFrame(ROWS).to_json(tmp_path / "values.json", orient="values")
    with pytest.raises(PoolError, match=r"row 0: expected a JSON object, got list"):
        load_pool(spec_with([{"path": "values.json", "columns": MAPPING}]), resolver(tmp_path))
    (tmp_path / "scalar.json").write_text('{"problem": 3}')
    with pytest.raises(PoolError, match=r"or a table written by pandas' to_json, got dict"):
        load_pool(spec_with([{"path": "scalar.json"}]), resolver(tmp_path))


def test_nemotron_preset_layout_from_a_local_file(tmp_path):
    write_jsonl(
        tmp_path / "nemo.jsonl",
        [
            {"problem": "p1", "solution": "s \\boxed{1}", "solution_type": "human_stage4", "expected_answer": "1"},
            {"problem": "p1", "solution": "t \\boxed{1}", "solution_type": "qwq_32b_preview", "expected_answer": "1"},
        ],
    )
    pool, _ = load_pool(
        spec_with([{"preset": "nemotron-math-human-reasoning", "path": "nemo.jsonl"}]), resolver(tmp_path)
    )
    assert list(pool["source"]) == ["human_stage4", "qwq_32b_preview"]
    assert list(pool["trace"]) == ["s \\boxed{1}", "t \\boxed{1}"]


def test_sources_concatenate_with_constant_labels_filters_and_limits(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"problem": f"q{i}", "trace": f"t{i}", "lvl": i % 2} for i in range(6)])
    write_jsonl(tmp_path / "b.jsonl", [{"problem": "q0", "trace": "other"}])
    pool, _ = load_pool(
        spec_with(
            [
                {
                    "path": "a.jsonl",
                    "source": "model_a",
                    "filter": {"lvl": 1},
                    "limit": 2,
                    "columns": {"difficulty": "lvl"},
                },
                {"path": "b.jsonl"},
            ]
        ),
        resolver(tmp_path),
    )
    assert list(pool["source"]) == ["model_a", "model_a", "b"]
    assert list(pool["difficulty"]) == [1, 1, None] or list(pool["difficulty"].fillna(-1)) == [1, 1, -1]


def test_exact_duplicate_traces_are_dropped_and_counted(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [ROWS[0], ROWS[0], ROWS[1]])
    pool, report = load_pool(spec_with([{"path": "d.jsonl", "columns": MAPPING}]), resolver(tmp_path))
    assert len(pool) == 2 and report["duplicate_traces_dropped"] == 1


def test_missing_mapped_column_names_file_and_columns(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(PoolError) as info:
        load_pool(spec_with([{"path": "p.jsonl", "columns": {**MAPPING, "trace": "completion"}}]), resolver(tmp_path))
    (msg,) = info.value.problems
    assert "p.jsonl" in msg and "'completion'" in msg and "trace" in msg and "question" in msg


def test_missing_required_field_without_mapping(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(PoolError, match="required field 'problem' is missing"):
        load_pool(spec_with([{"path": "p.jsonl"}]), resolver(tmp_path))


def test_an_empty_file_or_a_filter_that_keeps_nothing_says_so(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(PoolError, match=re.escape("empty.jsonl: no rows")):
        load_pool(spec_with([{"path": "empty.jsonl", "columns": MAPPING}]), resolver(tmp_path))
    write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(PoolError, match=re.escape("p.jsonl: the filter {'model': 'nobody'} keeps no row")):
        load_pool(
            spec_with([{"path": "p.jsonl", "columns": MAPPING, "filter": {"model": "nobody"}}]), resolver(tmp_path)
        )


def test_empty_trace_and_bad_lines_are_located(tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = [
        json.dumps(ROWS[0]).encode(),
        b'{"question": "x", "output": "   ", "model": "m"}',
        b"\xff\xfe not utf8",
        b"{not json",
    ]
    bad.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(PoolError) as info:
        load_pool(spec_with([{"path": "bad.jsonl", "columns": MAPPING}]), resolver(tmp_path))
    text = str(info.value)
    assert f"{bad}:3: not valid UTF-8" in text and f"{bad}:4: invalid JSON" in text
    bad.write_bytes(b"\n".join(lines[:2]) + b"\n")
    with pytest.raises(PoolError, match=rf"{bad}:2: field 'trace' is empty"):
        load_pool(spec_with([{"path": "bad.jsonl", "columns": MAPPING}]), resolver(tmp_path))


def test_duplicate_problem_ids_with_different_answers(tmp_path):
    write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"problem_id": "a", "problem": "q", "trace": "t1", "expected_answer": "1"},
            {"problem_id": "a", "problem": "q", "trace": "t2", "expected_answer": "2"},
        ],
    )
    with pytest.raises(PoolError) as info:
        load_pool(spec_with([{"path": "p.jsonl"}]), resolver(tmp_path))
    msg = str(info.value)
    assert "problem_id 'a'" in msg and "p.jsonl:1" in msg and "p.jsonl:2" in msg


def test_unknown_file_type_and_missing_file(tmp_path):
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(PoolError, match="unknown file type"):
        load_pool(spec_with([{"path": "p.txt"}]), resolver(tmp_path))
    with pytest.raises(PoolError, match="does not exist"):
        load_pool(spec_with([{"path": "nope.jsonl"}]), resolver(tmp_path))


def test_trace_id_separates_fields():
    assert trace_id("ab", "c", "d") != trace_id("a", "bc", "d")
    frame = pd.DataFrame({"problem_id": ["x"], "expected_answer": [None], "_where": ["f:1"]})
    check_answers_agree(frame)  # no answers: nothing to disagree about


def test_open_math_reasonings_pass_rate_makes_easy_the_problems_the_reference_model_solves(tmp_path):
    """The preset's 72B pass rate is a pass rate (higher = easier), not a difficulty label: the paper-difficulty
    spec's `easy` bin must keep the problems it solves most often."""
    import yaml

    from framework.data.factors.base import FactorContext
    from framework.data.factors.difficulty import Params, apply

    rows = [
        {
            "problem": f"Problem {i}?",
            "generated_solution": f"Solution {i}. \\boxed{{{i}}}",
            "generation_model": "r1",
            "expected_answer": str(i),
            "pass_rate_72b_tir": rate,
            "problem_source": "aops",
        }
        for i, rate in enumerate(["0.9", "0.8", "0.5", "0.4", "0.1", "0.0", "n/a"])
    ]
    write_jsonl(tmp_path / "omr.jsonl", rows)
    pool, _ = load_pool(spec_with([{"preset": "open-math-reasoning", "path": "omr.jsonl"}]), resolver(tmp_path))
    assert pool["pass_rate"].tolist()[:6] == [0.9, 0.8, 0.5, 0.4, 0.1, 0.0] and pd.isna(pool["pass_rate"].iloc[6])
    spec = Path(__file__).resolve().parents[3] / "ablations" / "paper-difficulty.yaml"
    levels = yaml.safe_load(spec.read_text())["factors"]["difficulty"]["levels"]
    ctx = FactorContext(rng=None, n_examples=2, reflection_keywords=[])  # type: ignore[arg-type]
    kept = {name: sorted(apply(pool, name, Params(**p), ctx)["expected_answer"]) for name, p in levels.items()}
    assert kept == {"easy": ["0", "1"], "medium": ["2", "3"], "hard": ["4", "5"]}


def test_a_trace_the_grader_could_not_judge_is_ungraded_not_wrong(monkeypatch):
    """A timeout or a crashed grader says nothing about the trace: the correctness factor must not call it wrong."""
    import framework.pool.stage
    from framework.grading import Verdict
    from framework.pool.stage import grade_traces

    verdicts = [
        Verdict(True, "2", "exact"),
        Verdict(False, "5", "worker", "worker_crashed"),
        Verdict(False, "5", "grader", "grader_error: x"),
    ]
    monkeypatch.setattr(framework.pool.stage, "grade_many", lambda items, **kw: verdicts[: len(items)])
    pool = pd.DataFrame({"trace": [r["output"] for r in ROWS], "expected_answer": [r["gold"] for r in ROWS]})
    _, _, correct = grade_traces(pool, spec_with([{"path": "p.jsonl"}]))
    assert correct == [True, None, None]


def test_the_pool_keeps_how_each_traces_answer_was_found():
    """A wrong boxed answer and a trace that stopped mid-thought are both graded wrong; only the method tells them
    apart, and the correctness factor needs it."""
    from framework.pool.stage import grade_traces

    traces = [
        "so \\boxed{7}",
        "so \\boxed{8}",
        "The final answer is 9.",
        "let me recount the cases where n = 5",
    ]
    pool = pd.DataFrame({"trace": traces, "expected_answer": ["7"] * 4})
    answers, methods, correct = grade_traces(pool, spec_with([{"path": "p.jsonl"}]))
    assert answers == ["7", "8", "9", "5"]
    assert methods == ["boxed", "boxed", "final_answer_phrase", "last_number"]
    assert correct == [True, False, False, False]


def test_benchmark_problems_can_be_left_out_of_the_pool():
    from framework.pool.stage import drop_eval_problems

    pool = pd.DataFrame(
        {
            "problem_id": ["a", "a", "b", "c"],
            "problem": ["What is 1+1?", "What is 1+1?", "Find  x.", "Other."],
            "trace": ["t1", "t2", "t3", "t4"],
        }
    )
    kept, report = drop_eval_problems(pool, {"aime24": ["what is 1+1?"], "math-500": ["FIND X.", "Unrelated."]})
    assert kept["problem_id"].tolist() == ["c"]
    assert report == {"traces": 3, "problems": 2, "by_benchmark": {"aime24": 1, "math-500": 1}}


def test_a_hub_source_records_the_dataset_and_the_commit_it_read(tmp_path):
    # A local directory laid out like a hub dataset repository goes through the very same builder as a hub id.
    repo = tmp_path / "repo"
    repo.mkdir()
    write_jsonl(repo / "train.jsonl", ROWS)
    spec = spec_with([{"hub": str(repo), "columns": MAPPING}])
    pool, report = load_pool(spec, resolver(tmp_path))
    assert list(pool["source"]) == ["qwq", "human", "qwq"]
    (read,) = report["hub_data"]
    assert read["source"] == "pool[0]" and read["dataset"] == str(repo) and read["split"] == "train"
    assert read["revision"] is None and isinstance(read["commit"], str) and read["commit"]
    write_jsonl(repo / "train.jsonl", ROWS[:2])
    pool, again = load_pool(spec, resolver(tmp_path))
    assert len(pool) == 2 and again["hub_data"][0]["commit"] != read["commit"]  # other content, other version


def test_a_pinned_revision_reaches_the_hub_reader_and_its_errors(monkeypatch):
    import framework.hub_data

    asked = []

    def unreachable(repo, split, *, config=None, revision=None, where=None, limit=None):
        asked.append((repo, split, revision))
        raise ConnectionError("offline")

    monkeypatch.setattr(framework.hub_data, "read_hub_split", unreachable)
    spec = spec_with(
        [{"preset": "open-math-reasoning", "revision": "0123abc"}, {"hub": "org/traces", "revision": "v2"}]
    )
    with pytest.raises(PoolError, match=r"'nvidia/OpenMathReasoning' \(split 'cot'\) at revision '0123abc'.*offline"):
        load_pool(spec, lambda p: None)
    with pytest.raises(PoolError, match="at revision 'v2'"):
        load_pool(spec_with([{"hub": "org/traces", "revision": "v2"}]), lambda p: None)
    assert asked == [("nvidia/OpenMathReasoning", "cot", "0123abc"), ("org/traces", "train", "v2")]


@pytest.mark.parametrize(
    "source",
    [{"path": "pool.jsonl", "revision": "abc"}, {"preset": "toy", "revision": "abc"}],
)
def test_a_revision_without_a_hub_dataset_is_a_spec_error(source):
    from framework.spec import SpecErrors

    with pytest.raises(SpecErrors, match="'revision' pins a hub dataset"):
        spec_with([source])


def test_a_trace_without_an_expected_answer_is_ungraded_end_to_end(tmp_path):
    """Through the loader: a null or missing answer must not reach the grader as NaN (graded "wrong")."""
    from framework.pool.stage import grade_traces

    rows = [
        {"problem": "p1", "trace": "\\boxed{3}", "expected_answer": "3"},
        {"problem": "p2", "trace": "\\boxed{5}", "expected_answer": None},
        {"problem": "p3", "trace": "\\boxed{7}"},
        {"problem": "p4", "trace": "\\boxed{9}", "expected_answer": ""},
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    spec = spec_with([{"path": "p.jsonl", "on_missing": "keep"}])
    pool, _ = load_pool(spec, resolver(tmp_path))
    _, _, correct = grade_traces(pool, spec)
    assert correct == [True, None, None, None]


def test_integer_answers_with_gaps_stay_exact_text(tmp_path):
    rows = [
        {"problem": "p1", "trace": "t", "expected_answer": 3},
        {"problem": "p2", "trace": "t", "expected_answer": None},
        {"problem": "p3", "trace": "t", "expected_answer": 12345678901234567},
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    pool, _ = load_pool(spec_with([{"path": "p.jsonl", "on_missing": "keep"}]), resolver(tmp_path))
    assert list(pool["expected_answer"]) == ["3", None, "12345678901234567"]


def test_empty_csv_cells_are_missing_values_not_labels(tmp_path):
    pd.DataFrame(
        [
            {"problem": "p1", "trace": "t", "source": "", "expected_answer": ""},
            {"problem": "p2", "trace": "t", "source": "x", "expected_answer": "4"},
        ]
    ).to_csv(tmp_path / "p.csv", index=False)
    pool, _ = load_pool(spec_with([{"path": "p.csv", "source": "human", "on_missing": "keep"}]), resolver(tmp_path))
    assert list(pool["source"]) == ["human", "x"]
    assert list(pool["expected_answer"]) == [None, "4"]


def test_a_hub_split_is_read_alone_filtered_and_limited_before_pandas(tmp_path, monkeypatch):
    """A repository laid out as on the hub (README configs, one set of parquet files per split): only the asked
    split's files are read (the other split here is not even parquet), then the filter and limit."""
    from framework.hub_data import read_hub_split

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: cot\n    path: data/cot-*.parquet\n"
        "  - split: tir\n    path: data/tir-*.parquet\n---\n"
    )
    pd.DataFrame(
        {"problem": [f"p{i}" for i in range(6)], "problem_type": ["has_answer_extracted", "converted_proof"] * 3}
    ).to_parquet(repo / "data" / "cot-00000-of-00001.parquet")
    (repo / "data" / "tir-00000-of-00001.parquet").write_bytes(b"not parquet: reading it would fail")
    frame = read_hub_split(str(repo), "cot", where={"problem_type": ["has_answer_extracted"]}, limit=2)
    assert list(frame["problem"]) == ["p0", "p2"]
    assert frame.attrs["hub"]["split"] == "cot" and frame.attrs["hub"]["commit"]
    import framework.hub_data

    monkeypatch.setattr(
        framework.hub_data, "read_hub_split", lambda r, split, **kw: read_hub_split(str(repo), split, **kw)
    )
    spec = spec_with([{"hub": "org/omr", "split": "cot", "filter": {"problem_type": "no_such_type"}}])
    with pytest.raises(PoolError, match=r"the filter \{'problem_type': 'no_such_type'\} keeps no row"):
        load_pool(spec, lambda p: None)


def test_one_answer_spelled_two_ways_agrees_and_keeps_its_first_spelling(tmp_path):
    write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"problem_id": "a", "problem": "q", "trace": "t1", "expected_answer": "1/2"},
            {"problem_id": "a", "problem": "q", "trace": "t2", "expected_answer": "\\frac{1}{2}"},
            {"problem_id": "b", "problem": "r", "trace": "t3", "expected_answer": None},
        ],
    )
    pool, _ = load_pool(spec_with([{"path": "p.jsonl", "on_missing": "keep"}]), resolver(tmp_path))
    assert list(pool["expected_answer"]) == ["1/2", "1/2", None]


def test_a_preset_reads_its_own_split_unless_one_is_named(monkeypatch):
    import framework.hub_data

    asked = []

    def hub(repo, split, **kwargs):
        asked.append(split)
        raise ConnectionError("offline")

    monkeypatch.setattr(framework.hub_data, "read_hub_split", hub)
    for source in ({"preset": "open-math-reasoning"}, {"preset": "open-math-reasoning", "split": "train"}):
        with pytest.raises(PoolError):
            load_pool(spec_with([source]), lambda p: None)
    assert asked == ["cot", "train"]  # an explicit 'train' is no longer read as "the default"
