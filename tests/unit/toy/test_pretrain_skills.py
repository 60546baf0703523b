"""The base model's skill check: probe targets are right, random weights fail, an oracle passes."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from framework.toy import make_world
from framework.toy.pretrain import PretrainSettings, init_model
from framework.toy.skills import copy_probes, recall_probes, score, skill_check
from framework.toy.tokenizer import build_tokenizer

LET = re.compile(r"let (\w) = (\d+) \.")
FACT = re.compile(r"(\w) \( (\d+) \) = (\d+) \.")
RECALL = [
    re.compile(r"^(\w) \( (\d+) \) =$"),
    re.compile(r"^(\w) of (\d+) is$"),
    re.compile(r"^(\w) maps (\d+) to$"),
    re.compile(r"^(\w) : (\d+) ->$"),
    re.compile(r"^the value of (\w) at (\d+) is$"),
]


@pytest.fixture(scope="module")
def world():
    return make_world(0)


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world)


def oracle(world, prompt: str) -> str:
    """The right next word, worked out from the prompt text alone (independently of how probes are built)."""
    for pattern in RECALL:
        if m := pattern.match(prompt):
            return str(world.apply(m[1], int(m[2])))
    if m := re.search(r"(\w) \( (\w) \) = \1 \($", prompt):  # a use of the latest binding
        return [v for var, v in LET.findall(prompt) if var == m[2]][-1]
    if prompt.endswith("let y ="):
        return FACT.findall(prompt)[-1][2]
    if m := re.search(r"check : (\w) is$", prompt):
        return [v for var, v in LET.findall(prompt) if var == m[1]][-1]
    if prompt.endswith("\\boxed {"):
        return re.findall(r"check : \w is (\d+) \.", prompt)[-1]
    if m := re.search(r"(\d+) of (\d+) , so we$", prompt):
        return "stop" if m[1] == m[2] else "go"
    raise AssertionError(f"unrecognized probe {prompt!r}")


def test_probe_targets_agree_with_an_independent_oracle(world):
    probes = recall_probes(world) + copy_probes(world)
    assert [oracle(world, p.prompt) for p in probes] == [p.target for p in probes]
    counts = Counter(p.skill for p in probes)
    assert counts["recall"] == 2 * world.n_values * 5
    assert counts["copy"] == 6 * 200
    assert len({p.family for p in probes if p.skill == "copy"}) == 6
    stops = Counter(p.target for p in probes if p.family == "copy_count")
    assert stops["stop"] > 50 and stops["go"] > 50


def test_copy_probes_are_fresh_per_seed_and_carry_distractors(world):
    assert copy_probes(world, seed=0) == copy_probes(world, seed=0)
    assert copy_probes(world, seed=0) != copy_probes(world, seed=1)
    rebind = [p for p in copy_probes(world) if p.family == "copy_rebind"]
    assert all(len(LET.findall(p.prompt)) == 2 for p in rebind)  # the older binding is the distractor


def test_oracle_passes_and_constant_answer_fails(world, tokenizer):
    def perfect(model, tok, prompts):
        return [oracle(world, p) for p in prompts]

    def always_dot(model, tok, prompts):
        return ["."] * len(prompts)

    result = skill_check(None, tokenizer, world, predict=perfect)
    assert (result["recall"], result["copy"], result["passed"]) == (1.0, 1.0, True)
    result = skill_check(None, tokenizer, world, predict=always_dot)
    assert (result["recall"], result["copy"], result["passed"]) == (0.0, 0.0, False)


def test_random_weights_score_near_zero(world, tokenizer):
    model = init_model(PretrainSettings(num_layers=1), tokenizer).eval()
    result = skill_check(model, tokenizer, world)
    assert result["recall"] < 0.1 and result["copy"] < 0.1
    assert not result["passed"]
    assert set(result["families"]) >= {"copy_bind", "copy_rebind", "copy_result", "copy_check", "copy_boxed"}


def test_pass_needs_both_skills():
    from framework.toy.skills import Probe

    probes = [Probe("recall", "r", "p", "1")] * 20 + [Probe("copy", "c", "p", "2")] * 20
    assert score(probes, ["1"] * 20 + ["2"] * 19 + ["0"])["passed"]  # 95% copy passes
    assert not score(probes, ["1"] * 20 + ["2"] * 18 + ["0"] * 2)["passed"]
