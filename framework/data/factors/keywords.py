"""keywords: keep reflection phrases, mask them (delete or neutral replacement), or inject them."""

from __future__ import annotations

import re
from typing import Literal, get_args

import pandas as pd
from pydantic import Field

from framework.annotations import count_keywords, find_keywords, keyword_phrases
from framework.data.factors.base import Factor, FactorContext
from framework.spec.base import SpecModel

Mode = Literal["keep", "delete", "replace", "inject"]
TRAILING_PUNCTUATION = ",.;:!?"
# A sentence end is [.!?] plus whitespace with more text after it, so nothing is ever inserted at the very end.
# A sentence ends at . ! or ? before a capitalised word: "n! ways" and "5! \\cdot 2" are factorials, not ends.
SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z])")
MATH = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL)


class Params(SpecModel):
    mode: Mode | None = Field(
        None, description="keep, delete, replace or inject; default: the level's name ('mask' means delete)."
    )
    words: list[str] | None = Field(None, description="Phrases to act on; default: annotate.reflection_keywords.")
    replacement: str = Field("so", description="Neutral phrase that replaces each keyword when mode=replace.")
    inject_phrase: str = Field("Wait, let me check.", description="Phrase inserted when mode=inject.")
    inject_every: int = Field(3, ge=1, description="Insert the phrase after every this many sentences.")


def _delete(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Cut each phrase with the punctuation run right after it and at most one space; nothing else changes."""
    pieces, cursor = [], 0
    for start, end, _ in spans:
        while end < len(text) and text[end] in TRAILING_PUNCTUATION:
            end += 1
        if end < len(text) and text[end] == " ":
            end += 1
        pieces.append(text[cursor:start])
        cursor = end
    return "".join([*pieces, text[cursor:]])


def _replace(text: str, spans: list[tuple[int, int, str]], replacement: str) -> str:
    """Swap only the phrase (punctuation after it stays); a capitalised phrase gets a capitalised replacement."""
    pieces, cursor = [], 0
    for start, end, _ in spans:
        new = replacement
        if text[start].isupper() and new:
            new = new[0].upper() + new[1:]
        pieces += [text[cursor:start], new]
        cursor = end
    return "".join([*pieces, text[cursor:]])


def _math_spans(text: str) -> list[tuple[int, int]]:
    """Inline and display math, and each \\boxed{...} with its braces balanced: no phrase goes inside them."""
    spans = [m.span() for m in MATH.finditer(text)]
    for m in re.finditer(r"\\boxed\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        spans.append((m.start(), i))
    return spans


def _inject(text: str, phrase: str, every: int) -> tuple[str, int]:
    """Insert `phrase + " "` at the start of the sentence after every `every`-th sentence end outside math."""
    math = _math_spans(text)
    ends = [m.end() for m in SENTENCE_END.finditer(text) if not any(a <= m.start() < b for a, b in math)]
    points = ends[every - 1 :: every]
    pieces, cursor = [], 0
    for point in points:
        pieces += [text[cursor:point], phrase + " "]
        cursor = point
    return "".join([*pieces, text[cursor:]]), len(points)


def resolve_mode(level: str, params: Params) -> str:
    """The explicit mode, else the level's name ('mask' is an alias of delete)."""
    mode = params.mode or ("delete" if level == "mask" else level)
    if mode not in get_args(Mode):
        raise ValueError(
            f"keywords level {level!r} names no mode: call it keep, delete, mask, replace or inject, or set params.mode"
        )
    return mode


def apply(frame: pd.DataFrame, level: str, params: Params, ctx: FactorContext) -> pd.DataFrame:
    """Rewrite `trace`, then recount `reflection_count` (annotation keywords) and `n_tokens` of changed traces.

    inject acts on traces with no match of `words` (the annotation's count would disagree only when custom words
    are given); traces that already reflect are left alone so the arm adds reflection rather than doubling it.
    """
    mode = resolve_mode(level, params)
    words = list(params.words or ctx.reflection_keywords)
    texts = [str(t) for t in frame["trace"].tolist()]
    spans = [find_keywords(t, words) for t in texts]
    matches = dict.fromkeys(sorted(keyword_phrases(words), key=str.lower), 0)
    for found in spans:
        for _, _, word in found:
            matches[word] += 1
    removed = inserted = 0
    if mode == "delete":
        new = [_delete(t, s) for t, s in zip(texts, spans)]
        removed = sum(len(s) for s in spans)
    elif mode == "replace":
        new = [_replace(t, s, params.replacement) for t, s in zip(texts, spans)]
        removed = inserted = sum(len(s) for s in spans)
    elif mode == "inject":
        injected = [
            (t, 0) if s else _inject(t, params.inject_phrase, params.inject_every) for t, s in zip(texts, spans)
        ]
        new = [t for t, _ in injected]
        inserted = sum(k for _, k in injected)
    else:
        new = texts
    changed = [i for i, (old, text) in enumerate(zip(texts, new)) if old != text]
    out = frame.copy()
    if changed:
        texts_changed = [new[i] for i in changed]
        column = out.columns.get_loc
        out.iloc[changed, column("trace")] = texts_changed
        out.iloc[changed, column("reflection_count")] = [
            count_keywords(t, ctx.reflection_keywords) for t in texts_changed
        ]
        if ctx.count_tokens is not None:
            out.iloc[changed, column("n_tokens")] = [int(n) for n in ctx.count_tokens(texts_changed)]
    ctx.report.update(
        {
            "mode": mode,
            "traces_changed": len(changed),
            "matches": matches,
            "removed": removed,
            "inserted": inserted,
            "n_tokens_recounted": bool(changed) and ctx.count_tokens is not None,
        }
    )
    return out


FACTOR = Factor(
    "keywords",
    Params,
    apply,
    phase="transform",
    order=110,
    description=__doc__ or "",
    check=resolve_mode,
    version="2",  # 2: inject no longer writes inside math or \boxed{}, nor after a factorial
)
