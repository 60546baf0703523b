"""Which answer a response is graded on: truncated chains, the benchmark's grader and the spec's override."""

from __future__ import annotations

from framework.eval.stage import final_answers, grader_for

CUT = "So the answer is \\boxed{12}. Hmm, wait, let me re-check the case n = 3, which gives 7"


def test_a_truncated_chain_has_no_final_answer_unless_asked() -> None:
    texts, reasons = [CUT, CUT, "Done: \\boxed{12}"], ["length", "length", "stop"]
    kwargs = {"grader": "math", "fallbacks": True}
    assert final_answers(texts, reasons, score_truncated=False, **kwargs) == [
        (None, "truncated"),
        (None, "truncated"),
        ("12", "boxed"),
    ]
    assert [a for a, _ in final_answers(texts, reasons, score_truncated=True, **kwargs)] == ["12", "12", "12"]


def test_the_specs_grader_overrides_the_benchmarks_own() -> None:
    assert grader_for(None, "multiple_choice") == "multiple_choice"
    assert grader_for("my.pkg:grade", "math") == "my.pkg:grade"
    assert grader_for(None, None) == "math"
    answers = final_answers(
        ["The answer is \\boxed{B}"], ["stop"], grader="multiple_choice", fallbacks=True, score_truncated=False
    )
    assert answers[0][0] == "B"


def test_benchmark_problems_the_checkpoint_was_trained_on_are_found(tmp_path) -> None:
    import json
    from types import SimpleNamespace

    import pandas as pd

    from framework.artifacts import TRAIN_FILE
    from framework.eval.stage import overlap, training_problems

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = [{"problem": "What is  2+2?"}, {"problem": "Find x."}]
    (data_dir / TRAIN_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = SimpleNamespace(
        job=SimpleNamespace(deps=["train/t1"]),
        plan=SimpleNamespace(jobs={"train/t1": SimpleNamespace(deps=["model/m", "data/d1"])}),
        input_dir=lambda job_id: data_dir if job_id == "data/d1" else tmp_path / "elsewhere",
    )
    trained = training_problems(ctx)
    bench = pd.DataFrame({"problem_id": ["a", "b", "c"], "problem": ["what is 2+2?", "Find y.", "FIND X."]})
    assert overlap(trained, bench) == ["a", "c"]
    baseline = SimpleNamespace(job=SimpleNamespace(deps=[]), plan=None, input_dir=None)
    assert training_problems(baseline) == []
