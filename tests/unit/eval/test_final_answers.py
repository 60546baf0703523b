"""Which answer a response is graded on: truncated chains, the benchmark's grader and the spec's override."""

from __future__ import annotations

from framework.evaluate import final_answers, grader_for

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
