"""Solution traces for toy problems, in the styles the paper contrasts.

Every long chain-of-thought step has one shape, `step i of k : f ( v ) = f ( a ) = b . let y = b . that was step i
of k , so we go on .` (`so we stop .` after the last), so that each copy the trace needs (the start value into step
1, a result into `let y`, `y` into the next step, the last `y` into `check` and `\\boxed`) is a copy the pretraining
corpus has already practised in its binding documents, and the decision to stop sits right after the two counts it
compares instead of a whole step later (tiny models fine-tuned on the later form ran one step too many or too few).
Reflection sentences re-state one step with its keywords in front and no punctuation in between, so that masking
the keywords leaves a clean re-statement behind rather than stray commas.
"""

from __future__ import annotations

import random

from framework.toy.core import Problem, World

STYLES = ("long_cot", "long_cot_wrong", "terse", "direct")
REFLECTION_OPENERS = ("wait", "but wait", "hmm")
REFLECTION_CHECKS = ("let me check", "let me verify")
REFLECTION = (*REFLECTION_OPENERS, *REFLECTION_CHECKS)


def boxed(value: int | str) -> str:
    """The answer as the word-level world writes it; `\\boxed { 7 }` extracts to "7"."""
    return f"\\boxed {{ {value} }}"


def fact(fn: str, a: int, b: int) -> str:
    return f"{fn} ( {a} ) = {b} ."


def reflection(fn: str, a: int, b: int, rng: random.Random) -> str:
    """A re-verification of one step, e.g. `but wait let me verify f ( 2 ) = 48 .`"""
    return f"{rng.choice(REFLECTION_OPENERS)} {rng.choice(REFLECTION_CHECKS)} {fact(fn, a, b)}"


def _long_cot(world: World, p: Problem, rng: random.Random, *, wrong: bool, reflect: bool) -> tuple[str, int]:
    # Draw everything up front, in a fixed order, so reflect=False yields the same trace minus the reflection.
    wrong_at = rng.randrange(p.k) if wrong else -1
    reflect_at = rng.randrange(p.k)
    note_rng = random.Random(rng.random())
    parts = [f"We apply {p.fn} one step at a time , {p.k} steps in total ."]
    value, var = p.x, "x"
    for i in range(p.k):
        out = world.apply(p.fn, value)
        if i == wrong_at:  # f is a bijection, so a wrong value here stays wrong through every later step
            out = rng.choice([v for v in range(world.n_values) if v != out])
        parts.append(f"step {i + 1} of {p.k} : {p.fn} ( {var} ) = {fact(p.fn, value, out)}")
        if reflect and i == reflect_at:
            parts.append(reflection(p.fn, value, out, note_rng))
        parts.append(f"let y = {out} . that was step {i + 1} of {p.k} , so we {'stop' if i + 1 == p.k else 'go on'} .")
        value, var = out, "y"
    parts.append(f"check : y is {value} . the answer is {boxed(value)}")
    return " ".join(parts), value


def render_trace(
    world: World, problem: Problem, style: str, *, rng: random.Random | None = None, reflect: bool = True
) -> tuple[str, int | str]:
    """(trace text, the trace's own final answer).

    long_cot_wrong gets exactly one step wrong (which step and which value come from `rng`) and carries the wrong
    value to the end, so its answer never equals `problem.answer`. Without `rng` the trace is a fixed function of
    the world, the problem and the style.
    """
    if style not in STYLES:
        raise ValueError(f"unknown trace style {style!r}; choose from {', '.join(STYLES)}")
    rng = rng or random.Random(f"toy-trace:{world.seed}:{problem.problem_id}:{style}")
    if style in ("long_cot", "long_cot_wrong"):
        return _long_cot(world, problem, rng, wrong=style == "long_cot_wrong", reflect=reflect)
    if style == "terse":
        values = [world.apply(problem.fn, problem.x, i) for i in range(problem.k + 1)]
        return f"{' -> '.join(map(str, values))} . {boxed(problem.answer)}", problem.answer
    return boxed(problem.answer), problem.answer
