"""Toy traces: each style's answer, the single wrong step, reflection where intended, one uniform step shape."""

from __future__ import annotations

import random
import re

import pytest

from framework.annotations import find_keywords
from framework.spec.pool import DEFAULT_REFLECTION_KEYWORDS
from framework.toy import REFLECTION, STYLES, all_problems, make_world, render_trace
from framework.toy.traces import REFLECTION_CHECKS, REFLECTION_OPENERS

STEP = re.compile(r"step (\d) of (\d) : (\w) \( ([xy]) \) = \3 \( (\d+) \) = (\d+) \. ")
RESTATED = re.compile(r"(?:^|\. )(\w) \( (\d+) \) = (\d+) \.")


@pytest.fixture(scope="module")
def world():
    return make_world(0)


@pytest.fixture(scope="module")
def problems(world):
    return all_problems(world)


def _steps(trace: str) -> list[tuple[int, int]]:
    """(input, output) of every numbered step, in order."""
    return [(int(m[5]), int(m[6])) for m in STEP.finditer(trace)]


def test_traces_are_deterministic(world, problems):
    for style in STYLES:
        assert render_trace(world, problems[7], style) == render_trace(world, problems[7], style)
        assert render_trace(world, problems[7], style, rng=random.Random(3)) == render_trace(
            world, problems[7], style, rng=random.Random(3)
        )


def test_unknown_style_is_refused(world, problems):
    with pytest.raises(ValueError, match="style"):
        render_trace(world, problems[0], "sketch")


def test_the_paper_example_shapes(world):
    p = next(p for p in all_problems(world) if p.problem_id == "f-x9-k3")
    a, b, c = world.f[9], world.f[world.f[9]], p.answer
    assert render_trace(world, p, "terse")[0] == f"9 -> {a} -> {b} -> {c} . \\boxed {{ {c} }}"
    assert render_trace(world, p, "direct")[0] == f"\\boxed {{ {c} }}"
    expected = (
        f"We apply f one step at a time , 3 steps in total . step 1 of 3 : f ( x ) = f ( 9 ) = {a} . let y = {a} . "
        f"that was step 1 of 3 , so we go on . step 2 of 3 : f ( y ) = f ( {a} ) = {b} . let y = {b} . "
        f"that was step 2 of 3 , so we go on . step 3 of 3 : f ( y ) = f ( {b} ) = {c} . let y = {c} . "
        f"that was step 3 of 3 , so we stop . check : y is {c} . the answer is \\boxed {{ {c} }}"
    )
    assert render_trace(world, p, "long_cot", reflect=False)[0] == expected


def test_correct_styles_compute_every_step_right(world, problems):
    for p in problems:
        for style in ("long_cot", "terse", "direct"):
            _, answer = render_trace(world, p, style)
            assert answer == p.answer, (p, style)
        steps = _steps(render_trace(world, p, "long_cot")[0])
        assert steps[0][0] == p.x and len(steps) == p.k
        assert all(world.apply(p.fn, a) == b for a, b in steps)
        assert all(steps[i][1] == steps[i + 1][0] for i in range(p.k - 1))


@pytest.mark.parametrize("seed", range(4))
def test_wrong_traces_have_exactly_one_wrong_step_carried_to_the_end(world, problems, seed):
    rng = random.Random(seed)
    wrong_positions = set()
    for p in problems:
        trace, answer = render_trace(world, p, "long_cot_wrong", rng=rng)
        steps = _steps(trace)
        wrong = [i for i, (a, b) in enumerate(steps) if world.apply(p.fn, a) != b]
        assert len(wrong) == 1, trace
        wrong_positions.add((p.k, wrong[0]))
        assert all(steps[i][1] == steps[i + 1][0] for i in range(p.k - 1)), trace
        assert answer == steps[-1][1] != p.answer
        assert trace.endswith(f"check : y is {answer} . the answer is \\boxed {{ {answer} }}")
        restated = {(a, b) for fn, a, b in ((m[1], int(m[2]), int(m[3])) for m in RESTATED.finditer(trace))}
        assert restated <= set(steps), "a reflection re-states a step, never a new fact"
    assert {i for k, i in wrong_positions if k == 5} == set(range(5)), "any step can be the wrong one"


def test_reflection_appears_only_in_long_cot_and_only_when_asked(world, problems):
    for p in problems[::7]:
        for style in STYLES:
            with_words = find_keywords(render_trace(world, p, style)[0], DEFAULT_REFLECTION_KEYWORDS)
            without = find_keywords(render_trace(world, p, style, reflect=False)[0], DEFAULT_REFLECTION_KEYWORDS)
            assert not without
            assert bool(with_words) == style.startswith("long_cot"), (p, style)
            assert {w for _, _, w in with_words} <= set(REFLECTION)


def test_reflect_false_is_the_same_trace_minus_the_reflection_sentence(world, problems):
    sentence = re.compile(
        rf"(?:{'|'.join(REFLECTION_OPENERS)}) (?:{'|'.join(REFLECTION_CHECKS)}) \w \( \d+ \) = \d+ \. "
    )
    for p in problems[::5]:
        for style in ("long_cot", "long_cot_wrong"):
            on = render_trace(world, p, style, rng=random.Random(p.x))
            off = render_trace(world, p, style, rng=random.Random(p.x), reflect=False)
            assert len(sentence.findall(on[0])) == 1
            assert sentence.sub("", on[0]) == off[0] and on[1] == off[1]


def test_deleting_the_keywords_leaves_a_clean_restatement(world, problems):
    """Cutting each phrase and one space (the keywords factor's delete) leaves the step stated twice, nothing else."""
    for p in problems[::11]:
        trace = render_trace(world, p, "long_cot")[0]
        masked = trace
        for start, end, _ in sorted(find_keywords(trace, REFLECTION), reverse=True):
            masked = masked[:start] + masked[end + 1 :]
        assert not find_keywords(masked, REFLECTION)
        once = re.sub(r"(\w \( \d+ \) = \d+ \. )\1", r"\1", masked)
        assert once != masked and once == render_trace(world, p, "long_cot", reflect=False)[0]


def test_every_long_cot_step_has_one_shape(world, problems):
    for p in problems[::3]:
        trace = render_trace(world, p, "long_cot", reflect=False)[0]
        body = trace.split(" . ", 1)[1].split(" check : ")[0]
        shapes = re.sub(r"\d+", "N", body).replace("( x )", "( V )").replace("( y )", "( V )")
        pieces = [s.strip() for s in re.split(r"(?<!was )step ", shapes) if s]
        assert len(pieces) == p.k and len(set(pieces[:-1])) <= 1, pieces
        assert pieces[-1] == pieces[0].replace("go on", "stop"), pieces
