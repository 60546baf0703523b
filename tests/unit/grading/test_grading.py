"""Grading: the regression corpus, extraction rules, math-verify failure handling, and the never-hang guarantee.

`sleepy` and `crashy` are graders for grade_many's import-path hook; worker processes import this module by name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework import grading
from framework.grading import (
    Verdict,
    extract_answer,
    extract_choice,
    grade_many,
    grade_math,
    grade_multiple_choice,
    normalize_answer,
)

CORPUS_PATH = Path(__file__).parent / "grading_corpus.jsonl"
CORPUS = [json.loads(line) for line in CORPUS_PATH.read_text().splitlines() if line.strip()]
HERE = "tests.unit.grading.test_grading"


def sleepy(answer: str | None, expected: str, *, timeout_s: float = 5.0) -> Verdict:
    """A grader that hangs on the answer "hang", as sympy sometimes does on adversarial input."""
    if answer == "hang":
        time.sleep(60)
    return Verdict(answer == expected, answer, "sleepy")


def crashy(answer: str | None, expected: str) -> bool:
    """A grader whose process dies on "crash" (a segfaulting extension, an OOM kill); returns a plain bool."""
    if answer == "crash":
        os._exit(3)
    return answer == expected


def _grade_line(line: dict) -> tuple[str | None, str, Verdict]:
    if line.get("grader") == "multiple_choice":
        answer, method = extract_choice(line["response"])
        return answer, method, grade_multiple_choice(answer, line["expected"])
    answer, method = extract_answer(line["response"])
    return answer, method, grade_math(answer, line["expected"])


def test_corpus_is_substantial() -> None:
    assert len(CORPUS) >= 60
    assert {True, False} == {line["correct"] for line in CORPUS}
    assert all(line["why"] for line in CORPUS)


@pytest.mark.parametrize("line", CORPUS, ids=[f"{i:02d}-{line['why'][:40]}" for i, line in enumerate(CORPUS)])
def test_corpus(line: dict) -> None:
    answer, method, verdict = _grade_line(line)
    assert verdict.correct is line["correct"], (answer, method, verdict, line["why"])
    assert verdict.error is None, verdict


def test_corpus_through_worker_pool_matches_in_process() -> None:
    math_lines = [line for line in CORPUS if line.get("grader", "math") == "math"]
    items = [(extract_answer(line["response"])[0], line["expected"]) for line in math_lines]
    pooled = grade_many(items, workers=2)
    assert [v.correct for v in pooled] == [line["correct"] for line in math_lines]
    assert pooled == [grade_math(a, e) for a, e in items]


# ------------------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{\frac{1}{2}}.", (r"\frac{1}{2}", "boxed")),
        (r"\boxed { 7 }", ("7", "boxed")),
        (r"hence \boxed 5.", ("5", "boxed")),
        (r"\boxed \pi", (r"\pi", "boxed")),
        (r"$$\fbox{3}$$", ("3", "boxed")),
        ("\\[\n\\boxed{\\{1, 2\\}}\n\\]", (r"\{1, 2\}", "boxed")),
        (r"\boxed{a} then \boxed{b}", ("b", "boxed")),
        (r"\boxed{\boxed{4}}", ("4", "boxed")),
        (r"\boxed{2} and finally \boxed{", (None, "none")),
        (r"\boxed{2} and finally \boxed", (None, "none")),
        (r"\boxed{2} and finally \boxed{\frac{1}{", (None, "none")),
        ("The final answer is $-7$.", ("-7", "final_answer_phrase")),
        ("Final answer: \\(x^2\\)", ("x^2", "final_answer_phrase")),
        ("**Answer:** 12.", ("12", "final_answer_phrase")),
        ("## Final Answer\n\n3/4\n", ("3/4", "final_answer_phrase")),
        ("The answer is not obvious. We get x-5 and then 17.", ("17", "last_number")),
        ("The final answer is 5, which is 2 more than 3.", ("5", "final_answer_phrase")),
        ("So the answer is 42 because 6 times 7 is 42 and we subtract 0.", ("42", "final_answer_phrase")),
        ("Final answer: 204 apples in total, i.e. 12 per box.", ("204", "final_answer_phrase")),
        ("The answer is $x=3$, as the check shows.", ("x=3", "final_answer_phrase")),
        ("The answer is 3, 4 and 5.", ("3, 4 and 5", "final_answer_phrase")),
        ("so we get x-5", ("5", "last_number")),
        ("totals 1,024.", ("1024", "last_number")),
        ("nothing numeric here", (None, "none")),
        ("", (None, "none")),
    ],
)
def test_extract_answer(text: str, expected: tuple[str | None, str]) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The answer" + " " * 50_000 + "zz",
        "Final answer" + "\n" * 50_000,
        "\\boxed{" * 20_000 + "\\boxed{}",
        "\\boxed{}" * 20_000,
        "\\boxed{1} " * 20_000,
    ],
    ids=["whitespace-run", "newline-run", "nested-unclosed-boxes", "empty-boxes", "many-boxes"],
)
def test_extraction_stays_linear_on_degenerate_output(text: str) -> None:
    """Extraction runs in the caller's process, outside any time limit, so it must not backtrack or go quadratic."""
    start = time.monotonic()
    extract_answer(text)
    extract_choice(text)
    assert time.monotonic() - start < 5.0


def test_extract_answer_without_fallbacks() -> None:
    assert extract_answer("The answer is 5.", fallbacks=False) == (None, "none")
    assert extract_answer(r"\boxed{5}", fallbacks=False) == ("5", "boxed")
    assert extract_choice("Answer: C", fallbacks=False) == (None, "none")
    assert extract_choice("Long reasoning.\n(B)", fallbacks=False) == (None, "none")
    assert extract_choice(r"\boxed{C}", fallbacks=False) == ("C", "boxed")


def test_last_number_only_looks_at_the_tail() -> None:
    text = "the value is 41. " + "word " * 100
    assert extract_answer(text) == (None, "none")


@pytest.mark.parametrize(
    ("text", "choices", "expected"),
    [
        (r"\boxed{B}", "ABCD", ("B", "boxed")),
        (r"\boxed{\text{(C)}}", "ABCD", ("C", "boxed")),
        (r"\boxed{d}", "ABCD", ("D", "boxed")),
        (r"\boxed{E}", "ABCDE", ("E", "boxed")),
        ("Thus the answer is (B).", "ABCD", ("B", "final_answer_phrase")),
        ("Answer: **D**", "ABCD", ("D", "final_answer_phrase")),
        ("The correct option is C", "ABCD", ("C", "final_answer_phrase")),
        ("Long reasoning.\n(B)", "ABCD", ("B", "last_letter")),
        ("Long reasoning.\nA total of five.", "ABCD", (None, "none")),
        ("Long reasoning.\nE", "ABCD", (None, "none")),
        (r"\boxed{B} but then \boxed{", "ABCD", (None, "none")),
        ("The answer is C. Let me double-check option D: it is wrong.", "ABCD", ("C", "final_answer_phrase")),
        ("The answer is B because energy is conserved.\nThis fits the data.", "ABCD", ("B", "final_answer_phrase")),
        ("The answer is (B) since it fits.", "ABCD", ("B", "final_answer_phrase")),
        ("Option A fails, so option C.", "ABCD", ("C", "final_answer_phrase")),
    ],
)
def test_extract_choice(text: str, choices: str, expected: tuple[str | None, str]) -> None:
    assert extract_choice(text, choices) == expected


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (r" \left( 1, 2 \right) ", "(1,2)"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"5\text{ cm}", "5cm"),
        ("1,000", "1000"),
        ("1{,}000.5", "1000.5"),
        ("1,2", "1,2"),
        ("1 000", "1000"),
        (r"1\,000\,000", "1000000"),
        ("2 3", "2 3"),  # two numbers, not 23
        (r"2\ 3", "2 3"),
        ("x + 2 y", "x+2y"),
        ("42.", "42"),
        (r"\rightarrow", r"\rightarrow"),
    ],
)
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


# ------------------------------------------------------------------------------------------------ grading


def test_fast_path_methods() -> None:
    assert grade_math(None, "3") == Verdict(False, None, "no_answer")
    assert grade_math("  ", "3").method == "no_answer"
    assert grade_math("1,000", "1000") == Verdict(True, "1,000", "exact")
    assert not grade_math("2 3", "23").correct and not grade_math(r"1\ 2", "12").correct  # a space is not a separator
    assert grade_math(r"1\,000", "1000").correct
    assert grade_math("2/4", r"\frac{1}{2}") == Verdict(True, "2/4", "numeric")
    assert grade_math("7", "8") == Verdict(False, "7", "numeric")
    # A decimal that differs from an exact rational is math-verify's call (it rounds to 6 places).
    assert grade_math("0.3333333", r"\frac{1}{3}").method == "math_verify"


@st.composite
def plain_numbers(draw: st.DrawFn) -> str:
    n = draw(st.integers(-2000, 2000))
    d = draw(st.integers(1, 12))
    return draw(
        st.sampled_from(
            [
                str(n),
                f"{n:,}",
                f"{n}/{d}",
                f"\\frac{{{n}}}{{{d}}}",
                f"\\dfrac{{{n}}}{{{d}}}",
                f"{n / d:.6f}",
                f"{n / d:.2f}",
                f"{n}, {d}",
            ]
        )
    )


@settings(max_examples=40, deadline=None)
@given(plain_numbers(), plain_numbers())
def test_fast_path_agrees_with_math_verify(answer: str, expected: str) -> None:
    """Whatever the fast path decides, math-verify must decide the same; it only saves the sympy call."""
    fast = grading._fast_math(answer, expected)
    if fast is not None:
        assert fast.correct == grading._verify_math(answer, expected, 5.0).correct, (answer, expected)


def test_multiple_choice_grading() -> None:
    assert grade_multiple_choice("(B)", "B").correct
    assert grade_multiple_choice(r"\text{B}", "B").correct
    assert grade_multiple_choice("the answer is C", "C").correct
    assert not grade_multiple_choice("A", "B").correct
    assert grade_multiple_choice(None, "B") == Verdict(False, None, "no_answer")


def test_verify_exception_is_not_correct_with_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import math_verify

    def boom(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(math_verify, "verify", boom)
    assert grade_math("x^2", "x^{2}+0") == Verdict(False, "x^2", "math_verify", "verify_error")


def test_parse_exception_is_not_correct_with_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import math_verify

    def boom(*args: object, **kwargs: object) -> list:
        raise ValueError("unparseable")

    monkeypatch.setattr(math_verify, "parse", boom)
    monkeypatch.setattr(grading, "_PARSE_CACHE", {})
    assert grade_math("x^3", "y") == Verdict(False, "x^3", "math_verify", "parse_error")


def test_in_process_timeout_uses_math_verify_alarm(monkeypatch: pytest.MonkeyPatch) -> None:
    import math_verify.grader

    def slow_compare(*args: object, **kwargs: object) -> bool:
        time.sleep(30)
        return True

    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", slow_compare)
    start = time.monotonic()
    verdict = grade_math("x+1", "1+x+0*y", timeout_s=1.0)
    assert verdict == Verdict(False, "x+1", "math_verify", "timeout")
    assert time.monotonic() - start < 5


# ------------------------------------------------------------------------------------------------ grade_many


def test_fast_path_items_never_reach_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pool(*args: object, **kwargs: object) -> list[Verdict]:
        raise AssertionError("a fast-path item was sent to a worker")

    monkeypatch.setattr(grading, "_run_pool", no_pool)
    items = [("1,000", "1000"), (None, "3"), ("3", "4"), ("0.5", "1/2"), (r"\dfrac{1}{2}", r"\frac{1}{2}")]
    assert [v.correct for v in grade_many(items, workers=4)] == [True, False, False, True, True]
    assert [v.correct for v in grade_many([("B", "B"), ("C", "B")], grader="multiple_choice")] == [True, False]
    # The registry's import path names the same function, so it keeps the fast path.
    assert grade_many([("1,000", "1000")], grader="framework.grading:grade_math") == [Verdict(True, "1,000", "exact")]


def test_identical_items_are_graded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list] = []
    real = grading._run_pool

    def counting(jobs: list, *args: object) -> list[Verdict]:
        calls.append(list(jobs))
        return real(jobs, *args)

    monkeypatch.setattr(grading, "_run_pool", counting)
    verdicts = grade_many([("5 cm", "5")] * 10 + [("x=2", "2")], workers=1)
    assert len(calls) == 1 and len(calls[0]) == 2
    assert all(v.correct for v in verdicts)


def test_in_process_grading_matches_pool() -> None:
    items = [(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), ("[0,1)", "(0,1]"), ("3", "3")]
    assert grade_many(items, workers=0) == grade_many(items, workers=2)


def test_hanging_item_times_out_and_the_rest_finish() -> None:
    items = [("a", "a"), ("hang", "x"), *[(str(i), str(i % 3)) for i in range(20)], ("hang", "y"), ("z", "z")]
    start = time.monotonic()
    verdicts = grade_many(items, grader=f"{HERE}:sleepy", timeout_s=1.0, workers=2)
    elapsed = time.monotonic() - start
    assert [v.error for v in verdicts if v.answer == "hang"] == ["timeout", "timeout"]
    assert not any(v.correct for v in verdicts if v.answer == "hang")
    rest = [(item, v) for item, v in zip(items, verdicts) if item[0] != "hang"]
    assert all(v.error is None and v.correct == (item[0] == item[1]) for item, v in rest)
    assert elapsed < 20, elapsed


def test_crashed_worker_blames_one_item_and_bool_results_are_wrapped() -> None:
    items = [("a", "a"), ("crash", "x"), ("b", "c"), ("d", "d")]
    verdicts = grade_many(items, grader=f"{HERE}:crashy", workers=1)
    assert [v.correct for v in verdicts] == [True, False, False, True]
    assert [v.error for v in verdicts] == [None, "worker_crashed", None, None]
    assert verdicts[0] == Verdict(True, "a", "grader")
    assert verdicts[1] == Verdict(False, "crash", "worker", "worker_crashed")


def test_bad_grader_name_fails_before_any_work() -> None:
    from framework.registry import ResolveError

    with pytest.raises(ResolveError):
        grade_many([("1", "1")], grader="no.such.module:grader")
    with pytest.raises(ValueError):
        grade_many([("1", "1")], timeout_s=0)


def test_empty_batch() -> None:
    assert grade_many([]) == []


def test_answer_text_reads_every_missing_value_as_missing_and_integers_without_a_point():
    import numpy as np
    import pandas as pd

    from framework.grading import answer_text

    for missing in (None, float("nan"), np.nan, pd.NA, pd.NaT, "", "  "):
        assert answer_text(missing) is None, missing
    for value, text in ((204.0, "204"), (np.float32(204.0), "204"), (np.int64(3), "3"), (1.5, "1.5"), ("x", "x")):
        assert answer_text(value) == text
