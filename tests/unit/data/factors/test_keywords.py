"""keywords factor: matching rules, and delete/replace/inject rewriting nothing but the phrases they target."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.annotations import count_keywords, find_keywords
from framework.data.factors.base import FactorContext
from framework.data.factors.keywords import Params, apply
from framework.spec.pool import DEFAULT_REFLECTION_KEYWORDS

KW = list(DEFAULT_REFLECTION_KEYWORDS)


def _ctx(count_tokens=None) -> FactorContext:
    return FactorContext(rng=np.random.default_rng(0), n_examples=2, reflection_keywords=KW, count_tokens=count_tokens)


def _frame(traces: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(len(traces))],
            "trace": traces,
            "n_tokens": [1000 + i for i in range(len(traces))],
            "reflection_count": [count_keywords(t, KW) for t in traces],
            "extra": ["x"] * len(traces),
        },
        index=[5 + i for i in range(len(traces))],
    )


def _words(text: str, words: list[str] = KW) -> list[tuple[str, str]]:
    return [(text[s:e], w) for s, e, w in find_keywords(text, words)]


def test_longest_phrase_first_case_insensitive() -> None:
    text = "But wait, WAIT! Hmm... alternatively: let me verify, Let Me  Check."
    assert _words(text) == [
        ("But wait", "but wait"),
        ("WAIT", "wait"),
        ("Hmm", "hmm"),
        ("alternatively", "alternatively"),
        ("let me verify", "let me verify"),
        ("Let Me  Check", "let me check"),
    ]
    assert count_keywords(text, KW) == 6


def test_longer_phrase_wins_over_its_prefix() -> None:
    words = ["let me", "wait", "let me check", "wait a moment"]
    text = "Let me check. Wait a moment, let me see; wait."
    assert _words(text, words) == [
        ("Let me check", "let me check"),
        ("Wait a moment", "wait a moment"),
        ("let me", "let me"),
        ("wait", "wait"),
    ]


def test_word_boundaries() -> None:
    text = "waiting awaited wait_list hmmm double-checked double-check await. wait"
    assert _words(text) == [("double-check", "double-check"), ("wait", "wait")]
    assert find_keywords("", KW) == []
    assert find_keywords("wait", []) == []


def test_spans_are_non_overlapping_and_first_spelling_wins() -> None:
    assert _words("but wait wait", ["Wait", "wait", "but wait"]) == [("but wait", "but wait"), ("wait", "Wait")]


def _reconstruct_deleted(text: str) -> str:
    """Independent model of delete: keep the text between matches, minus the punctuation run and one space."""
    kept, cursor = [], 0
    for start, end, _ in find_keywords(text, KW):
        kept.append(text[cursor:start])
        cursor = end + len(re.match(r"[,.;:!?]* ?", text[end:]).group(0))
    return "".join([*kept, text[cursor:]])


DELETE_CASES = [
    (
        "So x = 4. Wait, that is wrong. But wait... let me check: 2+2 = 4. Hmm. Done",
        "So x = 4. that is wrong. 2+2 = 4. Done",
    ),
    ("x = 3, wait,  no\n\nWait\nthen", "x = 3,  no\n\n\nthen"),
    ("Waiting is fine; the answer is 7 wait", "Waiting is fine; the answer is 7 "),
    ("no keywords here.", "no keywords here."),
    ("  hmm?!  ok\tdouble-check\t", "   ok\t\t"),
]


@pytest.mark.parametrize(("text", "expected"), DELETE_CASES)
def test_delete_removes_phrase_punctuation_and_one_space_only(text: str, expected: str) -> None:
    out = apply(_frame([text]), "delete", Params(), _ctx())
    assert out["trace"].iloc[0] == expected
    assert expected == _reconstruct_deleted(text)
    assert count_keywords(expected, KW) == 0


def test_mask_level_deletes_and_report_counts() -> None:
    traces = [case[0] for case in DELETE_CASES]
    ctx = _ctx()
    out = apply(_frame(traces), "mask", Params(), ctx)
    assert out["trace"].tolist() == [case[1] for case in DELETE_CASES]
    assert ctx.report["mode"] == "delete"
    assert ctx.report["traces_changed"] == 4
    assert ctx.report["matches"] == {
        "alternatively": 0,
        "but wait": 1,
        "double-check": 1,
        "hmm": 2,
        "let me check": 1,
        "let me verify": 0,
        "wait": 4,
    }
    assert ctx.report["removed"] == 9
    assert ctx.report["inserted"] == 0
    assert out["reflection_count"].tolist() == [0, 0, 0, 0, 0]
    assert out["n_tokens"].tolist() == [1000, 1001, 1002, 1003, 1004]  # no counter given: left as is
    assert out.index.tolist() == [5, 6, 7, 8, 9]
    assert out["extra"].tolist() == ["x"] * 5


def test_replace_keeps_punctuation_and_leading_capital() -> None:
    text = "Wait, no. but wait, hmm... WAIT 3 is waiting"
    ctx = _ctx()
    out = apply(_frame([text]), "replace", Params(), ctx)
    assert out["trace"].iloc[0] == "So, no. so, so... So 3 is waiting"
    assert ctx.report["removed"] == ctx.report["inserted"] == 4
    custom = apply(_frame([text]), "neutral", Params(mode="replace", replacement="then"), _ctx())
    assert custom["trace"].iloc[0] == "Then, no. then, then... Then 3 is waiting"


def test_custom_words_act_alone_but_reflection_count_uses_annotation_keywords() -> None:
    out = apply(_frame(["Hmm, wait. Hmm"]), "delete", Params(words=["hmm"]), _ctx())
    assert out["trace"].iloc[0] == "wait. "
    assert out["reflection_count"].iloc[0] == 1


def test_inject_positions() -> None:
    text = "A one. B two! C three? D four. E 3.14 five. F six. G seven."
    out = apply(_frame([text]), "inject", Params(), _ctx())
    expected = "A one. B two! C three? Wait, let me check. D four. E 3.14 five. F six. Wait, let me check. G seven."
    assert out["trace"].iloc[0] == expected
    every_two = apply(_frame([text]), "inject", Params(inject_every=2, inject_phrase="Check."), _ctx())
    assert every_two["trace"].iloc[0] == (
        "A one. B two! Check. C three? D four. Check. E 3.14 five. F six. Check. G seven."
    )


def test_inject_never_at_the_end_and_skips_reflective_traces() -> None:
    six = "A. B. C.\nD. E. F.  \n"
    reflective = "A. B. C. Wait. D."
    ctx = _ctx(count_tokens=lambda texts: [len(t.split()) for t in texts])
    out = apply(_frame([six, reflective, "no sentence end"]), "inject", Params(), ctx)
    assert out["trace"].tolist() == ["A. B. C.\nWait, let me check. D. E. F.  \n", reflective, "no sentence end"]
    assert out["reflection_count"].tolist() == [2, 1, 0]
    assert out["n_tokens"].tolist() == [10, 1001, 1002]  # only the changed trace is recounted
    assert ctx.report["traces_changed"] == 1
    assert ctx.report["inserted"] == 1
    assert ctx.report["matches"]["wait"] == 1


def test_keep_changes_nothing() -> None:
    frame = _frame([case[0] for case in DELETE_CASES])
    ctx = _ctx(count_tokens=lambda texts: pytest.fail("nothing changed, nothing to count"))
    out = apply(frame, "keep", Params(), ctx)
    assert out.equals(frame)
    assert ctx.report["traces_changed"] == 0
    assert ctx.report["matches"]["wait"] == 4


def test_recount_tokens_only_for_changed_traces() -> None:
    seen: list[list[str]] = []

    def count(texts: list[str]) -> list[int]:
        seen.append(texts)
        return [len(t) for t in texts]

    out = apply(_frame(["plain.", "Hmm, fine."]), "delete", Params(), _ctx(count_tokens=count))
    assert seen == [["fine."]]
    assert out["n_tokens"].tolist() == [1000, 5]
    assert apply(_frame(["x"]), "keep", Params(), _ctx())["n_tokens"].tolist() == [1000]


def test_unknown_level_without_mode_fails() -> None:
    with pytest.raises(ValueError, match="keywords level 'strip'"):
        apply(_frame(["wait"]), "strip", Params(), _ctx())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "wait",
                "Wait,",
                "but wait",
                "waiting",
                "hmm",
                "let me  check",
                "double-check",
                "x",
                ".",
                "alternatively",
                "BUT\nWAIT",
                "let me verify",
            ]
        ),
        max_size=30,
    )
)
def test_count_agrees_with_find(parts):
    text = " ".join(parts)
    for words in (DEFAULT_REFLECTION_KEYWORDS, ["wait", "?!", "but wait"]):
        assert count_keywords(text, words) == len(find_keywords(text, words))


def test_inject_leaves_math_and_factorials_alone() -> None:
    text = r"First step. Hence $n! \geq 2$ holds. So \boxed{5! \cdot 2} it is. There are 5! ways. Done."
    out = apply(_frame([text]), "inject", Params(), _ctx())["trace"].iloc[0]
    assert r"$n! \geq 2$" in out and r"\boxed{5! \cdot 2}" in out and "5! ways" in out
    assert out.count("Wait, let me check.") == 1 and "it is. Wait, let me check. There" in out  # the 3rd end
