"""Pull the final answer out of a model's response (math or multiple choice), saying which rule found it.

The method string ("boxed", "final_answer_phrase", "last_number", "last_letter" or "none") is kept with every sample, so a
report can tell "no answer" from "wrong answer" and a researcher can see how much the fallbacks decide.
"""

from __future__ import annotations

import functools
import re

# How far back from the end the last-number fallback looks: a final sentence, not the whole derivation.
LAST_NUMBER_WINDOW = 300

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_SPACE_RE = re.compile(r"\s*")
_BOX_TOKEN_RE = re.compile(r"\\[A-Za-z]+|[^\s$\\{}]+")
_PHRASE_RE = re.compile(
    r"(?i)\b(?:final\s++answer|answer)\b(?:[ \t]*+\*\*)?[ \t]*+(?:\bis\b|:|=)(?:[ \t]*+\*\*)?[ \t]*+:?[ \t]*+([^\n]*)"
)
_HEADING_RE = re.compile(r"(?im)^[ \t#*]*final[ \t]+answer[ \t*:]*$")
_PROSE_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")
_TRAILING_CLAUSE_RE = re.compile(r",\s|;\s|\s\(|\s(?i:because|since|which|as|so|and|for|where|when|given|i\.e)\b")
_LEADING_NUMBER_RE = re.compile(r"(-?\d+(?:\.\d+)?(?:/\d+)?)\s+[A-Za-z]")
_NUMBER_RE = re.compile(r"(?:(?<![\w)}\]])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?")
_MATH_OPENERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


def _closing_braces(text: str, start: int) -> dict[int, int]:
    """Position of each `{` from `start` on -> position of its `}`, in one pass (escapes such as \\{ skipped).

    One pass keeps extraction linear even for degenerate outputs with thousands of unclosed boxes.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN_RE.finditer(text, start):
        if m.group() == "{":
            stack.append(m.start())
        elif m.group() == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _last_box(text: str) -> tuple[str | None, bool]:
    """(content of the last non-empty box, whether the last box is unclosed).

    Boxes are tried from the last one backwards, so an unclosed early box cannot swallow later ones; empty boxes
    ("put your answer in \\boxed{}" echoed from the prompt) are skipped.
    """
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    pairs: dict[int, int] | None = None
    for rank, pos in enumerate(reversed(starts)):
        space = _SPACE_RE.match(text, pos)
        i = space.end() if space else pos
        if i >= len(text):
            if rank == 0:
                return None, True
            continue
        if text[i] == "{":
            pairs = _closing_braces(text, starts[0]) if pairs is None else pairs
            end = pairs.get(i)
            if end is None:
                if rank == 0:
                    return None, True
                continue
            content = text[i + 1 : end].strip()
        else:  # "\boxed 5": TeX takes the next token as the argument
            m = _BOX_TOKEN_RE.match(text, i)
            content = m.group(0).rstrip(".,;:") if m else ""
        if content:
            return content, False
    return None, False


def _strip_math_delimiters(candidate: str) -> str:
    """Content of a leading $...$, \\(...\\), \\[...\\] or $$...$$, or the candidate itself."""
    for opener, closer in _MATH_OPENERS:
        if candidate.startswith(opener):
            end = candidate.find(closer, len(opener))
            return candidate[len(opener) : end] if end >= 0 else candidate[len(opener) :]
    return candidate


def _clean_phrase_answer(candidate: str) -> str | None:
    """The answer part of "answer is X ..." text, or None when X does not look like an answer (e.g. prose)."""
    candidate = candidate.strip().strip("*").strip()
    if candidate[:1] in "$\\":
        candidate = _strip_math_delimiters(candidate)
    else:
        candidate = re.split(r"\.\s|\.$", candidate, maxsplit=1)[0]
    candidate = candidate.strip().strip("*").rstrip(".").strip()
    if not candidate or len(candidate) > 100:
        return None
    if _PROSE_RE.search(unwrap_text(candidate)):  # "the answer is not obvious", "answer is that ..."
        # "5, which is 2 more than 3", "42 because ...", "204 apples in total": the answer leads, words follow
        head = _TRAILING_CLAUSE_RE.split(candidate, maxsplit=1)[0].strip()
        if head and not _PROSE_RE.search(unwrap_text(head)):
            return head
        lead = _LEADING_NUMBER_RE.match(candidate)
        return lead.group(1) if lead else None
    return candidate


def extract_answer(text: str, *, fallbacks: bool = True) -> tuple[str | None, str]:
    """The final answer of a response and the rule that found it ("boxed", "final_answer_phrase", "last_number",
    "none").

    The last complete `\\boxed{...}` (or `\\fbox`, `\\boxed 5`, spaced `\\boxed { 7 }`) wins, since models revise.
    A response that ends inside an unclosed box was cut off while writing its answer: it gets no answer at all,
    because anything earlier (a previous box, the partial box's digits) is what the model was about to replace.
    Without a box, and when `fallbacks` allows, the last "final answer is X" / "answer: X" phrase, then the last
    number near the end, are used; the method string keeps those weaker extractions visible in reports.
    """
    boxed, truncated = _last_box(text)
    if truncated:
        return None, "none"
    if boxed is not None:
        return boxed, "boxed"
    if not fallbacks:
        return None, "none"
    phrases = [(m.start(), m.group(1), m.end()) for m in _PHRASE_RE.finditer(text)]
    phrases += [(m.start(), "", m.end()) for m in _HEADING_RE.finditer(text)]
    for _, rest, end in sorted(phrases, reverse=True):
        if not rest.strip():  # "Final Answer:" heading with the answer on the next non-empty line
            rest = text[end:].lstrip().split("\n", 1)[0]
        answer = _clean_phrase_answer(rest)
        if answer is not None:
            return answer, "final_answer_phrase"
    numbers = list(_NUMBER_RE.finditer(text[-LAST_NUMBER_WINDOW:]))
    if numbers:
        number = numbers[-1].group(0)
        if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", number):
            number = number.replace(",", "")
        return number, "last_number"
    return None, "none"


@functools.lru_cache(maxsize=16)
def _choice_patterns(choices: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    cls = "[" + "".join(re.escape(c) for c in choices) + "]"
    phrase = re.compile(
        r"(?i:\b(?:(final\s++answer|answer)|option|choice)\b)(?:\s*+\*\*)?\s*+(?i:is|:)?\s*+(?:\*\*)?\s*+"
        rf"[\(\[]?\s*+(?:\\text\{{)?({cls})\}}?(?:\s*[\)\]])?(?![A-Za-z0-9])"
    )
    letter = re.compile(rf"(?<![A-Za-z0-9\\])({cls})(?![A-Za-z0-9])")
    box = re.compile(rf"^[\(\[]?({cls})(?:[\)\]]|[.:]|\s|$)", re.IGNORECASE)
    return phrase, letter, box


def unwrap_text(s: str) -> str:
    """Replace \\text{X} (and \\textbf, \\mathrm, \\mbox) by X, innermost first."""
    previous = None
    while previous != s:
        previous = s
        s = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", s)
    return s


def extract_choice(text: str, choices: str = "ABCD", *, fallbacks: bool = True) -> tuple[str | None, str]:
    """The chosen option letter and the rule that found it ("boxed", "final_answer_phrase", "last_letter", "none").

    Order: the last box (`\\boxed{B}`, `\\boxed{\\text{(B)}}`, `\\boxed{B. 42}`), then (when `fallbacks` allows)
    the last "answer is (B)" / "Answer: B" phrase, else the last "option C" / "choice C" (a model weighing option D
    after answering C has not changed its answer), then the last standalone option letter on the final non-empty
    line. A capital "A" followed by a lowercase word is read as the article, not an option.
    """
    phrase, letter, box = _choice_patterns(choices)
    boxed, truncated = _last_box(text)
    if truncated:
        return None, "none"
    if boxed is not None:
        m = box.match(unwrap_text(boxed).strip())
        if m and m.group(1).upper() in choices:
            return m.group(1).upper(), "boxed"
    if not fallbacks:
        return None, "none"
    hits = list(phrase.finditer(text))
    if hits:
        answers = [h for h in hits if h.group(1)] or hits
        return answers[-1].group(2), "final_answer_phrase"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        final = lines[-1]
        for m in reversed(list(letter.finditer(final))):
            if m.group(1) == "A" and re.match(r"\s+[a-z]", final[m.end() :]):
                continue
            return m.group(1), "last_letter"
    return None, "none"
