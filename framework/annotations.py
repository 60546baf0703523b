"""What the pool annotates and the other stages read back, defined once: a problem's identity (its normalized
text), how a difficulty label compares ("Level 5", "5" and 5.0 alike), and where reflection phrases ("wait",
"let me check") occur in a text. The pool stage annotates with these rules, the data factors select and rewrite
by them, and evaluation counts keywords in generations and spots training problems in a benchmark by them:
one rule each, so a count in the pool and a count in an evaluation mean the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import pandas as pd


def normalize_problem(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


LEVEL_TEXT = re.compile(r"level\s*[-_:]?\s*(.*)", re.IGNORECASE | re.DOTALL)
# Written where a label is unknown ("n/a", "?", MATH's "Level ?"): missing, like an empty cell.
MISSING_LABELS = frozenset({"", "?", "??", "-", "n/a", "na", "none", "null", "nan"})


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def label_key(value: Any) -> float | str | None:
    """Comparable form of a label: numbers, numeric text and "Level N" (MATH's labels, any case) as floats, so 5,
    5.0, "5" and "Level 5" match and order; a missing marker (MISSING_LABELS, "Level ?") as None; any other text
    as itself, a category."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if not isinstance(value, str):
        number = _number(value)
        return number if number is not None else str(value).strip()
    text = value.strip()
    level = LEVEL_TEXT.fullmatch(text)
    rest = level.group(1).strip() if level else text
    if rest.lower() in MISSING_LABELS:
        return None
    number = _number(rest)
    return number if number is not None else text


@lru_cache(maxsize=64)
def _pattern(words: tuple[str, ...]) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    """One alternation, longest phrase first: re takes the first alternative that matches at a position, so
    "but wait" wins over "wait". Word-character edges get boundary guards ("waiting" is not "wait"); spaces
    inside a phrase match any whitespace run."""
    unique: dict[str, str] = {}
    for word in words:
        if word.strip():
            unique.setdefault(word.strip().lower(), word.strip())
    ordered = tuple(sorted(unique.values(), key=lambda w: (-len(w), w.lower())))
    if not ordered:
        return None, ()
    parts = []
    for i, word in enumerate(ordered):
        body = r"\s+".join(re.escape(piece) for piece in word.split())
        head = r"(?<!\w)" if re.match(r"\w", word) else ""
        tail = r"(?!\w)" if re.search(r"\w$", word) else ""
        parts.append(f"(?P<k{i}>{head}{body}{tail})")
    return re.compile("|".join(parts), re.IGNORECASE), ordered


def keyword_phrases(words: Sequence[str]) -> tuple[str, ...]:
    """The distinct phrases of `words` as matching sees them: first spelling of each, longest first."""
    return _pattern(tuple(words))[1]


def find_keywords(text: str, words: Sequence[str]) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, word) spans of `words` in `text`: case-insensitive, on word boundaries,
    longest phrase first. `word` is the phrase as given in `words` (first spelling wins for duplicates)."""
    pattern, ordered = _pattern(tuple(words))
    if pattern is None or not text:
        return []
    return [(m.start(), m.end(), ordered[int(str(m.lastgroup)[1:])]) for m in pattern.finditer(text)]


@lru_cache(maxsize=64)
def _count_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """The same alternation without named groups: counting a 100k-trace pool is 3-4x faster without them."""
    pattern, ordered = _pattern(words)
    if pattern is None:
        return None
    if all(re.match(r"\w", w) and re.search(r"\w$", w) for w in ordered):  # guards shared: factor them out
        bodies = "|".join(r"\s+".join(re.escape(p) for p in w.split()) for w in ordered)
        return re.compile(rf"(?<!\w)(?:{bodies})(?!\w)", re.IGNORECASE)
    return re.compile(re.sub(r"\(\?P<k\d+>", "(?:", pattern.pattern), re.IGNORECASE)


def count_keywords(text: str, words: Sequence[str]) -> int:
    """How many reflection phrases a text contains, by the same rules as `find_keywords`."""
    pattern = _count_pattern(tuple(words))
    return 0 if pattern is None or not text else len(pattern.findall(text))
