"""Rows a pool cannot hold honestly: missing values of provided fields, lists and mappings, mixed difficulty
labels. Each is an error naming the file and line unless the source says what to do (`on_missing`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framework.pool.stage import load_pool
from framework.sources import PoolError, problem_id_for
from framework.spec import spec_from_dict

MAPPING = {"problem": "question", "trace": "output", "source": "model", "expected_answer": "gold"}


def spec_with(pool: list[dict]) -> object:
    return spec_from_dict({"name": "t", "model": {"name_or_path": "m/m"}, "pool": pool})


def load(tmp: Path, sources: list[dict]) -> tuple[pd.DataFrame, dict]:
    return load_pool(spec_with(sources), lambda p: (tmp / p) if (tmp / p).exists() else None)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_with_gaps() -> list[dict]:
    return [
        {"question": "q1", "output": "a \\boxed{1}", "model": "m", "gold": "1"},
        {"question": "q2", "output": "b \\boxed{2}", "model": "m"},  # no answer
        {"question": "q3", "output": "c \\boxed{3}", "gold": "3"},  # no source
        {"question": "q4", "output": "d \\boxed{4}", "model": "m", "gold": "4"},
    ]


def test_a_row_without_its_answer_or_source_is_an_error_naming_file_line_and_column(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", rows_with_gaps())
    with pytest.raises(PoolError) as info:
        load(tmp_path, [{"path": "mine.jsonl", "columns": MAPPING}])
    text = str(info.value)
    assert f"{path}:2: field 'expected_answer' is empty or missing (column 'gold')" in text
    assert f"{path}:3: field 'source' is empty or missing (column 'model')" in text
    assert "on_missing: drop" in text and f"{path}:1" not in text and f"{path}:4" not in text


def test_on_missing_drop_leaves_the_rows_out_and_counts_them(tmp_path):
    write_jsonl(tmp_path / "mine.jsonl", rows_with_gaps())
    pool, report = load(tmp_path, [{"path": "mine.jsonl", "columns": MAPPING, "on_missing": "drop"}])
    assert pool["problem"].tolist() == ["q1", "q4"]
    assert report["missing_dropped"] == 2
    assert report["missing_values"] == {
        "pool[0]": {"on_missing": "drop", "rows": 2, "by_field": {"source": 1, "expected_answer": 1}}
    }


def test_on_missing_keep_keeps_them_ungraded_and_labelled_as_documented(tmp_path):
    write_jsonl(tmp_path / "mine.jsonl", rows_with_gaps())
    pool, report = load(tmp_path, [{"path": "mine.jsonl", "columns": MAPPING, "on_missing": "keep"}])
    assert pool["expected_answer"].tolist() == ["1", None, "3", "4"]
    assert pool["source"].tolist() == ["m", "m", "mine", "m"]  # the documented default label
    assert report["missing_dropped"] == 0 and report["missing_values"]["pool[0]"]["rows"] == 2
    # A constant `source:` labels the rows whose source column is empty: no error, nothing counted for source.
    pool, report = load(tmp_path, [{"path": "mine.jsonl", "columns": MAPPING, "source": "human", "on_missing": "drop"}])
    assert pool["source"].tolist() == ["m", "human", "m"]
    assert report["missing_values"]["pool[0]"]["by_field"] == {"expected_answer": 1}


def test_an_unmapped_source_takes_the_file_name_and_a_full_pool_passes(tmp_path):
    write_jsonl(tmp_path / "traces.jsonl", [{"problem": "q", "trace": "t", "expected_answer": "1"}])
    pool, report = load(tmp_path, [{"path": "traces.jsonl"}])
    assert pool["source"].tolist() == ["traces"] and report["missing_values"] == {}


def test_an_empty_trace_is_never_kept(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "q", "trace": " "}, {"problem": "r", "trace": "t"}])
    with pytest.raises(PoolError, match=re.escape(f"{path}:1: field 'trace' is empty")):
        load(tmp_path, [{"path": "p.jsonl", "on_missing": "keep"}])
    pool, _ = load(tmp_path, [{"path": "p.jsonl", "on_missing": "drop"}])
    assert pool["problem"].tolist() == ["r"]


def test_a_row_without_its_problem_id_does_not_join_a_problem_called_nan(tmp_path):
    rows = [
        {"problem_id": "a", "problem": "q1", "trace": "t1"},
        {"problem": "q2", "trace": "t2"},
        {"problem_id": None, "problem": "q3", "trace": "t3"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PoolError) as info:
        load(tmp_path, [{"path": "p.jsonl"}])
    assert f"{path}:2: field 'problem_id'" in str(info.value) and f"{path}:3: field 'problem_id'" in str(info.value)
    pool, _ = load(tmp_path, [{"path": "p.jsonl", "on_missing": "keep"}])
    assert pool["problem_id"].tolist() == ["a", problem_id_for("q2"), problem_id_for("q3")]


@pytest.mark.parametrize(
    ("value", "held"),
    [(["a", "b"], "a list"), ({"role": "assistant", "content": "x"}, "a mapping")],
)
def test_a_list_or_mapping_valued_field_is_an_error_not_its_repr(tmp_path, value, held):
    rows = [{"problem": "q1", "trace": "fine", "expected_answer": "1"}, {"problem": "q2", "trace": value}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PoolError, match=re.escape(f"{path}:2: field 'trace' holds {held}, not one value")):
        load(tmp_path, [{"path": "p.jsonl", "on_missing": "keep"}])
    rows = [{"q": "q1", "t": "x", "gold": ["1", "2"]}]
    path = write_jsonl(tmp_path / "a.jsonl", rows)
    with pytest.raises(
        PoolError, match=re.escape(f"{path}:1: field 'expected_answer' (column 'gold') holds a list, not one value")
    ):
        load(tmp_path, [{"path": "a.jsonl", "columns": {"problem": "q", "trace": "t", "expected_answer": "gold"}}])


def test_a_parquet_list_column_and_a_numeric_trace_are_located_by_row(tmp_path):
    pd.DataFrame({"problem": ["q1", "q2"], "trace": [["a", "b"], ["c"]]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(PoolError, match=re.escape(f"{tmp_path / 'p.parquet'} row 0: field 'trace' holds a list")):
        load(tmp_path, [{"path": "p.parquet"}])
    write_jsonl(tmp_path / "n.jsonl", [{"problem": "q1", "trace": 42}])
    with pytest.raises(PoolError, match=re.escape(f"{tmp_path / 'n.jsonl'}:1: field 'trace' holds 42, not text")):
        load(tmp_path, [{"path": "n.jsonl"}])


def test_mixed_and_unknown_difficulty_labels_load_when_no_factor_orders_them(tmp_path):
    """Only a factor ordering labels needs numbers: a spec without one loads words beside numbers, and the markers
    of an unknown label ("Level ?", "n/a", "?") are missing values, as an empty cell is."""
    rows = [{"problem": f"q{i}", "trace": "t", "expected_answer": "1", "lvl": v} for i, v in enumerate([1, 2, "hard"])]
    write_jsonl(tmp_path / "p.jsonl", rows)
    pool, _ = load(tmp_path, [{"path": "p.jsonl", "columns": {"difficulty": "lvl"}}])
    pool.to_parquet(tmp_path / "out.parquet")
    assert pd.read_parquet(tmp_path / "out.parquet")["difficulty"].tolist() == ["1", "2", "hard"]
    labels = ["Level 1", "Level ?", "n/a", "?", "Level 5"]
    rows = [{"problem": f"q{i}", "trace": "t", "expected_answer": "1", "difficulty": v} for i, v in enumerate(labels)]
    write_jsonl(tmp_path / "math.jsonl", rows)
    pool, _ = load(tmp_path, [{"path": "math.jsonl"}])
    assert pool["difficulty"].tolist() == ["Level 1", None, None, None, "Level 5"]


def test_a_band_over_text_labels_is_a_cell_error_with_file_line_and_hint(tmp_path):
    """The same pool under a difficulty band: a user error (exit 2) naming the row with the word and how to map it."""
    from framework.data.stage import DataError, build_training_set

    rows = [{"problem": f"q{i}", "trace": "t", "expected_answer": "1", "lvl": v} for i, v in enumerate([1, 2, "hard"])]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    sources = [{"path": "p.jsonl", "columns": {"difficulty": "lvl"}}]
    pool, _ = load(tmp_path, sources)
    pool = pool.assign(n_tokens=10, reflection_count=0)
    spec = spec_from_dict(
        {
            "name": "t",
            "model": {"name_or_path": "m/m"},
            "pool": sources,
            "factors": {"difficulty": {"levels": {"hard": {"min": 2}, "all": {}}}},
            "n_examples": 1,
        }
    )
    config = {"arm": [["difficulty", "difficulty", "hard", {"min": 2}]], "seed": 0, "n_examples": 1}
    with pytest.raises(DataError) as info:
        build_training_set(pool, config, spec, cells=["difficulty=hard"])
    text = str(info.value)
    assert text.startswith(f"difficulty=hard: {path}:3: difficulty by=label: label 'hard' is not a number")
    assert "'values'" in text and '"Level 3" reads as 3' in text


def test_a_bug_in_selection_is_not_reported_as_a_user_error(tmp_path, monkeypatch):
    """Only the pool's shortfalls become a cell's user error; any other exception is a bug and keeps its type
    (and its traceback), rather than an exit 2 that hides it."""
    import framework.data.stage
    from framework.data.stage import build_training_set

    write_jsonl(tmp_path / "p.jsonl", [{"problem": "q", "trace": "t", "expected_answer": "1"}])
    pool, _ = load(tmp_path, [{"path": "p.jsonl"}])
    spec = spec_with([{"path": "p.jsonl"}])

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(framework.data.stage, "select", broken)
    with pytest.raises(ValueError, match="a bug") as info:
        build_training_set(pool.assign(n_tokens=1), {"arm": [], "seed": 0, "n_examples": 1}, spec)
    assert type(info.value) is ValueError


def test_mixed_label_types_of_one_scale_are_stored(tmp_path):
    """3 beside "3" beside "Level 4" is one numeric scale: the pool keeps it, as numbers Parquet can store."""
    rows = [
        {"problem": f"q{i}", "trace": "t", "expected_answer": "1", "difficulty": v}
        for i, v in enumerate([3, "3", "Level 4", None])
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    pool, _ = load(tmp_path, [{"path": "p.jsonl"}])
    pool.to_parquet(tmp_path / "out.parquet")
    back = pd.read_parquet(tmp_path / "out.parquet")["difficulty"].tolist()
    assert back[:3] == [3.0, 3.0, 4.0] and (back[3] is None or np.isnan(back[3]))
    # Categories stay text; a lone type is left as it was read.
    write_jsonl(tmp_path / "c.jsonl", [{"problem": "q", "trace": "t", "expected_answer": "1", "difficulty": 2}])
    assert load(tmp_path, [{"path": "c.jsonl"}])[0]["difficulty"].tolist() == [2]


def test_metadata_the_pool_cannot_store_becomes_text_and_annotation_names_are_kept_aside(tmp_path):
    rows = [
        {"problem": "q1", "trace": "t1", "expected_answer": "1", "meta": 1, "correct": "yes", "n_tokens": 3},
        {"problem": "q2", "trace": "t2", "expected_answer": "2", "meta": "x", "correct": "no", "n_tokens": 4},
        {"problem": "q3", "trace": "t3", "expected_answer": "3", "meta": ["a", 1], "correct": None},
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    pool, _ = load(tmp_path, [{"path": "p.jsonl"}])
    pool.to_parquet(tmp_path / "out.parquet")  # would fail on an int beside a str
    assert pool["meta"].tolist() == ["1", "x", '["a", 1]']
    assert pool["correct_given"].tolist() == ["yes", "no", None] and "correct" not in pool.columns
    assert pool["n_tokens_given"].tolist()[:2] == [3, 4]


def test_on_missing_enters_the_pool_key_only_when_it_changes_what_is_read(tmp_path, monkeypatch):
    """The default keeps the keys of pools built before the option existed; drop and keep build other pools."""
    from framework.sweep.plan import build_plan

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "p.jsonl", [{"problem": "q", "trace": "t", "expected_answer": "1"}])

    def pool_key(**extra: str) -> str:
        (job,) = build_plan(spec_with([{"path": "p.jsonl", **extra}])).by_stage("pool")
        return job.key

    assert pool_key() == pool_key(on_missing="error")
    assert len({pool_key(), pool_key(on_missing="drop"), pool_key(on_missing="keep")}) == 3


@pytest.mark.parametrize(
    ("preset", "row"),
    [
        (
            "nemotron-math-human-reasoning",
            {"problem": "p2", "solution": "s", "solution_type": "human_stage1", "expected_answer": None},
        ),
        (
            "open-math-reasoning",
            {
                "problem": "p2",
                "generated_solution": "s",
                "generation_model": "DeepSeek-R1",
                "expected_answer": None,
                "pass_rate_72b_tir": "n/a",
            },
        ),
    ],
)
def test_a_released_preset_keeps_its_rows_without_an_answer_unless_told_otherwise(tmp_path, preset, row):
    """The released datasets lack some answers: the shipped specs that read them must load as they did, with the
    kept rows ungraded and counted; `on_missing: error` or `drop` on the source still applies."""
    full = {**row, "problem": "p1", "expected_answer": "1"}
    if "pass_rate_72b_tir" in row:
        full["pass_rate_72b_tir"] = 0.5
    path = write_jsonl(tmp_path / "rel.jsonl", [full, row])
    pool, report = load(tmp_path, [{"preset": preset, "path": "rel.jsonl"}])
    assert pool["expected_answer"].tolist() == ["1", None]
    assert report["missing_values"] == {
        "pool[0]": {"on_missing": "keep", "rows": 1, "by_field": {"expected_answer": 1}}
    }
    with pytest.raises(PoolError, match=re.escape(f"{path}:2: field 'expected_answer' is empty or missing")):
        load(tmp_path, [{"preset": preset, "path": "rel.jsonl", "on_missing": "error"}])
    pool, report = load(tmp_path, [{"preset": preset, "path": "rel.jsonl", "on_missing": "drop"}])
    assert pool["problem"].tolist() == ["p1"] and report["missing_dropped"] == 1


def test_a_presets_own_rule_keeps_its_pool_key_and_another_rule_changes_it(tmp_path, monkeypatch):
    from framework.sweep.plan import build_plan

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "rel.jsonl", [{"problem": "q", "solution": "t", "expected_answer": "1"}])

    def pool_key(**extra: str) -> str:
        src = {"preset": "nemotron-math-human-reasoning", "path": "rel.jsonl", **extra}
        (job,) = build_plan(spec_with([src])).by_stage("pool")
        return job.key

    assert pool_key() == pool_key(on_missing="keep")
    assert len({pool_key(), pool_key(on_missing="error"), pool_key(on_missing="drop")}) == 3


def test_the_hint_offers_keep_only_where_keep_would_keep_the_rows(tmp_path):
    """An empty problem or trace is never kept: a hint offering `keep` for it would send the user in a circle."""
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "q1", "trace": ""}, {"problem": "q2", "trace": "t"}])
    with pytest.raises(PoolError) as info:
        load(tmp_path, [{"path": "p.jsonl"}])
    text = str(info.value)
    assert f"{path}:1: field 'trace' is empty or missing" in text
    assert "`on_missing: drop`" in text and "`keep`" not in text
    rows = [{"problem": "q1", "trace": ""}, {"problem": "q2", "trace": "t", "expected_answer": None}]
    write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PoolError) as info:
        load(tmp_path, [{"path": "p.jsonl"}])
    assert "or `keep` to keep those lacking only expected_answer" in str(info.value)


def test_wrong_shapes_and_missing_values_are_reported_in_one_round(tmp_path):
    """A file is fixed in one pass: a list-valued trace on one line and a missing answer on another are both
    named by the first load, not the second only after the first is fixed."""
    rows = [
        {"problem": "q1", "trace": ["a", "b"], "expected_answer": "1"},
        {"problem": "q2", "trace": "t", "expected_answer": None},
        {"problem": "q3", "trace": "t", "expected_answer": "3"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PoolError) as info:
        load(tmp_path, [{"path": "p.jsonl"}])
    problems = info.value.problems
    assert any(p.startswith(f"{path}:1: field 'trace' holds a list") for p in problems)
    assert f"{path}:2: field 'expected_answer' is empty or missing" in problems
    assert not any(f"{path}:1: field 'trace' is empty" in p for p in problems)  # a list is a value, misshapen


def test_storing_the_pool_leaves_its_text_fields_alone(monkeypatch):
    """Checking a column for Parquet copies it into Arrow: done for the traces (object columns under pandas 2),
    it would double a large pool in memory for nothing, since conform made them text."""
    import pyarrow as pa

    from framework.sources import storable

    pool = pd.DataFrame(
        {
            "problem": ["q0", "q1"],
            "trace": ["trace 0", "trace 1"],
            "_where": ["p.jsonl:1", "p.jsonl:2"],
            "meta": [[0], "x"],
        },
        dtype=object,
    )
    seen: list[list] = []
    real = pa.array

    def spy(values: list, *args: object, **kwargs: object) -> object:
        seen.append(list(values))
        return real(values, *args, **kwargs)

    monkeypatch.setattr(pa, "array", spy)
    out = storable(pool)
    assert seen[0] == [[0], "x"]  # metadata is checked, and made text where Parquet cannot hold it
    assert not [v for v in seen if v in (pool["trace"].tolist(), pool["problem"].tolist(), pool["_where"].tolist())]
    assert out["meta"].tolist() == ["[0]", "x"] and out["trace"].tolist() == ["trace 0", "trace 1"]
