"""Benchmark loading: local NeMo-Skills layout, subsets, limits and filters, GPQA option shuffling, toy."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from framework.benchmarks.loading import BenchmarkError, load_benchmark, multiple_choice
from framework.spec.models import BenchmarkSpec


def resolver(tmp):
    return lambda p: (tmp / p) if (tmp / p).exists() else None


def test_local_nemo_skills_layout_with_subsets(tmp_path):
    rows = [
        {"id": f"q{i}", "problem": f"p{i}", "expected_answer": i, "subset_for_metrics": "aime24" if i < 2 else "hmmt"}
        for i in range(4)
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = load_benchmark(BenchmarkSpec(name="comp-math-24-25", path="test.jsonl"), resolver(tmp_path))
    assert list(frame.columns) == ["problem_id", "problem", "expected_answer", "subset"]
    assert list(frame["problem_id"]) == ["q0", "q1", "q2", "q3"]
    assert list(frame["expected_answer"]) == ["0", "1", "2", "3"]
    assert list(frame["subset"]) == ["aime24", "aime24", "hmmt", "hmmt"]
    limited = load_benchmark(BenchmarkSpec(name="comp-math-24-25", path="test.jsonl", limit=2), resolver(tmp_path))
    assert len(limited) == 2
    chosen = load_benchmark(
        BenchmarkSpec(name="comp-math-24-25", path="test.jsonl", problem_ids=["q3"]), resolver(tmp_path)
    )
    assert list(chosen["problem_id"]) == ["q3"]


def test_missing_fields_and_files_are_clear(tmp_path):
    (tmp_path / "b.jsonl").write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(BenchmarkError, match="missing"):
        load_benchmark(BenchmarkSpec(name="math-500", path="b.jsonl"), resolver(tmp_path))
    with pytest.raises(BenchmarkError, match="does not exist"):
        load_benchmark(BenchmarkSpec(name="math-500", path="nope.jsonl"), resolver(tmp_path))
    with pytest.raises(BenchmarkError, match="give `path:`"):
        load_benchmark(BenchmarkSpec(name="comp-math-24-25"), resolver(tmp_path))


def test_gpqa_options_are_shuffled_deterministically_and_the_letter_follows():
    raw = pd.DataFrame(
        [
            {
                "Record ID": f"r{i}",
                "Question": f"Q{i}?",
                "Correct Answer": "right",
                "Incorrect Answer 1": "w1",
                "Incorrect Answer 2": "w2",
                "Incorrect Answer 3": "w3",
            }
            for i in range(40)
        ]
    )
    a, b = multiple_choice(raw, "gpqa-diamond"), multiple_choice(raw, "gpqa-diamond")
    assert a.equals(b)
    for _, row in a.iterrows():
        line = next(x for x in row["problem"].splitlines() if x.startswith(f"({row['expected_answer']})"))
        assert line.endswith("right")
    assert a["expected_answer"].nunique() > 1  # the right answer is not always in the same place


def test_toy_benchmark_is_generated():
    frame = load_benchmark(BenchmarkSpec(name="toy", limit=10), lambda p: None)
    assert len(frame) == 10 and frame["problem_id"].is_unique
    assert all(a.isdigit() for a in frame["expected_answer"])


def test_a_hub_benchmark_reads_the_pinned_revision_and_says_which_commit_it_read(monkeypatch):
    import framework.hub_data

    asked = []
    gpqa = pd.DataFrame(
        [
            {
                "Record ID": "r1",
                "Question": "Q?",
                "Correct Answer": "a",
                **{f"Incorrect Answer {i}": "b" for i in (1, 2, 3)},
            }
        ]
    )

    def hub(repo, split, *, config=None, revision=None):
        asked.append((repo, config, split, revision))
        frame = (gpqa if config else pd.DataFrame([{"problem": "1+1?", "answer": "2"}])).copy()
        frame.attrs["hub"] = {"dataset": repo, "split": split, "revision": revision, "commit": "c0ffee"}
        return frame

    monkeypatch.setattr(framework.hub_data, "read_hub_split", hub)
    frame = load_benchmark(BenchmarkSpec(name="gpqa-diamond", revision="v1"), lambda p: None)
    assert frame.attrs["hub"] == {"dataset": "Idavidrein/gpqa", "split": "train", "revision": "v1", "commit": "c0ffee"}
    assert frame["expected_answer"].iloc[0] in "ABCD"  # rendered as multiple choice, the record kept
    frame = load_benchmark(BenchmarkSpec(name="math-500"), lambda p: None)
    assert frame.attrs["hub"]["commit"] == "c0ffee" and frame.attrs["hub"]["revision"] is None
    assert asked == [("Idavidrein/gpqa", "gpqa_diamond", "train", "v1"), ("HuggingFaceH4/MATH-500", None, "test", None)]


def test_a_revision_beside_a_local_file_is_a_spec_error():
    with pytest.raises(ValueError, match="'revision' pins the hub copy"):
        BenchmarkSpec(name="math-500", path="b.jsonl", revision="v1")


def test_a_problem_without_an_answer_is_an_error_and_integers_keep_their_text(tmp_path):
    rows = [{"id": "a", "problem": "p", "expected_answer": 204}, {"id": "b", "problem": "q", "expected_answer": None}]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BenchmarkError, match=r"1 problem\(s\) have no expected_answer \(b\)"):
        load_benchmark(BenchmarkSpec(name="aime24", path="b.jsonl"), resolver(tmp_path))
    frame = load_benchmark(BenchmarkSpec(name="aime24", path="b.jsonl", problem_ids=["a"]), resolver(tmp_path))
    assert list(frame["expected_answer"]) == ["204"]  # not "204.0": the column had a gap
